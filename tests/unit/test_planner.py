"""RebalancePlanner: LP allocation, infeasibility, deferral, determinism."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.config import FleetSpec
from app.core.events import ConflictPredicted, ms_to_iso
from app.core.planner import RebalancePlanner
from app.core.snapshot import seal, unseal
from app.settings import FleetPolicy

STEP = 60_000
EMIT = 1_767_225_600_000
START = EMIT + 3 * STEP
KEY = "unit-test-snapshot-key-0123456789"
TOL = 1e-7


def conflict(resource: str = "db", capacity: float = 100.0) -> ConflictPredicted:
    return ConflictPredicted(
        event_id=f"{resource}@{START}:predicted:{EMIT}",
        status="predicted",
        conflict_id=f"{resource}@{START}",
        resource=resource,
        emitted_at_ms=EMIT,
        emitted_at=ms_to_iso(EMIT),
        expected_start_ms=START,
        expected_end_ms=START + STEP,
        expected_start=ms_to_iso(START),
        lead_time_s=180,
        probability=0.9,
        predicted_peak=150.0,
        capacity=capacity,
        contributors=[],
    )


def policy(
    subsystems: dict[str, dict[str, Any]], capacities: dict[str, float] | None = None
) -> FleetSpec:
    caps = capacities or {"db": 100.0}
    return FleetPolicy.model_validate(
        {"resources": {r: {"capacity": c} for r, c in caps.items()}, "subsystems": subsystems}
    ).spec()


def alloc(plan: Any, subsystem: str, resource: str = "db") -> Any:
    return next(a for a in plan.allocations if (a.subsystem, a.resource) == (subsystem, resource))


# --------------------------------------------------------------------------- properties

RESOURCES = ["db", "gpu"]


@st.composite
def problems(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 6))
    names = [f"s{i}" for i in range(n)]
    resources = RESOURCES[: draw(st.integers(1, 2))]
    amount = st.floats(0.0, 100.0, allow_nan=False)
    demand = {s: {r: draw(amount) for r in resources} for s in names}
    subsystems = {
        s: {
            "weight": draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0, 10.0])),
            "min": {r: draw(st.floats(0.0, 60.0)) for r in resources},
            "deferrable": draw(st.booleans()),
        }
        for s in names
        if draw(st.booleans()) or s == "s0"  # some subsystems are missing from the policy
    }
    caps = {r: draw(st.floats(1.0, 300.0)) for r in resources}
    headroom = {
        r: [(START + k * STEP, draw(st.floats(0.0, 40.0))) for k in range(1, 5)] for r in resources
    }
    return {
        "demand": demand,
        "policy": policy(subsystems, caps),
        "caps": caps,
        "headroom": headroom,
    }


def solve(problem: dict[str, Any]) -> Any:
    return RebalancePlanner().plan(
        conflict("db", problem["caps"]["db"]),
        problem["demand"],
        problem["headroom"],
        problem["policy"],
        "advise",
    )


def capped_min(problem: dict[str, Any], subsystem: str, resource: str) -> float:
    conf = problem["policy"].subsystems.get(subsystem)
    minimum = conf.min.get(resource, 0.0) if conf else 0.0
    return float(min(minimum, problem["demand"][subsystem][resource]))


def greedy_value(problem: dict[str, Any]) -> float:
    """Reference optimum: per resource, minimums first, then by weight (fractional knapsack)."""
    total = 0.0
    for res, cap in problem["caps"].items():
        cells = []
        for sub, per in problem["demand"].items():
            conf = problem["policy"].subsystems.get(sub)
            weight = conf.weight if conf else 1.0
            cells.append((weight, capped_min(problem, sub, res), per[res]))
        floor = sum(m for _, m, _ in cells)
        if floor > cap:
            return math.nan  # not compared when infeasible
        left = cap - floor
        for weight, minimum, dem in sorted(cells, key=lambda c: -c[0]):
            extra = min(dem - minimum, left)
            left -= extra
            total += weight * (minimum + extra)
    return total


@settings(max_examples=120, deadline=None)
@given(problems())
def test_plan_respects_capacity_minimums_and_demand(problem: dict[str, Any]) -> None:
    plan = solve(problem)
    infeasible = {
        r
        for r, cap in problem["caps"].items()
        if math.fsum(capped_min(problem, s, r) for s in problem["demand"]) > cap
    }
    assert plan.feasible == (not infeasible)
    assert (plan.residual_overload > 0) == bool(infeasible)
    expected_residual = sum(
        math.fsum(capped_min(problem, s, r) for s in problem["demand"]) - problem["caps"][r]
        for r in infeasible
    )
    assert plan.residual_overload == pytest.approx(expected_residual, abs=1e-9)
    for res, cap in problem["caps"].items():
        used = math.fsum(a.allocated for a in plan.allocations if a.resource == res)
        assert used <= cap + TOL * max(1.0, cap)
    for a in plan.allocations:
        assert 0.0 <= a.allocated <= a.demand
        assert a.minimum == capped_min(problem, a.subsystem, a.resource)
        if a.resource not in infeasible:
            assert a.allocated >= a.minimum - TOL
        assert all(math.isfinite(v) for v in (a.allocated, a.demand, a.minimum, a.weight))
    for value in (plan.residual_overload, plan.value_protected, plan.value_at_risk):
        assert math.isfinite(value)


@settings(max_examples=120, deadline=None)
@given(problems())
def test_plan_is_optimal_and_values_add_up(problem: dict[str, Any]) -> None:
    plan = solve(problem)
    served = math.fsum(a.weight * a.allocated for a in plan.allocations)
    if plan.feasible:
        assert served == pytest.approx(greedy_value(problem), rel=1e-6, abs=1e-6)
    deferred = {(d.subsystem, d.resource): 0.0 for d in plan.deferrals}
    for d in plan.deferrals:
        deferred[(d.subsystem, d.resource)] += d.amount
    weight_of = {(a.subsystem, a.resource): a.weight for a in plan.allocations}
    worth = math.fsum(a.weight * a.demand for a in plan.allocations)
    assert plan.value_protected + plan.value_at_risk == pytest.approx(worth, abs=1e-6)
    assert plan.value_protected == pytest.approx(
        served + math.fsum(weight_of[k] * v for k, v in deferred.items()), abs=1e-6
    )
    assert plan.value_at_risk >= 0.0


@settings(max_examples=120, deadline=None)
@given(problems())
def test_deferrals_fit_headroom_and_shortfall(problem: dict[str, Any]) -> None:
    plan = solve(problem)
    by_cell = {(a.subsystem, a.resource): a for a in plan.allocations}
    per_window: dict[tuple[str, int], float] = {}
    per_cell: dict[tuple[str, str], float] = {}
    for d in plan.deferrals:
        a = by_cell[(d.subsystem, d.resource)]
        assert a.action == "defer"
        assert problem["policy"].subsystems[d.subsystem].deferrable
        assert d.amount > 0 and d.from_ms == START and d.to_ms > START
        per_window[(d.resource, d.to_ms)] = per_window.get((d.resource, d.to_ms), 0.0) + d.amount
        per_cell[(d.subsystem, d.resource)] = per_cell.get((d.subsystem, d.resource), 0.0) + (
            d.amount
        )
    headroom = {(r, ts): h for r, rows in problem["headroom"].items() for ts, h in rows}
    for window, amount in per_window.items():
        assert amount <= headroom[window] + TOL
    for cell, amount in per_cell.items():
        a = by_cell[cell]
        assert amount <= a.demand - a.allocated + TOL
    for a in plan.allocations:
        if a.action == "keep":
            assert a.allocated >= a.demand - 1e-9
        else:
            assert a.allocated < a.demand


@settings(max_examples=60, deadline=None)
@given(problems())
def test_plan_is_deterministic(problem: dict[str, Any]) -> None:
    first = asdict(solve(problem))
    assert asdict(solve(problem)) == first
    shuffled = dict(problem)
    shuffled["demand"] = {
        s: dict(reversed(per.items())) for s, per in reversed(problem["demand"].items())
    }
    assert asdict(solve(shuffled)) == first


# --------------------------------------------------------------------------- examples


def test_higher_weight_is_served_first() -> None:
    pol = policy({"gold": {"weight": 10}, "bronze": {"weight": 1}})
    plan = RebalancePlanner().plan(
        conflict(), {"bronze": {"db": 70.0}, "gold": {"db": 70.0}}, {}, pol, "advise"
    )
    assert alloc(plan, "gold").allocated == pytest.approx(70.0)
    assert alloc(plan, "bronze").allocated == pytest.approx(30.0)
    assert (alloc(plan, "gold").action, alloc(plan, "bronze").action) == ("keep", "throttle")
    assert plan.feasible and plan.residual_overload == 0.0
    assert plan.value_protected == pytest.approx(10 * 70 + 30)
    assert plan.value_at_risk == pytest.approx(40.0)
    assert plan.event_id == f"plan:db@{START}:{EMIT}"
    assert plan.window_start_ms == START and plan.emitted_at_ms == EMIT


def test_minimum_protects_a_low_weight_subsystem() -> None:
    pol = policy({"gold": {"weight": 10}, "bronze": {"weight": 1, "min": {"db": 25.0}}})
    plan = RebalancePlanner().plan(
        conflict(), {"bronze": {"db": 70.0}, "gold": {"db": 90.0}}, {}, pol, "advise"
    )
    assert alloc(plan, "bronze").allocated == pytest.approx(25.0)
    assert alloc(plan, "gold").allocated == pytest.approx(75.0)


def test_equal_weights_tie_break_by_name() -> None:
    pol = policy({})
    plan = RebalancePlanner().plan(
        conflict(), {"zeta": {"db": 80.0}, "alpha": {"db": 80.0}}, {}, pol, "dry-run"
    )
    assert alloc(plan, "alpha").allocated == pytest.approx(80.0)
    assert alloc(plan, "zeta").allocated == pytest.approx(20.0)
    assert plan.mode == "dry-run"


def test_deferral_goes_to_the_earliest_headroom_windows() -> None:
    pol = policy({"api": {"weight": 5}, "batch": {"weight": 1, "deferrable": True}})
    headroom = {
        "db": [
            (START + 4 * STEP, 50.0),
            (START + 2 * STEP, 10.0),
            (START + 1 * STEP, 0.0),  # no headroom: skipped
            (START, 99.0),  # the conflict window itself: never a target
            (START + 3 * STEP, 15.0),
        ]
    }
    plan = RebalancePlanner().plan(
        conflict(), {"api": {"db": 80.0}, "batch": {"db": 60.0}}, headroom, pol, "advise"
    )
    assert alloc(plan, "batch").allocated == pytest.approx(20.0)
    assert alloc(plan, "batch").action == "defer"
    assert [d.to_ms for d in plan.deferrals] == [START + k * STEP for k in (2, 3, 4)]
    assert [d.amount for d in plan.deferrals] == pytest.approx([10.0, 15.0, 15.0])
    assert plan.value_at_risk == pytest.approx(0.0, abs=1e-9)


def test_deferral_headroom_is_shared_by_priority() -> None:
    pol = policy(
        {
            "etl": {"weight": 3, "deferrable": True},
            "report": {"weight": 1, "deferrable": True},
        }
    )
    plan = RebalancePlanner().plan(
        conflict(capacity=40.0),
        {"etl": {"db": 30.0}, "report": {"db": 30.0}},
        {"db": [(START + STEP, 15.0), (START + 2 * STEP, 15.0)]},
        pol,
        "advise",
    )
    # etl (weight 3) keeps 30; report gets 10, its 20 shortfall takes the headroom in order.
    assert [(d.subsystem, d.to_ms) for d in plan.deferrals] == [
        ("report", START + STEP),
        ("report", START + 2 * STEP),
    ]
    assert [d.amount for d in plan.deferrals] == pytest.approx([15.0, 5.0])


def test_deferrable_without_headroom_is_throttled_and_said() -> None:
    pol = policy({"batch": {"deferrable": True}})
    plan = RebalancePlanner().plan(conflict(), {"batch": {"db": 130.0}}, {}, pol, "advise")
    assert alloc(plan, "batch").action == "throttle"
    assert plan.deferrals == []
    assert "could not be deferred" in plan.note


def test_infeasible_minimums_are_reported_not_raised() -> None:
    pol = policy({"a": {"min": {"db": 90.0}}, "b": {"min": {"db": 60.0}}})
    plan = RebalancePlanner().plan(
        conflict(), {"a": {"db": 95.0}, "b": {"db": 80.0}}, {}, pol, "advise"
    )
    assert not plan.feasible
    assert plan.residual_overload == pytest.approx(50.0)
    assert alloc(plan, "a").allocated == pytest.approx(60.0)  # 90 * 100/150
    assert alloc(plan, "b").allocated == pytest.approx(40.0)
    assert "exceed capacity" in plan.note


def test_minimum_is_capped_at_demand() -> None:
    pol = policy({"a": {"min": {"db": 90.0}}, "b": {"min": {"db": 60.0}}})
    plan = RebalancePlanner().plan(
        conflict(), {"a": {"db": 10.0}, "b": {"db": 95.0}}, {}, pol, "advise"
    )
    assert plan.feasible
    assert alloc(plan, "a").minimum == 10.0
    assert alloc(plan, "b").allocated == pytest.approx(90.0)


def test_several_resources_are_planned_jointly() -> None:
    pol = policy(
        {"ml": {"weight": 4}, "api": {"weight": 2}, "etl": {"weight": 1, "deferrable": True}},
        {"db": 100.0, "gpu": 8.0},
    )
    demand = {
        "ml": {"db": 20.0, "gpu": 6.0},
        "api": {"db": 70.0, "gpu": 0.0},
        "etl": {"db": 40.0, "gpu": 4.0},
    }
    plan = RebalancePlanner().plan(
        conflict(), demand, {"gpu": [(START + STEP, 5.0)]}, pol, "advise"
    )
    assert plan.resources == ["db", "gpu"]
    assert alloc(plan, "ml", "gpu").allocated == pytest.approx(6.0)
    assert alloc(plan, "etl", "gpu").allocated == pytest.approx(2.0)
    assert alloc(plan, "etl", "db").allocated == pytest.approx(10.0)
    assert [d.resource for d in plan.deferrals] == ["gpu"]
    assert plan.deferrals[0].amount == pytest.approx(2.0)
    assert "could not be deferred" in plan.note  # the db shortfall had no headroom


def test_unknown_capacity_and_bad_demand_are_noted() -> None:
    pol = policy({})
    plan = RebalancePlanner().plan(
        conflict(),
        {"a": {"db": 50.0, "cache": 500.0}, "b": {"db": math.nan, "cache": -3.0}},
        {},
        pol,
        "advise",
    )
    assert alloc(plan, "a", "cache").allocated == 500.0
    assert alloc(plan, "b", "db").demand == 0.0 and alloc(plan, "b", "cache").demand == 0.0
    assert "cache: no capacity known" in plan.note
    assert "read as 0" in plan.note


def test_capacity_override_and_missing_policy_defaults() -> None:
    plan = RebalancePlanner().plan(
        conflict(),
        {"x": {"db": 50.0}, "y": {"db": 50.0}},
        {},
        policy({}),
        "advise",
        capacities={"db": 60.0},
    )
    assert [(a.subsystem, a.weight, a.minimum) for a in plan.allocations] == [
        ("x", 1.0, 0.0),
        ("y", 1.0, 0.0),
    ]
    assert math.fsum(a.allocated for a in plan.allocations) == pytest.approx(60.0)


def test_empty_demand_and_sealed_planner() -> None:
    blob = seal(RebalancePlanner(tie_epsilon=1e-7), KEY, context=("t",))
    planner = unseal(blob, KEY, context=("t",))
    assert isinstance(planner, RebalancePlanner) and planner.tie_epsilon == 1e-7
    plan = planner.plan(conflict(), {}, {}, policy({}), "advise")
    assert plan.allocations == [] and plan.feasible and plan.value_at_risk == 0.0
