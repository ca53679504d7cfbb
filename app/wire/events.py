"""The wire contract: every message PSO reads or writes, as pydantic v2 models.

Each output topic carries plain JSON (no framing fields) matching the JSON Schema that
`pso schemas export` writes into ``schemas/``; a test keeps the two in sync. Event ids are
deterministic functions of the content's identity (subsystem, series, window, conflict), so a
re-emitted event after a crash or a replay carries the same id and consumers can de-duplicate.

Times: every event carries integer epoch milliseconds (``*_ms``, what code should use) and,
where a person reads it, the same instant as an RFC 3339 UTC string.

Long (about 620 lines) because the wire contract is one place: every topic's message side by
side, so a change to one is reviewed next to the others and beside `schemas/`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
MAX_SERIES_PER_SAMPLE = 256
#: Largest magnitude a telemetry value may have. Far beyond any real measurement (a 64-bit
#: counter stops at 1.8e19), and far enough below the float range (1.8e308) that every sum,
#: square and product the windows and models compute stays finite: two values of 1e308 in one
#: window overflowed the window's sum, three in one resource's demand the conflict predictor's.
MAX_ABS_VALUE = 1e100

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\s\x00-\x1f]+$")]


def ms_to_iso(ms: int) -> str:
    """RFC 3339 UTC with millisecond precision, e.g. ``2026-11-25T06:00:00.000Z``."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse_ts(value: Any) -> int:
    """Accept RFC 3339 strings (with offset or Z) or epoch milliseconds; return epoch ms."""
    if isinstance(value, bool):
        raise ValueError("ts must be an RFC 3339 string or epoch milliseconds, not a boolean")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("ts must be finite")
        ms = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"ts {value!r} is not RFC 3339") from None
        if parsed.tzinfo is None:
            raise ValueError(f"ts {value!r} has no UTC offset (add Z or +00:00)")
        ms = int(parsed.timestamp() * 1000)
    else:
        raise ValueError("ts must be an RFC 3339 string or epoch milliseconds")
    if not MIN_TS_MS <= ms < MAX_TS_MS:
        raise ValueError(
            f"ts {value!r} is out of range (2000-01-01..2100-01-01); "
            "epoch timestamps must be in milliseconds"
        )
    return ms


EventTimeMs = Annotated[
    int,
    BeforeValidator(_parse_ts),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "integer", "minimum": MIN_TS_MS, "exclusiveMaximum": MAX_TS_MS},
            ],
            "description": "RFC 3339 with offset, or epoch milliseconds",
        }
    ),
]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(allow_inf_nan=False, ge=0)]


def _within_range(value: float) -> float:
    if not -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:
        raise ValueError(f"{value:g} is beyond ±1e100, the largest magnitude PSO takes")
    return value


#: A telemetry value: finite and within ±`MAX_ABS_VALUE`.
MeasuredFloat = Annotated[
    float,
    Field(allow_inf_nan=False),
    AfterValidator(_within_range),
    WithJsonSchema({"type": "number", "minimum": -MAX_ABS_VALUE, "maximum": MAX_ABS_VALUE}),
]
#: A resource use: finite, non-negative and at most `MAX_ABS_VALUE`.
ResourceUse = Annotated[
    float,
    Field(allow_inf_nan=False, ge=0),
    AfterValidator(_within_range),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": MAX_ABS_VALUE}),
]
LabelValue = str | int | float | bool


def _fields(value: Any) -> Any:
    """orjson's hook for what it cannot serialise itself: nested wire models."""
    if isinstance(value, _Wire):
        return value.__dict__
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class _Wire(BaseModel):
    """Base of every wire type: strict about unknown fields, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def to_json(self) -> bytes:
        """Canonical bytes: the same event always serialises to the same bytes.

        The bytes of ``orjson.dumps(self.model_dump(mode="json"))`` (a test holds them equal),
        without building that dict: every field here is plain JSON data or another wire model,
        whose fields are, in declaration order, its ``__dict__``.
        """
        return orjson.dumps(self.__dict__, default=_fields)


# --------------------------------------------------------------------------- telemetry (in)


class TelemetrySample(_Wire):
    """One observation of one subsystem: load metrics and shared-resource use.

    Producers key the Kafka message by ``subsystem``; a message value is one sample or a JSON
    array of samples (a batch envelope).
    """

    subsystem: Name
    ts: EventTimeMs
    metrics: dict[Name, MeasuredFloat] = Field(default_factory=dict)
    resources: dict[Name, ResourceUse] = Field(default_factory=dict)
    labels: dict[Name, LabelValue] = Field(default_factory=dict)

    @field_validator("resources")
    @classmethod
    def _bounded_resources(cls, value: dict[str, float]) -> dict[str, float]:
        if len(value) > MAX_SERIES_PER_SAMPLE:
            raise ValueError(f"at most {MAX_SERIES_PER_SAMPLE} resources per sample")
        return value

    @field_validator("metrics")
    @classmethod
    def _bounded_metrics(cls, value: dict[str, float]) -> dict[str, float]:
        if len(value) > MAX_SERIES_PER_SAMPLE:
            raise ValueError(f"at most {MAX_SERIES_PER_SAMPLE} metrics per sample")
        return value


# --------------------------------------------------------------------------- load windows


class SeriesStats(_Wire):
    """Aggregate of one series (metric or resource use) over one window."""

    count: int = Field(ge=1)
    mean: FiniteFloat
    min: FiniteFloat
    max: FiniteFloat
    last: FiniteFloat


class LoadWindow(_Wire):
    """A closed event-time tumbling window of one subsystem's telemetry (topic ``pso.load``)."""

    type: Literal["load_window"] = "load_window"
    event_id: str
    subsystem: Name
    window_start_ms: int
    window_end_ms: int
    window_start: str
    window_end: str
    samples: int = Field(ge=1)
    metrics: dict[str, SeriesStats]
    resources: dict[str, SeriesStats]


# --------------------------------------------------------------------------- dead letters

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

#: A dead letter lists at most this many rejects one by one; the rest are only counted.
MAX_REJECTS_LISTED = 100


class Reject(_Wire):
    """Why one sample of a message (or the message itself) was not windowed."""

    index: int | None = Field(
        default=None, description="position in the batch envelope; null: the message itself"
    )
    reason_code: DeadLetterReason
    reason: str = Field(max_length=500)
    subsystem: str | None = Field(default=None, max_length=200)
    ts_ms: int | None = Field(default=None, description="event time of the sample, if known")


class DeadLetter(_Wire):
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
    origin: str | None = Field(
        default=None,
        description="topic:partition:offset of the message a forwarded copy was made from",
    )
    key_b64: str | None = Field(default=None, description="the original key, base64 (to 4 KiB)")
    rejected: int = Field(ge=1, description="samples (or messages) rejected in all")
    rejected_by_reason: dict[str, int]
    rejects: list[Reject] = Field(max_length=MAX_REJECTS_LISTED)
    original_bytes: int = Field(ge=0, description="length of the original bytes")
    original_sha256: str
    original_b64: str | None = Field(
        description="the original bytes, base64 (null if the record would be too large)"
    )


# --------------------------------------------------------------------------- forecasts


class Interval(_Wire):
    """Prediction interval at one coverage level, one bound per horizon."""

    level: float = Field(gt=0, lt=1)
    lower: list[FiniteFloat]
    upper: list[FiniteFloat]


class SeriesForecastBody(_Wire):
    """Forecast of one series of a subsystem for horizons 1..H windows ahead."""

    point: list[FiniteFloat]
    intervals: list[Interval]
    model: str = Field(description="the candidate (or blend) that produced the point forecast")
    recent_error: FiniteFloat = Field(description="recent mean absolute error of that model")
    warming_up: bool


class Forecast(_Wire):
    """All series of one subsystem forecast at the close of one window (topic ``pso.forecasts``).

    ``point[h-1]`` forecasts the window starting at ``origin_ms + (h-1) * step_s * 1000``.
    """

    type: Literal["forecast"] = "forecast"
    event_id: str
    subsystem: Name
    origin_ms: int
    origin: str
    step_s: int
    horizon: int
    metrics: dict[str, SeriesForecastBody]
    resources: dict[str, SeriesForecastBody]


class ResourceShare(_Wire):
    """One subsystem's forecast and actual use of one shared resource for one window.

    Stage 1 (partitioned by subsystem) emits it; stage 2 (partitioned by resource) joins the
    shares of every contributor. Internal topic, but plain JSON like every other.
    """

    type: Literal["resource_share"] = "resource_share"
    event_id: str
    subsystem: Name
    resource: Name
    window_start_ms: int
    step_s: int
    actual: FiniteFloat
    forecast: SeriesForecastBody


class ResourceShares(_Wire):
    """Consecutive shares of one resource from one stage-1 partition, in the order stage 1
    made them (internal topic). Stage 1 sends one such record per resource for each batch
    of windows it takes, rather than one record per window: Faust costs about as much per
    record as stage 2's work on a share."""

    type: Literal["resource_shares"] = "resource_shares"
    resource: Name
    shares: list[ResourceShare] = Field(min_length=1)

    @model_validator(mode="after")
    def _all_of_this_resource(self) -> ResourceShares:
        for share in self.shares:
            if share.resource != self.resource:
                raise ValueError(f"a share of {share.resource!r} in a batch of {self.resource!r}")
        return self


class ContributorsDeparted(_Wire):
    """Stage 2 stops waiting for contributors that went silent (internal, on the shares topic).

    Written by the live topology's liveness timer into the stream itself, so that a replay of
    the shares topic takes the same decision at the same point.
    """

    type: Literal["contributors_departed"] = "contributors_departed"
    event_id: str
    resource: Name
    subsystems: list[str]
    waiting_window_start_ms: int


class SubsystemShareOverride(_Wire):
    """A subsystem's runtime terms at one resource; an absent field keeps ``pso.yaml``'s."""

    weight: NonNegativeFloat | None = None
    min: NonNegativeFloat | None = Field(default=None, description="guaranteed use of the resource")
    deferrable: bool | None = None


class ResourcePolicy(_Wire):
    """The runtime policy of one shared resource (compacted topic ``pso.capacity``).

    Keyed by the resource name. Each record replaces the previous one for that resource: an
    absent field means "as in ``pso.yaml``", and a tombstone (empty value) reverts the resource
    to ``pso.yaml`` altogether. Stage 2 applies it in stream order, from the point it arrives.
    """

    type: Literal["resource_policy"] = "resource_policy"
    resource: Name
    capacity: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    unit: str | None = None
    subsystems: dict[Name, SubsystemShareOverride] = Field(default_factory=dict)


# --------------------------------------------------------------------------- operator labels


def _verdict(value: Any) -> Any:
    """``"true"``/``"false"``; JSON booleans are taken for them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


class OperatorLabel(_Wire):
    """An operator's verdict on one of PSO's alarms (compacted topic ``pso.labels``).

    Keyed by ``id``, so compaction keeps the latest verdict per alarm. ``verdict`` ``"false"``
    says the alarm was a false one (that series' or resource's threshold rises, within a bound,
    and decays back over event time), ``"true"`` that it was real (the raise comes back down).
    """

    type: Literal["operator_label"] = "operator_label"
    target: Literal["anomaly", "conflict"]
    id: str = Field(
        min_length=1,
        max_length=1000,
        description="an AnomalyDetected event_id, or a ConflictPredicted event_id or conflict_id",
    )
    verdict: Annotated[Literal["true", "false"], BeforeValidator(_verdict)] = Field(
        description='"true": a real problem; "false": a false alarm'
    )
    ts: EventTimeMs = Field(description="event time the verdict applies from")


# --------------------------------------------------------------------------- anomalies


class AnomalyDetected(_Wire):
    """First window of an anomalous episode on one series (topic ``pso.anomalies``)."""

    type: Literal["anomaly"] = "anomaly"
    event_id: str
    subsystem: Name
    series_kind: Literal["metric", "resource"]
    series: str
    window_start_ms: int
    window_end_ms: int
    window_start: str
    value: FiniteFloat
    expected: FiniteFloat
    lower: FiniteFloat
    upper: FiniteFloat
    score: float = Field(ge=0, le=1)
    detector: str


# --------------------------------------------------------------------------- conflicts


class Contributor(_Wire):
    """One subsystem's part in a predicted conflict, at the predicted peak."""

    subsystem: str
    share: float = Field(ge=0, le=1, description="fraction of the predicted peak demand")
    forecast: FiniteFloat
    lower: FiniteFloat
    upper: FiniteFloat


class ConflictPredicted(_Wire):
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
    probability: float = Field(ge=0, le=1)
    predicted_peak: FiniteFloat
    capacity: FiniteFloat
    contributors: list[Contributor]


class ConflictObserved(_Wire):
    """Actual demand on a shared resource exceeded its capacity in a closed window."""

    type: Literal["conflict_observed"] = "conflict_observed"
    event_id: str
    resource: str
    window_start_ms: int
    window_end_ms: int
    window_start: str
    demand: FiniteFloat
    capacity: FiniteFloat
    predicted_by: str | None = Field(
        default=None, description="conflict_id of the prediction that foresaw it, if any"
    )
    lead_time_s: int | None = None
    contributors: list[Contributor]


class SaturationPredicted(_Wire):
    """A subsystem metric is forecast to cross its configured limit."""

    type: Literal["saturation_predicted"] = "saturation_predicted"
    event_id: str
    subsystem: str
    metric: str
    limit: FiniteFloat
    emitted_at_ms: int
    expected_start_ms: int
    lead_time_s: int
    probability: float = Field(ge=0, le=1)
    predicted_peak: FiniteFloat


# --------------------------------------------------------------------------- rebalance plans


class Allocation(_Wire):
    """What one subsystem gets of one resource in the plan."""

    subsystem: str
    resource: str
    demand: FiniteFloat
    allocated: FiniteFloat
    minimum: FiniteFloat
    weight: FiniteFloat
    action: Literal["keep", "throttle", "defer"]


class Deferral(_Wire):
    """Deferrable load moved to a later window with predicted headroom."""

    subsystem: str
    resource: str
    amount: FiniteFloat
    from_ms: int
    to_ms: int


class ScaleAction(_Wire):
    """Change an elastic resource's capacity: start at ``start_ms`` so it lands by ``lands_ms``."""

    resource: str
    capacity: FiniteFloat = Field(description="capacity when decided")
    target: FiniteFloat = Field(gt=0, description="capacity to have once it lands")
    start_ms: int = Field(description="event time to start provisioning (or removing)")
    lands_ms: int = Field(description="event time it is in place (start + provisioning delay)")
    reason: Literal["predicted", "observed", "scale_in"]


class RebalanceRecommended(_Wire):
    """A value-ranked plan answering one predicted conflict (topic ``pso.rebalance``).

    Allocations hold over ``[window_start_ms, window_end_ms)``. For an elastic resource the
    plan also carries its scale schedule (``scaling``: the orders not yet landed, replacing any
    earlier schedule of the resource); a plan may carry only that (``conflict_id`` empty).
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
    residual_overload: FiniteFloat = Field(ge=0)
    value_protected: FiniteFloat
    value_at_risk: FiniteFloat
    note: str = ""
    window_end_ms: int | None = Field(
        default=None, description="end of the window the allocations hold for (exclusive)"
    )
    scaling: list[ScaleAction] = Field(
        default_factory=list, description="scale schedule of elastic resources, in start order"
    )


# --------------------------------------------------------------------------- accuracy


class HorizonAccuracy(_Wire):
    """Accuracy of forecasts at one horizon, over the scored targets so far."""

    horizon: int
    n: int
    mae: FiniteFloat
    mase: FiniteFloat | None
    coverage: dict[str, FiniteFloat]


class AccuracyReport(_Wire):
    """Forecast and conflict accuracy so far (topic ``pso.accuracy``)."""

    type: Literal["accuracy_report"] = "accuracy_report"
    event_id: str
    emitted_at_ms: int
    scope: str = Field(description="'all' or a subsystem name")
    windows_scored: int
    horizons: list[HorizonAccuracy]
    conflict_precision: FiniteFloat | None
    conflict_recall: FiniteFloat | None
    conflict_median_lead_s: FiniteFloat | None


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

#: schema file name -> model; `pso schemas export` writes these into schemas/.
SCHEMAS: dict[str, type[BaseModel]] = {
    "telemetry.v1.json": TelemetrySample,
    "load_window.v1.json": LoadWindow,
    "dead_letter.v2.json": DeadLetter,
    "forecast.v1.json": Forecast,
    "anomaly.v1.json": AnomalyDetected,
    "conflict_predicted.v1.json": ConflictPredicted,
    "conflict_observed.v1.json": ConflictObserved,
    "saturation_predicted.v1.json": SaturationPredicted,
    "rebalance.v2.json": RebalanceRecommended,
    "accuracy_report.v1.json": AccuracyReport,
    "resource_share.v1.json": ResourceShare,
    "resource_shares.v1.json": ResourceShares,
    "contributors_departed.v1.json": ContributorsDeparted,
    "resource_policy.v1.json": ResourcePolicy,
    "operator_label.v1.json": OperatorLabel,
}
