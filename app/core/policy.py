"""Runtime policy of a shared resource: ``pso.yaml`` overlaid with a `ResourcePolicy` record.

Operators change a resource's capacity, or a subsystem's weight, guaranteed minimum or
deferrability *at that resource*, by writing to the compacted ``pso.capacity`` topic. Stage 2
owns one resource per key, so the overlay is per resource and needs no coordination: the
result is an ordinary `FleetPolicy` that the planner reads as if it came from the file.
"""

from __future__ import annotations

import orjson
from pydantic import ValidationError

from app.settings import FleetPolicy, ResourceConfig, SubsystemConfig
from app.wire.events import ResourcePolicy


def overlay(base: FleetPolicy, update: ResourcePolicy) -> FleetPolicy:
    """``base`` with ``update`` applied to its resource; ``base`` itself is not changed.

    Examples
    --------
    >>> base = FleetPolicy.model_validate({"resources": {"db": {"capacity": 100}}})
    >>> new = overlay(base, ResourcePolicy(resource="db", capacity=120,
    ...               subsystems={"api": {"weight": 3, "min": 10}}))
    >>> new.resources["db"].capacity, new.subsystems["api"].weight, new.subsystems["api"].min
    (120.0, 3.0, {'db': 10.0})
    >>> overlay(base, ResourcePolicy(resource="db")) == base  # an empty record reverts
    True
    """
    name = update.resource
    resources = dict(base.resources)
    configured = base.resources.get(name)
    capacity = update.capacity
    if capacity is None and configured is not None:
        capacity = configured.capacity
    if capacity is not None:
        unit = update.unit if update.unit is not None else ""
        if update.unit is None and configured is not None:
            unit = configured.unit
        resources[name] = ResourceConfig(capacity=capacity, unit=unit)
    subsystems = dict(base.subsystems)
    for sub_name, terms in sorted(update.subsystems.items()):
        current = base.subsystems.get(sub_name) or SubsystemConfig()
        changes: dict[str, object] = {}
        if terms.weight is not None:
            changes["weight"] = terms.weight
        if terms.deferrable is not None:
            changes["deferrable"] = terms.deferrable
        if terms.min is not None:
            changes["min"] = {**current.min, name: terms.min}
        subsystems[sub_name] = current.model_copy(update=changes)
    return base.model_copy(update={"resources": resources, "subsystems": subsystems})


class InvalidPolicy(ValueError):
    """A ``pso.capacity`` record PSO cannot apply; the message is the dead-letter reason."""


def decode_policy_record(key: bytes | None, value: bytes | None) -> ResourcePolicy:
    """One ``pso.capacity`` record -> the `ResourcePolicy` it sets.

    The key names the resource (compaction keeps one record per resource); the value may
    repeat it. An empty value is a tombstone: back to ``pso.yaml``.

    >>> decode_policy_record(b"db", b'{"capacity": 80}').capacity
    80.0
    >>> decode_policy_record(b"db", None) == ResourcePolicy(resource="db")
    True
    """
    name = key.decode("utf-8", "replace") if key else None
    if not value:
        if not name:
            raise InvalidPolicy("a tombstone needs the resource name as its key")
        return ResourcePolicy(resource=name)
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidPolicy(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidPolicy("a resource policy is a JSON object")
    doc.setdefault("type", "resource_policy")
    if name is not None and doc.setdefault("resource", name) != name:
        raise InvalidPolicy(f"key {name!r} and resource {doc['resource']!r} differ")
    try:
        return ResourcePolicy.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise InvalidPolicy(f"{where}: {first['msg']}") from None
