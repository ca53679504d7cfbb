"""The closed loop live: a simulated fleet obeys the plans a real worker publishes.

`app.dev.live_loop.LiveFleet` sends each window of a scenario as telemetry to a worker on
the embedded broker, tells it its capacity on ``pso.capacity`` and obeys what it reads from
``pso.rebalance``; the offline ``pso`` policy feeds the same windows to the engine in process.
One engine, two drivers: the fleet's figures must agree within 1 %.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.core.closedloop import ClosedLoop, run_policy
from app.core.closedloop.policies import PsoPolicy
from app.dev.live_loop import LiveFleet
from app.dev.scenarios import generate
from tests.integration.conftest import PsoEnv, read_topic

pytestmark = pytest.mark.integration


def _figures(row: dict[str, Any]) -> dict[str, float]:
    deferred = row["deferred"]
    return {
        "conflict_minutes": row["conflict_minutes"],
        "episodes": row["episodes"],
        "unmet_value": row["unmet_value"],
        "deferred_work": deferred["work"],
        "deferred_delayed": deferred["delayed"],
        "capacity_unit_hours": row["capacity_unit_hours"],
        "actions": row["actions"],
    }


# About 0.5 s per window here (two round trips through the topology): 192 windows take ~2 min.
@pytest.mark.timeout(900)
def test_the_live_loop_gives_the_offline_figures(pso_env: PsoEnv, tmp_path: Path) -> None:
    # Two days of 15-minute windows (the first one warms up): 192 windows, 3 subsystems.
    sc = generate("batch-collision", subsystems=3, days=2, step_s=900, warmup_days=1)
    spec = sc.policy.spec()
    pso = PsoPolicy(sc.trace, spec, sc.loop)
    offline_loop = ClosedLoop(sc.trace, spec, sc.loop, pso)
    while not offline_loop.done:
        offline_loop.step()
    offline = offline_loop.metrics
    none = run_policy(sc.trace, spec, sc.loop, "none").metrics
    # PSO acts here, and its acting matters: agreeing on "nothing happened" would prove nothing.
    assert offline.actions >= 20, offline.row(sc.name, "pso")
    assert offline.conflict_minutes < none.conflict_minutes / 2

    pso_env.config = tmp_path / "pso.yaml"
    pso_env.config.write_text(yaml.safe_dump(sc.policy.model_dump(mode="json")))
    # Departures are decided on the wall clock: none may happen in a lock-step run.
    pso_env.worker_env.update({"PSO_JOIN_TIMEOUT_S": "86400", "PSO_FETCH_MAX_WAIT_MS": "10"})
    pso_env.start_worker()
    fleet = LiveFleet(pso_env.settings, pso_env.bootstrap, sc.trace, spec, sc.loop)
    live = asyncio.run(fleet.run())

    assert live.plans > 0 and live.capacity_updates > 0, live
    # The same plans, obeyed after the same windows: not one a window late.
    assert list(live.plan_log) == pso.plan_log
    # Nothing the fleet wrote was refused (a refused capacity record would only show as drift).
    s = pso_env.settings
    dead = asyncio.run(read_topic(s, pso_env.bootstrap, s.topics.deadletter, lambda r: False, 3))
    assert not dead, [d.value[:300] for d in dead[:3]]
    want = _figures(offline.row(sc.name, "pso"))
    got = _figures(live.metrics.row(sc.name, "pso"))
    off = {k: (want[k], got[k]) for k in want if abs(got[k] - want[k]) > 0.01 * abs(want[k])}
    assert not off, f"live vs offline differ by more than 1 %: {off}"
