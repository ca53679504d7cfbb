"""Online anomaly detector for one (subsystem, series) stream of per-window values.

Why this shape: on real telemetry (NAB-like: CPU, network, temperatures, traffic, ad
exchanges) no single predictor is right everywhere, and raw residuals are poorly calibrated
across series. So the detector scores the *surprise* of differently-biased cheap predictors,
calibrates each with a Numenta-style anomaly likelihood (peaks-over-threshold tail, see
``likelihood.py``), and takes the max of the calibrated scores:

* ``level``: a robust exponentially weighted level (clipped updates, so a spike barely
  moves it and a level shift stays surprising for a while) -> shifts, variance changes;
* ``step``: the previous value (random-walk view, gap-aware) -> spikes and jumps at their
  first point on smooth, autocorrelated series (temperatures, traffic);
* ``season``: a time-of-day profile plus a slow bias, used only where it predicts better
  than the level -> "normal value at the wrong time" on daily traffic, after two days;
* ``sustained``: a long average of the better of level/season surprises -> episodes whose
  height is routine but whose length is not (a runaway process, a saturated pool).

Two rules that need no model are added: a *spatial* rule (a value well outside the range
ever learned is anomalous, whatever the predictors adapted to) and a *flatline* rule (a run
of identical values much longer than any seen before, on a series that used to move: a
stuck sensor or a dead exporter). Alarms fire once per episode.

Warm-up: the first ``warmup`` values (default 60) always score 0 and are flagged
``warming_up``; the spatial rule waits ``spatial_warmup`` values (default 240). NAB ignores
the first 15 % of a file for the same reason: early scores are not worth an alarm.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.core.anomaly.likelihood import AnomalyLikelihood

__all__ = ["AnomalyScore", "SeriesAnomalyDetector", "score_series"]

_DAY_MS = 86_400_000
_MAX_ABS = 1e150  # inputs are clipped here so that squares and differences stay finite
_MAX_SURPRISE = 1000.0
_MAD_TO_SIGMA = 1.2533  # mean absolute deviation -> standard deviation for a normal
_SCALE_CLIP = 2.5  # residuals beyond this many scales update a scale as if they were here
_SCALE_WARMUP = 20  # values seen before surprises are trusted enough to calibrate on

# (score, reason, expected, half_width, s_level, s_step, s_season, s_best, s_fc, slot)
_Evaluation = tuple[float, str, float, float, float, float, float, float, float, int]


def _bootstrapping(scale: float, ref: float) -> bool:
    """True while a residual scale is still (near) zero for a series around ``ref``.

    Clipping residuals to a few scales is what keeps a spike out of the scale, but a scale
    that starts at zero (a series that was flat, then moves) could then never grow: until
    it is meaningful, residuals update it unclipped.
    """
    return scale <= 1e-4 * abs(ref) + 1e-12


def _usable(
    forecast: tuple[float, float, float] | None,
) -> tuple[float, float, float] | None:
    """An external forecast with a NaN in it is no forecast at all."""
    if forecast is None or any(v != v for v in forecast):
        return None
    return forecast


def _scale_update(scale: float, d: float, b: float, boot: bool) -> float:
    """One step of a mean-absolute-residual scale, with ``d`` clipped unless bootstrapping."""
    if not boot and d > _SCALE_CLIP * scale:
        d = _SCALE_CLIP * scale
    return scale + b * (d - scale)


@dataclass(frozen=True, slots=True)
class AnomalyScore:
    """The verdict on one value, computed before the value was learned.

    Attributes
    ----------
    score
        Calibrated anomaly score in [0, 1] (log-scaled likelihood; 0.5 ~ a 1e-5 tail).
    is_anomaly
        True only on the first window of an anomalous episode (an alarm to raise).
    in_anomaly
        ``score >= threshold`` regardless of episode suppression: keep this value out of
        the forecaster's training.
    expected, lower, upper
        What the detector expected, and the range it considered normal.
    reason
        Which part fired the highest score: ``level``, ``sustained``, ``step``,
        ``season``, ``spatial``, ``flatline``, ``forecast``; ``missing`` for a NaN input;
        ``""`` when nothing is notable or while warming up.
    warming_up
        True while the detector has seen fewer than ``warmup`` values: scores are held at 0.
    """

    score: float
    is_anomaly: bool
    in_anomaly: bool
    expected: float
    lower: float
    upper: float
    reason: str = ""
    warming_up: bool = False


class SeriesAnomalyDetector:
    """Score each value of one series before learning it; river-like, picklable, O(1).

    Parameters
    ----------
    threshold
        Score at or above which a value is ``in_anomaly``.
    warmup
        Number of values learned before any score is reported (scores are 0 before). NAB
        ignores the first 15 % of a file; in production this is the "warming up" period.
    calm_steps
        After an alarm, further alarms are suppressed until this many consecutive values
        scored below ``release * threshold``: one alarm per episode.
    release
        Fraction of ``threshold`` under which a value counts as calm.
    level_alpha
        Smoothing of the robust level (larger adapts faster to a new level).
    scale_alpha
        Smoothing of the residual scales (mean absolute residuals).
    clip
        Residuals are clipped to ``clip`` scales before they update the level and scales.
    season_ms
        Period of the seasonal profile (default one day); ``None`` disables it.
    step_ms
        Nominal spacing of the series; ``None`` infers it (running median of spacings).
    max_slots
        Cap on the number of time-of-day slots (memory bound): slots are
        ``max(step, season_ms / max_slots)`` wide.
    spatial_tolerance
        The spatial rule fires when a value exceeds the learned [min, max] range by this
        fraction of the range.
    spatial_warmup
        Values learned before the spatial rule may fire (the early range is too narrow).
    season_gate
        The seasonal channel (and the sustained channel's use of it) only counts while the
        seasonal predictor's error is below this fraction of the level predictor's: on a
        series with no daily pattern it would only add false alarms.
    anomaly_learn_factor
        While a value is ``in_anomaly``, residual scales learn this much slower, so an
        incident does not widen the "normal" band for the next one.
    flat_min_run
        Minimum run of identical values before the flatline rule may fire.
    short_window, long_window
        Spans of the anomaly likelihood (short average, long-run distribution).
    sustained_window
        Span of a second, longer average of the level surprise: a burst that lasts far
        longer than the usual bursts (a runaway process, a slow drift) is anomalous even
        when its height is routine.
    band_sigma
        Half-width of the reported ``[lower, upper]`` range, in standard deviations.

    Examples
    --------
    >>> det = SeriesAnomalyDetector()
    >>> alarms = []
    >>> for i in range(600):
    ...     x = 10.0 + ((i * 7919) % 13 - 6) * 0.1 + (25.0 if i == 500 else 0.0)
    ...     s = det.score_one(i * 60_000, x)
    ...     det.learn_one(i * 60_000, x)
    ...     if s.is_anomaly:
    ...         alarms.append(i)
    >>> alarms
    [500]
    """

    def __init__(
        self,
        threshold: float = 0.45,
        warmup: int = 60,
        calm_steps: int = 30,
        release: float = 0.8,
        level_alpha: float = 0.05,
        scale_alpha: float = 0.02,
        clip: float = 4.0,
        season_ms: int | None = _DAY_MS,
        step_ms: int | None = None,
        max_slots: int = 288,
        spatial_tolerance: float = 0.2,
        spatial_warmup: int = 240,
        season_gate: float = 0.8,
        anomaly_learn_factor: float = 0.1,
        flat_min_run: int = 12,
        short_window: int = 6,
        sustained_window: int = 36,
        long_window: int = 2000,
        band_sigma: float = 3.0,
    ) -> None:
        self.threshold = threshold
        self.warmup = warmup
        self.calm_steps = calm_steps
        self.release = release
        self.level_alpha = level_alpha
        self.scale_alpha = scale_alpha
        self.clip = clip
        self.season_ms = season_ms
        self.step_ms = step_ms
        self.max_slots = max_slots
        self.spatial_tolerance = spatial_tolerance
        self.spatial_warmup = spatial_warmup
        self.season_gate = season_gate
        self.anomaly_learn_factor = anomaly_learn_factor
        self.flat_min_run = flat_min_run
        self.short_window = short_window
        self.sustained_window = sustained_window
        self.long_window = long_window
        self.band_sigma = band_sigma

        self.n = 0
        self.last_ts: int | None = None
        self.last_x = 0.0
        self._step_est = float(step_ms) if step_ms else 0.0
        # robust level
        self._level = 0.0
        self._level_scale = 0.0
        self._level_err = 0.0
        # previous-value (step) predictor
        self._step_scale = 0.0
        # seasonal profile
        self._slot_ms = 0
        self._n_slots = 0
        self._profile: list[float] = []
        self._profile_n: list[int] = []
        self._season_bias = 0.0
        self._season_scale = 0.0
        self._season_err = 0.0
        self._season_seen = 0
        self._season_off = season_ms is None
        # spatial range
        self._lo = 0.0
        self._hi = 0.0
        # flatline
        self._run = 0
        self._max_run = 0
        self._moves = 0
        # calibration channels
        self._lik_level = AnomalyLikelihood(short_window, long_window)
        self._lik_step = AnomalyLikelihood(short_window, long_window)
        self._lik_sustained = AnomalyLikelihood(sustained_window, long_window)
        self._lik_season = AnomalyLikelihood(short_window, long_window)
        self._lik_forecast = AnomalyLikelihood(short_window, long_window)
        # episode state
        self._armed = True
        self._calm = 0

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _clean(x: float) -> float:
        if x > _MAX_ABS:
            return _MAX_ABS
        if x < -_MAX_ABS:
            return -_MAX_ABS
        return x

    def _floor(self, ref: float) -> float:
        """Smallest meaningful scale around magnitude ``ref`` (flat series have scale 0)."""
        return 1e-6 * abs(ref) + 1e-12

    def _slot(self, ts_ms: int) -> int:
        return (ts_ms // self._slot_ms) % self._n_slots

    def _gap_steps(self, ts_ms: int) -> float:
        if self.last_ts is None or self._step_est <= 0.0:
            return 1.0
        k = (ts_ms - self.last_ts) / self._step_est
        if k < 1.0:
            return 1.0
        return k if k < 1e4 else 1e4

    def _season_ready(self, slot: int) -> bool:
        return self._n_slots > 0 and self._season_seen >= 2 and self._profile_n[slot] >= 2

    # ------------------------------------------------------------------ scoring
    def _evaluate(
        self, ts_ms: int, x: float, forecast: tuple[float, float, float] | None
    ) -> _Evaluation:
        """Pure computation shared by score_one and learn_one.

        Returns (score, reason, expected, half_width, s_level, s_step, s_season, s_best, s_fc,
        slot); ``s_best`` is the surprise of the better of the level and seasonal predictors.
        """
        level = self._level
        floor = self._floor(level)
        lscale = self._level_scale if self._level_scale > floor else floor
        r_level = abs(x - level) / lscale
        s_level = r_level if r_level < _MAX_SURPRISE else _MAX_SURPRISE

        sscale = self._step_scale if self._step_scale > floor else floor
        r_step = abs(x - self.last_x) / (sscale * math.sqrt(self._gap_steps(ts_ms)))
        s_step = r_step if r_step < _MAX_SURPRISE else _MAX_SURPRISE

        expected = level
        width = lscale
        err = self._level_err
        s_season = -1.0
        s_best = s_level
        use_season = False
        slot = -1
        if self._n_slots > 0:
            slot = self._slot(ts_ms)
            if self._season_ready(slot):
                pred = self._profile[slot] + self._season_bias
                zscale = self._season_scale if self._season_scale > floor else floor
                r_season = abs(x - pred) / zscale
                s_season = r_season if r_season < _MAX_SURPRISE else _MAX_SURPRISE
                if self._season_err < err:
                    expected, width = pred, zscale
                use_season = (
                    self._lik_season.n >= self.warmup and self._season_err < self.season_gate * err
                )
                if use_season:
                    s_best = s_season

        s_fc = -1.0
        if forecast is not None:
            f_exp, f_lo, f_hi = (self._clean(v) for v in forecast)
            half = 0.5 * abs(f_hi - f_lo)
            if half <= floor:
                half = floor
            r_fc = abs(x - f_exp) / half
            s_fc = r_fc if r_fc < _MAX_SURPRISE else _MAX_SURPRISE
            expected, width = f_exp, half / (self.band_sigma * _MAD_TO_SIGMA)

        half_width = self.band_sigma * _MAD_TO_SIGMA * width
        if self.n < self.warmup:
            return (0.0, "", expected, half_width, s_level, s_step, s_season, s_best, s_fc, slot)

        best = self._lik_level.score_one(s_level)
        reason = "level"
        sc = self._lik_step.score_one(s_step)
        if sc > best:
            best, reason = sc, "step"
        sc = self._lik_sustained.score_one(s_best)
        if sc > best:
            best, reason = sc, "sustained"
        if use_season:
            sc = self._lik_season.score_one(s_season)
            if sc > best:
                best, reason = sc, "season"
        if s_fc >= 0.0 and self._lik_forecast.n >= self.warmup:
            sc = self._lik_forecast.score_one(s_fc)
            if sc > best:
                best, reason = sc, "forecast"

        rng = self._hi - self._lo
        if rng > 0.0 and self.n >= self.spatial_warmup:
            tol = self.spatial_tolerance * rng
            if (x > self._hi + tol or x < self._lo - tol) and best < 1.0:
                best, reason = 1.0, "spatial"

        if self._flat_fires(x):
            best, reason = 1.0, "flatline"

        if best < 1e-6:
            reason = ""
        return best, reason, expected, half_width, s_level, s_step, s_season, s_best, s_fc, slot

    def _flat_fires(self, x: float) -> bool:
        if x != self.last_x or self._moves < 10:
            return False
        run = self._run + 1
        return run >= self.flat_min_run and run > 2 * self._max_run

    def score_one(
        self,
        ts_ms: int,
        x: float,
        forecast: tuple[float, float, float] | None = None,
    ) -> AnomalyScore:
        """Score ``x`` at event time ``ts_ms`` (ms) *before* learning it. Does not mutate.

        ``forecast`` is an optional external one-step forecast ``(expected, lower, upper)``:
        it replaces the reported expected range, and once ``learn_one`` was given forecasts
        for ``warmup`` values its calibrated surprise joins the max.
        """
        forecast = _usable(forecast)
        if x != x:  # NaN: a missing value is not evidence of anything
            return self._missing(forecast)
        x = self._clean(x)
        return self._verdict(self._evaluate(ts_ms, x, forecast))

    def process_one(
        self,
        ts_ms: int,
        x: float,
        forecast: tuple[float, float, float] | None = None,
    ) -> AnomalyScore:
        """``score_one`` then ``learn_one`` on the same value, computing the surprises once.

        Same result and same final state as the two calls; about 40 % cheaper, which is
        what a streaming engine that always does both wants.
        """
        forecast = _usable(forecast)
        if x != x:
            return self._missing(forecast)
        armed, warming = self._armed, self.n < self.warmup
        score, reason, expected, half = self._process(ts_ms, self._clean(x), forecast)
        in_anomaly = score >= self.threshold
        return AnomalyScore(
            score,
            in_anomaly and armed,
            in_anomaly,
            expected,
            expected - half,
            expected + half,
            reason,
            warming,
        )

    def process_raw(
        self,
        ts_ms: int,
        x: float,
        forecast: tuple[float, float, float] | None = None,
    ) -> tuple[float, str, float, float] | None:
        """`process_one` without building its verdict: ``(score, reason, expected, half)``.

        The range is ``expected ± half``; None for a NaN ``x`` (nothing learned). For callers
        that only look further when ``score >= threshold`` (the engine, every series).
        """
        if x != x:
            return None
        if forecast is not None and (
            forecast[0] != forecast[0] or forecast[1] != forecast[1] or forecast[2] != forecast[2]
        ):
            forecast = None
        return self._process(ts_ms, self._clean(x), forecast)

    def _process(
        self, ts_ms: int, x: float, forecast: tuple[float, float, float] | None
    ) -> tuple[float, str, float, float]:
        """`_evaluate` then `_learn`, fused: the same arithmetic in the same order, but each
        likelihood channel is scored and learnt in one call (a channel's learning never affects
        another channel, the spatial/flatline rules or the episode state)."""
        level = self._level
        floor = 1e-6 * abs(level) + 1e-12  # _floor(level)
        lscale = self._level_scale if self._level_scale > floor else floor
        r_level = abs(x - level) / lscale
        s_level = r_level if r_level < _MAX_SURPRISE else _MAX_SURPRISE

        sscale = self._step_scale if self._step_scale > floor else floor
        root_gap = math.sqrt(self._gap_steps(ts_ms))
        r_step = abs(x - self.last_x) / (sscale * root_gap)
        s_step = r_step if r_step < _MAX_SURPRISE else _MAX_SURPRISE

        expected = level
        width = lscale
        err = self._level_err
        s_season = -1.0
        s_best = s_level
        use_season = False
        slot = -1
        if self._n_slots > 0:
            slot = (ts_ms // self._slot_ms) % self._n_slots
            if self._season_seen >= 2 and self._profile_n[slot] >= 2:  # _season_ready(slot)
                pred = self._profile[slot] + self._season_bias
                zscale = self._season_scale if self._season_scale > floor else floor
                r_season = abs(x - pred) / zscale
                s_season = r_season if r_season < _MAX_SURPRISE else _MAX_SURPRISE
                if self._season_err < err:
                    expected, width = pred, zscale
                use_season = (
                    self._lik_season.n >= self.warmup and self._season_err < self.season_gate * err
                )
                if use_season:
                    s_best = s_season

        s_fc = -1.0
        if forecast is not None:
            f_exp, f_lo, f_hi = (self._clean(v) for v in forecast)
            half = 0.5 * abs(f_hi - f_lo)
            if half <= floor:
                half = floor
            r_fc = abs(x - f_exp) / half
            s_fc = r_fc if r_fc < _MAX_SURPRISE else _MAX_SURPRISE
            expected, width = f_exp, half / (self.band_sigma * _MAD_TO_SIGMA)

        half_width = self.band_sigma * _MAD_TO_SIGMA * width
        n = self.n
        warm = n >= self.warmup
        learn = n >= _SCALE_WARMUP  # before that, scales are not yet meaningful
        best = self._lik_level.step(s_level, warm, learn)
        reason = "level"
        sc = self._lik_step.step(s_step, warm, learn)
        if sc > best:
            best, reason = sc, "step"
        sc = self._lik_sustained.step(s_best, warm, learn)
        if sc > best:
            best, reason = sc, "sustained"
        if use_season or (learn and s_season >= 0.0):
            sc = self._lik_season.step(s_season, warm and use_season, learn and s_season >= 0.0)
            if warm and use_season and sc > best:
                best, reason = sc, "season"
        if s_fc >= 0.0:
            lik = self._lik_forecast
            fc_score = warm and lik.n >= self.warmup
            sc = lik.step(s_fc, fc_score, learn)
            if fc_score and sc > best:
                best, reason = sc, "forecast"
        if warm:
            rng = self._hi - self._lo
            if rng > 0.0 and n >= self.spatial_warmup:
                tol = self.spatial_tolerance * rng
                if (x > self._hi + tol or x < self._lo - tol) and best < 1.0:
                    best, reason = 1.0, "spatial"
            if self._flat_fires(x):
                best, reason = 1.0, "flatline"
            if best < 1e-6:
                reason = ""
        else:
            best, reason = 0.0, ""

        # _learn's steps, the small ones inlined (same order, same arithmetic).
        self._update_episode(best)
        f = self.anomaly_learn_factor if best >= self.threshold else 1.0
        if not self.step_ms:
            self._learn_step_ms(ts_ms)
            root_gap = math.sqrt(self._gap_steps(ts_ms))  # the spacing estimate moved
        self._learn_level(x, f)
        if n:  # _learn_step
            last = self.last_x
            scale = self._step_scale
            boot = n <= 5 or _bootstrapping(scale, last)
            b = self.scale_alpha if n > 20 else max(self.scale_alpha, 1.0 / n)
            self._step_scale = _scale_update(scale, abs(x - last) / root_gap, f * b, boot)
            if x < self._lo:  # _learn_range
                self._lo = x
            elif x > self._hi:
                self._hi = x
            if x == last:  # _learn_flat
                self._run += 1
            else:
                if self._run > self._max_run:
                    self._max_run = self._run
                self._run = 0
                self._moves += 1
        else:
            self._lo = self._hi = x
        self._learn_season(ts_ms, x, slot, f)
        self.last_x = x
        self.last_ts = ts_ms
        self.n = n + 1
        return best, reason, expected, half_width

    def _verdict(self, ev: _Evaluation) -> AnomalyScore:
        score, reason, expected, half = ev[0], ev[1], ev[2], ev[3]
        in_anomaly = score >= self.threshold
        return AnomalyScore(
            score=score,
            is_anomaly=in_anomaly and self._armed,
            in_anomaly=in_anomaly,
            expected=expected,
            lower=expected - half,
            upper=expected + half,
            reason=reason,
            warming_up=self.n < self.warmup,
        )

    def _missing(self, forecast: tuple[float, float, float] | None) -> AnomalyScore:
        expected = self._level
        half = self.band_sigma * _MAD_TO_SIGMA * self._level_scale
        if forecast is not None:
            expected = self._clean(forecast[0])
            half = 0.5 * abs(self._clean(forecast[2]) - self._clean(forecast[1]))
        return AnomalyScore(
            0.0,
            False,
            False,
            expected,
            expected - half,
            expected + half,
            "missing",
            self.n < self.warmup,
        )

    # ------------------------------------------------------------------ learning
    def learn_one(
        self,
        ts_ms: int,
        x: float,
        forecast: tuple[float, float, float] | None = None,
    ) -> None:
        """Learn ``x`` at event time ``ts_ms`` (ms); pass the same ``forecast`` as scored.

        A NaN is skipped (nothing is learned); infinities are clipped to +-1e150.
        """
        if x != x:
            return
        forecast = _usable(forecast)
        x = self._clean(x)
        self._learn(ts_ms, x, self._evaluate(ts_ms, x, forecast))

    def _learn(self, ts_ms: int, x: float, ev: _Evaluation) -> None:
        score, _, _, _, s_level, s_step, s_season, s_best, s_fc, slot = ev
        self._update_episode(score)
        f = self.anomaly_learn_factor if score >= self.threshold else 1.0
        if self.n >= _SCALE_WARMUP:  # before that, scales are not yet meaningful
            self._lik_level.learn_one(s_level)
            self._lik_step.learn_one(s_step)
            self._lik_sustained.learn_one(s_best)
            if s_season >= 0.0:
                self._lik_season.learn_one(s_season)
            if s_fc >= 0.0:
                self._lik_forecast.learn_one(s_fc)
        self._learn_step_ms(ts_ms)
        self._learn_level(x, f)
        self._learn_step(ts_ms, x, f)
        self._learn_season(ts_ms, x, slot, f)
        self._learn_range(x)
        self._learn_flat(x)
        self.last_x = x
        self.last_ts = ts_ms
        self.n += 1

    def _update_episode(self, score: float) -> None:
        if score >= self.threshold:
            self._armed = False
            self._calm = 0
        elif not self._armed:
            if score < self.release * self.threshold:
                self._calm += 1
                if self._calm >= self.calm_steps:
                    self._armed = True
            else:
                self._calm = 0

    def _learn_step_ms(self, ts_ms: int) -> None:
        if self.step_ms or self.last_ts is None:
            return
        delta = float(ts_ms - self.last_ts)
        if delta <= 0.0:
            return
        if self._step_est <= 0.0:
            self._step_est = delta
        elif delta > self._step_est:  # multiplicative running median of the spacing
            self._step_est *= 1.05
        elif delta < self._step_est:
            self._step_est /= 1.05

    def _learn_level(self, x: float, f: float) -> None:
        if self.n == 0:
            self._level = x
            return
        resid = x - self._level
        scale = self._level_scale
        boot = self.n <= 5 or _bootstrapping(scale, self._level)
        if boot:
            r = resid
        else:
            bound = self.clip * scale
            r = resid if -bound <= resid <= bound else math.copysign(bound, resid)
        a = self.level_alpha if self.n > 20 else max(self.level_alpha, 1.0 / (self.n + 1))
        self._level += a * r
        b = self.scale_alpha if self.n > 20 else max(self.scale_alpha, 1.0 / self.n)
        self._level_scale = _scale_update(scale, abs(r), f * b, boot)
        self._level_err += self.scale_alpha * (abs(resid) - self._level_err)

    def _learn_step(self, ts_ms: int, x: float, f: float) -> None:
        if self.n == 0:
            return
        d = abs(x - self.last_x) / math.sqrt(self._gap_steps(ts_ms))
        scale = self._step_scale
        boot = self.n <= 5 or _bootstrapping(scale, self.last_x)
        b = self.scale_alpha if self.n > 20 else max(self.scale_alpha, 1.0 / self.n)
        self._step_scale = _scale_update(scale, d, f * b, boot)

    def _init_season(self) -> None:
        assert self.season_ms is not None
        step = int(self._step_est)
        width = max(step, -(-self.season_ms // self.max_slots))
        n_slots = self.season_ms // width
        if n_slots < 4:
            self._season_off = True  # the series is too coarse to have this season
            return
        self._slot_ms = self.season_ms // n_slots
        self._n_slots = n_slots
        self._profile = [0.0] * n_slots
        self._profile_n = [0] * n_slots

    def _learn_season(self, ts_ms: int, x: float, slot: int, f: float) -> None:
        if self._season_off or self.season_ms is None:
            return
        if self._n_slots == 0:
            if self.n >= 16 and self._step_est > 0.0:
                self._init_season()
            return
        if slot < 0:
            slot = self._slot(ts_ms)
        if self.last_ts is not None and ts_ms // self.season_ms != self.last_ts // self.season_ms:
            self._season_seen += 1
        cnt = self._profile_n[slot]
        if cnt == 0:
            self._profile[slot] = x - self._season_bias if self._season_seen else x
            self._profile_n[slot] = 1
            return
        base = self._profile[slot]
        resid = x - base - self._season_bias
        scale = self._season_scale
        ready = self._season_ready(slot)
        boot = not ready or _bootstrapping(scale, x)
        if boot:
            r = resid
        else:
            bound = self.clip * scale
            r = resid if -bound <= resid <= bound else math.copysign(bound, resid)
        if ready:
            self._season_scale = _scale_update(scale, abs(r), f * self.scale_alpha, boot)
            self._season_err += self.scale_alpha * (abs(resid) - self._season_err)
        else:
            self._season_scale += 0.1 * (abs(r) - scale)
            self._season_err = self._level_err * 2.0 + self._floor(x)
        self._season_bias += 0.02 * r
        self._profile[slot] = base + (1.0 / (cnt + 1) if cnt < 4 else 0.25) * r
        self._profile_n[slot] = cnt + 1

    def _learn_range(self, x: float) -> None:
        if self.n == 0:
            self._lo = self._hi = x
        elif x < self._lo:
            self._lo = x
        elif x > self._hi:
            self._hi = x

    def _learn_flat(self, x: float) -> None:
        if self.n == 0:
            return
        if x == self.last_x:
            self._run += 1
        else:
            if self._run > self._max_run:
                self._max_run = self._run
            self._run = 0
            self._moves += 1


def score_series(points: Iterable[tuple[int, float]], **params: Any) -> list[AnomalyScore]:
    """Score a whole exported series, in order, with one fresh detector (score, then learn).

    This is all a command-line "score this CSV" needs: ``points`` are ``(ts_ms, value)`` in
    event-time order; ``params`` go to :class:`SeriesAnomalyDetector`.

    Examples
    --------
    >>> res = score_series((i * 300_000, 5.0 + (i % 7) * 0.1) for i in range(100))
    >>> len(res), any(r.is_anomaly for r in res)
    (100, False)
    """
    det = SeriesAnomalyDetector(**params)
    return [det.process_one(ts_ms, x) for ts_ms, x in points]
