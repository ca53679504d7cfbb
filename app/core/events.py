"""What the pure core takes and emits, as plain frozen dataclasses: load windows, dead
letters, forecasts, shares, anomalies, conflicts, plans, accuracy reports, runtime policies.

The core owns these types and imports nothing to build them. The wire contract
(`app.wire.events`) mirrors each with a pydantic model — the same fields in the same order,
with the constraints and descriptions that validate PSO's inputs and make ``schemas/`` — and
serialises them (a test holds the two in step, byte for byte). Event ids are deterministic
functions of the content's identity (subsystem, series, window, conflict), so a re-emitted
event after a crash or a replay carries the same id and consumers can de-duplicate.

Times: every event carries integer epoch milliseconds (``*_ms``, what code should use) and,
where a person reads it, the same instant as an RFC 3339 UTC string (`ms_to_iso`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
MAX_SERIES_PER_SAMPLE = 256
#: Largest magnitude a telemetry value may have. Far beyond any real measurement (a 64-bit
#: counter stops at 1.8e19), and far enough below the float range (1.8e308) that every sum,
#: square and product the windows and models compute stays finite: two values of 1e308 in one
#: window overflowed the window's sum, three in one resource's demand the conflict predictor's.
MAX_ABS_VALUE = 1e100
#: A dead letter lists at most this many rejects one by one; the rest are only counted.
MAX_REJECTS_LISTED = 100

DeadLetterReason = Literal[
    "invalid_json",
    "invalid_sample",
    "empty_batch",
    "too_large",
    "late",
    "time_jump",
    "invalid_policy",
    "invalid_label",
    "invalid_record",
    "internal_error",
]


def ms_to_iso(ms: int) -> str:
    """RFC 3339 UTC with millisecond precision, e.g. ``2026-11-25T06:00:00.000Z``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


_iso_cache: dict[int, str] = {}


def iso_ms(ms: int) -> str:
    """`ms_to_iso`, cached (bounded): every subsystem's windows and every series' forecasts
    share the same boundaries, and ``strftime`` costs as much as a series' update.

    >>> iso_ms(1_795_392_000_000)
    '2026-11-23T00:00:00.000Z'
    """
    text = _iso_cache.get(ms)
    if text is None:
        if len(_iso_cache) >= 65_536:
            _iso_cache.clear()
        text = _iso_cache[ms] = ms_to_iso(ms)
    return text


@dataclass(frozen=True, slots=True, kw_only=True)
class SeriesStats:
    """Aggregate of one series (metric or resource use) over one window."""

    count: int
    mean: float
    min: float
    max: float
    last: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadWindow:
    """A closed event-time tumbling window of one subsystem's telemetry (topic ``pso.load``)."""

    type: Literal["load_window"] = "load_window"
    event_id: str
    subsystem: str
    window_start_ms: int
    window_end_ms: int
    window_start: str
    window_end: str
    samples: int
    metrics: dict[str, SeriesStats]
    resources: dict[str, SeriesStats]


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    """Why one sample of a message (or the message itself) was not windowed."""

    index: int | None = None
    reason_code: DeadLetterReason
    reason: str
    subsystem: str | None = None
    ts_ms: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """An input PSO could not (wholly) use, with its bytes and why (topic ``pso.deadletter``).

    One record per input message, however many of its samples were rejected: ``rejects``
    lists the first `MAX_REJECTS_LISTED` of them in batch order, ``rejected`` counts them all,
    ``rejected_by_reason`` by reason. ``reason_code`` and ``reason`` repeat the first reject's.
    The original bytes are carried once (``original_b64``); a record that would still be too
    large to send carries only their length and SHA-256 (``original_b64`` null), so a dead
    letter is never lost to its own size. Samples held back as a time jump and dead-lettered
    later (``time_jump``) come in a record of their own, whose "original" is the JSON array of
    those samples as parsed, with the position of the message that carried them.
    """

    type: Literal["dead_letter"] = "dead_letter"
    event_id: str
    reason_code: DeadLetterReason
    reason: str
    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    origin: str | None = None
    key_b64: str | None = None
    rejected: int
    rejected_by_reason: dict[str, int]
    rejects: list[Reject]
    original_bytes: int
    original_sha256: str
    original_b64: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Interval:
    """Prediction interval at one coverage level, one bound per horizon."""

    level: float
    lower: list[float]
    upper: list[float]


@dataclass(frozen=True, slots=True, kw_only=True)
class SeriesForecastBody:
    """Forecast of one series of a subsystem for horizons 1..H windows ahead."""

    point: list[float]
    intervals: list[Interval]
    model: str
    recent_error: float
    warming_up: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Forecast:
    """All series of one subsystem forecast at the close of one window (topic ``pso.forecasts``).

    ``point[h-1]`` forecasts the window starting at ``origin_ms + (h-1) * step_s * 1000``.
    """

    type: Literal["forecast"] = "forecast"
    event_id: str
    subsystem: str
    origin_ms: int
    origin: str
    step_s: int
    horizon: int
    metrics: dict[str, SeriesForecastBody]
    resources: dict[str, SeriesForecastBody]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourceShare:
    """One subsystem's forecast and actual use of one shared resource for one window.

    Stage 1 (partitioned by subsystem) emits it; stage 2 (partitioned by resource) joins the
    shares of every contributor. Internal topic, but plain JSON like every other.
    """

    type: Literal["resource_share"] = "resource_share"
    event_id: str
    subsystem: str
    resource: str
    window_start_ms: int
    step_s: int
    actual: float
    forecast: SeriesForecastBody


@dataclass(frozen=True, slots=True, kw_only=True)
class ContributorsDeparted:
    """Stage 2 stops waiting for contributors that went silent (internal, on the shares topic).

    Written by the live topology's liveness timer into the stream itself, so that a replay of
    the shares topic takes the same decision at the same point.
    """

    type: Literal["contributors_departed"] = "contributors_departed"
    event_id: str
    resource: str
    subsystems: list[str]
    waiting_window_start_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SubsystemShareOverride:
    """A subsystem's runtime terms at one resource; an absent field keeps ``pso.yaml``'s."""

    weight: float | None = None
    min: float | None = None
    deferrable: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResourcePolicy:
    """The runtime policy of one shared resource (compacted topic ``pso.capacity``).

    Keyed by the resource name. Each record replaces the previous one for that resource: an
    absent field means "as in ``pso.yaml``", and a tombstone (empty value) reverts the resource
    to ``pso.yaml`` altogether. Stage 2 applies it in stream order, from the point it arrives.
    """

    type: Literal["resource_policy"] = "resource_policy"
    resource: str
    capacity: float | None = None
    unit: str | None = None
    subsystems: dict[str, SubsystemShareOverride] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorLabel:
    """An operator's verdict on one of PSO's alarms (compacted topic ``pso.labels``, keyed by
    ``id``): ``verdict`` ``"false"`` = a false alarm, ``"true"`` = a real one. ``id`` is an
    `AnomalyDetected` event id or a `ConflictPredicted` event id (or its ``conflict_id``);
    ``ts`` (epoch ms) is when the verdict applies from, in event time (`app.core.labels`)."""

    type: Literal["operator_label"] = "operator_label"
    target: Literal["anomaly", "conflict"]
    id: str
    verdict: Literal["true", "false"]
    ts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AnomalyDetected:
    """First window of an anomalous episode on one series (topic ``pso.anomalies``)."""

    type: Literal["anomaly"] = "anomaly"
    event_id: str
    subsystem: str
    series_kind: Literal["metric", "resource"]
    series: str
    window_start_ms: int
    window_end_ms: int
    window_start: str
    value: float
    expected: float
    lower: float
    upper: float
    score: float
    detector: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Contributor:
    """One subsystem's part in a predicted conflict, at the predicted peak."""

    subsystem: str
    share: float
    forecast: float
    lower: float
    upper: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ConflictPredicted:
    """A shared resource's demand is forecast to exceed its capacity (topic ``pso.conflicts``).

    Lifecycle per ``conflict_id``: ``predicted`` once, ``updated`` when it changes materially,
    ``cleared`` when it no longer holds.
    """

    type: Literal["conflict_predicted"] = "conflict_predicted"
    event_id: str
    status: Literal["predicted", "updated", "cleared"]
    conflict_id: str
    resource: str
    emitted_at_ms: int
    emitted_at: str
    expected_start_ms: int
    expected_end_ms: int
    expected_start: str
    lead_time_s: int
    probability: float
    predicted_peak: float
    capacity: float
    contributors: list[Contributor]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConflictObserved:
    """Actual demand on a shared resource exceeded its capacity in a closed window."""

    type: Literal["conflict_observed"] = "conflict_observed"
    event_id: str
    resource: str
    window_start_ms: int
    window_end_ms: int
    window_start: str
    demand: float
    capacity: float
    predicted_by: str | None = None
    lead_time_s: int | None = None
    contributors: list[Contributor]


@dataclass(frozen=True, slots=True, kw_only=True)
class SaturationPredicted:
    """A subsystem metric is forecast to cross its configured limit."""

    type: Literal["saturation_predicted"] = "saturation_predicted"
    event_id: str
    subsystem: str
    metric: str
    limit: float
    emitted_at_ms: int
    expected_start_ms: int
    lead_time_s: int
    probability: float
    predicted_peak: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Allocation:
    """What one subsystem gets of one resource in the plan."""

    subsystem: str
    resource: str
    demand: float
    allocated: float
    minimum: float
    weight: float
    action: Literal["keep", "throttle", "defer"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Deferral:
    """Deferrable load moved to a later window with predicted headroom."""

    subsystem: str
    resource: str
    amount: float
    from_ms: int
    to_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleAction:
    """Change an elastic resource's capacity: start at ``start_ms`` so it lands by ``lands_ms``.

    Scale-out starts ``provision_delay`` before the window it is for (or at once when that is
    already past: it then lands late); scale-in starts at once and lands at once.
    """

    resource: str
    capacity: float  # capacity when decided
    target: float
    start_ms: int
    lands_ms: int
    reason: Literal["predicted", "observed", "scale_in"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RebalanceRecommended:
    """A value-ranked plan answering one predicted conflict (topic ``pso.rebalance``).

    Allocations hold over ``[window_start_ms, window_end_ms)``. For an elastic resource a plan
    also carries its scale schedule (``scaling``, the orders not yet landed, in start order:
    it replaces any earlier schedule of the resource), and a plan may carry only that
    (``conflict_id`` empty, no allocations) when capacity must change without a conflict.
    """

    type: Literal["rebalance_recommended"] = "rebalance_recommended"
    event_id: str
    conflict_id: str
    mode: Literal["advise", "dry-run"]
    emitted_at_ms: int
    window_start_ms: int
    resources: list[str]
    allocations: list[Allocation]
    deferrals: list[Deferral]
    feasible: bool
    residual_overload: float
    value_protected: float
    value_at_risk: float
    note: str = ""
    window_end_ms: int | None = None
    scaling: list[ScaleAction] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class HorizonAccuracy:
    """Accuracy of forecasts at one horizon, over the scored targets so far."""

    horizon: int
    n: int
    mae: float
    mase: float | None
    coverage: dict[str, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class AccuracyReport:
    """Forecast and conflict accuracy so far (topic ``pso.accuracy``)."""

    type: Literal["accuracy_report"] = "accuracy_report"
    event_id: str
    emitted_at_ms: int
    scope: str
    windows_scored: int
    horizons: list[HorizonAccuracy]
    conflict_precision: float | None
    conflict_recall: float | None
    conflict_median_lead_s: float | None


OutputEvent = (
    LoadWindow
    | DeadLetter
    | Forecast
    | AnomalyDetected
    | ConflictPredicted
    | ConflictObserved
    | SaturationPredicted
    | RebalanceRecommended
    | AccuracyReport
    | ResourceShare
)
