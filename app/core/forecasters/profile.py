"""Seasonal profile: a slow level plus daily and weekly linear-spline shapes, learned online."""

from __future__ import annotations

import math
from array import array

import numpy as np

from app.core.forecasters.kernels import profile_forecast, profile_learn
from app.core.forecasters.phase import DAY_MS, FloatArray, SeasonalGrid, log_keep


class SeasonalProfile:
    """Level + time-of-day + time-of-week profile, each knot an exponentially weighted average.

    ``ŷ(t) = level + D(time of day of t) + W(time of week of t)``, where ``D`` and ``W`` are
    linear splines on the knots of ``grid``. Each observation updates the four knots around its
    phase as a kernel (hat-weighted) running mean, with a forgetting rate expressed *per visit*
    of a knot (once a day for ``D``, once a week for ``W``), so memory is counted in days and
    weeks whatever the window size. Knots start empty and the first visit fully sets them, which
    is why one day is enough for a usable daily shape. ``D`` learns ``y - level - W`` first, then
    ``W`` learns what is left (``y - level - D``): a backfitting pass per window, so ``W`` only
    holds what distinguishes one weekday from the average day.

    Learning is Huber-like: the residual used for learning is clipped to ``clip`` times the
    running mean absolute residual, so a spike cannot imprint itself on next week's profile,
    while a persistent shift raises that scale and is absorbed over hours. A surprise that
    *recurs* is not clipped: when a run of values beyond the clip (a step, not a lone outlier
    of a heavy tail) went the same way near the same time of day (the daily knot or its
    neighbours) on one of the previous ``recur_days`` days, it is the daily shape — a 09:00
    log-in surge, a scheduled job — and is learned whole; at its first such value of the day
    the knot forgets its clipped visits. Clipped, such a step would be learned a few percent a
    day and the profile would miss every onset for weeks.

    Parameters
    ----------
    grid
        Knot layout (shared, from `app.core.forecasters.phase.grid_for`).
    daily_rate
        Forgetting per day for the time-of-day knots (0.2: about a five-day memory).
    weekly_rate
        Forgetting per week for the time-of-week knots (0.5: weekly effects are seen once a
        week, so they must be learnt from few visits).
    level_rate
        Per-window rate of the level (default 1/720: half a day; slow on purpose so the level
        does not chase the daily cycle the knots are meant to hold).
    clip
        Learning residuals are clipped at ``clip`` x the mean absolute residual.
    scale_rate
        Per-window rate of that mean absolute residual.
    recur_days
        How many days back a surprise at the same time of day makes the next one the daily
        shape (0: never; every surprise is clipped).

    Examples
    --------
    >>> import math
    >>> from app.core.forecasters.phase import grid_for
    >>> p = SeasonalProfile(grid_for(60_000, 600_000, 1_800_000))
    >>> for n in range(3 * 1440):  # three days of a clean daily sinusoid, 1-min windows
    ...     _ = p.learn_window(n, 100.0 + 50.0 * math.sin(2 * math.pi * n / 1440))
    >>> round(p.predict_window(3 * 1440 + 360))  # 06:00 on day 4, truth 150
    150

    Two quiet days, then a job from 1 to 50 at 09:00 for an hour, two days running: its first
    day is clipped, its second learned whole (clipped both days: 9):

    >>> p = SeasonalProfile(grid_for(60_000, 600_000, 1_800_000))
    >>> for n in range(4 * 1440):
    ...     _ = p.learn_window(n, 50.0 if n >= 2 * 1440 and 540 <= n % 1440 < 600 else 1.0)
    >>> round(p.predict_window(4 * 1440 + 570))  # 09:30 on day 5
    37
    """

    def __init__(
        self,
        grid: SeasonalGrid,
        daily_rate: float = 0.2,
        weekly_rate: float = 0.5,
        level_rate: float = 1.0 / 720.0,
        clip: float = 4.0,
        scale_rate: float = 0.01,
        recur_days: int = 7,
    ) -> None:
        self.grid = grid
        self.daily_rate = daily_rate
        self.weekly_rate = weekly_rate
        self.level_rate = level_rate
        self.clip = clip
        self.scale_rate = scale_rate
        self.recur_days = recur_days
        self.level = 0.0
        self.scale = 0.0
        self.n = 0
        # array('d'): fast scalar access from Python, zero-copy numpy view, compact pickle.
        self.knots = array("d", bytes(8 * grid.n_knots))
        self.mass = array("d", bytes(8 * grid.n_knots))
        #: per daily knot: the last day (+1) with a surprise there (a run of values beyond the
        #: clip), negative if downwards; +0.5 when it was learned whole (a recurring one)
        self.surprise = array("d", bytes(8 * grid.n_daily))
        #: consecutive values beyond the clip, signed by their direction
        self.surprise_run = 0
        self._keep_daily = log_keep(daily_rate, grid.daily_windows)
        self._keep_weekly = log_keep(weekly_rate, grid.weekly_windows)
        self._day_windows = max(1, DAY_MS // grid.step_ms)
        self._bind()

    def _bind(self) -> None:
        """numpy views of the knot arrays, for the compiled loops (not pickled)."""
        self._view: FloatArray = np.frombuffer(self.knots)
        self._mass_view: FloatArray = np.frombuffer(self.mass)
        # A surprise is a step, not an outlier: a run of this many values beyond the clip
        # (a third of a knot's windows, at most 3; one when a window spans a knot).
        self._run_needed = max(1, min(3, round(self.grid.daily_windows / 3)))

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        del state["_view"], state["_mass_view"], state["_run_needed"]  # rebuilt on load
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        if "surprise" not in state:  # pickled before recurring surprises were learned
            self.recur_days = 7
            self.surprise = array("d", bytes(8 * self.grid.n_daily))
            self.surprise_run = 0
        self._bind()

    def predict_window(self, n: int) -> float:
        """Profile value of window ``n`` (``start_ms = n * step_ms``)."""
        idx, wt = self.grid.row(n)
        k = self.knots
        return float(
            self.level
            + k[idx[0]] * wt[0]
            + k[idx[1]] * wt[1]
            + k[idx[2]] * wt[2]
            + k[idx[3]] * wt[3]
        )

    def forecast_into(self, n_first: int, out: FloatArray) -> None:
        """Write the profile values of windows ``n_first, n_first + 1, ...`` into ``out``."""
        idx, wt = self.grid.rows(n_first, len(out))
        profile_forecast(self._view, idx, wt, self.level, out)

    def forecast(self, n_first: int, count: int) -> FloatArray:
        """Profile values of windows ``n_first .. n_first + count - 1`` (vectorised)."""
        out: FloatArray = np.empty(count)
        self.forecast_into(n_first, out)
        return out

    def learn_window(self, n: int, y: float) -> float:
        """Learn window ``n``'s value; return its residual against the pre-update profile."""
        (i0, i1, j0, j1), (a, b, c, d) = self.grid.row(n)
        self.n += 1
        day = n // self._day_windows + 1  # +1: 0 in `surprise` means never
        knot = i0 if a >= b else i1
        up, down = self._recurring(knot, day)
        clip_up = math.inf if up else self.clip
        clip_down = math.inf if down else self.clip
        limit = self.clip * self.scale
        if (up or down) and abs(self.surprise[knot]) != day + 0.5:
            # The first recurrence today at this knot: if it is one, the knot's history holds
            # the clipped visits, so the whole value sets it, as a first visit does.
            resid = y - self.predict_window(n)
            if (resid > limit and up) or (resid < -limit and down):
                self.mass[knot] = 0.0
        resid, self.level, self.scale = profile_learn(
            self._view,
            self._mass_view,
            i0,
            i1,
            j0,
            j1,
            a,
            b,
            c,
            d,
            y,
            self.n,
            self.level,
            self.scale,
            clip_up,
            clip_down,
            self.scale_rate,
            self.level_rate,
            self._keep_daily,
            self._keep_weekly,
            self._day_windows,
        )
        if self.n > 10 and abs(resid) > limit:
            sign = 1 if resid > 0.0 else -1
            self.surprise_run = self.surprise_run + sign if self.surprise_run * sign > 0 else sign
            if abs(self.surprise_run) >= self._run_needed:
                whole = up if sign > 0 else down
                mark = day + 0.5 if whole else float(day)  # .5: learned whole today
                self.surprise[knot] = mark * sign
        else:
            self.surprise_run = 0
        return resid

    def _recurring(self, knot: int, day: int) -> tuple[bool, bool]:
        """Whether an upward (downward) surprise near ``knot`` is the daily shape: one was
        clipped there on one of the previous ``recur_days`` days, or was learned whole
        earlier today."""
        n_daily = len(self.surprise)
        up = down = False
        for k in (knot - 1, knot, knot + 1):
            mark = self.surprise[k % n_daily]
            when = abs(mark)
            if mark != 0.0 and (when == day + 0.5 or 0 < day - when <= self.recur_days):
                if mark > 0:
                    up = True
                else:
                    down = True
        return up, down
