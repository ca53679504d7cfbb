"""Runtime policy of a shared resource: ``pso.yaml`` overlaid with a `ResourcePolicy` record.

Operators change a resource's capacity, or a subsystem's weight, guaranteed minimum or
deferrability *at that resource*, by writing to the compacted ``pso.capacity`` topic. Stage 2
owns one resource per key, so the overlay is per resource and needs no coordination: the
result is an ordinary `FleetSpec` that the planner reads as if it came from the file.
"""

from __future__ import annotations

from dataclasses import replace

from app.core.config import FleetSpec, ResourceSpec, SubsystemSpec
from app.core.events import ResourcePolicy


def overlay(base: FleetSpec, update: ResourcePolicy) -> FleetSpec:
    """``base`` with ``update`` applied to its resource; ``base`` itself is not changed.

    Examples
    --------
    >>> from app.core.events import SubsystemShareOverride
    >>> base = FleetSpec(resources={"db": ResourceSpec(capacity=100.0)})
    >>> new = overlay(base, ResourcePolicy(resource="db", capacity=120.0,
    ...               subsystems={"api": SubsystemShareOverride(weight=3.0, min=10.0)}))
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
        elastic = configured.elastic if configured is not None else None  # bounds stay
        resources[name] = ResourceSpec(capacity=capacity, unit=unit, elastic=elastic)
    subsystems = dict(base.subsystems)
    for sub_name, terms in sorted(update.subsystems.items()):
        current = base.subsystems.get(sub_name) or SubsystemSpec()
        changes: dict[str, object] = {}
        if terms.weight is not None:
            changes["weight"] = terms.weight
        if terms.deferrable is not None:
            changes["deferrable"] = terms.deferrable
        if terms.min is not None:
            changes["min"] = {**current.min, name: terms.min}
        subsystems[sub_name] = replace(current, **changes)  # type: ignore[arg-type]
    return replace(base, resources=resources, subsystems=subsystems)
