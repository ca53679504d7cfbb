"""Online multi-horizon forecaster of one series (one metric or resource use of one subsystem).

One `SeriesForecaster` per (subsystem, series). It is fed the mean of each closed tumbling
window, in event-time order, possibly with gaps, and after each window it forecasts the next
``horizon`` windows with calibrated prediction intervals (`app.core.types.SeriesForecast`).

Candidates (all updated every window, see `app.core.forecasters`)
    ``profile``
        `SeasonalProfile`: slow level + daily and weekly linear-spline shapes (knots every
        10 min of the day and every 30 min of the week, 480 numbers), each knot an EW kernel
        average whose memory is counted in visits (days, weeks). A smoothed seasonal naive that
        averages several days instead of copying one, and knows weekdays from weekends.
    ``holt``
        `DampedHolt`: level + damped trend, no seasonality. Useful from the second window, and
        the right model for series without a repeating shape (drifting counts, noise).
    ``profile_ar``
        ``profile`` plus `ResidualRegression`: one ridge regression per horizon of the future
        profile residual on the current residual and its fast and slow EW means. It learns how
        far today's departure from the usual shape (a drift, a level shift, a trend the profile
        has not caught up with) carries ``h`` windows ahead. Usually the winner on seasonal
        telemetry.

Why these three: they fail differently (no history / no seasonality / no short-term memory), each
update costs O(1) scalars plus a few 15-vector operations, and together they cover what the fleet
shows (daily + weekly cycles, AR drift, level shifts, flat or sparse series) without a
1,440-lag buffer. River's SNARIMAX/HoltWinters would cost milliseconds per window and raise
before one season (FIELD.md), so the models are hand-written, small and documented.

Combination (online, per horizon)
    Every past forecast is kept (a ring of ``horizon`` origins x horizons x rows: the
    candidates, the combination and its issued bounds and widths) and
    scored when its target window arrives. Each candidate has an EW mean absolute error per
    horizon; weights are ``(best_mae / mae) ** blend_power`` normalised per horizon (power 4:
    a candidate twice as bad gets 1/16 the weight of the best), or a hard selection of the best
    if ``blend_power == 0``. So each series, and each horizon of it, ends up with what works.
    ``SeriesForecast.model`` reports the horizon-averaged weights, e.g.
    ``"blend(profile_ar:0.86,holt:0.14)"``.

Calibration
    Normalised split conformal with online quantile tracking (`HorizonConformal`): per horizon,
    the half-width is ``q * s`` where ``s`` is the EW mean absolute error of the combined
    forecast (a local scale: wider at busy hours) and ``q`` the normalised quantile. The widths
    issued with each forecast are kept in the ring next to it; when the target arrives, ``q``
    moves up if that issued interval missed and down if it covered, in proportions that make
    the long-run miss rate of the issued intervals exactly ``1 - level`` whatever the error
    distribution (adaptive conformal inference). No residual buffer is needed. Levels are
    nested by construction. Until every horizon has ``warmup_residuals`` scored errors the
    forecast says ``warming_up=True`` and its widths are at least a deliberately wide fallback
    built from the spread and the step-to-step jumps of the data seen so far.

Extra candidates (``extra_candidates``, from ``prediction.extra_candidates`` in ``pso.yaml``)
    Any river forecaster, e.g. ``"river.time_series.SNARIMAX(p=2, d=0, q=1)"`` (parsed safely,
    `app.core.forecasters.river_candidate`). Each forecaster builds its own instances. They
    learn what the built-in candidates learn (gaps up to ``horizon`` windows filled with the
    combined forecast issued for them), forecast after every window and join the same
    error-weighted blend, with their own per-horizon error averages: a candidate has no weight
    until it has ``3`` scored forecasts at a horizon. A candidate that raises or returns a
    wrong or non-finite forecast is *benched* for that window (no weight, its errors not
    learned, counted in `extra_status`; the model string says
    ``"... benched[name: reason]"``) and tried again at the next one. Without extra candidates
    nothing of this runs: the same kernels, the same numbers, the same pickled state.

river's API
    `RiverSeriesForecaster` is this forecaster as a `river.time_series.base.Forecaster`
    (``learn_one(y, x)``, ``forecast(horizon, xs)``), for river's evaluation and pipelines.

Seasonality phases come from the window's event time (UTC, window centre), never from a clock.
Anomalies are kept out of training with ``learn_one(..., trusted=False)``: the state is advanced
with the model's own expectation (or the value clipped to the 95 % interval) and no error
statistic learns from it. Values are clipped to ``±1e100`` and non-finite values are ignored, so
nothing downstream can overflow: no NaN or inf ever comes out.

Long (about 850 lines) because the forecaster and its river face share one ring layout and its
invariants; the arithmetic itself lives in `app.core.forecasters`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np
from river import time_series

from app.core.forecasters.conformal import HorizonConformal
from app.core.forecasters.holt import DampedHolt
from app.core.forecasters.kernels import (
    gather_issued,
    learn_errors,
    refresh_forecast,
    score_trusted,
)
from app.core.forecasters.phase import FloatArray, IntArray, grid_for
from app.core.forecasters.profile import SeasonalProfile
from app.core.forecasters.residual import ResidualRegression
from app.core.forecasters.river_candidate import (
    CandidateSpec,
    RiverCandidate,
    parse_candidates,
)
from app.core.types import SeriesForecast

if TYPE_CHECKING:
    from app.core.accuracy import ForecastAccuracy

CANDIDATES: tuple[str, ...] = ("profile", "holt", "profile_ar")
_PROFILE, _HOLT, _AR = 0, 1, 2
_N = len(CANDIDATES)  # built-in candidates; extra ones follow them, then the combination
MAX_ABS = 1e100
_MIN_SCORED = 3  # errors per horizon before the combination trusts its error estimates
_REWEIGHT_EVERY = 10  # error averages have a ~100-window memory: reweighting every 10 is enough
STATE_VERSION = 2  # bump when the pickled state changes shape; restore only the same version


class _RingIndex:
    """Index tables of the forecast ring for one horizon, and the scratch arrays of
    `SeriesForecaster._score` (shared by every forecaster of this shape, never pickled: a
    window's scratch is dead once its update returns, and shared scratch stays in cache)."""

    def __init__(self, horizon: int, rows: int, n_cand: int = _N) -> None:
        self.horizon = horizon
        self.rows = rows
        self.n_cand = n_cand
        h = np.arange(1, horizon + 1, dtype=np.int64)
        self.h = h
        # slots[r, h-1]: ring slot of the origin h windows before a window with n % H == r.
        self.slots: IntArray = (np.arange(horizon, dtype=np.int64)[:, None] - h[None, :]) % horizon
        self.sqrt_h: FloatArray = np.sqrt(h.astype(np.float64))
        self.slot_rows: list[IntArray] = list(self.slots)
        n_levels = (rows - n_cand - 1) // 3  # rows: candidates, combination, lower, upper, widths
        # What was issued for the arriving window (rows as in the forecast; the first n_cand + 1
        # become the errors), which horizons count, coverage per level.
        self.buf: FloatArray = np.empty((rows, horizon))
        self.valid = np.empty(horizon, dtype=np.bool_)
        self.inside: FloatArray = np.empty((n_levels, horizon))
        self.no_accuracy: FloatArray = np.zeros((5 + n_levels, horizon))  # never read
        self.totals: FloatArray = np.zeros(n_cand)  # each candidate's weight over horizons

    def __reduce__(self) -> tuple[object, tuple[int, ...]]:
        if self.n_cand == _N:  # pickled as before extra candidates existed
            return (_ring_index, (self.horizon, self.rows))
        return (_ring_index, (self.horizon, self.rows, self.n_cand))


_RING_INDEX: dict[tuple[int, int, int], _RingIndex] = {}


def _ring_index(horizon: int, rows: int, n_cand: int = _N) -> _RingIndex:
    key = (horizon, rows, n_cand)
    idx = _RING_INDEX.get(key)
    if idx is None:
        if len(_RING_INDEX) >= 32:
            _RING_INDEX.pop(next(iter(_RING_INDEX)))
        idx = _RingIndex(horizon, rows, n_cand)
        _RING_INDEX[key] = idx
    return idx


class SeriesForecaster:
    """Online multi-horizon forecaster with conformal intervals for one windowed series.

    Parameters
    ----------
    step_ms
        Window length (ms); ``learn_one`` takes window starts, multiples of it.
    horizon
        Number of windows forecast after each learned window.
    levels
        Coverage levels of the prediction intervals.
    daily_knot_ms, weekly_knot_ms
        Spacing of the seasonal knots over the day and over the week.
    daily_rate, weekly_rate, level_rate
        Forgetting of the seasonal profile (per day, per week, per window).
    holt_alpha, holt_beta, holt_phi
        Damped-Holt smoothing parameters.
    error_rate
        Rate of the per-horizon EW mean absolute errors, which weigh the candidates and are the
        local scale of the intervals (0.01: a memory of about 100 windows).
    blend_power
        Combination weights are ``(best_mae / mae) ** blend_power``; 0 selects the best only.
    conformal_step
        Quantile-tracker step (see `HorizonConformal`).
    warmup_residuals
        Scored errors per horizon before the intervals count as calibrated.
    untrusted
        What ``learn_one(..., trusted=False)`` learns instead of ``y``: ``"expected"`` (the
        forecast for that window) or ``"clip"`` (``y`` clipped to the widest interval).
    extra_candidates
        river forecasters that join the blend: entries like
        ``"river.time_series.SNARIMAX(p=2, d=0, q=1)"`` or parsed `CandidateSpec` objects.

    Examples
    --------
    >>> import math
    >>> f = SeriesForecaster(horizon=3)
    >>> for n in range(2 * 1440):  # two days of a daily cycle, 1-min windows
    ...     f.learn_one(n * 60_000, 10.0 + 5.0 * math.sin(2 * math.pi * n / 1440))
    >>> fc = f.forecast()
    >>> fc.origin_ms == 2 * 1440 * 60_000, fc.warming_up, len(fc.point)
    (True, False, 3)
    >>> fc.lower[0.95][0] <= fc.lower[0.8][0] <= fc.point[0] <= fc.upper[0.8][0]
    True
    >>> abs(fc.point[0] - 10.01) < 0.2  # truth at 00:00:30 on day 3: 10.01
    True
    """

    # Without extra candidates these class-level defaults stand and no instance attribute is
    # set for them: such a forecaster pickles exactly as before extra candidates existed.
    extra_candidates: tuple[CandidateSpec, ...] = ()
    _n_cand: int = _N  # candidates: the built-in ones, then the extra ones
    _names: tuple[str, ...] = CANDIDATES
    _extras: tuple[RiverCandidate, ...] = ()

    def __init__(
        self,
        step_ms: int = 60_000,
        horizon: int = 15,
        levels: tuple[float, ...] = (0.8, 0.95),
        daily_knot_ms: int = 600_000,
        weekly_knot_ms: int = 1_800_000,
        daily_rate: float = 0.2,
        weekly_rate: float = 0.5,
        level_rate: float = 1.0 / 720.0,
        holt_alpha: float = 0.5,
        holt_beta: float = 0.1,
        holt_phi: float = 0.9,
        error_rate: float = 0.01,
        blend_power: float = 4.0,
        conformal_step: float = 0.05,
        warmup_residuals: int = 60,
        untrusted: str = "expected",
        extra_candidates: Sequence[str | CandidateSpec] = (),
    ) -> None:
        if step_ms < 1:
            raise ValueError("step_ms must be >= 1")
        if horizon < 1:
            raise ValueError("horizon must be >= 1")
        if not levels or any(not 0.0 < lvl < 1.0 for lvl in levels):
            raise ValueError("levels must be in (0, 1)")
        if untrusted not in ("expected", "clip"):
            raise ValueError("untrusted must be 'expected' or 'clip'")
        self.step_ms = step_ms
        self.horizon = horizon
        self.levels = tuple(sorted(set(levels)))
        self.daily_knot_ms = daily_knot_ms
        self.weekly_knot_ms = weekly_knot_ms
        self.daily_rate = daily_rate
        self.weekly_rate = weekly_rate
        self.level_rate = level_rate
        self.holt_alpha = holt_alpha
        self.holt_beta = holt_beta
        self.holt_phi = holt_phi
        self.error_rate = error_rate
        self.blend_power = blend_power
        self.conformal_step = conformal_step
        self.warmup_residuals = warmup_residuals
        self.untrusted = untrusted
        if extra_candidates:
            specs = parse_candidates(extra_candidates, taken=CANDIDATES)
            self.extra_candidates = specs
            self._extras = tuple(RiverCandidate(spec) for spec in specs)
            self._n_cand = _N + len(specs)
            self._names = CANDIDATES + tuple(spec.name for spec in specs)
            # Per extra candidate and horizon: scored errors (their own count: a candidate may
            # start late), and per ring slot whether the forecast issued then was benched.
            self._extra_scored: IntArray = np.zeros((len(specs), horizon), dtype=np.int64)
            self._extra_benched = np.ones((horizon, len(specs)), dtype=np.bool_)
            self._extra_hidden = np.ones((len(specs), horizon), dtype=np.bool_)
            self._blend_name = "holt"
        n_cand = self._n_cand

        grid = grid_for(step_ms, daily_knot_ms, weekly_knot_ms)
        n_levels = len(self.levels)
        # Ring rows: the candidates, the combination, the issued lower and upper bounds (one
        # row per level each: what `forecast` reports, scored by `ForecastAccuracy`), then the
        # calibrated half-widths (what the conformal tracker judges; wider while warming up).
        self._lo0 = n_cand + 1
        self._hi0 = n_cand + 1 + n_levels
        self._cal0 = n_cand + 1 + 2 * n_levels
        self._index = _ring_index(horizon, self._cal0 + n_levels, n_cand)
        self._profile = SeasonalProfile(grid, daily_rate, weekly_rate, level_rate)
        self._holt = DampedHolt(horizon, holt_alpha, holt_beta, holt_phi)
        self._resid = ResidualRegression(horizon)
        self._conformal = HorizonConformal(horizon, self.levels, conformal_step)
        # The current forecast, by row (rows above) and horizon; and all recent ones, by origin
        # slot: ring[slot, h-1, row] (the layout the scoring of one window reads contiguously).
        self._cur: FloatArray = np.zeros((self._cal0 + n_levels, horizon))
        self._ring: FloatArray = np.zeros((horizon, horizon, self._cal0 + n_levels))
        self._origin: IntArray = np.full(horizon, -(2**62), dtype=np.int64)
        self._mae: FloatArray = np.zeros((n_cand + 1, horizon))
        self._scored: IntArray = np.zeros(horizon, dtype=np.int64)
        self._weights: FloatArray = np.zeros((n_cand, horizon))
        self._weights[_HOLT] = 1.0
        self._z: FloatArray = np.array(
            [[NormalDist().inv_cdf(0.5 + lvl / 2.0)] for lvl in self.levels]
        )
        self._last: int | None = None
        self._run = 0  # consecutive windows learned without a gap (capped at horizon)
        self._warming = True
        self._model = "holt"
        self._recent = 0.0
        self._mature = False  # every horizon scored >= _mature_after times: constant rates
        self._mature_after = max(warmup_residuals, math.ceil(1.0 / error_rate))
        self._cache: SeriesForecast | None = None
        self._rows: list[list[float]] | None = None
        # Spread of the data seen, for the warm-up fallback widths.
        self._n = 0
        self._mean = 0.0
        self._spread = 0.0
        self._jump = 0.0
        self._prev = 0.0
        self.n_learned = 0
        self.n_ignored = 0
        self.state_version = STATE_VERSION
        self._bind()

    def _bind(self) -> None:
        """Cache views into the state arrays, and the shared scratch (not pickled: a pickled
        view becomes a copy)."""
        n_cand = self._n_cand
        self._mae_comb = self._mae[n_cand]
        self._mae_cand = self._mae[:n_cand]
        index = self._index
        self._buf = buf = index.buf
        self._buf_profile = buf[_PROFILE]
        self._buf_comb = buf[n_cand]
        self._buf_issued = buf[self._cal0 :]  # the calibrated half-widths issued
        self._valid = index.valid
        self._inside = index.inside
        self._no_accuracy = index.no_accuracy
        self._totals = index.totals
        self._z_flat = np.ascontiguousarray(self._z[:, 0])

    _SCRATCH: tuple[str, ...] = ("_mae_comb", "_mae_cand", "_cache", "_rows", "_buf")
    _SCRATCH += ("_buf_profile", "_buf_comb", "_buf_issued", "_valid", "_inside")
    _SCRATCH += ("_no_accuracy", "_z_flat", "_totals")

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        for key in self._SCRATCH:
            del state[key]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._cache = None
        self._rows = None
        self._bind()

    # ------------------------------------------------------------------ learning

    def learn_one(
        self,
        window_start_ms: int,
        y: float,
        *,
        trusted: bool = True,
        accuracy: ForecastAccuracy | None = None,
    ) -> None:
        """Learn the mean ``y`` of the window starting at ``window_start_ms``.

        Windows must come in event-time order; a window at or before the last learned one, or a
        non-finite ``y``, is ignored (counted in ``n_ignored``). Missing windows are fine. With
        ``trusted=False`` (an anomaly), the state advances with the model's expectation for this
        window (or ``y`` clipped to the widest interval) and no error statistic is updated.

        ``accuracy`` scores the issued forecasts that targeted this window (trusted or not) from
        the errors computed here anyway: the same figures as ``ForecastAccuracy.observe`` +
        ``record`` of every forecast, without a second store of pending forecasts.
        """
        n = int(window_start_ms) // self.step_ms
        y = float(y)
        if (self._last is not None and n <= self._last) or not math.isfinite(y):
            self.n_ignored += 1
            return
        raw = y
        y = MAX_ABS if y > MAX_ABS else (-MAX_ABS if y < -MAX_ABS else y)
        if not trusted:
            y = self._substitute(n, y)
        horizon = self.horizon
        slot = n % horizon
        gap = 1
        extras = self._extras
        if self._last is not None:
            gap = n - self._last
            if trusted or accuracy is not None:
                if extras:
                    self._score_with_extras(n, slot, gap, y, raw, trusted, accuracy)
                else:
                    self._score(n, slot, gap, y, raw, trusted, accuracy)
            self._run = min(self._run + 1, horizon) if gap == 1 else 1
        else:
            self._run = 1
        if accuracy is not None:
            accuracy.remember(n, raw)
        r = self._profile.learn_window(n, y)
        self._holt.learn_one(y, gap)
        self._resid.observe(slot, r)
        if extras:
            self._learn_extras(y, gap)
        if self._warming:
            self._observe_spread(y)
        self._last = n
        self.n_learned += 1
        self._refresh(n, slot)

    def _score(
        self,
        n: int,
        slot: int,
        gap: int,
        y: float,
        raw: float,
        trusted: bool,
        accuracy: ForecastAccuracy | None,
    ) -> int:
        """Score every past forecast of window ``n``; learn errors, calibration, residual AR.

        ``y`` is what the forecaster learns, ``raw`` the actual value (they differ for clipped
        or untrusted values): ``accuracy``, if given, scores the issued forecasts against it.
        Returns `gather_issued`'s state: -1 nothing scored, 0 only the horizons in
        ``self._valid``, 1 all (then the first rows of ``self._buf`` are absolute errors if
        ``trusted``).
        """
        slots = self._index.slot_rows[slot]
        check = gap != 1 or self._run < self.horizon  # some origins may never have been learned
        if trusted and (accuracy is None or y == raw):
            return self._score_trusted(n, slots, check, y, accuracy)
        # An untrusted or clipped value: accuracy scores ``raw`` first, then (if trusted) the
        # model learns ``y``. The same steps as `_score_trusted`, one kernel at a time.
        state = gather_issued(
            self._ring, slots, self._origin, n, check, self._valid, self._buf, 0, y
        )
        if state < 0:
            return state  # no origin of this window was learned
        valid = self._valid if state == 0 else None
        buf = self._buf
        lo0, hi0 = self._lo0, self._hi0
        if accuracy is not None:
            d = buf[: self._cal0] - raw
            inside = d[lo0:hi0] <= 0.0  # lower - y <= 0 iff lower <= y
            inside &= d[hi0:] >= 0.0
            accuracy.score(n, raw, np.abs(d[lo0 - 1]), inside, valid)
        if not trusted:
            return state
        buf[:lo0] -= y
        self._resid.learn(slots, self._buf_profile, valid, negate=True)
        masked = valid is not None
        self._mature = learn_errors(
            buf,
            lo0,
            y,
            self._lo0,
            len(self.levels),
            self._inside,
            False,
            self._mae,
            self._scored,
            masked,
            self._valid,
            self._mature,
            self.error_rate,
            self._mature_after,
        )
        self._conformal.learn(self._buf_comb, self._buf_issued, valid)
        return state

    def _score_trusted(
        self,
        n: int,
        slots: IntArray,
        check: bool,
        y: float,
        accuracy: ForecastAccuracy | None,
    ) -> int:
        """`_score` of a trusted, unclipped value, in one compiled call (`score_trusted`).

        Reaches into its own components' arrays: they are the forecaster's, and one call
        instead of five is most of what the kernels save.
        """
        resid, conformal = self._resid, self._conformal
        if accuracy is None:
            acc_sums, known, naive_err = self._no_accuracy, False, 0.0
        else:
            acc_sums, known, naive_err = accuracy.baseline(n, y)
        state, self._mature, conformal._informed, learned = score_trusted(
            self._ring,
            slots,
            self._origin,
            n,
            check,
            self._valid,
            self._buf,
            y,
            resid.history,
            resid._sums,
            self._lo0,
            self._inside,
            accuracy is not None,
            self._mae,
            self._scored,
            self._mature,
            self.error_rate,
            self._mature_after,
            acc_sums,
            known,
            naive_err,
            conformal.q,
            conformal._up_full,
            conformal._down_full,
            conformal.count,
            conformal._informed_after,
            conformal._informed,
        )
        if state >= 0:
            if learned:
                resid.learned()
            conformal.stepped()
        return state

    # ------------------------------------------------------- extra (river) candidates

    def _score_with_extras(
        self,
        n: int,
        slot: int,
        gap: int,
        y: float,
        raw: float,
        trusted: bool,
        accuracy: ForecastAccuracy | None,
    ) -> None:
        """`_score`, then the extra candidates' error averages learned their own way.

        The kernels learn every candidate's errors at one rate per horizon; an extra candidate
        instead learns only from the forecasts it really issued (not benched), at a rate from
        its own count (it may start late: HoltWinters forecasts after one season).
        """
        rows = slice(_N, self._n_cand)
        mae = self._mae
        before = mae[rows].copy()
        state = self._score(n, slot, gap, y, raw, trusted, accuracy)
        mae[rows] = before
        if not trusted or state < 0:
            return
        issued = ~self._extra_benched[self._index.slot_rows[slot]].T  # (extra, horizon)
        if state == 0:
            issued &= self._valid
        scored = self._extra_scored
        rate = np.maximum(1.0 / (scored + 1.0), self.error_rate) * issued
        mae[rows] += (self._buf[rows] - before) * rate  # the buffer holds absolute errors now
        scored += issued

    def _learn_extras(self, y: float, gap: int) -> None:
        """Feed ``y`` to the extra candidates; windows missed by a gap of up to ``horizon``
        first, as the combined forecast issued for them (river models assume no gaps)."""
        fill = self._cur[self._lo0 - 1, : gap - 1].tolist() if 1 < gap <= self.horizon + 1 else []
        for cand in self._extras:
            for v in fill:
                cand.learn(v)
            cand.learn(y)

    def _forecast_extras(self, slot: int) -> tuple[FloatArray, bool]:
        """Put each extra candidate's forecast in its row of ``self._cur`` and hide, from the
        coming reweighting, the horizons where it may not weigh: benched now, or fewer than
        ``_MIN_SCORED`` of its forecasts scored there. Returns the error rows to put back, and
        whether that hiding changed since the last reweighting (then weights must follow now:
        a benched candidate's row is a placeholder)."""
        cur, benched = self._cur, self._extra_benched[slot]
        for e, cand in enumerate(self._extras):
            benched[e] = not cand.forecast_into(cur[_N + e])
        rows = self._mae[_N : self._n_cand]
        kept = rows.copy()
        hidden = (self._extra_scored < _MIN_SCORED) | benched[:, None]
        rows[hidden] = math.inf  # weight (best / inf) ** power == 0, and never the best
        changed = not np.array_equal(hidden, self._extra_hidden)
        self._extra_hidden = hidden
        return kept, changed

    def extra_status(self) -> dict[str, tuple[int, str]]:
        """Per extra candidate: windows it was benched, and the last reason (``""``: never)."""
        return {c.name: (c.benched, c.reason) for c in self._extras}

    def _benched_note(self) -> str:
        """``" benched[snarimax: ValueError: ...]"`` for the candidates benched now, or ``""``."""
        notes = [f"{c.name}: {c.reason}" for c in self._extras if not c.ok]
        return f" benched[{'; '.join(notes)}]" if notes else ""

    # ------------------------------------------------------------------- spread

    def _observe_spread(self, y: float) -> None:
        self._n += 1
        rate = 1.0 / self._n if self._n < 1440 else 1.0 / 1440.0
        self._mean += rate * (y - self._mean)
        self._spread += rate * (abs(y - self._mean) - self._spread)
        if self._n > 1:
            self._jump += max(rate, 0.01) * (abs(y - self._prev) - self._jump)
        self._prev = y

    def _refresh(self, n: int, slot: int) -> None:
        """Forecast all candidates from origin ``n``, combine, size intervals; keep in the ring."""
        profile, holt, resid = self._profile, self._holt, self._resid
        idx, wt = profile.grid.rows(n + 1, self.horizon)
        reweight = not self._mature or self.n_learned % _REWEIGHT_EVERY == 1
        kept = None
        if self._extras:  # their forecasts come first, and may call for new weights now
            kept, changed = self._forecast_extras(slot)
            reweight = reweight or changed
        self._warming, recent = refresh_forecast(
            profile._view,
            idx,
            wt,
            profile.level,
            holt._damp,
            holt.level,
            holt.trend,
            resid.coef,
            resid.features,
            reweight,
            self._mae_cand,
            self.blend_power,
            self._scored,
            0 if self._mature else _MIN_SCORED,  # until then a horizon's weights are holt's
            self._weights,
            self._conformal._q,
            self._mae_comb,
            self._warming,
            self.warmup_residuals,
            self._spread,
            self._jump,
            self._mean,
            self._z_flat,
            self._index.sqrt_h,
            self._cur,
            self._lo0,
            self._cal0,
            self._ring,
            self._origin,
            slot,
            n,
            self._totals,
        )
        if reweight:
            self._model = self._model_name(self._totals.tolist())
            self._recent = recent
        if kept is not None:
            self._mae[_N : self._n_cand] = kept
            if reweight:
                self._blend_name = self._model
            self._model = self._blend_name + self._benched_note()
        self._cache = None
        self._rows = None

    def _substitute(self, n: int, y: float) -> float:
        """What an untrusted window teaches instead of ``y``."""
        if self._last is None:
            return y
        h = n - self._last
        if self.untrusted == "clip" and 1 <= h <= self.horizon:
            row = self._cur  # clip to the widest issued interval
            return min(max(y, float(row[self._hi0 - 1, h - 1])), float(row[self._cal0 - 1, h - 1]))
        return self.expected(n * self.step_ms)

    # ---------------------------------------------------------------- forecasting

    def forecast(self) -> SeriesForecast:
        """Forecast of the ``horizon`` windows after the last learned one.

        Before any window was learned there is nothing to forecast: all-zero points, origin 0,
        ``model="none"`` and ``warming_up=True``.
        """
        if self._cache is not None:
            return self._cache
        if self._last is None:
            zeros = (0.0,) * self.horizon
            return SeriesForecast(
                origin_ms=0,
                step_ms=self.step_ms,
                point=zeros,
                lower=dict.fromkeys(self.levels, zeros),
                upper=dict.fromkeys(self.levels, zeros),
                model="none",
                recent_error=0.0,
                warming_up=True,
            )
        rows = self.forecast_rows()
        levels = self.levels
        n_levels = len(levels)
        self._cache = SeriesForecast(
            origin_ms=(self._last + 1) * self.step_ms,
            step_ms=self.step_ms,
            point=tuple(rows[0]),
            lower={lvl: tuple(rows[1 + k]) for k, lvl in enumerate(levels)},
            upper={lvl: tuple(rows[1 + n_levels + k]) for k, lvl in enumerate(levels)},
            model=self._model,
            recent_error=self._recent,
            warming_up=self._warming,
        )
        return self._cache

    def forecast_rows(self) -> list[list[float]]:
        """The current forecast as plain lists: ``[point, lower per level.., upper per level..]``.

        Levels in `levels` order; the same numbers as `forecast`, without building one (the
        engine's hot path turns these lists straight into its event body). Empty before any
        window was learned. Callers must not mutate the lists (they are cached).
        """
        if self._rows is None:
            if self._last is None:
                return []
            self._rows = self._cur[self._lo0 - 1 : self._cal0].tolist()
        return self._rows

    @property
    def model_name(self) -> str:
        """What produced the current point forecast (see ``SeriesForecast.model``)."""
        return self._model

    @property
    def recent_error(self) -> float:
        """Recent MAE of the combined forecast, averaged over horizons (``recent_error``)."""
        return self._recent

    @property
    def last_window_start_ms(self) -> int | None:
        """Start of the last window learned (None before any)."""
        return None if self._last is None else self._last * self.step_ms

    @property
    def warming_up(self) -> bool:
        """True until every horizon has ``warmup_residuals`` scored errors."""
        return self._warming

    def _model_name(self, total: list[float]) -> str:
        """``"profile_ar"`` or ``"blend(profile_ar:0.71,holt:0.29)"`` (horizon-averaged), from
        each candidate's weight summed over horizons."""
        h = self.horizon
        parts = sorted(
            ((w / h, name) for w, name in zip(total, self._names, strict=True) if w >= 0.005 * h),
            reverse=True,
        )
        if parts[0][0] >= 0.995:
            return parts[0][1]
        return "blend(" + ",".join(f"{name}:{w:.2f}" for w, name in parts) + ")"

    def predict_one(self) -> float:
        """Point forecast of the next window (0.0 before any window was learned)."""
        if self._last is None:
            return 0.0
        return float(self._cur[self._lo0 - 1, 0])

    def expected(self, window_start_ms: int) -> float:
        """Cheap expectation for the window starting at ``window_start_ms``.

        Inside the forecast horizon it is the combined point forecast; further ahead (or for a
        past window) the seasonal profile plus the persistent offset of its residual.
        """
        if self._last is None:
            return 0.0
        n = int(window_start_ms) // self.step_ms
        h = n - self._last
        if 1 <= h <= self.horizon:
            return float(self._cur[self._lo0 - 1, h - 1])
        return self._profile.predict_window(n) + self._resid.slow

    # ---------------------------------------------------------------- inspection

    def mae_by_horizon(self) -> tuple[float, ...]:
        """Recent (EW) mean absolute error of the combined forecast, per horizon."""
        return tuple(self._mae_comb.tolist())

    def weights(self) -> dict[str, tuple[float, ...]]:
        """Current combination weight of each candidate, per horizon."""
        return {name: tuple(self._weights[i].tolist()) for i, name in enumerate(self._names)}


class RiverSeriesForecaster(time_series.base.Forecaster):
    """A `SeriesForecaster` as a river forecaster: ``learn_one(y, x)``, ``forecast(horizon)``.

    For river's evaluation (``river.evaluate.evaluate``, ``iter_evaluate``), its pipelines and
    anything else written against `river.time_series.base.Forecaster`. The event time of a
    value is ``x["ts_ms"]`` (the window start, in ms) when ``x`` has it, else the window after
    the last one learned (river's streams are consecutive); ``x["trusted"] = False`` keeps a
    value out of training as `SeriesForecaster.learn_one` does. ``forecast(horizon)`` is the
    combined point forecast of the windows after the last learned one (of ``xs[i]["ts_ms"]``
    if given): within the forecaster's horizon the blend, beyond it the seasonal expectation
    (`SeriesForecaster.expected`).

    The PSO forecaster itself is `series` (intervals, ``forecast_rows``, weights, event-time
    ``learn_one``); this class adds nothing to its hot path. Parameters are those of
    `SeriesForecaster` (``options``: the ones not listed).

    Examples
    --------
    Three days of a daily cycle, 1-min windows, scored by river's own evaluation. river asks
    for the forecast before it teaches the current value, so its targets are 2..6 windows
    ahead: the last is beyond this forecaster's horizon, where the seasonal expectation answers.

    >>> import math
    >>> from river import evaluate, metrics
    >>> wave = [({"ts_ms": n * 60_000}, 10 + 5 * math.sin(n * math.pi / 720)) for n in range(4320)]
    >>> model = RiverSeriesForecaster(horizon=5)
    >>> mae = evaluate.evaluate(wave, model, metrics.MAE(), horizon=5)
    >>> [round(m.get(), 2) for m in mae.metrics]
    [0.01, 0.02, 0.02, 0.02, 0.2]
    >>> model.series.forecast().model
    'blend(profile_ar:0.57,profile:0.43)'
    """

    def __init__(
        self,
        step_ms: int = 60_000,
        horizon: int = 15,
        levels: tuple[float, ...] = (0.8, 0.95),
        extra_candidates: tuple[str, ...] | None = None,
        **options: Any,
    ) -> None:
        self.step_ms = step_ms
        self.horizon = horizon
        self.levels = levels
        self.extra_candidates = extra_candidates  # None, not (): river's clone trips on ()
        self.options = options
        self.series = SeriesForecaster(
            step_ms=step_ms,
            horizon=horizon,
            levels=levels,
            extra_candidates=extra_candidates or (),
            **options,
        )

    def learn_one(self, y: float, x: dict[str, Any] | None = None) -> None:
        series = self.series
        ts = None if x is None else x.get("ts_ms")
        if ts is None:
            last = series.last_window_start_ms
            ts = 0 if last is None else last + self.step_ms
        trusted = True if x is None else bool(x.get("trusted", True))
        series.learn_one(int(ts), y, trusted=trusted)

    def forecast(self, horizon: int, xs: list[dict[str, Any]] | None = None) -> list[float]:
        series = self.series
        last = series.last_window_start_ms
        if last is None:
            return [0.0] * horizon
        step = self.step_ms
        targets = [last + h * step for h in range(1, horizon + 1)]
        if xs is not None:
            targets = [
                int(x["ts_ms"]) if x and "ts_ms" in x else t
                for x, t in zip(xs, targets, strict=False)
            ]
        return [series.expected(t) for t in targets]
