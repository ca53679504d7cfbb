"""Operators' labels on a live worker, over the real embedded broker.

Labels written to the compacted ``pso.labels`` topic reach the stage that raised the alarm:
an anomaly label is forwarded into ``pso.load`` under its subsystem's key (stage 1 applies
it), a conflict label into the shares topic under its resource's. Records that are no label,
or name a series the worker has never seen, are dead-lettered as ``invalid_label`` with their
bytes and a precise reason; the worker carries on.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import orjson
import pytest
import yaml

from tests.integration.conftest import PsoEnv, fleet_messages, produce, read_topic

pytestmark = pytest.mark.integration


def test_labels_reach_their_stage_and_bad_ones_are_dead_lettered(
    pso_env: PsoEnv, tmp_path: Path
) -> None:
    sim, messages = fleet_messages(hours=1)
    policy = sim.policy(headroom=0.7)
    pso_env.config = tmp_path / "pso.yaml"
    pso_env.config.write_text(
        yaml.safe_dump(policy.model_dump(mode="json", exclude={"prediction"}))
    )
    s = pso_env.settings
    pso_env.start_worker()
    asyncio.run(produce(pso_env, messages))
    # Forecasts mean the subsystems' series exist in stage 1: labels on them can apply.
    asyncio.run(read_topic(s, pso_env.bootstrap, s.topics.forecasts, lambda r: len(r) >= 20))

    first = orjson.loads(messages[0][1])[0]
    subsystem, start = first["subsystem"], first["ts"] - first["ts"] % 60_000
    good_id = f"anomaly:{subsystem}:metric:cpu:{start}"
    unknown_id = f"anomaly:{subsystem}:metric:no-such-metric:{start}"

    def label(id: str, verdict: str = "false", ts: int = start + 600_000) -> bytes:
        return orjson.dumps({"target": "anomaly", "id": id, "verdict": verdict, "ts": ts})

    conflict_id = f"db-main@{start + 300_000}"
    records = [
        (good_id, label(good_id)),
        (
            conflict_id,
            orjson.dumps(
                {"target": "conflict", "id": conflict_id, "verdict": "true", "ts": start + 600_000}
            ),
        ),
        (unknown_id, label(unknown_id)),  # routed, then refused by stage 1
        (good_id, b"not json"),
        (good_id, label(good_id, verdict="maybe")),
        ("another-key", label(good_id)),
        (good_id, label(good_id, ts=start - 1)),
    ]

    async def write_labels() -> None:
        from app.kafka.connection import start_producer

        producer = await start_producer(s, pso_env.bootstrap)
        try:
            for key, value in records:
                await producer.send(s.topics.labels, value, key=key.encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(write_labels())

    def labels_dead(recs: list) -> list[dict]:
        docs = [orjson.loads(r.value) for r in recs]
        return [d for d in docs if d["reason_code"] == "invalid_label"]

    dead = labels_dead(
        asyncio.run(
            read_topic(
                s, pso_env.bootstrap, s.topics.deadletter, lambda r: len(labels_dead(r)) >= 5, 90
            )
        )
    )
    by_bytes = {base64.b64decode(d["original_b64"]): d["reason"] for d in dead}
    # Stage 1 refuses the routed record: its dead letter carries that record's bytes (the
    # label as forwarded, with its type); the others carry the operator's own bytes.
    routed_unknown = orjson.dumps({"type": "operator_label", **orjson.loads(label(unknown_id))})
    assert set(by_bytes) == {routed_unknown, *(value for _, value in records[3:])}, by_bytes
    assert by_bytes[routed_unknown].startswith("unknown_series: no metric 'no-such-metric'")
    assert by_bytes[b"not json"].startswith("not JSON")
    assert by_bytes[label(good_id, verdict="maybe")].startswith("verdict: Input should be")
    assert by_bytes[label(good_id, ts=start - 1)].startswith("before_event")
    assert "differ" in by_bytes[records[5][1]]

    # The good ones were forwarded to their stages, keyed by what they name.
    load = asyncio.run(
        read_topic(
            s,
            pso_env.bootstrap,
            s.topics.load,
            lambda r: sum(b'"operator_label"' in x.value for x in r) >= 2,
            60,
        )
    )
    routed = sorted(
        (x.key, orjson.loads(x.value)["id"]) for x in load if b'"operator_label"' in x.value
    )
    assert routed == [(subsystem.encode(), good_id), (subsystem.encode(), unknown_id)]
    shares = asyncio.run(
        read_topic(
            s,
            pso_env.bootstrap,
            s.shares_topic,
            lambda r: any(b'"operator_label"' in x.value for x in r),
            60,
        )
    )
    (conflict,) = [x for x in shares if b'"operator_label"' in x.value]
    assert conflict.key == b"db-main" and orjson.loads(conflict.value)["id"] == conflict_id
    assert all(proc.poll() is None for proc in pso_env.workers), "the worker carries on"
