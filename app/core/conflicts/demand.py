"""The distribution of a shared resource's total demand, from its contributors' forecasts.

Distribution of the total (the dependence assumption)
-----------------------------------------------------
Each contributor at each horizon is approximated by a *split normal*: mean = its point
forecast (negative points clamped to 0: resource use is never negative), an upper sigma and a
lower sigma read from its interval quantiles (``(upper - point) / z`` with ``z`` the normal
quantile of the level; the largest implied sigma over the levels, so the normal is at least as
wide as every quantile the forecaster reported - fat tails make wider levels imply larger
sigmas, and the upper tail is what decides a conflict). A forecast without intervals falls
back to ``recent_error * sqrt(pi / 2)`` (the sigma of a normal with that mean absolute error).

Contributors are assumed *equicorrelated* with correlation ``rho``: the total is normal with
mean ``sum(mu)`` and ``sigma = sqrt((1 - rho) * sum(sigma**2) + rho * sum(sigma)**2)``, computed
separately for the upper and the lower side. ``rho = 0`` is independence (optimistic: errors
cancel), ``rho = 1`` is comonotonic (every subsystem is high at once). The default 0.3 reflects
that subsystems sharing a resource usually share load drivers (time of day, one upstream
campaign) without moving in lockstep.

What the threshold judges (``probability="any"``, the default)
--------------------------------------------------------------
Operators ask "will db-main run out in the next 15 minutes?", not "will minute 7 alone run
out?". So the probability of a conflict is P(the total exceeds capacity in *at least one*
window within the horizon), computed per horizon h as a cumulative ``breach_by[h]``: the
total's forecast error is split into a window-to-window part (the 1-step variance, independent
across windows) and a shared level error (the rest of each horizon's variance, fully
correlated across horizons), integrated out by Gauss-Hermite quadrature. A conflict opens when
``breach_by[H]`` reaches the threshold; ``expected_start`` is the first window by which a
breach is more likely than not. A demand hovering just under capacity for many windows — where
noise will poke above it — is thus predicted, while every single window's own probability
stays below one half. ``probability="per_horizon"`` judges each window alone instead.

Everything here is pure and deterministic: no clock (event time comes from ``origin_ms``),
contributors are always processed in sorted name order, and all state is plain picklable
dataclasses (seal it with `app.core.snapshot.seal`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from app.core.types import SeriesForecast

FloatArray = npt.NDArray[np.float64]
_SQRT2 = math.sqrt(2.0)
_MAE_TO_SIGMA = math.sqrt(math.pi / 2.0)


# --------------------------------------------------------------------------- distribution


@lru_cache(maxsize=64)
def level_z(level: float) -> float:
    """Normal quantile ``z`` such that ``[mu - z*sigma, mu + z*sigma]`` covers ``level``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"interval level must be in (0, 1), got {level!r}")
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def _gauss_hermite(n: int) -> tuple[tuple[float, float], ...]:
    """Nodes and weights integrating E[f(Z)] for Z ~ N(0, 1) (probabilists' Hermite)."""
    import numpy as np

    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    weights = weights / weights.sum()
    return tuple((float(x), float(w)) for x, w in zip(nodes, weights, strict=True))


_GAUSS_HERMITE = _gauss_hermite(9)


def exceedance_probability(
    mean: float, sigma_up: float, sigma_down: float, capacity: float
) -> float:
    """P(X > capacity) for a split normal with mode ``mean``.

    The upper sigma is used when capacity lies above the mean and the lower one below it, so
    the result is continuous at the mean (0.5) and non-increasing in ``capacity``. A zero
    sigma makes the answer a step: 1 above, 0 at or below.
    """
    gap = capacity - mean
    sigma = sigma_up if gap >= 0.0 else sigma_down
    if sigma <= 0.0:
        return 0.0 if gap >= 0.0 else 1.0
    return min(1.0, max(0.0, 0.5 * math.erfc(gap / (sigma * _SQRT2))))


def combine_sigmas(sigmas: Sequence[float], correlation: float) -> float:
    """Sigma of a sum of equicorrelated terms: ``sqrt((1-rho)·Σσ² + rho·(Σσ)²)``."""
    sum_sq = math.fsum(s * s for s in sigmas)
    total = math.fsum(sigmas)
    return math.sqrt(max(0.0, (1.0 - correlation) * sum_sq + correlation * total * total))


@dataclass(frozen=True, slots=True)
class MarginalPath:
    """One series at horizons 1..H as the predictor sees it: split normals plus bounds to show.

    ``lower``/``upper`` are the forecaster's own interval at the reporting level (or the point
    itself when it gave none): what a person reading the event should see.
    """

    mean: tuple[float, ...]
    sigma_up: tuple[float, ...]
    sigma_down: tuple[float, ...]
    point: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]


def require_finite(value: float, what: str) -> float:
    """``value`` as a float; ValueError naming ``what`` if it is not finite."""
    if not math.isfinite(value):
        raise ValueError(f"{what} is not finite ({value!r})")
    return float(value)


def _finite_array(values: Sequence[float], horizon: int, what: str) -> FloatArray:
    if len(values) < horizon:
        raise ValueError(f"{what} is shorter than horizon {horizon}")
    arr = np.asarray(values[:horizon], dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} has a non-finite value")
    return arr


def _report_level(levels: Sequence[float], wanted: float) -> float | None:
    """The level closest to ``wanted`` (ties: the wider one), or None if there is none."""
    if not levels:
        return None
    return min(sorted(levels), key=lambda lv: (abs(lv - wanted), -lv))


def marginal_path(
    forecast: SeriesForecast,
    horizon: int,
    *,
    report_level: float = 0.8,
    clamp_nonnegative: bool = True,
    name: str = "forecast",
) -> MarginalPath:
    """Split-normal approximation of ``forecast`` at horizons 1..``horizon``.

    Raises
    ------
    ValueError
        If a value is not finite or an interval is shorter than ``horizon``: a malformed
        forecast is a bug upstream, and guessing here could hide (or invent) a conflict.
    """
    point = _finite_array(forecast.point, horizon, f"{name}.point")
    mean = np.maximum(point, 0.0) if clamp_nonnegative else point
    sigma_up = np.zeros(horizon)
    sigma_down = np.zeros(horizon)
    for level in sorted(forecast.upper):
        bound = _finite_array(forecast.upper[level], horizon, f"{name}.upper[{level}]")
        sigma_up = np.maximum(sigma_up, np.maximum(bound - point, 0.0) / level_z(level))
    for level in sorted(forecast.lower):
        bound = _finite_array(forecast.lower[level], horizon, f"{name}.lower[{level}]")
        sigma_down = np.maximum(sigma_down, np.maximum(point - bound, 0.0) / level_z(level))
    if not forecast.upper and not forecast.lower:
        err = forecast.recent_error
        fallback = err * _MAE_TO_SIGMA if math.isfinite(err) and err > 0 else 0.0
        sigma_up = sigma_down = np.full(horizon, fallback)
    shown = _report_level(sorted(set(forecast.lower) & set(forecast.upper)), report_level)
    if shown is None:
        lower = upper = point
    else:
        lower = _finite_array(forecast.lower[shown], horizon, f"{name}.lower[{shown}]")
        upper = _finite_array(forecast.upper[shown], horizon, f"{name}.upper[{shown}]")
    return MarginalPath(
        tuple(mean.tolist()),
        tuple(sigma_up.tolist()),
        tuple(sigma_down.tolist()),
        tuple(point.tolist()),
        tuple(lower.tolist()),
        tuple(upper.tolist()),
    )


def _stacked(rows: list[tuple[float, ...]], horizon: int) -> FloatArray | None:
    """``rows`` cut to ``horizon`` as one finite (contributors x horizon) array, else None."""
    try:
        arr = np.array([row[:horizon] for row in rows], dtype=np.float64)
    except ValueError:  # ragged
        return None
    if arr.shape != (len(rows), horizon) or not np.isfinite(arr).all():
        return None
    return arr


def _stacked_paths(
    forecasts: list[SeriesForecast], horizon: int, report_level: float
) -> tuple[MarginalPath, ...] | None:
    """`marginal_path` of every forecast at once: one array op per step, not one per contributor.

    The same elementwise arithmetic in the same order, so the same numbers. None (for the
    per-contributor path) unless every forecast has the same interval levels and is well formed.
    """
    first = forecasts[0]
    uppers, lowers = first.upper.keys(), first.lower.keys()
    if not uppers or not lowers:
        return None
    for fc in forecasts:
        if fc.upper.keys() != uppers or fc.lower.keys() != lowers:
            return None
    point = _stacked([fc.point for fc in forecasts], horizon)
    if point is None:
        return None
    mean = np.maximum(point, 0.0)
    sigma_up = np.zeros(point.shape)
    sigma_down = np.zeros(point.shape)
    upper: dict[float, FloatArray] = {}
    lower: dict[float, FloatArray] = {}
    for level in sorted(uppers):
        bound = _stacked([fc.upper[level] for fc in forecasts], horizon)
        if bound is None:
            return None
        upper[level] = bound
        sigma_up = np.maximum(sigma_up, np.maximum(bound - point, 0.0) / level_z(level))
    for level in sorted(lowers):
        bound = _stacked([fc.lower[level] for fc in forecasts], horizon)
        if bound is None:
            return None
        lower[level] = bound
        sigma_down = np.maximum(sigma_down, np.maximum(point - bound, 0.0) / level_z(level))
    shown = _report_level(sorted(set(lowers) & set(uppers)), report_level)
    low, high = (point, point) if shown is None else (lower[shown], upper[shown])
    columns: list[list[list[float]]] = [
        a.tolist() for a in (mean, sigma_up, sigma_down, point, low, high)
    ]
    return tuple(
        MarginalPath(*(tuple(column[k]) for column in columns)) for k in range(len(forecasts))
    )


@dataclass(frozen=True, slots=True)
class TotalDemand:
    """Distribution of the summed demand at horizons 1..H, plus the per-contributor paths.

    ``names`` are sorted; ``paths[k]`` is the marginal of ``names[k]``. Sums use `math.fsum`
    (exactly rounded), so the totals do not depend on platform or summation order.
    """

    target_ms: tuple[int, ...]
    mean: tuple[float, ...]
    sigma_up: tuple[float, ...]
    sigma_down: tuple[float, ...]
    names: tuple[str, ...]
    paths: tuple[MarginalPath, ...]

    @property
    def horizon(self) -> int:
        return len(self.mean)

    def probabilities(self, capacity: float) -> list[float]:
        """P(total > capacity) at each horizon."""
        return [
            exceedance_probability(m, su, sd, capacity)
            for m, su, sd in zip(self.mean, self.sigma_up, self.sigma_down, strict=True)
        ]

    def breach_by(self, capacity: float) -> list[float]:
        """P(the total exceeds capacity in at least one window of horizons 1..h), per h.

        The forecast error of the total is split in two: a window-to-window part, independent
        across windows, with the variance of the 1-step error; and a shared part (level error)
        with the rest of each horizon's variance, fully correlated across horizons. The shared
        part is integrated out with Gauss-Hermite quadrature; given it, windows are
        independent. Deterministic, ~100 erfc calls.
        """
        noise = min(self.sigma_up)
        if noise <= 0.0:
            out, worst = [], 0.0
            for p in self.probabilities(capacity):
                worst = max(worst, p)
                out.append(worst)
            return out
        shared = [math.sqrt(max(0.0, su * su - noise * noise)) for su in self.sigma_up]
        result = [0.0] * self.horizon
        for node, weight in _GAUSS_HERMITE:
            none_yet = 1.0
            for h, (m, c) in enumerate(zip(self.mean, shared, strict=True)):
                gap = capacity - (m + c * node)
                none_yet *= 1.0 - 0.5 * math.erfc(gap / (noise * _SQRT2))
                result[h] += weight * (1.0 - none_yet)
        return [min(1.0, max(0.0, r)) for r in result]


def total_demand(
    forecasts: Mapping[str, SeriesForecast],
    *,
    horizon: int,
    correlation: float,
    report_level: float = 0.8,
) -> TotalDemand:
    """Sum the contributors' split normals at each common horizon (see the module docstring).

    The horizon is the shortest of ``horizon`` and every contributor's forecast, so the total
    never silently drops a contributor at long horizons.
    """
    names = tuple(sorted(forecasts))
    if not names:
        return TotalDemand((), (), (), (), (), ())
    h_max = min([horizon, *(forecasts[n].horizon for n in names)])
    paths = _stacked_paths([forecasts[n] for n in names], h_max, report_level)
    if paths is None:  # mixed levels, or a malformed forecast (which this words)
        paths = tuple(
            marginal_path(forecasts[n], h_max, report_level=report_level, name=n) for n in names
        )
    first = forecasts[names[0]]
    return TotalDemand(
        target_ms=tuple(first.target_ms(h) for h in range(1, h_max + 1)),
        mean=tuple(math.fsum(p.mean[i] for p in paths) for i in range(h_max)),
        sigma_up=tuple(
            combine_sigmas([p.sigma_up[i] for p in paths], correlation) for i in range(h_max)
        ),
        sigma_down=tuple(
            combine_sigmas([p.sigma_down[i] for p in paths], correlation) for i in range(h_max)
        ),
        names=names,
        paths=paths,
    )


def first_run_at_least(probs: Sequence[float], threshold: float) -> tuple[int, int] | None:
    """First maximal run of consecutive horizon indexes with ``P >= threshold``."""
    first = next((i for i, p in enumerate(probs) if p >= threshold), None)
    if first is None:
        return None
    last = first
    while last + 1 < len(probs) and probs[last + 1] >= threshold:
        last += 1
    return first, last
