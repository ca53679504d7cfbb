"""Closed-loop scenarios: their ground-truth conflict episodes are in their data, and the same
arguments give the same data."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from app.dev.scenarios import SCENARIOS, episodes, generate, samples

CONFLICTED = [name for name in SCENARIOS if name != "steady"]


@pytest.mark.parametrize("name", CONFLICTED)
def test_ground_truth_episodes_are_the_overloads_in_the_natural_demand(name: str) -> None:
    sc = generate(name, days=5, seed=3)
    assert sc.episodes, f"{name} has no conflict without intervention"
    totals = sc.trace.totals()
    over = np.zeros(totals.shape, dtype=bool)
    for ep in sc.episodes:
        r = sc.trace.resources.index(ep["resource"])
        first = (ep["start_ms"] - sc.trace.start_ms) // sc.trace.step_ms
        last = (ep["end_ms"] - sc.trace.start_ms) // sc.trace.step_ms
        assert last - first == ep["windows"] >= 1
        assert (totals[first:last, r] > ep["capacity"]).all()  # every window is over
        assert totals[first:last, r].max() == pytest.approx(ep["peak"], abs=1e-3)
        over[first:last, r] = True
    capacity = np.array([sc.policy.resources[r].capacity for r in sc.trace.resources])
    assert ((totals > capacity) == over).all()  # and no overloaded window is left out


def test_steady_is_a_control_without_conflicts() -> None:
    sc = generate("steady", days=5, seed=3)
    assert sc.episodes == []
    capacity = sc.policy.resources["cpu-pool"].capacity
    assert sc.trace.totals().max() < 0.8 * capacity  # under the target utilisation


def test_episodes_are_found_per_resource() -> None:
    sc = generate("daily-peaks", subsystems=8, resources=2, days=3, seed=1)
    assert sc.trace.resources == ("cpu-pool", "db-pool")
    assert {ep["resource"] for ep in sc.episodes} == {"cpu-pool", "db-pool"}
    capacity = {r: sc.policy.resources[r].capacity for r in sc.trace.resources}
    assert episodes(sc.trace, capacity) == sc.episodes


@pytest.mark.parametrize("name", SCENARIOS)
def test_same_seed_same_scenario(name: str) -> None:
    a = generate(name, days=3, seed=7)
    b = generate(name, days=3, seed=7)
    c = generate(name, days=3, seed=8)
    assert np.array_equal(a.trace.demand, b.trace.demand)
    assert a.episodes == b.episodes and a.injected == b.injected
    assert a.policy == b.policy
    assert not np.array_equal(a.trace.demand, c.trace.demand)


def test_samples_carry_the_natural_demand() -> None:
    sc = generate("batch-collision", subsystems=3, days=1, seed=0)
    rows = list(samples(sc))
    assert len(rows) == sc.trace.windows * 3
    k, s = 600, 1
    row = rows[k * 3 + s]
    assert row["ts"] == sc.trace.window_ms(k) and row["subsystem"] == sc.trace.subsystems[s]
    assert row["resources"] == {"cpu-pool": float(sc.trace.demand[k, s, 0])}
    orjson.dumps(row)  # plain JSON
