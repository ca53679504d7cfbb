"""Records of PSO's own topics, to and from the core's types: encode an event for Kafka,
decode a load window, a resource-shares record or a runtime policy, validated on the way in
by the wire models (anyone may write to a topic)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

import app.core.events as core
from app.core.labels import AnomalyTarget, ConflictTarget, LabelRejected, check_time, parse_target
from app.errors import ExitCode, PsoError, validation_reason
from app.wire.events import (
    ContributorsDeparted,
    LoadWindow,
    OperatorLabel,
    ResourcePolicy,
    ResourceShare,
    ResourceShares,
)

#: what stage 2 applies in turn, decoded from one record of the shares topic
ResourceRecord = (
    core.ResourceShare | core.ResourcePolicy | core.ContributorsDeparted | core.OperatorLabel
)
#: what stage 1 applies, decoded from one record of ``pso.load``
LoadRecord = core.LoadWindow | core.OperatorLabel


def encode(event: Any) -> bytes:
    """An event's canonical JSON bytes: the same event always serialises to the same bytes
    (fields in declaration order, as the wire model and its schema list them)."""
    return orjson.dumps(event, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_shares(resource: str, shares: Sequence[core.ResourceShare]) -> bytes:
    """A `ResourceShares` record: consecutive shares of one resource."""
    return encode({"type": "resource_shares", "resource": resource, "shares": list(shares)})


def to_core(model: BaseModel) -> Any:
    """The core's dataclass for a validated wire model (same name, same fields)."""
    cls = getattr(core, type(model).__name__)
    return cls(**{name: _to_core(getattr(model, name)) for name in type(model).model_fields})


def _to_core(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return to_core(value)
    if isinstance(value, list):
        return [_to_core(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_core(v) for k, v in value.items()}
    return value


def decode_window(value: bytes | None) -> core.LoadWindow:
    """One record of ``pso.load`` (ValueError if it is not a `LoadWindow`)."""
    if value is None:
        raise ValueError("no value (a tombstone)")
    window: core.LoadWindow = to_core(LoadWindow.model_validate(orjson.loads(value)))
    return window


def decode_load_record(value: bytes | None) -> LoadRecord:
    """One record of ``pso.load``: a `LoadWindow`, or an anomaly label the labels agent
    routed to its subsystem's stage 1 (ValueError if it is neither)."""
    if value is None:
        raise ValueError("no value (a tombstone)")
    doc = orjson.loads(value)
    if isinstance(doc, dict) and doc.get("type") == "operator_label":
        label: core.OperatorLabel = to_core(OperatorLabel.model_validate(doc))
        return label
    window: core.LoadWindow = to_core(LoadWindow.model_validate(doc))
    return window


def decode_resource_record(value: bytes | None) -> list[ResourceRecord]:
    """One record of ``{app_id}-resource-shares``: a batch of shares, a share, a policy or a
    departure, as the records stage 2 applies in turn (ValueError if it is none of them)."""
    if value is None:
        raise ValueError("no value (a tombstone)")
    doc = orjson.loads(value)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    kind = doc.get("type")
    if kind == "resource_shares":
        return [to_core(s) for s in ResourceShares.model_validate(doc).shares]
    if kind == "resource_policy":
        return [to_core(ResourcePolicy.model_validate(doc))]
    if kind == "contributors_departed":
        return [to_core(ContributorsDeparted.model_validate(doc))]
    if kind == "operator_label":
        return [to_core(OperatorLabel.model_validate(doc))]
    return [to_core(ResourceShare.model_validate(doc))]


def _json_object(value: bytes, what: str, error: type[PsoError]) -> dict[str, Any]:
    """``value`` parsed as one JSON object, or ``error`` with a reason fit for a dead letter."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise error(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise error(f"{what} is a JSON object")
    return doc


class InvalidPolicy(PsoError, ValueError):
    """A ``pso.capacity`` record PSO cannot apply; the message is the dead-letter reason."""

    exit_code = ExitCode.USER_ERROR


def decode_policy_record(key: bytes | None, value: bytes | None) -> core.ResourcePolicy:
    """One ``pso.capacity`` record -> the `ResourcePolicy` it sets.

    The key names the resource (compaction keeps one record per resource); the value may
    repeat it. An empty value is a tombstone: back to ``pso.yaml``.

    >>> decode_policy_record(b"db", b'{"capacity": 80}').capacity
    80.0
    >>> decode_policy_record(b"db", None) == core.ResourcePolicy(resource="db")
    True
    """
    name = key.decode("utf-8", "replace") if key else None
    if not value:
        if not name:
            raise InvalidPolicy("a tombstone needs the resource name as its key")
        return core.ResourcePolicy(resource=name)
    doc = _json_object(value, "a resource policy", InvalidPolicy)
    doc.setdefault("type", "resource_policy")
    if name is not None and doc.setdefault("resource", name) != name:
        raise InvalidPolicy(f"key {name!r} and resource {doc['resource']!r} differ")
    try:
        policy: core.ResourcePolicy = to_core(ResourcePolicy.model_validate(doc))
        return policy
    except ValidationError as exc:
        raise InvalidPolicy(validation_reason(exc, "record")) from None


class InvalidLabel(PsoError, ValueError):
    """A ``pso.labels`` record PSO cannot apply; the message is the dead-letter reason."""

    exit_code = ExitCode.USER_ERROR


def decode_label_record(
    key: bytes | None, value: bytes | None
) -> tuple[core.OperatorLabel, AnomalyTarget | ConflictTarget]:
    """One ``pso.labels`` record -> the label and what its id names (`InvalidLabel` if not).

    The key, if any, must be the label's ``id`` (compaction keeps one verdict per alarm). A
    tombstone withdraws nothing: a verdict, once taught, decays over event time instead.

    >>> label, target = decode_label_record(
    ...     b"db@1700000060000", b'{"target": "conflict", "id": "db@1700000060000",'
    ...     b' "verdict": "false", "ts": "2023-11-14T22:20:00Z"}')
    >>> label.verdict, label.ts, target.resource
    ('false', 1700000400000, 'db')
    """
    if not value:
        raise InvalidLabel("a tombstone (empty value): verdicts are not withdrawn, they decay")
    doc = _json_object(value, "a label", InvalidLabel)
    doc.setdefault("type", "operator_label")
    try:
        label: core.OperatorLabel = to_core(OperatorLabel.model_validate(doc))
    except ValidationError as exc:
        raise InvalidLabel(validation_reason(exc, "record")) from None
    if key is not None and key != label.id.encode():
        shown = key.decode("utf-8", "replace")[:200]
        raise InvalidLabel(f"key {shown!r} and id {label.id[:200]!r} differ")
    try:
        target = parse_target(label)
        check_time(label, target)
    except LabelRejected as exc:
        raise InvalidLabel(f"{exc.code}: {exc}") from None
    return label, target
