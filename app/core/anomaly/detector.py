"""Online anomaly detector for one (subsystem, series) stream of per-window values.

Every value is scored *before* it is learned, in three steps:

1. **Surprise.** :class:`~app.core.anomaly.novelty.PatternNovelty` measures how far the pair
   (previous value, value) lies from every recent pair: new behaviour is surprising, a
   routine burst is not. When the caller has a forecast (the engine passes its forecaster's
   band), the distance to it in half-widths is a second surprise.
2. **Likelihood.** Each surprise goes through its own
   :class:`~app.core.anomaly.likelihood.AnomalyLikelihood`: the tail probability of that
   surprise under this series' own history of surprises, log-scaled into [0, 1]
   (``0.2`` ~ a 1-in-100 value, ``0.5`` ~ 1 in 100 000, ``1.0`` ~ 1 in 10^10). This is the
   step that makes one threshold mean the same on a ratio, a count or a latency. Two rules
   need no history: a value beyond the range seen so far (without its most extreme value on
   each side) by more than ``spatial_tolerance`` of it (*spatial*) and a run of identical
   values far longer than the runs before (the longest left out), on a series that used to
   move (*flatline*); both are graded from 0.5 up. The likelihood is the max.
3. **Onset.** :class:`~app.core.anomaly.onset.OnsetGate` turns the likelihood into the
   reported ``score``: full strength on the first rows of an episode (each new peak), a tenth
   of it afterwards, so an incident is one high row, not a plateau of them.

Decisions: ``in_anomaly`` is ``likelihood >= threshold`` (keep this value out of a model's
training); ``is_anomaly`` is its first row per episode (an alarm), an episode ending after
``calm_steps`` calm values (`app.core.anomaly.episodes.EpisodeGate`, which the engine's
alarms use too).

Warm-up: the first ``warmup`` values (default 100) score 0 and are flagged ``warming_up``;
the spatial rule waits ``spatial_warmup`` values. NAB ignores the first 15 % of a file for
the same reason.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.core.anomaly.episodes import EpisodeGate
from app.core.anomaly.likelihood import AnomalyLikelihood
from app.core.anomaly.novelty import PatternNovelty
from app.core.anomaly.onset import OnsetGate

__all__ = ["AnomalyScore", "SeriesAnomalyDetector", "memory_for", "score_series"]

_MAX_ABS = 1e150  # inputs are clipped here so that squares and differences stay finite
_MAX_SURPRISE = 1000.0
_MAD_TO_SIGMA = 1.2533  # mean absolute deviation -> standard deviation for a normal
_SCALE_CLIP = 2.5  # residuals beyond this many scales update a scale as if they were here
_LEARN_FROM = 60  # values seen before surprises are trusted enough to calibrate on
_GAP_STEPS = 5.0  # a silence longer than this many spacings breaks the pairing of values
_MEMORY_SPAN_MS = 48 * 3_600_000  # the pattern memory spans two days of the series...
_MEMORY_MIN, _MEMORY_MAX = 1000, 3000  # ...in at least 1000 and at most 3000 values
_SPACINGS = 20  # spacings seen before the memory is sized (from their median)

# (likelihood, reason, expected, half_width, novelty distance, novelty surprise, s_forecast)
_Evaluation = tuple[float, str, float, float, float, float, float]


def _usable(
    forecast: tuple[float, float, float] | None,
) -> tuple[float, float, float] | None:
    """An external forecast with a NaN in it is no forecast at all."""
    if forecast is None or any(v != v for v in forecast):
        return None
    return forecast


def memory_for(step_ms: float) -> int:
    """Values the pattern memory keeps at this spacing: two days of the series, within
    [1000, 3000] (decision 0014, step 5).

    >>> memory_for(60_000), memory_for(300_000), memory_for(3_600_000)
    (2880, 1000, 1000)
    """
    if step_ms <= 0.0:
        return _MEMORY_MIN
    return max(_MEMORY_MIN, min(_MEMORY_MAX, round(_MEMORY_SPAN_MS / step_ms)))


def _clean(x: float) -> float:
    if x > _MAX_ABS:
        return _MAX_ABS
    if x < -_MAX_ABS:
        return -_MAX_ABS
    return x


@dataclass(frozen=True, slots=True)
class AnomalyScore:
    """The verdict on one value, computed before the value was learned.

    Attributes
    ----------
    score
        Onset score in [0, 1], the column a threshold is meant for: the likelihood on the
        rows where an episode sets a new peak, a tenth of it on its other rows.
    is_anomaly
        True only on the first value of an anomalous episode (an alarm to raise).
    in_anomaly
        ``likelihood >= threshold`` regardless of episode suppression: keep this value out
        of a forecaster's training.
    expected, lower, upper
        What the detector expected, and the range it considered normal.
    reason
        Which part gave the likelihood: ``novelty``, ``spatial``, ``flatline``,
        ``forecast``; ``missing`` for a NaN input; ``""`` when nothing is notable or while
        warming up.
    warming_up
        True while the detector has seen fewer than ``warmup`` values: scores are held at 0.
    likelihood
        Calibrated likelihood in [0, 1] (log-scaled tail probability, see the module doc).
    """

    score: float
    is_anomaly: bool
    in_anomaly: bool
    expected: float
    lower: float
    upper: float
    reason: str = ""
    warming_up: bool = False
    likelihood: float = 0.0


class SeriesAnomalyDetector:
    """Score each value of one series before learning it; river-like, picklable, O(memory).

    Parameters
    ----------
    threshold
        Likelihood at or above which a value is ``in_anomaly`` (and the decision threshold
        of ``is_anomaly``).
    warmup
        Number of values learned before any score is reported (scores are 0 before).
    calm_steps
        After an alarm, further alarms are suppressed until this many consecutive values
        had a likelihood below ``release * threshold``: one alarm per episode.
    release
        Fraction of ``threshold`` under which a value counts as calm.
    memory
        Values the novelty channel compares the newest pair with. ``None``: two days of the
        series (`memory_for` its spacing: ``step_ms``, or the median of its first 20
        spacings), so the whole of yesterday's shape, its levels and ramps, is still familiar;
        at one value a minute, 1000 values were 17 hours. (A burst at the same minute every
        day still alarms daily: its rising pair is seen only twice in two days.)
    neighbours
        The novelty is the distance to the ``neighbours``-th nearest remembered pair (1..3).
    range_floor, full_range_floor
        Smallest distance scale of the novelty channel: the larger of ``range_floor`` times
        the spread of the remembered values (1st to 99th percentile) and ``full_range_floor``
        times the range seen (without its most extreme value on each side: one glitch does
        not set the floor for good).
    spatial_tolerance
        The spatial rule fires when a value exceeds the range seen (the same range) by more
        than this fraction of it.
    spatial_warmup
        Values learned before the spatial rule may fire (the early range is too narrow).
    flat_min_run
        Minimum run of identical values before the flatline rule may fire.
    onset_calm, onset_release, onset_damp, onset_margin
        The :class:`~app.core.anomaly.onset.OnsetGate` that turns the likelihood into the
        score: an episode ends after ``onset_calm`` rows under ``onset_release``; rows that
        set no new peak (by ``onset_margin``, once past ``onset_release``) are reported at
        ``onset_damp`` times their likelihood.
    learn_cap
        Pattern surprises are learned by their likelihood clipped at this many typical
        distances: what "normal" looks like is learned from normal values, so one early
        jump (every surprise is huge while the range is still narrow) or one incident does
        not fatten the tail and mute the series for good. Scores are not clipped.
    step_ms
        Nominal spacing of the series; ``None`` infers it (running median of spacings). A
        silence longer than five spacings is a gap: the values around it are not paired.
    level_alpha, scale_alpha, clip
        The robust level and scale behind the reported ``expected``/``lower``/``upper``
        (clipped exponential averages; they do not affect the score).
    anomaly_learn_factor
        While a value is ``in_anomaly``, the level's scale learns this much slower, so an
        incident does not widen the reported "normal" band.
    long_window
        Memory of the likelihoods' long-run distributions (values).
    band_sigma
        Half-width of the reported ``[lower, upper]`` range, in standard deviations.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(3)
    >>> det = SeriesAnomalyDetector()
    >>> scores = []
    >>> for i in range(600):
    ...     x = 10.0 + rng.gauss(0.0, 0.2) + (5.0 if i == 500 else 0.0)
    ...     scores.append(det.process_one(i * 60_000, x))
    >>> [i for i, s in enumerate(scores) if s.is_anomaly]  # one false alarm while it learns
    [383, 500]
    >>> round(scores[500].score, 2), round(scores[501].score, 2)  # the onset, then a tenth
    (1.0, 0.1)
    """

    learn_cap = math.inf  # what a snapshot from before ``learn_cap`` existed did
    _second_run: int | None = None  # ...and before the second-longest run: the longest counts
    _spacings: list[int] | None = None  # a memory sized at construction (or by a snapshot)

    def __init__(
        self,
        threshold: float = 0.6,
        warmup: int = 100,
        calm_steps: int = 30,
        release: float = 0.8,
        memory: int | None = None,
        neighbours: int = 3,
        range_floor: float = 0.03,
        full_range_floor: float = 0.01,
        spatial_tolerance: float = 0.2,
        spatial_warmup: int = 240,
        flat_min_run: int = 12,
        onset_calm: int = 5,
        onset_release: float = 0.2,
        onset_damp: float = 0.1,
        onset_margin: float = 0.2,
        learn_cap: float = 5.0,
        step_ms: int | None = None,
        level_alpha: float = 0.05,
        scale_alpha: float = 0.02,
        clip: float = 4.0,
        anomaly_learn_factor: float = 0.1,
        long_window: int = 2000,
        band_sigma: float = 3.0,
    ) -> None:
        self.threshold = threshold
        self.warmup = warmup
        self.calm_steps = calm_steps
        self.release = release
        self.spatial_tolerance = spatial_tolerance
        self.spatial_warmup = spatial_warmup
        self.flat_min_run = flat_min_run
        self.step_ms = step_ms
        self.level_alpha = level_alpha
        self.scale_alpha = scale_alpha
        self.clip = clip
        self.anomaly_learn_factor = anomaly_learn_factor
        self.band_sigma = band_sigma
        self.learn_cap = learn_cap

        self.n = 0
        self.last_ts: int | None = None
        self.last_x = 0.0
        self._step_est = float(step_ms) if step_ms else 0.0
        if memory is None:
            memory = memory_for(float(step_ms)) if step_ms else _MEMORY_MIN
            # without a nominal spacing, the memory is sized from the first spacings seen
            self._spacings = None if step_ms else []
        self._novelty = PatternNovelty(
            memory, neighbours, range_floor, full_range_floor=full_range_floor
        )
        self._lik_novelty = AnomalyLikelihood(1, long_window)
        self._lik_forecast = AnomalyLikelihood(1, long_window)
        self._onset = OnsetGate(onset_calm, onset_release, onset_damp, onset_margin)
        # reported range: robust level and scale
        self._level = 0.0
        self._level_scale = 0.0
        # flatline
        self._run = 0
        self._max_run = 0
        self._second_run = 0  # the second-longest run of identical values
        self._moves = 0
        self._episodes = EpisodeGate(calm_steps)

    # ------------------------------------------------------------------ scoring
    def _gap(self, ts_ms: int) -> bool:
        """True when ``ts_ms`` follows the last value after a silence (a gap)."""
        if self.last_ts is None or self._step_est <= 0.0:
            return False
        return ts_ms - self.last_ts > _GAP_STEPS * self._step_est

    def _spatial(self, x: float) -> float:
        """Graded score of a value beyond the range seen so far (0 when inside it); the
        range leaves out the most extreme value on each side, so one glitch cannot disarm it."""
        lo, hi = self._novelty.robust_range()
        rng = hi - lo
        if rng <= 0.0 or self.n < self.spatial_warmup:
            return 0.0
        excess = x - hi if x > hi else lo - x
        if excess <= self.spatial_tolerance * rng:
            return 0.0
        score = 0.5 + 0.5 * excess / rng
        return score if score < 1.0 else 1.0

    def _flatline(self, x: float) -> float:
        """Graded score of a run of identical values far longer than any seen before, on a
        series whose values seldom repeat (on a quantised one, runs are routine). "Any seen
        before" leaves out the longest: one stuck sensor does not disarm the rule for good,
        as one glitch does not set the range; a run length that recurs counts."""
        if x != self.last_x or self._moves < 10 or self._moves < 0.9 * self.n:
            return 0.0
        run = self._run + 1
        longest = self._max_run if self._second_run is None else self._second_run
        need = max(self.flat_min_run, 2 * longest + 1)
        if run < need:
            return 0.0
        score = 0.5 + 0.25 * math.log2(run / need)
        return score if score < 1.0 else 1.0

    def _evaluate(
        self, ts_ms: int, x: float, forecast: tuple[float, float, float] | None
    ) -> _Evaluation:
        """Pure computation shared by scoring and learning: likelihood and surprises."""
        dist = math.nan if self._gap(ts_ms) else self._novelty.distance(x)
        s_nov = self._novelty.surprise(dist)
        floor = 1e-6 * abs(self._level) + 1e-12
        scale = self._level_scale if self._level_scale > floor else floor
        expected = self._level
        half = self.band_sigma * _MAD_TO_SIGMA * scale
        s_fc = -1.0
        if forecast is not None:
            f_exp, f_lo, f_hi = (_clean(v) for v in forecast)
            fc_half = 0.5 * abs(f_hi - f_lo)
            if fc_half <= floor:
                fc_half = floor
            r_fc = abs(x - f_exp) / fc_half
            s_fc = r_fc if r_fc < _MAX_SURPRISE else _MAX_SURPRISE
            expected, half = f_exp, fc_half
        if self.n < self.warmup:
            return 0.0, "", expected, half, dist, s_nov, s_fc
        best, reason = 0.0, ""
        if s_nov == s_nov:
            best, reason = self._lik_novelty.score_one(s_nov), "novelty"
        if s_fc >= 0.0 and self._lik_forecast.n >= self.warmup:
            sc = self._lik_forecast.score_one(s_fc)
            if sc > best:
                best, reason = sc, "forecast"
        sc = self._spatial(x)
        if sc > best:
            best, reason = sc, "spatial"
        sc = self._flatline(x)
        if sc > best:
            best, reason = sc, "flatline"
        if best < 1e-6:
            reason = ""
        return best, reason, expected, half, dist, s_nov, s_fc

    def _verdict(self, ev: _Evaluation, score: float, armed: bool, warming: bool) -> AnomalyScore:
        likelihood, reason, expected, half = ev[0], ev[1], ev[2], ev[3]
        in_anomaly = likelihood >= self.threshold
        return AnomalyScore(
            score,
            in_anomaly and armed,
            in_anomaly,
            expected,
            expected - half,
            expected + half,
            reason,
            warming,
            likelihood,
        )

    def _missing(self, forecast: tuple[float, float, float] | None) -> AnomalyScore:
        expected = self._level
        half = self.band_sigma * _MAD_TO_SIGMA * self._level_scale
        if forecast is not None:
            expected = _clean(forecast[0])
            half = 0.5 * abs(_clean(forecast[2]) - _clean(forecast[1]))
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
        ev = self._evaluate(ts_ms, _clean(x), forecast)
        score = self._onset.score_one(ev[0])
        return self._verdict(ev, score, self._episodes.armed, self.n < self.warmup)

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
        x = _clean(x)
        self._learn(ts_ms, x, self._evaluate(ts_ms, x, _usable(forecast)))

    def process_one(
        self,
        ts_ms: int,
        x: float,
        forecast: tuple[float, float, float] | None = None,
    ) -> AnomalyScore:
        """``score_one`` then ``learn_one`` on the same value, computing the surprises once.

        Same result and same final state as the two calls.
        """
        forecast = _usable(forecast)
        if x != x:
            return self._missing(forecast)
        x = _clean(x)
        armed, warming = self._episodes.armed, self.n < self.warmup
        ev = self._evaluate(ts_ms, x, forecast)
        score = self._onset.score_one(ev[0])
        self._learn(ts_ms, x, ev)
        return self._verdict(ev, score, armed, warming)

    def process_raw(
        self,
        ts_ms: int,
        x: float,
        forecast: tuple[float, float, float] | None = None,
    ) -> tuple[float, float, str, float, float] | None:
        """`process_one` without building its verdict.

        Returns ``(likelihood, score, reason, expected, half)`` (the range is
        ``expected ± half``), or None for a NaN ``x`` (nothing learned): for callers that
        make their own decisions from the likelihood (the engine, every series).
        """
        if x != x:
            return None
        x = _clean(x)
        ev = self._evaluate(ts_ms, x, _usable(forecast))
        score = self._onset.score_one(ev[0])
        self._learn(ts_ms, x, ev)
        return ev[0], score, ev[1], ev[2], ev[3]

    # ------------------------------------------------------------------ learning
    def _learn(self, ts_ms: int, x: float, ev: _Evaluation) -> None:
        likelihood, _, _, _, dist, s_nov, s_fc = ev
        threshold = self.threshold
        self._episodes.observe(likelihood >= threshold, likelihood < self.release * threshold)
        self._onset.learn_one(likelihood)
        if self.n >= _LEARN_FROM:  # before that, the surprises are not yet meaningful
            if s_nov == s_nov:
                cap = self.learn_cap
                self._lik_novelty.learn_one(s_nov if s_nov < cap else cap)
            if s_fc >= 0.0:
                self._lik_forecast.learn_one(s_fc)
        if self._gap(ts_ms):
            self._novelty.gap()
        self._novelty.learn_distance(x, dist)
        self._learn_step_ms(ts_ms)
        f = self.anomaly_learn_factor if likelihood >= self.threshold else 1.0
        self._learn_level(x, f)
        self._learn_flat(x)
        self.last_x = x
        self.last_ts = ts_ms
        self.n += 1

    def _learn_step_ms(self, ts_ms: int) -> None:
        if self.step_ms or self.last_ts is None:
            return
        delta = float(ts_ms - self.last_ts)
        if delta <= 0.0:
            return
        if self._spacings is not None:
            self._spacings.append(int(delta))
            if len(self._spacings) == _SPACINGS:
                self._novelty.grow(memory_for(float(statistics.median(self._spacings))))
                self._spacings = None
        if self._step_est <= 0.0:
            self._step_est = delta
        elif delta > self._step_est:  # multiplicative running median of the spacing
            self._step_est *= 1.05
        elif delta < self._step_est:
            self._step_est /= 1.05

    def _learn_level(self, x: float, f: float) -> None:
        n = self.n
        if n == 0:
            self._level = x
            return
        resid = x - self._level
        scale = self._level_scale
        boot = n <= 5 or scale <= 1e-4 * abs(self._level) + 1e-12
        if boot:
            r = resid
        else:
            bound = self.clip * scale
            r = resid if -bound <= resid <= bound else math.copysign(bound, resid)
        a = self.level_alpha if n > 20 else max(self.level_alpha, 1.0 / (n + 1))
        self._level += a * r
        b = self.scale_alpha if n > 20 else max(self.scale_alpha, 1.0 / n)
        d = abs(r)
        if not boot and d > _SCALE_CLIP * scale:
            d = _SCALE_CLIP * scale
        self._level_scale = scale + f * b * (d - scale)

    def _learn_flat(self, x: float) -> None:
        if self.n == 0:
            return
        if x == self.last_x:
            self._run += 1
        else:
            run, second = self._run, self._second_run
            if run > self._max_run:
                self._second_run, self._max_run = self._max_run, run
            elif second is not None and run > second:
                self._second_run = run
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
