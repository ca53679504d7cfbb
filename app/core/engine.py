"""The prediction engine: closed load windows in, typed prediction events out.

Two stages, because the live topology partitions them differently:

* `SubsystemPredictor` (stage 1, one per subsystem): for every series of a closed window —
  each metric and each resource use — score the value for anomalies *before* learning it,
  score the forecasts that targeted it, learn it (anomalous values are kept out of the
  forecaster's training), forecast the next H windows. Emits `Forecast`, `AnomalyDetected`,
  `SaturationPredicted`, a periodic per-subsystem `AccuracyReport`, and one `ResourceShare`
  per resource it uses.
* `ResourcePredictor` (stage 2, one per shared resource): joins the shares of all its
  contributors window by window (`ResourceJoin`), predicts conflicts (`ConflictPredictor`),
  plans a rebalance for each new or materially changed conflict (`RebalancePlanner`), and
  scores its predictions against observed breaches (`ConflictScorer`).

`PredictionEngine` wires both in one process (the offline driver and the benchmarks); the
Faust topology drives the same two classes. Everything is event time, no clock, no I/O; the
same windows in the same per-subsystem order give byte-identical events.

Cost: stage 1 runs for every series of every window, so its hot path avoids work twice done:
accuracy is scored from the errors the forecaster computes anyway (no second store of pending
forecasts), the detector's verdict is read raw, and event bodies are built from the
forecaster's lists as they are (plain dataclasses, no validation on the hot path).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from app.core.accuracy import ConflictScorer, ForecastAccuracy, HorizonTotals
from app.core.anomaly import SeriesAnomalyDetector
from app.core.anomaly.episodes import AnomalyEpisodes
from app.core.bodies import body_from_rows, forecast_from_body, horizon_report
from app.core.config import FleetSpec
from app.core.conflicts import ConflictPredictor, SaturationWatch
from app.core.events import (
    AccuracyReport,
    AnomalyDetected,
    ConflictPredicted,
    Forecast,
    LoadWindow,
    OperatorLabel,
    OutputEvent,
    RebalanceRecommended,
    ResourcePolicy,
    ResourceShare,
    SeriesForecastBody,
    SeriesStats,
    iso_ms,
)
from app.core.forecast import SeriesForecaster
from app.core.forecasters.river_candidate import CandidateSpec, parse_candidates
from app.core.join import ResourceJoin
from app.core.labels import (
    ANOMALY_LABELS,
    CONFLICT_LABELS,
    MAX_CONFLICT_THRESHOLD,
    AnomalyTarget,
    LabelBook,
    LabelRejected,
    LabelSpec,
    anomaly_event_id,
    check_time,
    is_false_positive,
    parse_target,
)
from app.core.planner import RebalancePlanner
from app.core.policy import overlay
from app.core.scaling import ElasticResource
from app.core.snapshot import seal, unseal
from app.core.types import SeriesForecast

SeriesKind = Literal["metric", "resource"]
METRIC: SeriesKind = "metric"
RESOURCE: SeriesKind = "resource"


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What the engine needs from `FleetSpec`, resolved once."""

    step_ms: int
    horizon: int
    levels: tuple[float, ...]
    conflict_threshold: float
    accuracy_every: int
    idle_evict_windows: int
    mode: str
    extra_candidates: tuple[CandidateSpec, ...] = ()  # parsed once, built once per series
    anomaly_memory: int | None = None  # None: two days of windows (`memory_for`)
    anomaly_labels: LabelSpec = ANOMALY_LABELS
    conflict_labels: LabelSpec = CONFLICT_LABELS

    @classmethod
    def from_policy(cls, policy: FleetSpec) -> EngineConfig:
        p = policy.prediction
        step_ms = policy.window.size_ms
        return cls(
            step_ms=step_ms,
            horizon=p.horizon,
            levels=tuple(sorted(p.levels)),
            conflict_threshold=p.conflict_threshold,
            accuracy_every=p.accuracy_every_windows,
            idle_evict_windows=max(1, p.idle_evict_s * 1000 // step_ms),
            mode=p.mode,
            extra_candidates=parse_candidates(p.extra_candidates),
            anomaly_memory=p.anomaly_memory,
        )


# --------------------------------------------------------------------------- stage 1


@dataclass(slots=True)
class SeriesModel:
    """Everything PSO learns about one series of one subsystem."""

    forecaster: SeriesForecaster
    detector: SeriesAnomalyDetector
    accuracy: ForecastAccuracy
    last_index: int
    # The forecaster's one-step forecast for the window starting at ``band_ms``, as
    # ``(expected, lower, upper)`` at the widest level; None while it warms up.
    band_ms: int = -1
    band: tuple[float, float, float] | None = None
    episodes: AnomalyEpisodes = field(default_factory=AnomalyEpisodes)
    labels: LabelBook | None = None  # operators' verdicts on this series' alarms


@dataclass(slots=True)
class SubsystemOutput:
    events: list[OutputEvent] = field(default_factory=list)
    shares: list[ResourceShare] = field(default_factory=list)


class SubsystemPredictor:
    """Stage 1 for one subsystem: forecasts, anomalies, saturation, accuracy, shares."""

    def __init__(self, subsystem: str, config: EngineConfig, limits: Mapping[str, float]) -> None:
        self.subsystem = subsystem
        self.config = config
        self.limits = dict(limits)
        self.series: dict[tuple[str, str], SeriesModel] = {}
        self.saturation = SaturationWatch(
            horizon=config.horizon, threshold=config.conflict_threshold
        )
        self.last_index: int | None = None
        self.windows = 0

    def _model(self, key: tuple[str, str], index: int) -> SeriesModel:
        model = self.series.get(key)
        if model is None or index - model.last_index > self.config.idle_evict_windows:
            c = self.config
            model = SeriesModel(
                forecaster=SeriesForecaster(
                    step_ms=c.step_ms,
                    horizon=c.horizon,
                    levels=c.levels,
                    extra_candidates=c.extra_candidates,
                ),
                detector=SeriesAnomalyDetector(step_ms=c.step_ms, memory=c.anomaly_memory),
                accuracy=ForecastAccuracy(c.step_ms, c.horizon, c.levels),
                last_index=index,
            )
            self.series[key] = model
        return model

    def process(self, window: LoadWindow) -> SubsystemOutput:
        """Learn one closed window; return the events and resource shares it produces."""
        c = self.config
        index = window.window_start_ms // c.step_ms
        if self.last_index is not None and index <= self.last_index:
            return SubsystemOutput()  # a duplicate (re-delivered) window: already learned
        self.last_index = index
        self.windows += 1
        out = SubsystemOutput()
        bodies: dict[str, dict[str, SeriesForecastBody]] = {METRIC: {}, RESOURCE: {}}
        anomalies: list[AnomalyDetected] = []
        limits = self.limits
        for kind, stats in ((METRIC, window.metrics), (RESOURCE, window.resources)):
            kind_bodies = bodies[kind]
            for name in sorted(stats):
                series = stats[name]
                model = self._model((kind, name), index)
                model.last_index = index
                body, anomaly = self._learn(model, kind, name, series.mean, window)
                kind_bodies[name] = body
                if anomaly is not None:
                    anomalies.append(anomaly)
                if kind == RESOURCE:
                    out.shares.append(self._share(name, window, series, body))
                elif name in limits and self._may_saturate(name, body.point):
                    fc = model.forecaster.forecast()
                    sat = self.saturation.update(self.subsystem, name, fc, limits[name])
                    if sat is not None:
                        out.events.append(sat)
        if index % 60 == 0:
            self._evict(index)
        end_ms = window.window_end_ms
        # Built without re-validation: every part comes from validated windows or the core.
        forecast = Forecast(
            event_id=f"forecast:{self.subsystem}:{end_ms}",
            subsystem=self.subsystem,
            origin_ms=end_ms,
            origin=iso_ms(end_ms),
            step_s=c.step_ms // 1000,
            horizon=c.horizon,
            metrics=bodies[METRIC],
            resources=bodies[RESOURCE],
        )
        out.events[:0] = [forecast, *anomalies]
        if self.windows % c.accuracy_every == 0:
            out.events.append(self.accuracy_report(end_ms))
        return out

    def _learn(
        self, model: SeriesModel, kind: SeriesKind, name: str, y: float, window: LoadWindow
    ) -> tuple[SeriesForecastBody, AnomalyDetected | None]:
        """Score, then learn one value of one series; return its forecast body (and alarm)."""
        ts = window.window_start_ms
        external = model.band if model.band_ms == ts else None
        detector = model.detector
        verdict = detector.process_raw(ts, y, forecast=external)  # scores, then learns
        assert verdict is not None  # window means are finite
        likelihood, score, reason, expected, half = verdict
        outside = None if external is None else not external[1] <= y <= external[2]
        threshold = detector.threshold
        if model.labels is not None:
            threshold += model.labels.raise_at(ts)
        alarm, trusted = model.episodes.judge(likelihood >= threshold, outside, ts)
        forecaster = model.forecaster
        forecaster.learn_one(ts, y, trusted=trusted, accuracy=model.accuracy)
        rows = forecaster.forecast_rows()
        levels = forecaster.levels
        warming = forecaster.warming_up
        n_levels = len(levels)
        model.band_ms = ts + self.config.step_ms
        model.band = None if warming else (rows[0][0], rows[n_levels][0], rows[2 * n_levels][0])
        body = body_from_rows(rows, levels, forecaster.model_name, forecaster.recent_error, warming)
        anomaly = None
        if alarm:
            anomaly = AnomalyDetected(
                event_id=anomaly_event_id(self.subsystem, kind, name, ts),
                subsystem=self.subsystem,
                series_kind=kind,
                series=name,
                window_start_ms=ts,
                window_end_ms=window.window_end_ms,
                window_start=window.window_start,
                value=y,
                expected=expected,
                lower=expected - half,
                upper=expected + half,
                score=score,
                detector=reason or "likelihood",
            )
        return body, anomaly

    def label(self, label: OperatorLabel) -> None:
        """An operator's verdict on an alarm of one of this subsystem's series
        (`app.core.labels`); `LabelRejected` if that series is not known here."""
        target = parse_target(label)
        check_time(label, target)
        if not isinstance(target, AnomalyTarget):
            raise LabelRejected("invalid_id", f"{label.id[:200]!r} is not an anomaly's id")
        model = self.series.get((target.kind, target.series))
        if target.subsystem != self.subsystem or model is None:
            raise LabelRejected(
                "unknown_series",
                f"no {target.kind} {target.series!r} of subsystem {target.subsystem!r} here "
                "(never seen, or idle long enough to be forgotten)",
            )
        if model.labels is None:
            model.labels = LabelBook(self.config.anomaly_labels)
        model.labels.add(target.key, label.ts, is_false_positive(label))

    def _may_saturate(self, metric: str, point: list[float]) -> bool:
        """Cheap pre-check: P(value > limit) >= 0.5 needs a point forecast at the limit."""
        if (self.subsystem, metric) in self.saturation.active:
            return True
        return max(point) >= self.limits[metric]

    def _share(
        self, resource: str, window: LoadWindow, stats: SeriesStats, body: SeriesForecastBody
    ) -> ResourceShare:
        return ResourceShare(
            event_id=f"share:{resource}:{self.subsystem}:{window.window_start_ms}",
            subsystem=self.subsystem,
            resource=resource,
            window_start_ms=window.window_start_ms,
            step_s=self.config.step_ms // 1000,
            actual=stats.mean,
            forecast=body,
        )

    def _evict(self, index: int) -> None:
        limit = self.config.idle_evict_windows
        for key in [k for k, m in self.series.items() if index - m.last_index > limit]:
            del self.series[key]

    def accuracy_report(self, emitted_at_ms: int) -> AccuracyReport:
        """Forecast accuracy pooled over this subsystem's series (MAE in mixed units: use MASE)."""
        c = self.config
        totals = [HorizonTotals(c.levels) for _ in range(c.horizon)]
        for key in sorted(self.series):
            for h, t in enumerate(self.series[key].accuracy.totals):
                totals[h].merge(t)
        return AccuracyReport(
            event_id=f"accuracy:subsystem:{self.subsystem}:{emitted_at_ms}",
            emitted_at_ms=emitted_at_ms,
            scope=f"subsystem:{self.subsystem}",
            windows_scored=self.windows,
            horizons=horizon_report(totals, c.levels),
            conflict_precision=None,
            conflict_recall=None,
            conflict_median_lead_s=None,
        )


# --------------------------------------------------------------------------- stage 2


class ResourcePredictor:
    """Stage 2 for one shared resource: join shares, predict conflicts, plan, score."""

    def __init__(self, resource: str, config: EngineConfig, policy: FleetSpec) -> None:
        self.resource = resource
        self.config = config
        self.base_policy = policy  # pso.yaml; `policy` is it with the runtime record applied
        self.policy = policy
        declared = frozenset(name for name, sub in policy.subsystems.items() if resource in sub.min)
        self.join: ResourceJoin[ResourceShare] = ResourceJoin(declared=declared)
        configured = policy.resources.get(resource)
        threshold = (
            configured.conflict_threshold(config.conflict_threshold)
            if configured is not None
            else config.conflict_threshold
        )
        self.predictor = ConflictPredictor(
            resource,
            horizon=config.horizon,
            threshold=threshold,
            hysteresis=min(0.15, threshold / 2),
            step_ms=config.step_ms,
        )
        self.planner = RebalancePlanner()
        self.scorer = ConflictScorer(config.step_ms, config.horizon)
        self.capacity: float | None = configured.capacity if configured else None
        self.windows = 0
        self.labels: LabelBook | None = None  # operators' verdicts on its conflicts
        self.elastic: ElasticResource | None = None
        if configured is not None and configured.elastic is not None:
            self.elastic = ElasticResource(
                resource, configured.elastic, config.step_ms, config.horizon, self.planner
            )

    def label(self, label: OperatorLabel) -> None:
        """An operator's verdict on one of this resource's conflicts (`app.core.labels`)."""
        target = parse_target(label)
        check_time(label, target)
        if isinstance(target, AnomalyTarget) or target.resource != self.resource:
            raise LabelRejected("unknown_resource", f"{label.id[:200]!r} is not a conflict here")
        if self.labels is None:
            self.labels = LabelBook(self.config.conflict_labels)
        self.labels.add(target.key, label.ts, is_false_positive(label))

    def apply_policy(self, update: ResourcePolicy) -> None:
        """A runtime policy record (``pso.capacity``): capacity and planning terms from now on.

        Each record replaces the previous one; an empty record reverts to ``pso.yaml``.
        """
        self.policy = overlay(self.base_policy, update)
        configured = self.policy.resources.get(self.resource)
        self.capacity = configured.capacity if configured else None

    def add(self, share: ResourceShare, source: int | None = None) -> list[OutputEvent]:
        """Take one contributor's share; return the events of every window it completed.

        ``source``: where the share can be read again (the live edge: its input offset), so
        that a checkpoint need not carry it while it waits (`lean`)."""
        c = self.config
        events: list[OutputEvent] = []
        index = share.window_start_ms // c.step_ms
        for ready in self.join.add(share.subsystem, index, share, source):
            events.extend(self._judge(ready.index, ready.shares))
        self.join.forget_idle()
        return events

    def lean(self) -> tuple[ResourcePredictor, int | None]:
        """What a checkpoint seals: this predictor without its pending shares, and the source
        from which re-reading them (`restore_pending`) puts them back; ``(self, None)`` if
        nothing is pending or a pending share came without a source.

        Pending shares are ~1 KB each: a resource with 80 contributors and a dozen windows
        waiting for a partition behind in event time outgrew a Kafka record (1 MB)."""
        start = self.join.refill_from()
        if start is None:
            return self, None
        lean = copy.copy(self)
        lean.join = self.join.without_pending()
        return lean, start

    def restore_pending(self, share: ResourceShare) -> bool:
        """Put back a share re-read from `lean`'s source on: True if it was pending."""
        index = share.window_start_ms // self.config.step_ms
        return self.join.restore(share.subsystem, index, share)

    def depart(self, subsystems: list[str]) -> list[OutputEvent]:
        """Stop waiting for silent contributors (the live edge's liveness decision)."""
        events: list[OutputEvent] = []
        for ready in self.join.depart(subsystems):
            events.extend(self._judge(ready.index, ready.shares))
        return events

    def finish(self) -> list[OutputEvent]:
        """End of a finite input: judge every window still waiting for someone."""
        events: list[OutputEvent] = []
        for ready in self.join.drain_all():
            events.extend(self._judge(ready.index, ready.shares))
        return events

    def _judge(self, index: int, shares: Mapping[str, ResourceShare]) -> list[OutputEvent]:
        c = self.config
        self.windows += 1
        if self.capacity is None or not shares:
            return []
        origin_ms = (index + 1) * c.step_ms
        forecasts = {
            n: forecast_from_body(s.forecast, origin_ms, c.step_ms) for n, s in shares.items()
        }
        actual = {n: s.actual for n, s in shares.items()}
        events: list[OutputEvent] = []
        lift = 0.0
        if self.labels is not None:
            ceiling = max(MAX_CONFLICT_THRESHOLD - self.predictor.threshold, 0.0)
            lift = min(self.labels.raise_at(origin_ms), ceiling)
        if self.elastic is not None:
            events = self._judge_elastic(self.elastic, origin_ms, forecasts, actual, lift)
        else:
            for event in self.predictor.update(
                origin_ms, forecasts, actual, self.capacity, threshold_raise=lift
            ):
                events.append(event)
                self.scorer.observe(event)
                if isinstance(event, ConflictPredicted) and event.status != "cleared":
                    events.append(self._plan(event, forecasts))
        if self.windows % c.accuracy_every == 0:
            events.append(self.accuracy_report(origin_ms))
        return events

    def _judge_elastic(
        self,
        elastic: ElasticResource,
        origin_ms: int,
        forecasts: Mapping[str, SeriesForecast],
        actual: Mapping[str, float],
        lift: float,
    ) -> list[OutputEvent]:
        """An elastic resource's window: scale on the forecast total's upper bound, plan each
        conflict against the scheduled capacity, renew or publish the schedule (see
        `app.core.scaling`)."""
        assert self.capacity is not None
        mode = self.config.mode
        total = self.predictor.distribution(forecasts)
        calibrated = not any(fc.warming_up for fc in forecasts.values())
        observed = math.fsum(actual.values())
        z = self.predictor.upper_z(origin_ms, elastic.spec.level)
        elastic.observe(origin_ms, total, calibrated, self.capacity, observed, z)
        events: list[OutputEvent] = []
        planned = False
        for event in self.predictor.update(
            origin_ms, forecasts, actual, self.capacity, threshold_raise=lift
        ):
            events.append(event)
            self.scorer.observe(event)
            if isinstance(event, ConflictPredicted) and event.status != "cleared":
                plan = elastic.plan(event, total, self.capacity, self.policy, mode)  # type: ignore[arg-type]
                events.append(plan)
                planned = True
        if not planned:
            episode = self.predictor.episode
            extra = elastic.follow_up(
                episode.conflict_id if episode is not None else None,
                total,
                self.capacity,
                self.policy,
                mode,  # type: ignore[arg-type]
            )
            if extra is not None:
                events.append(extra)
        return events

    def _plan(
        self, conflict: ConflictPredicted, forecasts: Mapping[str, SeriesForecast]
    ) -> RebalanceRecommended:
        c = self.config
        h = (conflict.expected_start_ms - conflict.emitted_at_ms) // c.step_ms + 1
        demand = {
            n: {self.resource: max(0.0, fc.point[h - 1])} for n, fc in sorted(forecasts.items())
        }
        capacity = self.capacity or 0.0
        headroom = []
        for later in range(h + 1, c.horizon + 1):
            total = math.fsum(max(0.0, fc.point[later - 1]) for fc in forecasts.values())
            target = conflict.emitted_at_ms + (later - 1) * c.step_ms
            headroom.append((target, max(0.0, capacity - total)))
        return self.planner.plan(
            conflict,
            demand,
            {self.resource: headroom},
            self.policy,
            mode=c.mode,  # type: ignore[arg-type]
            capacities={self.resource: capacity},
        )

    def accuracy_report(self, emitted_at_ms: int) -> AccuracyReport:
        leads = sorted(self.scorer.lead_times_s)
        median = None
        if leads:
            mid = len(leads) // 2
            median = leads[mid] if len(leads) % 2 else (leads[mid - 1] + leads[mid]) / 2
        return AccuracyReport(
            event_id=f"accuracy:resource:{self.resource}:{emitted_at_ms}",
            emitted_at_ms=emitted_at_ms,
            scope=f"resource:{self.resource}",
            windows_scored=self.windows,
            horizons=[],
            conflict_precision=self.scorer.precision,
            conflict_recall=self.scorer.recall,
            conflict_median_lead_s=median,
        )


# --------------------------------------------------------------------------- one process


class PredictionEngine:
    """Both stages in one process: the offline driver (backtests, benchmarks, CSV tools).

    Examples
    --------
    >>> from app.core.config import FleetSpec
    >>> engine = PredictionEngine(FleetSpec())
    >>> engine.subsystems, engine.resources
    ({}, {})
    """

    def __init__(self, policy: FleetSpec) -> None:
        self.policy = policy
        self.config = EngineConfig.from_policy(policy)
        self.subsystems: dict[str, SubsystemPredictor] = {}
        self.resources: dict[str, ResourcePredictor] = {}

    def subsystem(self, name: str) -> SubsystemPredictor:
        predictor = self.subsystems.get(name)
        if predictor is None:
            sub = self.policy.subsystems.get(name)
            limits = sub.limits if sub is not None else {}
            predictor = self.subsystems[name] = SubsystemPredictor(name, self.config, limits)
        return predictor

    def resource(self, name: str) -> ResourcePredictor:
        predictor = self.resources.get(name)
        if predictor is None:
            predictor = self.resources[name] = ResourcePredictor(name, self.config, self.policy)
        return predictor

    def process(self, window: LoadWindow) -> list[OutputEvent]:
        """Learn one closed window; return every event it produced, in a fixed order."""
        out = self.subsystem(window.subsystem).process(window)
        events = list(out.events)
        for share in out.shares:
            events.extend(self.resource(share.resource).add(share))
        return events

    def label(self, label: OperatorLabel) -> None:
        """Route an operator's verdict to the series or resource its id names (`LabelRejected`
        if it names none this engine knows, or precedes its event)."""
        target = parse_target(label)
        if isinstance(target, AnomalyTarget):
            predictor = self.subsystems.get(target.subsystem)
            if predictor is None:
                raise LabelRejected("unknown_series", f"no subsystem {target.subsystem!r}")
            predictor.label(label)
        elif target.resource not in self.resources:
            raise LabelRejected("unknown_resource", f"no resource {target.resource!r}")
        else:
            self.resources[target.resource].label(label)

    def finish(self) -> list[OutputEvent]:
        """End of a finite input (a backtest): judge what still waits, resource by resource."""
        events: list[OutputEvent] = []
        for name in sorted(self.resources):
            events.extend(self.resources[name].finish())
        return events

    def snapshot(self, key: str | bytes) -> bytes:
        """All state, sealed with HMAC-SHA256 (see `app.core.snapshot`)."""
        return seal((self.subsystems, self.resources), key, context=("prediction-engine",))

    @classmethod
    def restore(cls, policy: FleetSpec, blob: bytes, key: str | bytes) -> PredictionEngine:
        engine = cls(policy)
        engine.subsystems, engine.resources = unseal(blob, key, context=("prediction-engine",))
        return engine
