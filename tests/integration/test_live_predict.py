"""Live == offline: the Faust topology publishes exactly the events the pure engine computes.

The simulator's telemetry for a fleet sharing tight resources is produced to a fresh
deployment while a worker runs; the same bytes go through `TelemetryIngest` and
`PredictionEngine` in-process. Every event the worker publishes (closed windows, forecasts,
anomalies, conflicts, plans, accuracy reports) must equal the offline one with the same id,
byte for byte, and none may be missing.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.integration.conftest import (
    PsoEnv,
    assert_same_events,
    fleet_messages,
    offline,
    produce,
    read_outputs,
    read_topic,
)

pytestmark = pytest.mark.integration

__all__ = ["fleet_messages", "produce"]  # used by other integration tests


def test_live_topology_equals_offline_engine(pso_env: PsoEnv, tmp_path: Path) -> None:
    sim, messages = fleet_messages()
    policy = sim.policy(headroom=0.7).model_dump(mode="json", exclude={"prediction"})
    pso_env.config = tmp_path / "pso.yaml"
    pso_env.config.write_text(yaml.safe_dump(policy))
    expected = offline(pso_env.config, messages)
    kinds = {orjson.loads(v)["type"] for v in expected.values()}
    assert {"forecast", "conflict_predicted", "rebalance_recommended"} <= kinds, kinds

    pso_env.start_worker()
    asyncio.run(produce(pso_env, messages))
    records = asyncio.run(
        read_outputs(pso_env, until=lambda ids: len(ids) >= len(expected), timeout_s=120)
    )
    duplicates = assert_same_events(expected, records)
    assert duplicates == 0, "an uninterrupted exactly-once run publishes every event once"


def test_records_pso_cannot_use_on_its_own_topics_are_dead_lettered(
    pso_env: PsoEnv, tmp_path: Path
) -> None:
    """``pso.load`` and the shares topic are PSO's, but anyone with access can write to them:
    what is not a `LoadWindow` or a share is dead-lettered with its bytes, and the stages
    carry on with the fleet's real records as if it had not been there."""
    sim, messages = fleet_messages(hours=1)
    policy = sim.policy(headroom=0.7).model_dump(mode="json", exclude={"prediction"})
    pso_env.config = tmp_path / "pso.yaml"
    pso_env.config.write_text(yaml.safe_dump(policy))
    expected = offline(pso_env.config, messages)
    s = pso_env.settings
    shares = s.shares_topic
    junk = [
        (s.topics.load, b"billing-api", b"not json"),
        (s.topics.load, b"billing-api", b'{"type": "load_window", "subsystem": "billing-api"}'),
        (s.topics.load, b"x", None),
        (shares, b"db-main", b"[1, 2]"),
        (shares, b"gpu-pool", b'{"type": "resource_share", "resource": "gpu-pool"}'),
        (shares, b"db-main", b'{"type": "resource_shares", "resource": "db-main", "shares": []}'),
    ]

    async def write_junk() -> None:
        from app.kafka.connection import start_producer

        producer = await start_producer(s, pso_env.bootstrap)
        try:
            for topic, key, value in junk:
                await producer.send(topic, value, key=key)
            await producer.flush()
        finally:
            await producer.stop()

    pso_env.start_worker()
    asyncio.run(write_junk())  # before the fleet: the stages must get past it to do anything
    asyncio.run(produce(pso_env, messages))

    def invalid(records: list[Any]) -> list[dict[str, Any]]:
        docs = [orjson.loads(r.value) for r in records]
        return [d for d in docs if d["reason_code"] == "invalid_record"]

    def all_junk(records: list[Any]) -> bool:
        return len(invalid(records)) >= len(junk)

    dead = asyncio.run(read_topic(s, pso_env.bootstrap, s.topics.deadletter, all_junk))
    got = sorted((d["source_topic"], base64.b64decode(d["original_b64"])) for d in invalid(dead))
    assert got == sorted((topic, value or b"") for topic, _key, value in junk)
    assert all(d["reason"] for d in invalid(dead))

    # Every forecast and conflict of the fleet is still published, byte for byte.
    for topic in (s.topics.forecasts, s.topics.conflicts):
        want = {
            v
            for v in expected.values()
            if orjson.loads(v)["type"] in ("forecast", "conflict_predicted", "conflict_observed")
            and _topic_of(orjson.loads(v)["type"], s) == topic
        }
        seen = asyncio.run(
            read_topic(
                s, pso_env.bootstrap, topic, lambda r, want=want: want <= {x.value for x in r}
            )
        )
        assert want and want <= {r.value for r in seen}, topic

    # Catching up, stage 1 took windows in batches: one shares record carries several.
    def batched(records: list[Any]) -> bool:
        docs = [orjson.loads(r.value) for r in records if r.value and r.value.startswith(b"{")]
        return any(len(d.get("shares", ())) > 1 for d in docs)

    assert batched(asyncio.run(read_topic(s, pso_env.bootstrap, shares, batched, timeout_s=30)))


def _topic_of(kind: str, settings: Any) -> str:
    return settings.topics.forecasts if kind == "forecast" else settings.topics.conflicts
