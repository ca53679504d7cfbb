"""The simulated fleet's actuators on hand-made cases: proportional service under overload,
work dropped or queued (and its delay), deferral until release, throttling, compliance and
the provisioning delay of added capacity."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.closedloop import CapOrder, DemandTrace, FleetOrders, LoopSpec, Plant, ScaleOrder
from app.core.config import ElasticSpec, FleetSpec, ResourceSpec, SubsystemSpec

STEP = 60_000
HOUR = 60.0  # windows per hour


def _trace(rows: list[tuple[float, float]]) -> DemandTrace:
    """Two subsystems ``a`` and ``b`` on one pool, one row of demand per window."""
    demand = np.array(rows, dtype=np.float64).reshape(len(rows), 2, 1)
    return DemandTrace("t", 0, STEP, ("a", "b"), ("pool",), demand, np.ones((2, 1), dtype=bool))


def _policy(capacity: float = 10.0, elastic: ElasticSpec | None = None) -> FleetSpec:
    return FleetSpec(
        resources={"pool": ResourceSpec(capacity, elastic=elastic)},
        subsystems={"a": SubsystemSpec(weight=2.0), "b": SubsystemSpec(weight=1.0)},
    )


def _cap(limit: float, *, defer: bool, end_ms: int = STEP, release_ms: int = STEP) -> FleetOrders:
    cap = CapOrder("b", "pool", limit, 0, end_ms, defer, release_ms)
    return FleetOrders(at_ms=0, caps={"pool": [cap]})


def test_overload_serves_everyone_the_same_fraction_and_drops_what_cannot_wait() -> None:
    plant = Plant(_trace([(10.0, 10.0)]), _policy(), LoopSpec())
    out = plant.step(0)
    assert out.conflict.tolist() == [True]
    assert out.admitted.tolist() == [20.0]
    # each served 10/20 of its 10: 5 lost each, weighted 2 and 1, over 1/60 h
    assert out.unmet_value == pytest.approx((2.0 * 5 + 1.0 * 5) / HOUR)
    assert out.delayed == 0.0


def test_work_that_may_wait_is_queued_and_served_later_with_its_delay() -> None:
    loop = LoopSpec(patience_s={"a": 3600, "b": 3600})
    plant = Plant(_trace([(10.0, 10.0), (0.0, 0.0)]), _policy(), loop)
    first = plant.step(0)
    assert first.conflict.tolist() == [True] and first.unmet_value == 0.0
    second = plant.step(1)
    assert second.offered[:, 0].tolist() == [5.0, 5.0]  # the queues, asked again
    assert second.conflict.tolist() == [False]
    assert second.delayed == pytest.approx(10.0 / HOUR)
    assert second.delay_weighted_s == pytest.approx(10.0 / HOUR * 60.0)  # one window late
    assert second.unmet_value == 0.0


def test_queued_work_older_than_its_patience_is_lost() -> None:
    loop = LoopSpec(patience_s={"a": 60, "b": 60})
    plant = Plant(_trace([(10.0, 10.0), (10.0, 10.0)]), _policy(), loop)
    assert plant.step(0).unmet_value == 0.0
    lost = plant.step(1).unmet_value  # window 0's queue can no longer be served in time
    assert lost == pytest.approx((2.0 * 5 + 1.0 * 5) / HOUR)


def test_deferred_work_is_held_until_its_release_then_served() -> None:
    loop = LoopSpec(patience_s={"b": 3600})
    plant = Plant(_trace([(10.0, 10.0), (0.0, 0.0), (0.0, 0.0)]), _policy(), loop)
    plant.receive(_cap(0.0, defer=True, release_ms=2 * STEP))
    first = plant.step(0)
    assert first.conflict.tolist() == [False]  # b admitted nothing: a alone fits
    assert first.deferred == pytest.approx(10.0 / HOUR)
    assert plant.step(1).offered[1, 0] == 0.0  # still held
    third = plant.step(2)
    assert third.offered[1, 0] == 10.0
    assert third.delayed == pytest.approx(10.0 / HOUR)
    assert third.delay_weighted_s == pytest.approx(10.0 / HOUR * 120.0)
    assert third.unmet_value == 0.0


def test_throttled_work_that_cannot_wait_is_unmet() -> None:
    plant = Plant(_trace([(10.0, 10.0)]), _policy(), LoopSpec())
    plant.receive(_cap(4.0, defer=False))
    out = plant.step(0)
    assert out.admitted.tolist() == [14.0]
    assert out.conflict.tolist() == [True]
    assert out.deferred == 0.0
    # b: 6 cut (lost, weight 1); then 14 admitted on 10: 10/14 served of a's 10 and b's 4
    cut = 6.0
    overflow_a, overflow_b = 10.0 * 4 / 14, 4.0 * 4 / 14
    expected = (1.0 * cut + 2.0 * overflow_a + 1.0 * overflow_b) / HOUR
    assert out.unmet_value == pytest.approx(expected)


def test_partial_compliance_admits_its_share_of_the_excess() -> None:
    plant = Plant(_trace([(0.0, 10.0)]), _policy(), LoopSpec(compliance=0.5))
    plant.receive(_cap(2.0, defer=False))
    assert plant.step(0).admitted.tolist() == [6.0]  # 2 + (1 - 0.5) x 8


def test_added_capacity_lands_after_its_provisioning_delay() -> None:
    spec = ElasticSpec(min=10.0, max=100.0, step=10.0, provision_delay_s=120)
    plant = Plant(_trace([(10.0, 5.0)] * 4), _policy(10.0, spec), LoopSpec())
    plant.receive(FleetOrders(at_ms=0, schedules={"pool": [ScaleOrder("pool", 20.0, 0)]}))
    outs = [plant.step(k) for k in range(4)]
    assert [float(o.capacity[0]) for o in outs] == [10.0, 10.0, 20.0, 20.0]
    assert [bool(o.conflict[0]) for o in outs] == [True, True, False, False]
    assert [o.actions for o in outs] == [1, 0, 0, 0]


def test_removed_capacity_goes_at_once_and_an_order_mid_window_counts_pro_rata() -> None:
    spec = ElasticSpec(min=10.0, max=100.0, step=10.0, provision_delay_s=0)
    plant = Plant(_trace([(1.0, 1.0)] * 2), _policy(40.0, spec), LoopSpec())
    plant.receive(FleetOrders(at_ms=30_000, schedules={"pool": [ScaleOrder("pool", 20.0, 0)]}))
    assert [float(plant.step(k).capacity[0]) for k in range(2)] == [30.0, 20.0]
