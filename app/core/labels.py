"""Operators teach PSO: verdicts on its own alarms move the thresholds that raised them.

An operator labels an `AnomalyDetected` or a `ConflictPredicted` event (topic ``pso.labels``,
`app.core.events.OperatorLabel`): ``verdict`` ``"false"`` says the alarm was a false one,
``"true"`` that it was real. The event's id names what raised it — a series of a subsystem,
or a shared resource — so a label moves that one series' anomaly threshold, or that one
resource's conflict alert threshold, and nothing else:

* false-positive labels **raise** the threshold, true-positive labels bring it **back**: the
  raise is ``max_raise × F / (F + T + prior)``, ``F`` and ``T`` the decayed counts of false
  and true verdicts;
* the raise is **bounded** by ``max_raise`` whatever the number of labels (a flood of them
  cannot silence a series: an anomaly with a likelihood above ``threshold + max_raise``
  always alarms), never negative (labels cannot make a series noisier than it was), and it
  **decays** in event time: each label's weight halves every ``half_life_ms``;
* it is a function of **event time** only: at time ``t`` (a window's start, a conflict's
  origin) it counts the labels with ``ts <= t`` and weighs them by ``t - ts``, summed in
  ``(ts, key)`` order. So the same labels give the same raise whatever order they arrived in,
  and a replay with the same labels gives the same events.

Each event is one verdict: a new label on the same id (the compacted topic keeps the latest)
replaces the one before if its ``ts`` is newer, or equal and the one before said ``"false"``
(two opposite verdicts at the same ``ts``: ``"true"`` stands, whichever came first). A
conflict's events (``predicted``, ``updated``, ``cleared``) share one verdict, keyed by their
``conflict_id``.

Pure and deterministic: no clock, plain picklable state (it lives in the engine's
checkpointed predictors).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Literal

from app.core.errors import ExitCode, PsoError
from app.core.events import OperatorLabel

__all__ = [
    "ANOMALY_LABELS",
    "CONFLICT_LABELS",
    "MAX_CONFLICT_THRESHOLD",
    "AnomalyTarget",
    "ConflictTarget",
    "LabelBook",
    "LabelRejected",
    "LabelSpec",
    "anomaly_event_id",
    "check_time",
    "is_false_positive",
    "parse_target",
]

DAY_MS = 86_400_000
#: A conflict alert threshold is never raised above this (or above its base, if higher).
MAX_CONFLICT_THRESHOLD = 0.95
_PRUNE_HALF_LIVES = 12  # a label older than this weighs < 1/4096: dropped

LabelReason = Literal["invalid_id", "unknown_series", "unknown_resource", "before_event"]


class LabelRejected(PsoError, ValueError):
    """A label that cannot be applied; ``code`` says why in one word, the message in full."""

    exit_code = ExitCode.USER_ERROR

    def __init__(self, code: LabelReason, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class LabelSpec:
    """How far and how long labels move one threshold.

    ``max_raise``: the most the threshold can rise (the bound); ``half_life_ms``: a label's
    weight halves this often in event time; ``prior``: pseudo-count of true verdicts (one
    false label alone raises by ``max_raise / (1 + prior)``); ``max_labels``: labels kept per
    series or resource (the newest by ``(ts, id)``)."""

    max_raise: float
    half_life_ms: int = 7 * DAY_MS
    prior: float = 0.5
    max_labels: int = 64

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_raise < 1.0:
            raise ValueError("max_raise must be in [0, 1)")
        if self.half_life_ms < 1 or self.prior <= 0.0 or self.max_labels < 1:
            raise ValueError("half_life_ms, prior and max_labels must be positive")


#: Anomaly likelihoods (base threshold 0.6): at most 0.9, ~1 in 10^9 under the series' own
#: history, which spatial and flatline breaks and real incidents still reach.
ANOMALY_LABELS = LabelSpec(max_raise=0.3)
#: Conflict probabilities (base threshold 0.5): at most 0.8 (and never over 0.95).
CONFLICT_LABELS = LabelSpec(max_raise=0.3)


@dataclass(slots=True)
class LabelBook:
    """The verdicts on one series' (or one resource's) alarms, and the raise they add."""

    spec: LabelSpec
    verdicts: dict[str, tuple[int, bool]] = field(default_factory=dict)  # key -> (ts, false?)
    order: list[tuple[int, str]] = field(default_factory=list)  # (ts, key), sorted

    def add(self, key: str, ts_ms: int, false_positive: bool) -> None:
        """One verdict on the alarm ``key`` at event time ``ts_ms``."""
        held = self.verdicts.get(key)
        if held is not None:
            if held[0] > ts_ms or (held[0] == ts_ms and not held[1]):
                return  # older than the verdict held, or a tie with a "true": that stands
            self.order.remove((held[0], key))
        self.verdicts[key] = (ts_ms, false_positive)
        bisect.insort(self.order, (ts_ms, key))
        while len(self.order) > self.spec.max_labels:
            _, oldest = self.order.pop(0)
            del self.verdicts[oldest]

    def raise_at(self, t_ms: int) -> float:
        """The threshold's raise at event time ``t_ms``, in ``[0, max_raise]``."""
        spec = self.spec
        half = spec.half_life_ms
        false = true = 0.0
        stale = 0
        for ts, key in self.order:
            if ts > t_ms:
                break  # not yet: a label counts from its own time on
            age = t_ms - ts
            if age > _PRUNE_HALF_LIVES * half:
                stale += 1
                continue
            weight: float = 0.5 ** (age / half)
            if self.verdicts[key][1]:
                false += weight
            else:
                true += weight
        if stale:  # event time only moves forward here: they will never count again
            for _, key in self.order[:stale]:
                del self.verdicts[key]
            del self.order[:stale]
        if false == 0.0:
            return 0.0
        return spec.max_raise * false / (false + true + spec.prior)

    def __len__(self) -> int:
        return len(self.order)


# --------------------------------------------------------------------------- ids


@dataclass(frozen=True, slots=True)
class AnomalyTarget:
    """What an anomaly label's id names: a series of a subsystem, and the alarm's window."""

    subsystem: str
    kind: Literal["metric", "resource"]
    series: str
    window_start_ms: int

    @property
    def key(self) -> str:
        return anomaly_event_id(self.subsystem, self.kind, self.series, self.window_start_ms)


@dataclass(frozen=True, slots=True)
class ConflictTarget:
    """What a conflict label's id names: a resource, the conflict, and when it was emitted
    (None for a bare ``conflict_id``)."""

    resource: str
    conflict_id: str
    emitted_at_ms: int | None

    @property
    def key(self) -> str:
        return self.conflict_id


def anomaly_event_id(subsystem: str, kind: str, series: str, window_start_ms: int) -> str:
    """The id of `AnomalyDetected`: ``anomaly:{subsystem}:{kind}:{series}:{window_start_ms}``."""
    return f"anomaly:{subsystem}:{kind}:{series}:{window_start_ms}"


_ANOMALY = re.compile(r"anomaly:(?P<sub>.+?):(?P<kind>metric|resource):(?P<series>.+):(?P<ts>\d+)")
_CONFLICT = re.compile(
    r"(?P<cid>(?P<resource>.+)@\d+(?:~\d+)?)(?::(?:predicted|updated|cleared):(?P<at>\d+))?"
)


def parse_target(label: OperatorLabel) -> AnomalyTarget | ConflictTarget:
    """The series or resource ``label.id`` names (`LabelRejected` ``invalid_id`` if none).

    Anomaly ids are ``anomaly:{subsystem}:{metric|resource}:{series}:{window_start_ms}``;
    names may hold ``:``, so the subsystem is read as the shortest prefix followed by
    ``:metric:`` or ``:resource:`` (a subsystem whose name holds one of those is misread, and
    its labels are rejected as naming an unknown series). Conflict ids are a
    `ConflictPredicted` ``event_id`` (``{conflict_id}:{status}:{emitted_at_ms}``) or its
    ``conflict_id`` (``{resource}@{start_ms}``, maybe ``~{origin_ms}``): unambiguous.

    >>> def label(target, id):
    ...     return OperatorLabel(target=target, id=id, verdict="false", ts=1)
    >>> a = parse_target(label("anomaly", "anomaly:api:metric:p99:latency:1700000000000"))
    >>> a.subsystem, a.kind, a.series, a.window_start_ms
    ('api', 'metric', 'p99:latency', 1700000000000)
    >>> c = parse_target(label("conflict", "db@main@1700000060000:updated:1700000000000"))
    >>> c.resource, c.conflict_id, c.emitted_at_ms
    ('db@main', 'db@main@1700000060000', 1700000000000)
    """
    if label.target == "anomaly":
        m = _ANOMALY.fullmatch(label.id)
        if m is None:
            raise LabelRejected(
                "invalid_id",
                f"id {label.id[:200]!r} is not an AnomalyDetected event id "
                "(anomaly:{subsystem}:{metric|resource}:{series}:{window_start_ms})",
            )
        kind: Literal["metric", "resource"] = "metric" if m["kind"] == "metric" else "resource"
        return AnomalyTarget(m["sub"], kind, m["series"], int(m["ts"]))
    m = _CONFLICT.fullmatch(label.id)
    if m is None:
        raise LabelRejected(
            "invalid_id",
            f"id {label.id[:200]!r} is not a ConflictPredicted event id or conflict id "
            "({resource}@{start_ms}[:{status}:{emitted_at_ms}])",
        )
    at = m["at"]
    return ConflictTarget(m["resource"], m["cid"], int(at) if at is not None else None)


def check_time(label: OperatorLabel, target: AnomalyTarget | ConflictTarget) -> None:
    """A verdict cannot precede the alarm it judges (`LabelRejected` ``before_event``)."""
    event_ms = target.window_start_ms if isinstance(target, AnomalyTarget) else target.emitted_at_ms
    if event_ms is not None and label.ts < event_ms:
        raise LabelRejected(
            "before_event", f"label ts {label.ts} is before its event ({event_ms}): not a verdict"
        )


def is_false_positive(label: OperatorLabel) -> bool:
    """``verdict`` ``"false"``: the alarm was a false one."""
    return label.verdict == "false"
