"""Predict conflicts on shared resources from the forecasts of the subsystems that use them.

A *conflict* is the summed demand of several subsystems on one shared resource (a DB
connection pool, a GPU pool) exceeding its capacity. Each subsystem's forecaster gives a point
forecast and prediction intervals of its own use; this module turns them into a probability
that the *total* exceeds capacity at each horizon, and runs a small per-resource lifecycle
(``predicted`` -> ``updated`` -> ``cleared``) with hysteresis so a consumer sees one event per
real change instead of one per window.

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

from app.core.config import FleetSpec
from app.core.events import (
    ConflictObserved,
    ConflictPredicted,
    Contributor,
    SaturationPredicted,
    ms_to_iso,
)
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


def _finite(value: float, what: str) -> float:
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


def _run(probs: Sequence[float], threshold: float) -> tuple[int, int] | None:
    """First maximal run of consecutive horizon indexes with ``P >= threshold``."""
    first = next((i for i, p in enumerate(probs) if p >= threshold), None)
    if first is None:
        return None
    last = first
    while last + 1 < len(probs) and probs[last + 1] >= threshold:
        last += 1
    return first, last


# --------------------------------------------------------------------------- conflicts


@dataclass(frozen=True, slots=True)
class ConflictView:
    """What the predictor currently believes about one conflict (one run of horizons)."""

    expected_start_ms: int
    expected_end_ms: int
    probability: float
    peak: float
    reaches_horizon: bool
    contributors: tuple[Contributor, ...]

    @property
    def top(self) -> str | None:
        return self.contributors[0].subsystem if self.contributors else None

    def share_of(self, subsystem: str | None) -> float:
        return next((c.share for c in self.contributors if c.subsystem == subsystem), 0.0)


@dataclass(slots=True)
class Episode:
    """The open conflict: its identity, what was last emitted, and the windows it foresaw.

    ``covered_*`` is the union of every run computed while the episode was open (emitted or
    not), used to credit an observed breach to this prediction.
    """

    conflict_id: str
    first_emitted_ms: int
    emitted: ConflictView
    covered_start_ms: int
    covered_end_ms: int
    quiet: int = 0  # consecutive windows with no run over the tracking threshold, no breach


@dataclass(slots=True)
class _Expected:
    """The h=1 forecast of one subsystem, kept one window to explain an observed breach."""

    target_ms: int
    point: float
    lower: float
    upper: float


class ConflictPredictor:
    """Per-resource conflict lifecycle from aligned contributor forecasts and actual use.

    Call `update` once per closed window with every contributor's forecast (all made at the
    same ``origin_ms``, the start of the first forecast window) and each contributor's actual
    mean use in the window that just closed, ``[origin_ms - step_ms, origin_ms)``.

    Parameters
    ----------
    resource
        Name of the shared resource; it prefixes every ``conflict_id``.
    horizon
        Largest horizon (in windows) looked at.
    threshold
        A conflict opens when P(total > capacity) reaches this at some horizon.
    correlation
        ``rho`` between contributors (see the module docstring).
    hysteresis
        While open, the conflict is tracked with ``threshold - hysteresis`` and clears only when
        every horizon is below it: noise around the threshold cannot make it flap.
    clear_after
        ...for ``clear_after`` consecutive windows without an observed breach: the tail of a
        peak, where demand hovers just under capacity and noise pokes above it, stays one
        conflict instead of a string of short unpredicted ones.
    min_probability_change, min_shift_windows, min_peak_change, min_share_lead
        What counts as a material change worth an ``updated`` event: probability moves by at
        least ``min_probability_change``; expected start (or end, unless both runs reach the
        horizon's edge) moves by ``min_shift_windows`` windows; the peak moves by
        ``min_peak_change`` × capacity; the top contributor changes and leads the previous top
        by at least ``min_share_lead`` of the peak (so two near-equal contributors swapping
        places on noise do not count).
    report_level
        Interval level whose bounds are shown in `Contributor` (closest available).
    step_ms
        Window size; must match the forecasts' ``step_ms``.

    Examples
    --------
    >>> from app.core.types import SeriesForecast
    >>> def fc(origin, points):
    ...     return SeriesForecast(
    ...         origin_ms=origin, step_ms=60_000, point=tuple(points),
    ...         lower={0.8: tuple(p - 1 for p in points)},
    ...         upper={0.8: tuple(p + 1 for p in points)})
    >>> t0 = 1_700_000_040_000
    >>> cp = ConflictPredictor("db", horizon=3)
    >>> events = cp.update(t0, {"a": fc(t0, [4, 6, 8]), "b": fc(t0, [4, 4, 4])},
    ...                    {"a": 4.0, "b": 4.0}, capacity=10.0)
    >>> [(e.status, e.lead_time_s, e.contributors[0].subsystem) for e in events]
    [('predicted', 60, 'a')]
    >>> t1 = t0 + 60_000
    >>> cp.update(t1, {"a": fc(t1, [6, 8, 8]), "b": fc(t1, [4, 4, 4])},
    ...           {"a": 4.0, "b": 4.0}, capacity=10.0)
    []
    """

    def __init__(
        self,
        resource: str,
        horizon: int = 15,
        threshold: float = 0.5,
        correlation: float = 0.3,
        hysteresis: float = 0.15,
        clear_after: int = 10,
        probability: str = "any",
        min_probability_change: float = 0.1,
        min_shift_windows: int = 2,
        min_peak_change: float = 0.05,
        min_share_lead: float = 0.05,
        report_level: float = 0.8,
        step_ms: int = 60_000,
    ) -> None:
        if horizon < 1:
            raise ValueError("horizon must be >= 1")
        if not 0.0 < threshold < 1.0:
            raise ValueError("threshold must be in (0, 1)")
        if not 0.0 <= correlation <= 1.0:
            raise ValueError("correlation must be in [0, 1]")
        if not 0.0 <= hysteresis < threshold:
            raise ValueError("hysteresis must be in [0, threshold)")
        if step_ms < 1:
            raise ValueError("step_ms must be >= 1")
        self.resource = resource
        self.horizon = horizon
        self.threshold = threshold
        self.correlation = correlation
        self.hysteresis = hysteresis
        self.clear_after = clear_after
        if probability not in ("any", "per_horizon"):
            raise ValueError("probability must be 'any' or 'per_horizon'")
        self.probability = probability
        self.min_probability_change = min_probability_change
        self.min_shift_windows = min_shift_windows
        self.min_peak_change = min_peak_change
        self.min_share_lead = min_share_lead
        self.report_level = report_level
        self.step_ms = step_ms
        self.episode: Episode | None = None
        self._expected: dict[str, _Expected] = {}
        self._used_ids: dict[str, int] = {}

    @classmethod
    def from_policy(cls, resource: str, policy: FleetSpec) -> ConflictPredictor:
        """A predictor with the fleet's horizon, threshold, window size and first level."""
        pred = policy.prediction
        return cls(
            resource,
            horizon=pred.horizon,
            threshold=pred.conflict_threshold,
            hysteresis=min(0.15, pred.conflict_threshold / 2),
            report_level=min(pred.levels) if pred.levels else 0.8,
            step_ms=policy.window.size_ms,
        )

    # ----------------------------------------------------------------- pure views

    def distribution(self, forecasts: Mapping[str, SeriesForecast]) -> TotalDemand:
        """Distribution of total demand at horizons 1..H (no state touched)."""
        return total_demand(
            forecasts,
            horizon=self.horizon,
            correlation=self.correlation,
            report_level=self.report_level,
        )

    def probabilities(
        self, forecasts: Mapping[str, SeriesForecast], capacity: float
    ) -> list[float]:
        """P(total > capacity) at horizons 1..H (no state touched)."""
        return self.distribution(forecasts).probabilities(capacity)

    def judged_probabilities(self, total: TotalDemand, capacity: float) -> list[float]:
        """What the threshold applies to, per horizon h (see ``probability``)."""
        if self.probability == "per_horizon":
            return total.probabilities(capacity)
        return total.breach_by(capacity)

    def view(
        self, total: TotalDemand, probs: Sequence[float], threshold: float
    ) -> ConflictView | None:
        """The conflict described by the first run of horizons with ``P >= threshold``."""
        run = _run(probs, threshold)
        if run is None:
            return None
        first, last = run
        peak_i = max(range(first, last + 1), key=lambda i: (total.mean[i], -i))
        return ConflictView(
            expected_start_ms=total.target_ms[first],
            expected_end_ms=total.target_ms[last] + self.step_ms,
            probability=max(probs[first : last + 1]),
            peak=total.mean[peak_i],
            reaches_horizon=last == total.horizon - 1,
            contributors=_rank(total, peak_i),
        )

    # ----------------------------------------------------------------- the lifecycle

    def update(
        self,
        origin_ms: int,
        forecasts: Mapping[str, SeriesForecast],
        actual: Mapping[str, float],
        capacity: float,
    ) -> list[ConflictPredicted | ConflictObserved]:
        """Advance one window: maybe a `ConflictObserved`, then at most one lifecycle event.

        Raises
        ------
        ValueError
            On a non-positive or non-finite capacity, a non-finite actual, or forecasts not
            aligned to ``origin_ms`` / ``step_ms`` (the engine's job; mixing them would
            compare different windows).
        """
        capacity = _finite(capacity, "capacity")
        if capacity <= 0.0:
            raise ValueError("capacity must be > 0")
        for name in sorted(forecasts):
            fc = forecasts[name]
            if fc.origin_ms != origin_ms or fc.step_ms != self.step_ms:
                raise ValueError(
                    f"forecast of {name!r} is at origin {fc.origin_ms}/step {fc.step_ms}, "
                    f"expected {origin_ms}/{self.step_ms}"
                )
        actual_total = math.fsum(
            max(0.0, _finite(actual[n], f"actual[{n!r}]")) for n in sorted(actual)
        )
        events: list[ConflictPredicted | ConflictObserved] = []
        breach = actual_total > capacity
        if breach:
            events.append(self._observed(origin_ms, actual, actual_total, capacity))

        total = self.distribution(forecasts)
        probs = self.judged_probabilities(total, capacity)
        if self.episode is None:
            current = self.view(total, probs, self.threshold)
            if current is not None:
                events.append(self._open(origin_ms, current, capacity))
        else:
            current = self.view(total, probs, self.threshold - self.hysteresis)
            if current is None:
                self.episode.quiet = 0 if breach else self.episode.quiet + 1
                if self.episode.quiet >= self.clear_after:
                    events.append(self._clear(origin_ms, max(probs, default=0.0), capacity))
            else:
                self.episode.quiet = 0
                self._cover(current)
                if self._material(origin_ms, self.episode.emitted, current, capacity):
                    self.episode.emitted = current
                    events.append(self._event("updated", origin_ms, current, capacity))
        self._remember_expected(total)
        return events

    def _open(self, origin_ms: int, view: ConflictView, capacity: float) -> ConflictPredicted:
        base = f"{self.resource}@{view.expected_start_ms}"
        # Starts are >= the origin, so only ids with a start >= origin can ever collide.
        self._used_ids = {k: v for k, v in self._used_ids.items() if v >= origin_ms}
        conflict_id = base if base not in self._used_ids else f"{base}~{origin_ms}"
        self._used_ids[conflict_id] = view.expected_start_ms
        self.episode = Episode(
            conflict_id, origin_ms, view, view.expected_start_ms, view.expected_end_ms
        )
        return self._event("predicted", origin_ms, view, capacity)

    def _clear(self, origin_ms: int, probability: float, capacity: float) -> ConflictPredicted:
        assert self.episode is not None
        last = self.episode.emitted
        shown = ConflictView(
            last.expected_start_ms,
            last.expected_end_ms,
            probability,
            last.peak,
            last.reaches_horizon,
            last.contributors,
        )
        event = self._event("cleared", origin_ms, shown, capacity)
        self.episode = None
        return event

    def _cover(self, view: ConflictView) -> None:
        assert self.episode is not None
        ep = self.episode
        ep.covered_start_ms = min(ep.covered_start_ms, view.expected_start_ms)
        ep.covered_end_ms = max(ep.covered_end_ms, view.expected_end_ms)

    def _material(
        self, origin_ms: int, last: ConflictView, new: ConflictView, capacity: float
    ) -> bool:
        shift = self.min_shift_windows * self.step_ms
        # Once the conflict has begun, time passing is not a change of its start.
        last_start = max(last.expected_start_ms, origin_ms)
        end_moved = abs(new.expected_end_ms - last.expected_end_ms) >= shift and not (
            new.reaches_horizon and last.reaches_horizon
        )
        top_changed = new.top != last.top and (
            new.share_of(new.top) - new.share_of(last.top) >= self.min_share_lead
        )
        return (
            abs(new.probability - last.probability) >= self.min_probability_change
            or abs(new.expected_start_ms - last_start) >= shift
            or end_moved
            or abs(new.peak - last.peak) >= self.min_peak_change * capacity
            or top_changed
        )

    def _event(
        self, status: str, origin_ms: int, view: ConflictView, capacity: float
    ) -> ConflictPredicted:
        assert self.episode is not None
        conflict_id = self.episode.conflict_id
        return ConflictPredicted(
            event_id=f"{conflict_id}:{status}:{origin_ms}",
            status=status,  # type: ignore[arg-type]  # "predicted" | "updated" | "cleared"
            conflict_id=conflict_id,
            resource=self.resource,
            emitted_at_ms=origin_ms,
            emitted_at=ms_to_iso(origin_ms),
            expected_start_ms=view.expected_start_ms,
            expected_end_ms=view.expected_end_ms,
            expected_start=ms_to_iso(view.expected_start_ms),
            lead_time_s=(view.expected_start_ms - origin_ms) // 1000,
            probability=float(view.probability),
            predicted_peak=float(view.peak),
            capacity=float(capacity),
            contributors=list(view.contributors),
        )

    # ----------------------------------------------------------------- observed breaches

    def _observed(
        self, origin_ms: int, actual: Mapping[str, float], total: float, capacity: float
    ) -> ConflictObserved:
        start = origin_ms - self.step_ms
        predicted_by: str | None = None
        lead: int | None = None
        ep = self.episode
        if ep is not None and ep.covered_start_ms <= start < ep.covered_end_ms:
            predicted_by = ep.conflict_id
            lead = (start - ep.first_emitted_ms) // 1000
        contributors = []
        for name in sorted(actual):
            value = max(0.0, actual[name])
            exp = self._expected.get(name)
            if exp is None or exp.target_ms != start:
                exp = _Expected(start, value, value, value)
            contributors.append(
                Contributor(
                    subsystem=name,
                    share=float(min(1.0, value / total)),
                    forecast=float(exp.point),
                    lower=float(exp.lower),
                    upper=float(exp.upper),
                )
            )
        contributors.sort(key=lambda c: (-c.share, c.subsystem))
        return ConflictObserved(
            event_id=f"observed:{self.resource}@{start}",
            resource=self.resource,
            window_start_ms=start,
            window_end_ms=origin_ms,
            window_start=ms_to_iso(start),
            demand=float(total),
            capacity=float(capacity),
            predicted_by=predicted_by,
            lead_time_s=lead,
            contributors=contributors,
        )

    def _remember_expected(self, total: TotalDemand) -> None:
        """Keep each h=1 forecast: it is what was expected of the window closing next."""
        self._expected = {}
        if total.horizon >= 1:
            target = total.target_ms[0]
            for name, p in zip(total.names, total.paths, strict=True):
                self._expected[name] = _Expected(target, p.point[0], p.lower[0], p.upper[0])


def _rank(total: TotalDemand, i: int) -> tuple[Contributor, ...]:
    """Contributors at horizon index ``i`` by share of the total (largest first, ties by name)."""
    whole = total.mean[i]
    ranked = [
        Contributor(
            subsystem=name,
            share=float(min(1.0, p.mean[i] / whole)) if whole > 0.0 else 0.0,
            forecast=float(p.point[i]),
            lower=float(p.lower[i]),
            upper=float(p.upper[i]),
        )
        for name, p in zip(total.names, total.paths, strict=True)
    ]
    ranked.sort(key=lambda c: (-c.share, c.subsystem))
    return tuple(ranked)


# --------------------------------------------------------------------------- saturation


class SaturationWatch:
    """Warn once per episode when a subsystem metric is forecast to cross its limit.

    Same probability logic as `ConflictPredictor` on a single series (no clamping at zero:
    metrics may be negative). An episode opens when P(metric > limit) reaches ``threshold``
    at some horizon, emitting one `SaturationPredicted`; it ends silently when every horizon
    is below ``threshold - hysteresis``. One instance serves every (subsystem, metric); only
    open episodes are stored.

    Parameters
    ----------
    horizon
        Largest horizon looked at.
    threshold
        Probability that opens an episode.
    hysteresis
        Gap below the threshold required to end it.
    """

    def __init__(self, horizon: int = 15, threshold: float = 0.5, hysteresis: float = 0.15) -> None:
        if horizon < 1:
            raise ValueError("horizon must be >= 1")
        if not 0.0 < threshold < 1.0:
            raise ValueError("threshold must be in (0, 1)")
        if not 0.0 <= hysteresis < threshold:
            raise ValueError("hysteresis must be in [0, threshold)")
        self.horizon = horizon
        self.threshold = threshold
        self.hysteresis = hysteresis
        self.active: dict[tuple[str, str], int] = {}

    def update(
        self, subsystem: str, metric: str, forecast: SeriesForecast, limit: float
    ) -> SaturationPredicted | None:
        """Advance the (subsystem, metric) episode with a new forecast."""
        limit = _finite(limit, "limit")
        key = (subsystem, metric)
        h_max = min(self.horizon, forecast.horizon)
        path = marginal_path(forecast, h_max, clamp_nonnegative=False, name=f"{subsystem}.{metric}")
        probs = [
            exceedance_probability(m, su, sd, limit)
            for m, su, sd in zip(path.mean, path.sigma_up, path.sigma_down, strict=True)
        ]
        if key in self.active:
            if _run(probs, self.threshold - self.hysteresis) is None:
                del self.active[key]
            return None
        run = _run(probs, self.threshold)
        if run is None:
            return None
        first, last = run
        start = forecast.target_ms(first + 1)
        origin = forecast.origin_ms
        self.active[key] = start
        return SaturationPredicted(
            event_id=f"saturation:{subsystem}:{metric}@{start}:{origin}",
            subsystem=subsystem,
            metric=metric,
            limit=float(limit),
            emitted_at_ms=origin,
            expected_start_ms=start,
            lead_time_s=(start - origin) // 1000,
            probability=float(max(probs[first : last + 1])),
            predicted_peak=float(max(path.mean[first : last + 1])),
        )

    def forget(self, subsystem: str) -> None:
        """Drop every episode of an evicted subsystem (bounded state)."""
        for key in sorted(k for k in self.active if k[0] == subsystem):
            del self.active[key]
