"""Scale actions of an elastic resource: scale-out lands by the breach it is for; scale-in
only after the hold, to the largest need seen over it (hysteresis: no flapping)."""

from __future__ import annotations

from app.core.config import ElasticSpec
from app.core.conflicts import TotalDemand, level_z
from app.core.scaling import ScalePlanner, upper_path

STEP = 60_000
SPEC = ElasticSpec(
    min=10.0,
    max=100.0,
    step=10.0,
    provision_delay_s=120,
    target_utilisation=0.5,
    scale_in_hold_s=180,
)


def _planner() -> ScalePlanner:
    return ScalePlanner("pool", SPEC, step_ms=STEP)


def test_scale_out_starts_a_provisioning_delay_before_the_breach() -> None:
    sp = _planner()
    assert sp.decide(0, [10.0, 12.0, 30.0], capacity=30.0)  # window 2 needs 60
    (order,) = sp.schedule
    assert order.reason == "predicted"
    assert order.target == 60.0
    assert order.lands_ms == 2 * STEP  # in place when the breach starts
    assert order.lands_ms - order.start_ms == SPEC.provision_delay_ms


def test_demand_around_a_step_boundary_does_not_flap() -> None:
    sp = _planner()
    changes = 0
    for k in range(60):
        demand = 20.5 if k % 2 else 19.5  # needs 50 and 40 in turn
        changes += sp.decide(k * STEP, [demand] * 3, capacity=50.0)
    assert changes == 0 and sp.schedule == []


def test_scale_in_waits_for_the_hold_and_keeps_the_largest_need_seen() -> None:
    sp = _planner()
    decided = [sp.decide(k * STEP, [d] * 3, capacity=80.0) for k, d in enumerate([10, 17, 10, 10])]
    # the hold is 180 s: the first low window (t=0) is old enough only at t=180 s
    assert decided == [False, False, False, True]
    (order,) = sp.schedule
    assert order.reason == "scale_in"
    assert order.target == 40.0  # 17 / 0.5 = 34 -> 40, the largest need over the hold
    assert order.start_ms == order.lands_ms == 3 * STEP


def test_a_peak_inside_the_hold_postpones_scale_in() -> None:
    sp = _planner()
    demand = [10, 10, 38, 10, 10, 10, 10]  # 38 needs 80: the capacity in place
    decided = [sp.decide(k * STEP, [d] * 3, capacity=80.0) for k, d in enumerate(demand)]
    assert decided == [False] * 6 + [True]  # the peak leaves the hold window at t=360 s


def test_a_need_within_the_tolerance_keeps_the_capacity() -> None:
    fine = ElasticSpec(min=10.0, max=200.0, step=1.0, target_utilisation=0.5, scale_in_hold_s=60)
    sp = ScalePlanner("pool", fine, step_ms=STEP)
    changes = [sp.decide(k * STEP, [46.0] * 3, capacity=100.0) for k in range(30)]  # needs 92
    assert not any(changes)


def test_upper_path_takes_a_learnt_z_longer_than_a_shortened_total() -> None:
    """The predictor learns z for its whole horizon; a contributor with a shorter forecast
    shortens the total. The bound is then the total's horizons only, not an error."""
    total = TotalDemand(
        target_ms=(0, 60_000),
        mean=(10.0, 20.0),
        sigma_up=(1.0, 2.0),
        sigma_down=(1.0, 2.0),
        names=(),
        paths=(),
    )
    assert upper_path(total, 0.6, [0.5, 1.0, 3.0]) == [10.5, 22.0]
    assert upper_path(total, 0.6, [0.5]) == [10.5, 20.0 + 2.0 * level_z(0.6)]
