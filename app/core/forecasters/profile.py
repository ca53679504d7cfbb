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
    36
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
        #: per daily knot: the window (+1) of the last surprise there (a run of values beyond
        #: the clip), negative if downwards; +0.5 when it was learned whole (a recurring one)
        self.surprise = array("d", bytes(8 * grid.n_daily))
        #: per daily knot: the mark a surprise of the current day replaced
        self.earlier = array("d", bytes(8 * grid.n_daily))
        #: consecutive values beyond the clip, signed by their direction
        self.surprise_run = 0
        self._last_n = -2
        self._keep_daily = log_keep(daily_rate, grid.daily_windows)
        self._keep_weekly = log_keep(weekly_rate, grid.weekly_windows)
        self._day_windows = max(1, DAY_MS // grid.step_ms)
        self._bind()

    def _bind(self) -> None:
        """numpy views of the knot arrays, for the compiled loops (not pickled)."""
        self._view: FloatArray = np.frombuffer(self.knots)
        self._mass_view: FloatArray = np.frombuffer(self.mass)
        # A surprise is a step, not an outlier: a run of 3 values beyond the clip (as many as
        # a knot's spacing holds, when fewer: 2 at 5-minute windows, 1 from 10 minutes on).
        self._run_needed = max(1, min(3, int(self.grid.daily_windows)))

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        del state["_view"], state["_mass_view"], state["_run_needed"]  # rebuilt on load
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        if "surprise" not in state:  # pickled before recurring surprises were learned
            self.recur_days = 7
            self.surprise = array("d", bytes(8 * self.grid.n_daily))
            self.earlier = array("d", bytes(8 * self.grid.n_daily))
            self.surprise_run = 0
            self._last_n = -2
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
        if n != self._last_n + 1:
            self.surprise_run = 0  # a gap ends a run
        self._last_n = n
        knot = i0 if a >= b else i1
        limit = self.clip * self.scale
        run = 0  # the run of values beyond the clip this one makes, signed (0: within it)
        if self.n > 10:
            ahead = y - self.predict_window(n)
            if abs(ahead) > limit:
                sign = 1 if ahead > 0.0 else -1
                run = self.surprise_run + sign if self.surprise_run * sign > 0 else sign
        step = abs(run) >= self._run_needed
        whole = step and self._recurring(knot, n, run > 0)
        clip_up = math.inf if whole and run > 0 else self.clip
        clip_down = math.inf if whole and run < 0 else self.clip
        if whole and not self._whole_today(knot, n, run > 0):
            # The first of today's recurrence at this knot: its history holds the clipped
            # visits, so the whole value sets it, as a first visit does.
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
        self.surprise_run = run
        if step:
            old = self.surprise[knot]
            if old != 0.0 and n - (int(abs(old)) - 1) >= self._day_windows // 2:
                self.earlier[knot] = old  # an earlier day's: still evidence for today
            mark = n + 1 + (0.5 if whole else 0.0)  # +1: 0 means never; .5: learned whole
            self.surprise[knot] = mark if run > 0 else -mark
        return resid

    def _mark(
        self, k: int, n: int, upward: bool, marks: array[float] | None = None
    ) -> tuple[int, bool] | None:
        """Knot ``k``'s surprise in that direction (in ``marks``, default the latest): (its
        age in windows at window ``n``, whether it was learned whole), or None."""
        marks = self.surprise if marks is None else marks
        mark = marks[k % len(marks)]
        if mark == 0.0 or (mark > 0.0) != upward:
            return None
        at = abs(mark)
        return n - (int(at) - 1), at != int(at)

    def _whole_today(self, knot: int, n: int, upward: bool) -> bool:
        """Whether a surprise that way was learned whole at ``knot`` earlier in this visit."""
        seen = self._mark(knot, n, upward)
        return seen is not None and seen[1] and seen[0] < self._day_windows // 2

    def _recurring(self, knot: int, n: int, upward: bool) -> bool:
        """Whether a surprise that way at ``knot`` is the daily shape: one was seen near it
        (the knot or a neighbour) half a day to ``recur_days`` days ago, or it is being
        learned whole at this knot now."""
        if self.recur_days <= 0:
            return False
        if self._whole_today(knot, n, upward):
            return True
        day = self._day_windows
        for marks in (self.surprise, self.earlier):
            for k in (knot - 1, knot, knot + 1):
                seen = self._mark(k, n, upward, marks)
                if seen is not None and day // 2 <= seen[0] <= self.recur_days * day + day // 2:
                    return True
        return False
