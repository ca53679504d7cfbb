"""Predict conflicts on shared resources from the forecasts of the subsystems that use them.

A *conflict* is the summed demand of several subsystems on one shared resource (a DB
connection pool, a GPU pool) exceeding its capacity. Each subsystem's forecaster gives a point
forecast and prediction intervals of its own use; this module turns them into a probability
that the *total* exceeds capacity at each horizon, and runs a small per-resource lifecycle
(``predicted`` -> ``updated`` -> ``cleared``) with hysteresis so a consumer sees one event per
real change instead of one per window.

The distribution of the total and what the threshold judges: `app.core.conflicts.demand`
(split normals, the answer before any history); what the predictor learns from the total's
actual errors, how the probability is calibrated and how calibrated it was:
`app.core.conflicts.calibration`.
Everything here is pure and deterministic: no clock (event time comes from ``origin_ms``),
contributors are always processed in sorted name order, and all state is plain picklable
dataclasses (seal it with `app.core.snapshot.seal`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from app.core.config import FleetSpec
from app.core.conflicts.calibration import Calibrator, ErrorPaths, ExpertMix, Reliability
from app.core.conflicts.demand import (
    TotalDemand,
    first_run_at_least,
    level_z,
    require_finite,
    total_demand,
)
from app.core.events import (
    ConflictObserved,
    ConflictPredicted,
    Contributor,
    ms_to_iso,
)
from app.core.types import SeriesForecast

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
    learn_errors
        Learn the total's error paths and calibrate (``probability="any"`` only); False
        keeps the split normals alone.
    anchors
        Centres of the learnt error paths: ``"forecast"`` (the summed forecasts, in units of
        the split normal's sigma) and ``"level"`` (the EWMA of the actual total, weight
        ``level_alpha``, in resource units), mixed by their recent Brier loss.

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
        learn_errors: bool = True,
        anchors: tuple[str, ...] = ("forecast", "level"),
        level_alpha: float = 0.3,
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
        # The total's learnt error paths around two centres: the contributors' summed
        # forecasts (in their sigmas), and the EWMA of the actual total (in resource units).
        self.anchors = anchors if learn_errors else ()
        self.errors = {name: ErrorPaths(horizon) for name in self.anchors}
        self.mix = ExpertMix(horizon, len(self.anchors)) if self.anchors else None
        self.level_alpha = level_alpha
        self.level: float | None = None  # EWMA of the actual total
        self.calibrator: Calibrator | None = Calibrator(horizon) if learn_errors else None
        self.reliability = Reliability(horizon)
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

    def upper_z(self, origin_ms: int, level: float) -> list[float] | None:
        """Per horizon, how many upper sigmas above the summed forecast the total's upper
        bound at ``level`` lies, as learnt from the total's own errors (the ``forecast``
        anchor's paths; the split normal's ``z`` while few or none are known). None when no
        paths are kept (``learn_errors=False``); with ``probability="per_horizon"`` none are
        recorded, so it stays the split normal's."""
        paths = self.errors.get("forecast")
        if paths is None:
            return None
        return paths.quantiles(origin_ms // self.step_ms, 0.5 + level / 2.0, level_z(level))

    def judged_probabilities(self, total: TotalDemand, capacity: float) -> list[float]:
        """What the threshold applies to, per horizon h (see ``probability``)."""
        if self.probability == "per_horizon":
            return total.probabilities(capacity)
        return total.breach_by(capacity)

    def view(
        self, total: TotalDemand, probs: Sequence[float], threshold: float
    ) -> ConflictView | None:
        """The conflict described by the first run of horizons with ``P >= threshold``."""
        run = first_run_at_least(probs, threshold)
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
        threshold_raise: float = 0.0,
    ) -> list[ConflictPredicted | ConflictObserved]:
        """Advance one window: maybe a `ConflictObserved`, then at most one lifecycle event.

        ``threshold_raise``: added to the alert threshold (opening and tracking) this window,
        what operators' labels taught (`app.core.labels`; bounded by the caller).

        Raises
        ------
        ValueError
            On a non-positive or non-finite capacity, a non-finite actual, or forecasts not
            aligned to ``origin_ms`` / ``step_ms`` (the engine's job; mixing them would
            compare different windows).
        """
        capacity = require_finite(capacity, "capacity")
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
            max(0.0, require_finite(actual[n], f"actual[{n!r}]")) for n in sorted(actual)
        )
        events: list[ConflictPredicted | ConflictObserved] = []
        breach = actual_total > capacity
        if breach:
            events.append(self._observed(origin_ms, actual, actual_total, capacity))

        window = origin_ms // self.step_ms  # index of the first forecast window
        self.reliability.observe(window - 1, breach)
        for paths in self.errors.values():
            paths.observe(window - 1, actual_total)
        if self.mix is not None:
            self.mix.observe(window - 1, breach)
        if self.calibrator is not None:
            self.calibrator.observe(window - 1, breach)
        self.level = (
            actual_total
            if self.level is None
            else self.level_alpha * actual_total + (1.0 - self.level_alpha) * self.level
        )
        total = self.distribution(forecasts)
        probs = self.judged_probabilities(total, capacity)
        if self.mix is not None and self.probability == "any":
            probs = self._learnt(window, total, probs, capacity)
        if self.calibrator is not None and self.probability == "any" and probs:
            if total.horizon == self.horizon:
                self.calibrator.predict(window, probs[-1])
            probs = [self.calibrator.apply(p) for p in probs]
        if total.horizon == self.horizon and self.probability == "any":
            self.reliability.predict(window, probs[-1])
        threshold = self.threshold + threshold_raise
        if self.episode is None:
            current = self.view(total, probs, threshold)
            if current is not None:
                events.append(self._open(origin_ms, current, capacity))
        else:
            current = self.view(total, probs, threshold - self.hysteresis)
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

    def _learnt(
        self, window: int, total: TotalDemand, parametric: list[float], capacity: float
    ) -> list[float]:
        """P(breach by h) from each anchor's learnt error paths, mixed by their Brier loss."""
        assert self.mix is not None and self.level is not None
        curves = []
        for name in self.anchors:
            if name == "level":
                centre, scale = [self.level] * total.horizon, [1.0] * total.horizon
            else:
                centre, scale = list(total.mean), list(total.sigma_up)
            paths = self.errors[name]
            curves.append(paths.breach_by(window, centre, scale, capacity, parametric))
            paths.expect(window, centre, scale)
        if total.horizon == self.horizon:
            self.mix.predict(window, [curve[-1] for curve in curves])
        return self.mix.combine_paths(curves)

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
