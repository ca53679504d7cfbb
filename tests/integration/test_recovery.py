"""Recovery and scale-out of the live topology on the real broker (exactly-once).

A worker SIGKILLed mid-stream leaves an open transaction and nothing else: a worker started
afterwards with an empty data dir and the same app id must rebuild windows, model snapshots
and per-resource state from the changelogs and carry on, so that the committed output equals
what the pure core computes on the whole file (which `test_live_predict` shows is what an
uninterrupted worker publishes) — same ids, same bytes, re-emitted copies allowed, nothing
lost. Two workers sharing the partitions must publish that same event set too.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import orjson
import pytest
import yaml

from tests.integration.conftest import (
    PsoEnv,
    assert_same_events,
    fleet_messages,
    group_members,
    offline,
    produce,
    read_outputs,
    wait_stable_group,
    where_are,
)

pytestmark = pytest.mark.integration

# Quick rebalances: a new member is admitted, and a killed one evicted, within seconds (6 s is
# the broker's group.min.session.timeout.ms). A join timeout far beyond the test's length keeps
# wall-clock liveness decisions out of the comparison with the offline core.
QUICK = {
    "PSO_SESSION_TIMEOUT_S": "6",
    "PSO_HEARTBEAT_INTERVAL_S": "1",
    "PSO_JOIN_TIMEOUT_S": "3600",
}


def _configure(
    env: PsoEnv, tmp_path: Path, hours: float = 2.5
) -> tuple[list[tuple[bytes, bytes]], dict[str, bytes]]:
    # 2.5 hours: 150 one-minute windows per subsystem, past the anomaly detector's 100-value
    # warm-up, so the comparison covers anomaly events too
    sim, messages = fleet_messages(hours)
    policy = sim.policy(headroom=0.7).model_dump(mode="json", exclude={"prediction"})
    env.config = tmp_path / "pso.yaml"
    env.config.write_text(yaml.safe_dump(policy))
    env.worker_env.update(QUICK)
    expected = offline(env.config, messages)
    kinds = {orjson.loads(v)["type"] for v in expected.values()}
    assert kinds >= {
        "load_window",
        "forecast",
        "anomaly",
        "conflict_predicted",
        "conflict_observed",
        "rebalance_recommended",
        "accuracy_report",
    }, kinds
    return messages, expected


def test_sigkill_mid_stream_then_restart_with_empty_data_dir(
    pso_env: PsoEnv, tmp_path: Path
) -> None:
    messages, expected = _configure(pso_env, tmp_path)
    pso_env.worker_env["PSO_CHECKPOINT_EVERY"] = "7"
    half, tail = len(messages) // 2, len(messages) * 8 // 10
    enough = len(expected) // 4  # committed events before the kill: half the file yields more
    first = pso_env.start_worker()

    async def run_until_killed() -> None:
        # Half the file at once, the next 30 % as a live fleet sends it (so the worker is busy,
        # its transaction open, when it dies); SIGKILL once a quarter of all events is committed.
        await produce(pso_env, messages[:half])
        trickle = asyncio.create_task(produce(pso_env, messages[half:tail], pause_s=0.05))
        await read_outputs(pso_env, until=lambda ids: len(ids) >= enough)
        pso_env.kill_worker(first)
        await trickle

    asyncio.run(run_until_killed())
    at_kill = asyncio.run(read_outputs(pso_env, timeout_s=0.5))
    # The last 20 % of the file arrives while no worker runs.
    asyncio.run(produce(pso_env, messages[tail:]))
    assert enough <= len({event_id for event_id, _ in at_kill}) < len(expected)

    pso_env.start_worker()  # an empty data dir, the same app id
    records = asyncio.run(
        read_outputs(pso_env, until=lambda ids: len(ids) >= len(expected), timeout_s=90)
    )
    missing = set(expected) - {event_id for event_id, _ in records}
    # A rare failure here once left only the missing ids: say where they are, and keep the log.
    detail = (
        ""
        if not missing
        else asyncio.run(where_are(pso_env, missing))
        + "\n"
        + (pso_env.log_path(1).read_text()[-6000:])
    )
    assert not missing, f"{len(missing)} missing: {sorted(missing)[:20]}\n{detail}"
    assert_same_events(expected, records)
    # State was checkpointed every 7 windows, so the restarted worker rebuilt it from a
    # checkpoint plus the input after it (`agents.checkpoints`), not from a per-window save:
    # ingest's open windows from telemetry, models from their input topics.
    log = pso_env.log_path(1).read_bytes()
    assert re.search(rb"(windows|model) of \S+: rebuilt from its checkpoint and [1-9]", log)
    _kill_all(pso_env)


def test_two_workers_publish_the_same_events_as_one(pso_env: PsoEnv, tmp_path: Path) -> None:
    pso_env.prefix = f"so-{uuid.uuid4().hex[:8]}"  # its own topics, with 4 partitions
    pso_env.partitions = 4
    pso_env.create_topics()
    messages, expected = _configure(pso_env, tmp_path)
    workers = [pso_env.spawn_worker(), pso_env.spawn_worker()]
    for proc in workers:
        pso_env.wait_ready(proc)
    telemetry = pso_env.settings.topics.telemetry
    # Both workers hold telemetry partitions (and the stages behind them) before any data:
    # the subsystems are spread over partitions 0-2 and both resources hash to 1, so shares
    # cross from one worker to the other.
    members = asyncio.run(wait_stable_group(pso_env, 2, telemetry))
    asyncio.run(produce(pso_env, messages))
    records = asyncio.run(
        read_outputs(pso_env, until=lambda ids: len(ids) >= len(expected), timeout_s=90)
    )
    assert_same_events(expected, records)
    state, after = asyncio.run(group_members(pso_env))
    assert (state, after) == ("Stable", members), "a worker left or the partitions moved"
    _kill_all(pso_env)


def _kill_all(env: PsoEnv) -> None:
    """End the workers the fast way: exactly-once makes that safe (the test just showed it),
    and a graceful stop is not what these tests are about."""
    for proc in env.workers:
        env.kill_worker(proc)
