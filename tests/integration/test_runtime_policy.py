"""Runtime policy and worker health on a live worker.

A capacity cut written to the compacted ``pso.capacity`` topic reaches stage 2 and is used from
then on (conflicts against the new capacity, where ``pso.yaml``'s generous capacity predicts
none); records that cannot be applied are dead-lettered with the original bytes. The worker
logs its health line (rates, lag, model error) on the configured interval.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import orjson
import pytest
import yaml

from tests.integration.conftest import PsoEnv, read_topic
from tests.integration.test_live_predict import fleet_messages, produce

pytestmark = pytest.mark.integration


def _wait_for_log(path: Path, needle: bytes, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if needle in path.read_bytes():
            return
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} not in worker log: {path.read_text()[-3000:]}")


def test_capacity_topic_changes_stage_two_at_runtime(
    pso_env: PsoEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PSO_HEALTH_INTERVAL_S", "1")
    sim, messages = fleet_messages()
    policy = sim.policy(headroom=3.0)  # no conflict under pso.yaml
    pso_env.config = tmp_path / "pso.yaml"
    pso_env.config.write_text(
        yaml.safe_dump(policy.model_dump(mode="json", exclude={"prediction"}))
    )
    tight = {name: round(r.capacity / 8, 3) for name, r in policy.resources.items()}
    s = pso_env.settings
    pso_env.start_worker()

    async def write_policy() -> None:
        from app.kafka.connection import start_producer

        producer = await start_producer(s, pso_env.bootstrap)
        try:
            for name, capacity in sorted(tight.items()):
                value = orjson.dumps({"capacity": capacity})
                await producer.send(s.topics.capacity, value, key=name.encode())
            await producer.send(s.topics.capacity, b'{"capacity": -1}', key=b"db-main")
            await producer.send(s.topics.capacity, b"not json", key=b"db-main")
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(write_policy())
    log = tmp_path / "worker-0.log"
    for name in tight:
        _wait_for_log(log, f"resource policy for {name}".encode())
    asyncio.run(produce(pso_env, messages))

    def conflicts_seen(records: list) -> bool:
        return any(orjson.loads(r.value)["type"] == "conflict_predicted" for r in records)

    conflicts = asyncio.run(read_topic(s, pso_env.bootstrap, s.topics.conflicts, conflicts_seen))
    predicted = [
        doc
        for doc in (orjson.loads(r.value) for r in conflicts)
        if doc["type"] == "conflict_predicted"
    ]
    assert predicted, "a capacity cut to an eighth must predict conflicts"
    for doc in predicted:
        assert doc["capacity"] == tight[doc["resource"]]

    dead = asyncio.run(read_topic(s, pso_env.bootstrap, s.topics.deadletter, lambda r: len(r) >= 2))
    policy_dead = [orjson.loads(r.value) for r in dead]
    policy_dead = [d for d in policy_dead if d["reason_code"] == "invalid_policy"]
    assert sorted(base64.b64decode(d["original_b64"]) for d in policy_dead) == [
        b"not json",
        b'{"capacity": -1}',
    ]
    assert any("capacity" in d["reason"] for d in policy_dead)

    _wait_for_log(log, b"health: in/s=")
    line = next(x for x in log.read_text().splitlines() if "health: in/s=" in x)
    assert "lag=" in line and "dlq/s=" in line
