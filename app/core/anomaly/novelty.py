"""Pattern novelty: how far the newest two values lie from every recent pair of values.

Why: on real telemetry the anomalies operators label are mostly *novel behaviour* — a jump,
a drop, a level or a spike shape the series has not shown lately — while routine bursts,
however large, recur. A nearest-neighbour distance in the space of consecutive pairs
``(x[t-1], x[t])`` (KNN-CAD's idea, Burnaev & Ishimtsev 2016, on the shortest shingle)
measures exactly that: a pair that lies near pairs seen in the last ``memory`` values is
familiar, one far from all of them is new. Measured on the validation corpus
(``bench/anomaly_quality.py``), it beat every residual-of-a-predictor surprise (level,
previous value, time-of-day profile) and their max, on server metrics most of all.

The distance is made scale-free by dividing it by the larger of its own typical size (a
clipped exponential average, so a burst barely moves it) and a floor: a series whose normal
jitter is tiny next to its range (a smooth daily cycle) is not alarmed by jitter. The floor
is the larger of ``range_floor`` (3 %) times the *spread* of the remembered values (their
1st to 99th percentile, by rank) and ``full_range_floor`` (1 %) times the range seen so far. On a
series whose values fill their range that is 3 % of the range, as it always was; on a spiky
series (crash rates, latencies), whose spikes make the range while the spread stays narrow,
it falls to as little as 1 % of the range: a floor of 3 % of the range hid every change of
its normal level (decision 0014). "The range seen" leaves out the single most extreme value
on each side (`robust_range`): one glitch — a counter reset, a unit error, a value of 10^6 on
a latency of 100 — would otherwise set the floor, and blind the detector, for the rest of the
series' life; a spike that recurs still counts.

The result is a *surprise* (0 = seen before, 1 = a typical distance, 50 = far off);
:class:`~app.core.anomaly.likelihood.AnomalyLikelihood` turns it into a calibrated score.

Cost: one compiled pass over ``memory`` values (about 1-2 µs for 1000) and ``memory`` floats
of state.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
from numba import types as nt

__all__ = ["PatternNovelty", "kth_pair_distance"]

_MAX_SURPRISE = 1000.0
_MIN_PAIRS = 10  # pairs to compare with before any surprise is reported
_SPREAD_EVERY = 64  # values stored between recomputations of the spread (8 for the first 64)
_FULL_RANGE_FLOOR = 0.01
_SPREAD_PERCENTILES = (1.0, 99.0)
_EXCLUDED = 2  # newest stored pairs left out: one overlaps the current pair


@numba.njit(
    nt.UniTuple(nt.float64, 4)(  # type: ignore[no-untyped-call]
        nt.float64[::1],
        nt.int64,
        nt.int64,
        nt.float64,
        nt.float64,
        nt.float64,
        nt.float64,
        nt.float64,
    ),
    cache=True,
)
def _scan(
    ring: Any, lo: int, hi: int, prev: float, x: float, b0: float, b1: float, b2: float
) -> tuple[float, float, float, float]:
    """The three smallest squared distances so far, updated with the pairs ending at
    ``lo .. hi - 1`` (pair ``(ring[p - 1], ring[p])``); also how many pairs were compared."""
    seen = 0.0
    for p in range(lo, hi):
        da = ring[p - 1] - prev
        db = ring[p] - x
        d2 = da * da + db * db
        if d2 != d2:
            continue  # a gap marker: the pair is skipped
        seen += 1.0
        if d2 < b2:
            if d2 < b1:
                b2 = b1
                if d2 < b0:
                    b1 = b0
                    b0 = d2
                else:
                    b1 = d2
            else:
                b2 = d2
    return b0, b1, b2, seen


@numba.njit(
    nt.float64(nt.float64[::1], nt.int64, nt.int64, nt.float64, nt.float64, nt.int64),
    cache=True,
)
def kth_pair_distance(ring: Any, count: int, head: int, prev: float, x: float, k: int) -> float:
    """The ``k``-th smallest distance from ``(prev, x)`` to the stored consecutive pairs.

    ``ring`` holds the last ``count`` values, the newest at ``head - 1`` (circularly; a NaN
    marks a gap, and pairs touching it are skipped). The two newest pairs are left out (the
    newest shares ``prev`` with the current pair). Returns NaN when fewer than ``k`` pairs
    could be compared.
    """
    size = ring.shape[0]
    inf = math.inf
    # A pair is named by the index p of its second value (its first is p - 1, or size - 1
    # for p = 0). Left out: the pairs ending at head - 1 and head - 2 (the newest), and, once
    # the ring is full, the one ending at head (it would join the newest value to the oldest).
    if count < size:  # values at 0 .. count - 1, oldest first
        b0, b1, b2, seen = _scan(ring, 1, count - _EXCLUDED, prev, x, inf, inf, inf)
    elif head >= _EXCLUDED:
        b0, b1, b2, seen = _scan(ring, 1, head - _EXCLUDED, prev, x, inf, inf, inf)
        b0, b1, b2, more = _scan(ring, head + 1, size, prev, x, b0, b1, b2)
        seen += more
        if head > _EXCLUDED:  # the pair (ring[size - 1], ring[0]) is old enough
            da = ring[size - 1] - prev
            db = ring[0] - x
            d2 = da * da + db * db
            if d2 == d2:
                seen += 1.0
                if d2 < b2:
                    b2 = d2
                    if b2 < b1:
                        b1, b2 = b2, b1
                        if b1 < b0:
                            b0, b1 = b1, b0
    else:  # head is 0 or 1: the newest pairs wrap around the end of the ring
        b0, b1, b2, seen = _scan(ring, head + 1, size - _EXCLUDED + head, prev, x, inf, inf, inf)
    if seen < k:
        return math.nan
    if k == 1:
        return math.sqrt(b0)
    if k == 2:
        return math.sqrt(b1)
    return math.sqrt(b2)


class PatternNovelty:
    """Novelty of the pair (previous value, value) against the last ``memory`` values.

    River-shaped: ``score_one`` (pure) then ``learn_one``; ``step`` does both, computing the
    distance once. Scores are surprises >= 0 (NaN while there is too little memory).

    Parameters
    ----------
    memory
        Values remembered (the pairs compared are consecutive ones among them).
    k
        The surprise uses the distance to the ``k``-th nearest pair (1..3): one earlier
        accident does not make a pattern familiar.
    range_floor
        The distance scale is at least this fraction of the spread of the remembered values
        (1st to 99th percentile).
    full_range_floor
        ... and at least this fraction of the range of values seen so far, without the most
        extreme one on each side (`robust_range`).
    alpha
        Smoothing of the typical distance (an exponential average of clipped distances).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(7)
    >>> nov = PatternNovelty(memory=200)
    >>> for _ in range(300):
    ...     _ = nov.step(10.0 + rng.gauss(0.0, 0.1))
    >>> nov.score_one(10.05) < 3.0
    True
    >>> nov.score_one(14.0) > 20.0
    True
    """

    __slots__ = (
        "alpha",
        "count",
        "full_range_floor",
        "head",
        "hi",
        "hi2",
        "k",
        "lo",
        "lo2",
        "range_floor",
        "ring",
        "seen",
        "spread",
        "stored",
        "typical",
    )

    def __init__(
        self,
        memory: int = 1000,
        k: int = 3,
        range_floor: float = 0.03,
        alpha: float = 0.02,
        full_range_floor: float = _FULL_RANGE_FLOOR,
    ) -> None:
        if not 1 <= k <= 3:
            raise ValueError("k must be 1, 2 or 3")
        if memory < _MIN_PAIRS + _EXCLUDED + 2:
            raise ValueError(f"memory must be at least {_MIN_PAIRS + _EXCLUDED + 2} values")
        self.k = k
        self.range_floor = range_floor
        self.full_range_floor = full_range_floor
        self.alpha = alpha
        self.ring = np.zeros(memory)
        self.count = 0
        self.head = 0
        self.typical = 0.0
        self.seen = 0
        self.lo = math.inf
        self.hi = -math.inf
        self.lo2 = math.inf  # the second-lowest and second-highest values seen
        self.hi2 = -math.inf
        self.spread = 0.0  # 1st to 99th percentile of the remembered values
        self.stored = 0

    def __getstate__(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a snapshot from before the spread keeps its floor: range_floor x the whole range
        # (the spread never exceeds the range, so the spread term cannot raise it)
        self.full_range_floor = float(state.get("range_floor", _FULL_RANGE_FLOOR))
        self.stored = 0
        self.spread = 0.0
        for k, v in state.items():
            setattr(self, k, v)
        if "hi2" not in state:  # a snapshot from before `robust_range` keeps its whole range
            self.lo2, self.hi2 = self.lo, self.hi

    def robust_range(self) -> tuple[float, float]:
        """The values seen so far without the most extreme one on each side: ``(lo, hi)``.

        >>> nov = PatternNovelty(memory=100)
        >>> for x in [5.0, 6.0, 1e6, 5.5, 4.0, 6.0]:
        ...     nov.learn_one(x)
        >>> nov.robust_range()  # the glitch (1e6) and the lowest value (4.0) left out
        (5.0, 6.0)
        """
        if self.hi2 < self.lo2:  # fewer than three values: nothing lies between the extremes
            return self.lo, self.hi
        return self.lo2, self.hi2

    def distance(self, x: float) -> float:
        """Distance from (last value learned, ``x``) to its ``k``-th nearest remembered pair;
        NaN when there is too little memory or the last thing learned was a gap."""
        if self.count < _MIN_PAIRS + _EXCLUDED + 1:
            return math.nan
        prev = float(self.ring[self.head - 1])
        if prev != prev:
            return math.nan  # right after a gap: there is no previous value to pair with
        return float(kth_pair_distance(self.ring, self.count, self.head, prev, x, self.k))

    def surprise(self, dist: float) -> float:
        """A ``distance`` in units of the typical one (at least ``range_floor`` × the spread
        and ``full_range_floor`` × the range)."""
        if dist != dist:
            return dist
        scale = self.typical
        floor = self.range_floor * self.spread
        lo, hi = self.robust_range()
        full = self.full_range_floor * (hi - lo)
        if full > floor:
            floor = full
        if floor > scale:
            scale = floor
        if scale > 0.0:
            s = dist / scale
            return s if s < _MAX_SURPRISE else _MAX_SURPRISE
        return 0.0 if dist == 0.0 else _MAX_SURPRISE

    def score_one(self, x: float) -> float:
        """Surprise of ``x`` following the last value learned; NaN when it cannot be judged."""
        return self.surprise(self.distance(x))

    def learn_one(self, x: float) -> None:
        """Remember ``x`` (and learn the typical distance from its pair)."""
        self.learn_distance(x, self.distance(x))

    def step(self, x: float) -> float:
        """``score_one`` then ``learn_one``, computing the distance once."""
        dist = self.distance(x)
        s = self.surprise(dist)
        self.learn_distance(x, dist)
        return s

    def grow(self, memory: int) -> None:
        """Remember up to ``memory`` values from now on (only before the ring first wraps:
        the caller sizes the memory once the series' spacing is known)."""
        size = self.ring.shape[0]
        if memory > size and self.count < size:
            ring = np.zeros(memory)
            ring[: self.count] = self.ring[: self.count]
            self.ring = ring

    def gap(self) -> None:
        """Mark a gap in the series: the next value is not paired with the one before it."""
        if self.count and self.ring[self.head - 1] == self.ring[self.head - 1]:
            self._store(math.nan)

    def _store(self, x: float) -> None:
        self.ring[self.head] = x
        self.head = (self.head + 1) % self.ring.shape[0]
        if self.count < self.ring.shape[0]:
            self.count += 1
        self.stored += 1
        if self.stored % (_SPREAD_EVERY if self.stored >= _SPREAD_EVERY else 8) == 0:
            self._update_spread()

    def _update_spread(self) -> None:
        """The 1st to 99th percentile by rank, never interpolated: with fewer than 100 values
        that is the second-lowest to the second-highest, so one early glitch (10^9 among
        values of 10) is left out. Interpolated, it set the floor for the first 128 values,
        the likelihood learnt its tail from surprises near 0, and every later value belonged
        to one endless run of exceedances."""
        values = self.ring[: self.count]
        values = values[values == values]  # gap markers out
        if values.size:
            low, high = _SPREAD_PERCENTILES
            lo = np.percentile(values, low, method="higher")
            hi = np.percentile(values, high, method="lower")
            self.spread = max(0.0, float(hi - lo))  # the ranks cross below 3 values

    def learn_distance(self, x: float, dist: float) -> None:
        """``learn_one`` given the ``distance`` of ``x`` already computed (the fused path)."""
        if dist == dist:
            t = self.typical
            if self.seen >= 5 and t > 0.0 and dist > 2.5 * t:
                dist = 2.5 * t  # a burst barely moves the typical distance
            a = max(self.alpha, 1.0 / (self.seen + 1))
            self.typical = t + a * (dist - t)
            self.seen += 1
        if x < self.lo2:
            if x < self.lo:
                self.lo2, self.lo = self.lo, x
            else:
                self.lo2 = x
        if x > self.hi2:
            if x > self.hi:
                self.hi2, self.hi = self.hi, x
            else:
                self.hi2 = x
        self._store(x)
