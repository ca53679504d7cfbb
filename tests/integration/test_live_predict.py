"""Live == offline: the Faust topology publishes exactly the events the pure engine computes.

The simulator's telemetry for a fleet sharing tight resources is produced to a fresh
deployment while a worker runs; the same bytes go through `TelemetryIngest` and
`PredictionEngine` in-process. Every event the worker publishes (forecasts, anomalies,
conflicts, plans, accuracy reports) must equal the offline one with the same id, byte for byte,
and none may be missing.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from app.codec import SourceRef
from app.core.engine import PredictionEngine
from app.core.ingest import TelemetryIngest
from app.settings import load_policy
from app.simulator import FleetSimulator
from tests.integration.conftest import PsoEnv, read_topic

pytestmark = pytest.mark.integration


def fleet_messages() -> tuple[FleetSimulator, list[tuple[bytes, bytes]]]:
    sim = FleetSimulator(subsystems=4, seed=11, interval_ms=30_000,
                         start_ms=1_795_564_800_000 + 10 * 3_600_000)
    messages: list[tuple[bytes, bytes]] = []
    pending: dict[str, list[dict[str, Any]]] = {}
    for sample in sim.samples(3 * 3_600_000):
        group = pending.setdefault(sample["subsystem"], [])
        group.append(sample)
        if len(group) == 4:
            messages.append((sample["subsystem"].encode(), orjson.dumps(group)))
            del pending[sample["subsystem"]]
    return sim, messages


def offline(policy_path: Path, messages: list[tuple[bytes, bytes]]) -> dict[str, bytes]:
    policy = load_policy(policy_path)
    ingest = TelemetryIngest(policy.window)
    engine = PredictionEngine(policy)
    events: dict[str, bytes] = {}
    for i, (_key, value) in enumerate(messages):
        for window in ingest.process(value, SourceRef("t", 0, i)).windows:
            for event in engine.process(window):
                events[event.event_id] = event.to_json()
    return events


async def produce(env: PsoEnv, messages: list[tuple[bytes, bytes]]) -> None:
    from app.kafka_io import start_producer

    producer = await start_producer(env.settings, env.bootstrap)
    try:
        for key, value in messages:
            await producer.send(env.settings.topics.telemetry, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


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
    s = pso_env.settings
    topics = [s.topics.forecasts, s.topics.anomalies, s.topics.conflicts, s.topics.rebalance,
              s.topics.accuracy]

    async def collect() -> dict[str, bytes]:
        live: dict[str, bytes] = {}
        for _ in range(25):
            live = {}
            for topic in topics:
                for rec in await read_topic(s, pso_env.bootstrap, topic, lambda r: False, 1.0):
                    live[orjson.loads(rec.value)["event_id"]] = rec.value
            if len(live) >= len(expected):
                break
        return live

    live = asyncio.run(collect())
    missing = sorted(set(expected) - set(live))
    extra = sorted(set(live) - set(expected))
    assert not missing and not extra, (len(expected), len(live), missing[:8], extra[:8])
    different = [k for k in expected if expected[k] != live[k]]
    assert not different, different[:5]
