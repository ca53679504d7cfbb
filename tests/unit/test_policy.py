"""Runtime resource policy (``pso.capacity``): applied from the point it arrives, revertible."""

from __future__ import annotations

import orjson

from app.core.engine import PredictionEngine
from app.core.events import (
    ConflictPredicted,
    LoadWindow,
    RebalanceRecommended,
    ResourcePolicy,
    SubsystemShareOverride,
)
from app.core.policy import overlay
from app.dev.simulator import FleetSimulator
from app.settings import FleetPolicy
from app.wire.codec import SourceRef
from app.wire.telemetry import TelemetryIngest


def _scenario() -> tuple[FleetPolicy, list[LoadWindow]]:
    sim = FleetSimulator(subsystems=4, seed=2, interval_ms=30_000)
    policy = sim.policy(headroom=3.0)  # generous: no conflict under pso.yaml
    ingest = TelemetryIngest(policy.window)
    windows: list[LoadWindow] = []
    for i, sample in enumerate(sim.samples(8 * 3_600_000)):
        windows.extend(ingest.process(orjson.dumps(sample), SourceRef("t", 0, i)).windows)
    return policy, windows


def test_overlay_changes_only_the_named_resource_and_terms() -> None:
    base = FleetPolicy.model_validate(
        {
            "resources": {"db": {"capacity": 100, "unit": "conns"}, "gpu": {"capacity": 8}},
            "subsystems": {"api": {"weight": 2, "min": {"gpu": 1}, "deferrable": False}},
        }
    ).spec()
    new = overlay(
        base,
        ResourcePolicy(
            resource="db",
            subsystems={
                "api": SubsystemShareOverride(min=5.0, deferrable=True),
                "etl": SubsystemShareOverride(weight=0.5),
            },
        ),
    )
    assert new.resources["db"].capacity == 100 and new.resources["db"].unit == "conns"
    assert new.resources["gpu"] == base.resources["gpu"]
    assert new.subsystems["api"].min == {"gpu": 1, "db": 5}
    assert new.subsystems["api"].weight == 2 and new.subsystems["api"].deferrable
    assert new.subsystems["etl"].weight == 0.5
    assert base.subsystems["api"].min == {"gpu": 1}  # the base is untouched
    # a resource pso.yaml does not know gets a capacity from the topic alone
    assert overlay(base, ResourcePolicy(resource="new", capacity=3)).resources["new"].capacity == 3


def test_capacity_update_takes_effect_from_its_point_in_the_stream_and_reverts() -> None:
    policy, windows = _scenario()
    resources = sorted(policy.resources)
    engine = PredictionEngine(policy.spec())
    cut, back = len(windows) // 2, 3 * len(windows) // 4
    before = [e for w in windows[:cut] for e in engine.process(w)]
    assert not [e for e in before if isinstance(e, ConflictPredicted)]
    for name in resources:
        tight = policy.resources[name].capacity / 10
        engine.resource(name).apply_policy(ResourcePolicy(resource=name, capacity=tight))
    during = [e for w in windows[cut:back] for e in engine.process(w)]
    conflicts = [e for e in during if isinstance(e, ConflictPredicted)]
    assert conflicts, "a capacity cut to a tenth must predict conflicts"
    for event in conflicts:
        assert event.capacity == policy.resources[event.resource].capacity / 10
    plans = [e for e in during if isinstance(e, RebalanceRecommended)]
    assert plans
    for name in resources:
        engine.resource(name).apply_policy(ResourcePolicy(resource=name))  # tombstone
        assert engine.resource(name).capacity == policy.resources[name].capacity
        assert engine.resource(name).policy == policy.spec()
    after = [e for w in windows[back:] for e in engine.process(w)]
    statuses = [e.status for e in after if isinstance(e, ConflictPredicted)]
    assert statuses and set(statuses) <= {"cleared", "updated"} and "cleared" in statuses
