"""Stage 2 with a large backlog of pending shares, on the real broker (exactly-once).

A resource's window waits for every contributor's share; while one contributor's partition
is behind in event time (a worker catching up, a subsystem whose telemetry comes late), the
resource's later windows pile up as pending shares. The live bench once stalled stage 2 for
good that way: a resource checkpoint holding them all was sealed into one changelog record
larger than a Kafka record may be (1,080,228 bytes for 80 contributors), the send failed,
Faust restarted the agent, and the restarted agent found in the table a checkpoint token it
took for a forged snapshot — so it started the resource afresh, its pending shares gone, and
waited for ever for contributors whose shares it had already been given.

Here one contributor of ``db-main`` (23 others) sends its 90 minutes of telemetry only after
everyone else has sent theirs and stage 2 has taken their shares: ~90 windows × 23 pending
shares when stage 2 first checkpoints (``PSO_CHECKPOINT_EVERY=1``), a checkpoint of 2,334,304
bytes before the fix (the same crash, restart and stall; 44 events missing). The worker must
publish what the pure core computes, and no resource checkpoint may carry the pending shares.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from app.dev.simulator import FleetSimulator
from tests.integration.conftest import (
    PsoEnv,
    assert_same_events,
    offline,
    produce,
    read_outputs,
    read_topic,
)

pytestmark = pytest.mark.integration

LATE = "billing-api"  # uses db-main only


def _messages(hours: float) -> tuple[FleetSimulator, list[tuple[bytes, bytes]]]:
    """``hours`` of a 30-subsystem fleet (24 use db-main), 30 s samples, four to a message."""
    sim = FleetSimulator(
        subsystems=30, seed=11, interval_ms=30_000, start_ms=1_795_564_800_000 + 10 * 3_600_000
    )
    messages: list[tuple[bytes, bytes]] = []
    pending: dict[str, list[dict[str, Any]]] = {}
    for sample in sim.samples(int(hours * 3_600_000)):
        group = pending.setdefault(sample["subsystem"], [])
        group.append(sample)
        if len(group) == 4:
            messages.append((sample["subsystem"].encode(), orjson.dumps(group)))
            del pending[sample["subsystem"]]
    return sim, messages


def test_a_late_contributor_neither_stalls_nor_loses_stage_2(
    pso_env: PsoEnv, tmp_path: Path
) -> None:
    sim, messages = _messages(hours=1.5)
    assert sum(1 for p in sim.profiles if "db-main" in p.uses) == 24
    policy = sim.policy(headroom=0.7).model_dump(mode="json", exclude={"prediction"})
    pso_env.config = tmp_path / "pso.yaml"
    pso_env.config.write_text(yaml.safe_dump(policy))
    # No wall-clock departure: stage 2 must wait for the late contributor, as a replay would.
    pso_env.worker_env.update({"PSO_JOIN_TIMEOUT_S": "3600", "PSO_CHECKPOINT_EVERY": "1"})
    on_time = [m for m in messages if m[0] != LATE.encode()]
    late = [m for m in messages if m[0] == LATE.encode()]
    expected = offline(pso_env.config, on_time + late)
    kinds = {orjson.loads(v)["type"] for v in expected.values()}
    assert {"conflict_predicted", "rebalance_recommended"} <= kinds, kinds

    pso_env.start_worker()
    asyncio.run(produce(pso_env, on_time))
    # Stage 2 has taken every on-time share (all pending: the late contributor is awaited)...
    on_time_forecasts = {
        k
        for k, v in expected.items()
        if orjson.loads(v)["type"] == "forecast" and orjson.loads(v)["subsystem"] != LATE
    }
    asyncio.run(read_outputs(pso_env, until=lambda ids: on_time_forecasts <= ids))
    asyncio.run(_consumed(pso_env, pso_env.settings.shares_topic))
    # ...then the late one's, one message at a time: stage 2's first checkpoint comes with
    # nearly all windows pending.
    asyncio.run(produce(pso_env, late, pause_s=0.1))
    records = asyncio.run(
        read_outputs(pso_env, until=lambda ids: len(ids) >= len(expected), timeout_s=120)
    )
    log = pso_env.log_path(0).read_text(errors="replace")
    missing = set(expected) - {event_id for event_id, _ in records}
    assert not missing, f"{len(missing)} missing, e.g. {sorted(missing)[:5]}\n{log[-4000:]}"
    assert_same_events(expected, records)

    # Every resource checkpoint was written, and none holds the pending shares: they are read
    # back from the shares topic on a rebuild.
    s = pso_env.settings
    changelog = next(
        t for t in asyncio.run(_topics(pso_env)) if t.startswith(f"{s.app_id}-resource-models")
    )
    blobs = asyncio.run(
        read_topic(s, pso_env.bootstrap, changelog, until=lambda r: False, timeout_s=5)
    )
    sizes = [len(r.value) for r in blobs if r.key == b'"db-main"']
    assert len(sizes) > 30, sizes  # one per judged window (PSO_CHECKPOINT_EVERY=1)
    # Lean: the calibrated conflict model's learnt error paths take about 90 KB of it; the
    # pending shares would add megabytes (2,334,304 bytes in all before the fix).
    assert max(sizes) < 200_000, sorted(sizes)[-5:]


async def _consumed(env: PsoEnv, topic: str, timeout_s: float = 60.0) -> None:
    """Wait until the worker's group has committed every record of ``topic``."""
    from app.kafka.idle import WorkerProbe

    probe = WorkerProbe(env.settings, env.bootstrap, [topic], [])
    try:
        await probe.start()
        await probe.wait_idle(timeout_s)
    finally:
        await probe.stop()


async def _topics(env: PsoEnv) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    from app.kafka.connection import client_kwargs

    admin = AIOKafkaAdminClient(**client_kwargs(env.settings, env.bootstrap))
    await admin.start()
    try:
        return sorted(await admin.list_topics())
    finally:
        await admin.close()
