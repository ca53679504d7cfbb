"""Numenta-style anomaly likelihood: calibrate a stream of raw surprise values.

Raw residual scores are poorly calibrated across series: a surprise of 4 is routine on a
bursty CPU series and unheard of on a smooth temperature. Ahmad et al. (Neurocomputing
2017) fix this by averaging the recent raw scores over a short window and reporting the
tail probability of that average under the long-run distribution of such averages,
log-scaled so that one threshold works for a whole fleet. This module does exactly that
with O(1) state: an exponentially weighted short average, and exponentially weighted
mean/variance of those averages as the long-run distribution.
"""

from __future__ import annotations

import math

__all__ = ["AnomalyLikelihood", "log_tail_score"]

_TAIL_FLOOR = 1e-10
_LOG_TAIL_FLOOR = math.log(_TAIL_FLOOR)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_BOOT = 50  # averages seen before the tail model leaves its Gaussian bootstrap
_A_BETA = 0.05  # smoothing of the mean excess, per run of exceedances (~20 runs memory)
_RUN_LEARN = 6  # points of a run of exceedances that may still raise the quantile
# ...and after this many in a row (a chance of 0.02^100 under the model) the model is wrong,
# not the data: the quantile learns from every point again until the run ends
_RUN_RECALIBRATE = 100
_Q_RATE = 0.6  # step of the quantile tracker, in units of beta


def log_tail_score(z: float) -> float:
    """Log-scaled upper-tail probability of a standard normal deviate ``z``, in [0, 1].

    ``0.5`` means a tail probability of 1e-5 and ``1.0`` one of 1e-10 or less. The log scale
    is what spreads the interesting region (likelihood 0.999 .. 0.9999999999) over [0, 1].

    Examples
    --------
    >>> round(log_tail_score(0.0), 3)
    0.03
    >>> log_tail_score(50.0)
    1.0
    """
    tail = 0.5 * math.erfc(z * _INV_SQRT2)
    score = math.log(tail + _TAIL_FLOOR) / _LOG_TAIL_FLOOR
    if score < 0.0:
        return 0.0
    if score > 1.0:
        return 1.0
    return score


class AnomalyLikelihood:
    """Turn raw surprise values (>= 0, larger = more surprising) into a score in [0, 1].

    The short average of surprises is compared with its own long-run distribution. A
    Gaussian on that distribution (Numenta's choice) is far too optimistic on bursty
    telemetry, where averages are heavy-tailed: every routine CPU burst would alarm. So
    the upper tail is modelled peaks-over-threshold style (SPOT, Siffer et al. KDD 2017):
    a tracked high quantile ``q`` of the averages and an exponential tail above it whose
    scale ``beta`` is the mean excess over ``q``. O(1) state, and the tail extrapolates
    beyond anything seen (a Gaussian-noise series still alarms on a 10-sigma event).

    Parameters
    ----------
    short_window
        Span of the exponentially weighted short average of raw surprises. A few points:
        long enough that one noisy point does not alarm, short enough to react early.
    long_window
        Memory (in points) of the long-run distribution of short averages.
    tail_mass
        Probability mass above the tracked quantile ``q`` (0.02: the 98th percentile).
    min_beta
        Floor on the tail scale: on a perfectly flat series every average is 0 and any
        change would otherwise be infinitely surprising.

    Examples
    --------
    >>> lik = AnomalyLikelihood(short_window=4)
    >>> for i in range(300):
    ...     lik.learn_one(1.0 + 0.3 * ((i * 7919) % 11 - 5) / 5)
    >>> lik.score_one(1.0) < 0.1
    True
    >>> lik.score_one(30.0) > 0.9
    True
    """

    __slots__ = (
        "_a_short",
        "avg",
        "beta",
        "long_window",
        "mean",
        "min_beta",
        "n",
        "peak",
        "q",
        "run",
        "short_window",
        "tail_mass",
        "var",
    )

    def __init__(
        self,
        short_window: int = 6,
        long_window: int = 2000,
        tail_mass: float = 0.02,
        min_beta: float = 0.02,
    ) -> None:
        self.short_window = short_window
        self.long_window = long_window
        self.tail_mass = tail_mass
        self.min_beta = min_beta
        self._a_short = 2.0 / (short_window + 1.0)
        self.n = 0
        self.avg = 0.0
        self.mean = 0.0
        self.var = 0.0
        self.q = 0.0
        self.beta = 0.0
        self.run = 0
        self.peak = 0.0

    def __getstate__(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state: dict[str, float | int]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def _short_avg(self, surprise: float) -> float:
        if self.n == 0:
            return surprise
        return self.avg + self._a_short * (surprise - self.avg)

    def tail(self, avg: float) -> float:
        """Estimated probability that a short average exceeds ``avg``."""
        beta = self.beta if self.beta > self.min_beta else self.min_beta
        e = (avg - self.q) / beta
        if e <= 0.0:
            return 1.0 if e < -50.0 else min(1.0, self.tail_mass * math.exp(-e))
        return self.tail_mass * math.exp(-e) if e < 700.0 else 0.0

    def score_one(self, surprise: float) -> float:
        """Log-scaled likelihood that ``surprise`` (with the recent ones) is anomalous.

        Pure: the state is not changed, so scoring twice gives the same answer.
        """
        if self.n < 2:
            return 0.0
        score = math.log(self.tail(self._short_avg(surprise)) + _TAIL_FLOOR) / _LOG_TAIL_FLOOR
        return score if score > 0.0 else 0.0

    def learn_one(self, surprise: float, weight: float = 1.0) -> None:
        """Fold ``surprise`` into the short average and the long-run tail model.

        ``weight`` (0..1] scales the long-run update: the caller lowers it while the series
        is anomalous, so one incident does not make the next one look normal.
        """
        self._learn_avg(self._short_avg(surprise), weight)

    def step(self, surprise: float, score: bool, learn: bool) -> float:
        """`score_one` (if ``score``, else 0.0) then `learn_one` (if ``learn``), in one call.

        The short average is computed once: the detector's hot path, same numbers as the two.
        """
        n = self.n
        avg = surprise if n == 0 else self.avg + self._a_short * (surprise - self.avg)
        result = 0.0
        if score and n >= 2:
            beta = self.beta if self.beta > self.min_beta else self.min_beta
            e = (avg - self.q) / beta
            if e <= 0.0:
                tail = 1.0 if e < -50.0 else min(1.0, self.tail_mass * math.exp(-e))
            else:
                tail = self.tail_mass * math.exp(-e) if e < 700.0 else 0.0
            sc = math.log(tail + _TAIL_FLOOR) / _LOG_TAIL_FLOOR
            result = sc if sc > 0.0 else 0.0
        if learn:
            self._learn_avg(avg, 1.0)
        return result

    def _learn_avg(self, avg: float, weight: float) -> None:
        self.avg = avg
        self.n += 1
        a = 1.0 / self.n
        if a < 1.0 / self.long_window:
            a = 1.0 / self.long_window
        a *= weight
        delta = avg - self.mean
        self.mean += a * delta
        self.var = (1.0 - a) * (self.var + a * delta * delta)
        sd = math.sqrt(self.var)
        if self.n <= _BOOT:
            # Gaussian bootstrap: the 98th percentile and the mean excess above it
            self.q = self.mean + 2.054 * sd
            self.beta = 0.3755 * sd
            return
        beta = self.beta if self.beta > self.min_beta else self.min_beta
        if avg > self.q:
            # runs declustering: a run of exceedances is one extreme event; it moves the
            # quantile only for its first few points and the tail scale once, when it
            # ends, so a long incident does not teach the model that incidents are normal
            # (but a run past _RUN_RECALIBRATE is a miscalibrated model: it learns again)
            self.run += 1
            if avg > self.peak:
                self.peak = avg
            if self.run <= _RUN_LEARN or self.run > _RUN_RECALIBRATE:
                self.q += weight * _Q_RATE * beta * (1.0 - self.tail_mass)
            return
        if self.run:
            excess = self.peak - self.q
            if excess > 5.0 * beta:
                excess = 5.0 * beta
            if excess > 0.0:
                self.beta += weight * _A_BETA * (excess - self.beta)
            self.run = 0
            self.peak = 0.0
        self.q -= weight * _Q_RATE * beta * self.tail_mass
