"""Learning the total's real forecast error, and checking that probabilities mean what they say.

Why
---
The split normals of `app.core.conflicts.demand` assume a shape (normal), a dependence between
subsystems (one ``rho``) and a level of error (the forecasters' intervals). On bursty real load
all three are wrong in ways no constant fixes: errors are heavy-tailed, subsystems burst
together, and the error level changes with the regime (a quiet night, a batch window). What
the predictor *can* see is how wrong the summed forecast actually was, window after window. So
it keeps that:

`ErrorPaths`
    For every origin, the standardised error path of the total, ``z_h = (actual total at h -
    centre_h) / scale_h`` for h = 1..H. The last ``capacity`` complete paths are kept
    (float32, ~32 KB), newest weighted most (half-life ``half_life`` paths, so a regime
    change shows within hours). P(breach by h) is the weighted share of kept paths that,
    replayed on today's centre and scale, cross capacity at some horizon <= h: the
    dependence between subsystems, the tails and the dependence across horizons are the
    observed ones, not assumed. While few paths are known the parametric answer is blended
    in. The predictor keeps two sets, around two centres: the summed forecasts (scale: the
    split normal's sigma, so a path learnt in a quiet regime transfers to a busy one) and the
    EWMA of the actual total (scale 1).
`ExpertMix`
    Mixes the two answers by exponential weights on their recent Brier loss: the centre that
    has predicted breaches better lately counts most.
`Calibrator`
    Online isotonic recalibration of the mixed P(breach within H) from what came true.
`Reliability`
    What a probability is worth: every judged P(breach within H windows) is kept until its H
    windows have been seen, then counted in its bin (predicted vs observed frequency, count)
    and in the Brier score. The backtest writes it to ``metrics.json``.

Pure and deterministic: event time only (window indexes), numpy arrays in fixed order, plain
picklable state.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
_Z_LIMIT = 1e30  # beyond any real error, within float32


@dataclass(slots=True)
class _Pending:
    """A forecast of the total made at window index ``origin``, waiting for its actuals."""

    origin: int
    mean: FloatArray
    scale: FloatArray
    z: FloatArray  # NaN until the window is seen


@dataclass(slots=True)
class ErrorPaths:
    """The total's recent standardised forecast-error paths (see the module docstring)."""

    horizon: int
    capacity: int = 0  # 0: as many as ~32 KB of float32 holds, at most 1000, at least 50
    half_life: float = 500.0
    prior_paths: float = 50.0
    paths: FloatArray = field(init=False)
    ages: npt.NDArray[np.int64] = field(init=False)  # origin index of each kept path
    count: int = 0
    next_slot: int = 0
    pending: deque[_Pending] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.capacity < 0:
            raise ValueError("horizon must be >= 1 and capacity >= 0")
        if self.capacity == 0:  # the state rides in stage 2's checkpoints: keep it small
            self.capacity = max(50, min(1000, 8192 // self.horizon))
        self.paths = np.zeros((self.capacity, self.horizon), dtype=np.float32)
        self.ages = np.zeros(self.capacity, dtype=np.int64)

    def observe(self, window: int, actual_total: float) -> None:
        """The actual total of window index ``window``: fill every pending path aimed at it."""
        done = 0
        for item in self.pending:
            h = window - item.origin  # 0-based horizon of this window for that origin
            if 0 <= h < self.horizon:
                scale = float(item.scale[h])
                z = (actual_total - float(item.mean[h])) / scale if scale > 0.0 else 0.0
                # Paths are float32: values near the accepted ±1e100 must not overflow them.
                item.z[h] = 0.0 if math.isnan(z) else min(_Z_LIMIT, max(-_Z_LIMIT, z))
            if window - item.origin >= self.horizon - 1:
                done += 1
        for _ in range(done):
            item = self.pending.popleft()
            if not np.isnan(item.z).any():
                self.paths[self.next_slot] = item.z
                self.ages[self.next_slot] = item.origin
                self.next_slot = (self.next_slot + 1) % self.capacity
                self.count = min(self.count + 1, self.capacity)

    def expect(self, origin: int, mean: Sequence[float], scale: Sequence[float]) -> None:
        """Remember the forecast of the total made at window index ``origin`` (first target)."""
        if len(mean) != self.horizon or len(scale) != self.horizon:
            return  # a shorter forecast (a contributor's shorter horizon): not comparable
        while self.pending and self.pending[0].origin + self.horizon <= origin:
            self.pending.popleft()  # its windows were never all seen (a gap): drop it
        self.pending.append(
            _Pending(
                origin,
                np.asarray(mean, dtype=np.float64),
                np.asarray(scale, dtype=np.float64),
                np.full(self.horizon, np.nan),
            )
        )

    def breach_by(
        self,
        origin: int,
        mean: Sequence[float],
        scale: Sequence[float],
        capacity: float,
        parametric: Sequence[float],
    ) -> list[float]:
        """P(the total exceeds ``capacity`` in at least one window of horizons 1..h), per h.

        The weighted share of kept paths that cross, blended with ``parametric`` (the same
        probabilities from the split normals) with weight ``prior_paths`` against the paths'
        effective count, so an empty history gives the parametric answer.
        """
        h_max = len(mean)
        weighed = self._weighed(origin)
        if weighed is None or h_max == 0:
            return list(parametric)
        weights, total_weight, blend = weighed
        paths = self.paths[: self.count, :h_max]
        level = np.asarray(mean, dtype=np.float64) + paths.astype(np.float64) * np.asarray(
            scale, dtype=np.float64
        )
        crossed = np.logical_or.accumulate(level > capacity, axis=1)
        # Not ``weights @ crossed``: a BLAS product's rounding depends on the CPU's kernel.
        empirical = (weights[:, None] * crossed).sum(axis=0) / total_weight
        out = blend * empirical + (1.0 - blend) * np.asarray(parametric, dtype=np.float64)
        return [min(1.0, max(0.0, float(p))) for p in out]

    def _weighed(self, origin: int) -> tuple[FloatArray, float, float] | None:
        """The kept paths' weights at ``origin`` (newest most), their sum, and the share the
        paths get against the parametric answer (their effective count against
        ``prior_paths``); None when there are none, or all are too old to weigh (underflow)."""
        weights = np.exp2((self.ages[: self.count] - origin) / self.half_life)
        squares = float((weights * weights).sum())
        if self.count == 0 or squares == 0.0:
            return None
        total_weight = float(weights.sum())
        effective = total_weight * total_weight / squares
        return weights, total_weight, effective / (effective + self.prior_paths)

    def quantiles(self, origin: int, q: float, parametric: float) -> list[float]:
        """Per horizon, the weighted ``q``-quantile of the kept standardised errors, blended
        with ``parametric`` (the split normal's answer) as `breach_by` blends: the total's
        upper bound is ``centre + quantile * scale``, as wide as the total's own errors have
        been, not as the contributors' intervals added up under an assumed dependence say.

        >>> paths = ErrorPaths(horizon=2, prior_paths=0.0)
        >>> for origin in range(100):
        ...     paths.expect(origin, [0.0, 0.0], [1.0, 1.0])
        ...     paths.observe(origin, float(origin % 10))  # errors 0..9 at horizon 1
        >>> [round(z) for z in paths.quantiles(100, 0.9, 1.28)][:1]
        [8]
        """
        weighed = self._weighed(origin)
        if weighed is None:
            return [parametric] * self.horizon
        weights, total_weight, blend = weighed
        paths = self.paths[: self.count].astype(np.float64)
        order = np.argsort(paths, axis=0, kind="stable")  # per horizon, smallest first
        cum = np.cumsum(weights[order], axis=0)
        out = []
        for h in range(self.horizon):
            at = min(int(np.searchsorted(cum[:, h], q * total_weight)), self.count - 1)
            z = float(paths[order[at, h], h])
            out.append(blend * z + (1.0 - blend) * parametric)
        return out


@dataclass(slots=True)
class ExpertMix:
    """Exponentially weighted average of several P(breach within H) (the Hedge forecaster).

    Each expert's resolved squared errors (its Brier loss) are summed, the older ones fading
    with half-life ``half_life`` resolved predictions; the mix weighs expert k by
    ``exp(-eta * loss_k)``. For the squared loss of probabilities of 0/1 outcomes ``eta =
    1/2`` is the exp-concave rate for which the mix does nearly as well as the best expert in
    hindsight; fading lets the best expert change with the regime.

    Examples
    --------
    >>> mix = ExpertMix(horizon=1, experts=2)
    >>> mix.combine([0.2, 0.8])
    0.5
    >>> for t in range(200):
    ...     mix.predict(t, [0.9, 0.1]); _ = mix.observe(t, False)
    >>> round(mix.combine([0.9, 0.1]), 3)  # the second expert was right
    0.1
    """

    horizon: int
    experts: int
    eta: float = 0.5
    half_life: float = 2000.0
    loss: list[float] = field(default_factory=list)
    watches: list[BreachWatch] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.experts < 1:
            raise ValueError("experts must be >= 1")
        self.loss = self.loss or [0.0] * self.experts
        self.watches = self.watches or [BreachWatch(self.horizon) for _ in range(self.experts)]

    def weights(self) -> list[float]:
        best = min(self.loss)
        raw = [math.exp(-self.eta * (loss - best)) for loss in self.loss]
        total = math.fsum(raw)
        return [w / total for w in raw]

    def combine(self, probabilities: Sequence[float]) -> float:
        return math.fsum(w * p for w, p in zip(self.weights(), probabilities, strict=True))

    def combine_paths(self, paths: Sequence[Sequence[float]]) -> list[float]:
        """The mix at every horizon (the same weights: a non-decreasing curve stays one)."""
        weights = self.weights()
        return [
            math.fsum(w * p for w, p in zip(weights, column, strict=True))
            for column in zip(*paths, strict=True)
        ]

    def predict(self, origin: int, probabilities: Sequence[float]) -> None:
        for watch, p in zip(self.watches, probabilities, strict=True):
            watch.predict(origin, p)

    def observe(self, window: int, breach: bool) -> int:
        resolved = 0
        for k, watch in enumerate(self.watches):
            done = watch.observe(window, breach)
            if done:
                fade = 0.5 ** (len(done) / self.half_life)
                self.loss[k] = self.loss[k] * fade + math.fsum((p - hit) ** 2 for p, hit in done)
            resolved = max(resolved, len(done))
        return resolved


# --------------------------------------------------------------------------- reliability


@dataclass(slots=True)
class BreachWatch:
    """Probabilities of "a breach within ``horizon`` windows", held until the answer is known.

    `predict` takes the probability judged at window index ``origin`` for windows ``origin ..
    origin + horizon - 1``; `observe` takes each window's breach flag, in window order, and
    returns the (probability, outcome) pairs whose last window that was. A prediction whose
    last window is never seen (a gap, the end of the input) is dropped.
    """

    horizon: int
    pending: deque[tuple[int, float, bool]] = field(default_factory=deque)

    def predict(self, origin: int, probability: float) -> None:
        while self.pending and self.pending[0][0] + self.horizon <= origin:
            self.pending.popleft()  # never saw its last window
        self.pending.append((origin, min(1.0, max(0.0, probability)), False))

    def observe(self, window: int, breach: bool) -> list[tuple[float, bool]]:
        if breach:
            for k, (origin, p, hit) in enumerate(self.pending):
                if origin <= window < origin + self.horizon and not hit:
                    self.pending[k] = (origin, p, True)
        resolved = []
        while self.pending and self.pending[0][0] + self.horizon - 1 <= window:
            origin, p, hit = self.pending.popleft()
            if origin + self.horizon - 1 == window:
                resolved.append((p, hit))
        return resolved


@dataclass(slots=True)
class Calibrator:
    """Online recalibration of P(breach within H windows): what past probabilities came true.

    Resolved (raw probability, outcome) pairs are counted in ``bins`` equal bins of the raw
    probability, older ones fading with half-life ``half_life`` pairs; each bin starts with
    ``prior`` pseudo-pairs at its own centre (so an untrained calibrator is the identity).
    The bins' observed frequencies are made non-decreasing by pool-adjacent-violators
    (isotonic regression); `apply` moves a raw probability by the fitted correction at the
    bin centres: a monotone map, so a curve of cumulative probabilities stays non-decreasing.

    Examples
    --------
    >>> cal = Calibrator(horizon=1, bins=4, prior=1.0)
    >>> cal.apply(0.6), cal.apply(1.0)
    (0.6, 1.0)
    >>> for _ in range(50):
    ...     cal.predict(0, 0.6); _ = cal.observe(0, False)
    >>> cal.apply(0.6) < 0.1
    True
    """

    horizon: int
    bins: int = 20
    prior: float = 5.0
    half_life: float = 2000.0
    weight: list[float] = field(default_factory=list)
    hits: list[float] = field(default_factory=list)
    watch: BreachWatch = field(init=False)
    _map: list[float] = field(init=False)

    def __post_init__(self) -> None:
        if self.bins < 2 or self.prior <= 0.0 or self.half_life <= 0.0:
            raise ValueError("bins must be >= 2, prior and half_life > 0")
        centres = (np.arange(self.bins) + 0.5) / self.bins
        self.weight = self.weight or [self.prior] * self.bins
        self.hits = self.hits or [self.prior * float(c) for c in centres]
        self.watch = BreachWatch(self.horizon)
        self._refit()

    def predict(self, origin: int, raw: float) -> None:
        self.watch.predict(origin, raw)

    def observe(self, window: int, breach: bool) -> int:
        """Learn from the pairs resolved by window ``window``; return how many."""
        resolved = self.watch.observe(window, breach)
        if resolved:
            fade = 0.5 ** (len(resolved) / self.half_life)
            centres = (np.arange(self.bins) + 0.5) / self.bins
            for b in range(self.bins):  # fade towards the prior, not towards nothing
                self.weight[b] = self.prior + (self.weight[b] - self.prior) * fade
                self.hits[b] = (
                    self.prior * float(centres[b])
                    + (self.hits[b] - self.prior * float(centres[b])) * fade
                )
            for p, hit in resolved:
                b = min(self.bins - 1, int(p * self.bins))
                self.weight[b] += 1.0
                self.hits[b] += float(hit)
            self._refit()
        return len(resolved)

    def _refit(self) -> None:
        """Pool adjacent violators over the bins' frequencies, weighted by their counts."""
        blocks: list[list[float]] = []  # [hits, weight, bins in block]
        for h, w in zip(self.hits, self.weight, strict=True):
            blocks.append([h, w, 1.0])
            while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
                h2, w2, n2 = blocks.pop()
                blocks[-1][0] += h2
                blocks[-1][1] += w2
                blocks[-1][2] += n2
        values: list[float] = []
        for h, w, n in blocks:
            values.extend([h / w] * int(n))
        self._map = values

    def apply(self, raw: float) -> float:
        """The calibrated probability of a raw one.

        ``raw`` plus the correction at the bin centres (fitted frequency − centre),
        interpolated linearly: exactly the identity while untrained, the fitted frequency at
        each centre, and non-decreasing in ``raw`` (the fitted frequencies are, and the
        correction falls by at most the centres' spacing from one centre to the next).
        """
        raw = min(1.0, max(0.0, raw))
        x = raw * self.bins - 0.5
        lo = min(self.bins - 2, max(0, math.floor(x)))
        frac = min(1.0, max(0.0, x - lo))
        below = self._map[lo] - (lo + 0.5) / self.bins
        above = self._map[lo + 1] - (lo + 1.5) / self.bins
        return min(1.0, max(0.0, raw + below * (1.0 - frac) + above * frac))


@dataclass(slots=True)
class Reliability:
    """Reliability table and Brier score of P(breach within ``horizon`` windows).

    `predict` takes the probability judged at window index ``origin`` for windows
    ``origin .. origin + horizon - 1``; `observe` takes each window's breach flag, in window
    order. A prediction is scored when its last window is seen (outcome: a breach in any of
    its windows); one whose last window is never seen (the end of the input) is not scored.

    Examples
    --------
    >>> r = Reliability(horizon=2, bins=2)
    >>> r.predict(0, 0.8); r.observe(0, False); r.predict(1, 0.2); r.observe(1, True)
    >>> r.predict(2, 0.9); r.observe(2, False); r.observe(3, False)
    >>> top = r.as_dict()["bins"][1]
    >>> top["count"], round(top["mean_predicted"], 3), top["observed_frequency"]
    (2, 0.85, 0.5)
    >>> round(r.as_dict()["brier"], 4)  # ((0.8-1)^2 + (0.2-1)^2 + (0.9-0)^2) / 3
    0.4967
    """

    horizon: int
    bins: int = 10
    count: list[int] = field(default_factory=list)
    sum_predicted: list[float] = field(default_factory=list)
    hits: list[int] = field(default_factory=list)
    squared_error: float = 0.0
    scored: int = 0
    watch: BreachWatch = field(init=False)

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.bins < 1:
            raise ValueError("horizon and bins must be >= 1")
        self.count = self.count or [0] * self.bins
        self.sum_predicted = self.sum_predicted or [0.0] * self.bins
        self.hits = self.hits or [0] * self.bins
        self.watch = BreachWatch(self.horizon)

    def predict(self, origin: int, probability: float) -> None:
        self.watch.predict(origin, probability)

    def observe(self, window: int, breach: bool) -> None:
        """Window index ``window`` was seen, with or without a breach."""
        for p, hit in self.watch.observe(window, breach):
            self._score(p, hit)

    def _score(self, p: float, hit: bool) -> None:
        b = min(self.bins - 1, int(p * self.bins))
        self.count[b] += 1
        self.sum_predicted[b] += p
        self.hits[b] += hit
        self.squared_error += (p - float(hit)) ** 2
        self.scored += 1

    def as_dict(self) -> dict[str, Any]:
        """``{"scored", "brier", "base_rate", "bins": [{from, to, count, mean_predicted,
        observed_frequency}]}``; None where nothing was scored."""
        return reliability_dict([self])


def reliability_dict(parts: Sequence[Reliability]) -> dict[str, Any]:
    """Pool several `Reliability` (same bins) into the ``metrics.json`` block."""
    bins = parts[0].bins if parts else 10
    count = [sum(r.count[b] for r in parts) for b in range(bins)]
    pred = [math.fsum(r.sum_predicted[b] for r in parts) for b in range(bins)]
    hits = [sum(r.hits[b] for r in parts) for b in range(bins)]
    scored = sum(r.scored for r in parts)
    rows = [
        {
            "from": b / bins,
            "to": (b + 1) / bins,
            "count": count[b],
            "mean_predicted": pred[b] / count[b] if count[b] else None,
            "observed_frequency": hits[b] / count[b] if count[b] else None,
        }
        for b in range(bins)
    ]
    return {
        "scored": scored,
        "brier": math.fsum(r.squared_error for r in parts) / scored if scored else None,
        "base_rate": sum(hits) / scored if scored else None,
        "bins": rows,
    }
