"""What an outsider did to a worker on the real broker, and what must happen instead.

- A sample of ``db`` in a batch on partition 0 at offset 500, then 200 of ``db`` on its own
  partition 1: the 200 were skipped, nothing windowed, nothing dead-lettered.
- One message of 10,000 bad samples became 10,000 dead letters each carrying the message.
- A message near the size limit made a dead letter the producer refused: the handler failed
  again and the message was neither windowed nor dead-lettered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

import orjson
import pytest

from agents.routing import home_partition
from app.wire.codec import COPY_HEADER
from tests.integration.conftest import PsoEnv, read_topic

pytestmark = pytest.mark.integration

BASE = 1_795_586_400_000  # 2026-11-25T06:00:00Z
HOUR = 3_600_000


def homed_at(partition: int, partitions: int, prefix: str) -> str:
    return next(
        f"{prefix}{i}"
        for i in range(1000)
        if home_partition(f"{prefix}{i}", partitions) == partition
    )


async def send(
    env: PsoEnv, records: list[tuple[int, bytes | None, bytes]], max_request: int = 1 << 20
) -> dict[tuple[int, int], bytes]:
    """Produce (partition, key, value) in order; return what went where."""
    from aiokafka import AIOKafkaProducer

    from app.kafka.connection import client_kwargs

    producer = AIOKafkaProducer(
        **client_kwargs(env.settings, env.bootstrap), max_request_size=max_request
    )
    await producer.start()
    written: dict[tuple[int, int], bytes] = {}
    try:
        for partition, key, value in records:
            meta = await producer.send_and_wait(
                env.settings.topics.telemetry, value, key=key, partition=partition
            )
            written[(meta.partition, meta.offset)] = value
    finally:
        await producer.stop()
    return written


def sample(name: str, ts: int, x: float = 1.0) -> dict[str, Any]:
    return {"subsystem": name, "ts": ts, "metrics": {"x": x}}


def test_a_subsystem_produced_to_two_partitions_loses_nothing(pso_env: PsoEnv) -> None:
    assert pso_env.partitions == 2
    other, db = homed_at(0, 2, "other"), homed_at(1, 2, "db")
    records: list[tuple[int, bytes | None, bytes]] = [
        (0, other.encode(), orjson.dumps(sample(other, BASE + i * 1000))) for i in range(500)
    ]
    records.append(
        (0, other.encode(), orjson.dumps([sample(other, BASE + 500_000), sample(db, BASE)]))
    )
    records += [
        (1, db.encode(), orjson.dumps(sample(db, BASE + 1000 + i * 1000))) for i in range(200)
    ]
    pso_env.start_worker()
    written = asyncio.run(send(pso_env, records))
    assert written[(0, 500)] == records[500][2]  # the mixed batch sits at offset 500
    # An hour later, three samples each: they confirm the jump and close every window.
    closing = [(1, db.encode(), orjson.dumps([sample(db, BASE + HOUR, 0.0)] * 3))]
    closing.append((0, other.encode(), orjson.dumps([sample(other, BASE + HOUR, 0.0)] * 3)))
    asyncio.run(send(pso_env, closing))
    s = pso_env.settings

    def db_count(windows: list[Any], dead: list[Any]) -> int:
        windowed = sum(
            w["samples"]
            for w in map(orjson.loads, (r.value for r in windows))
            if w["subsystem"] == db
        )
        return windowed + sum(orjson.loads(r.value)["rejected"] for r in dead)

    async def collect() -> tuple[list[Any], list[Any]]:
        windows: list[Any] = []
        dead: list[Any] = []
        for _ in range(30):
            windows = await read_topic(s, pso_env.bootstrap, s.topics.load, lambda r: False, 1.0)
            dead = await read_topic(s, pso_env.bootstrap, s.topics.deadletter, lambda r: False, 1.0)
            if db_count(windows, dead) >= 201:
                break
        return windows, dead

    windows, dead = asyncio.run(collect())
    docs = [orjson.loads(r.value) for r in windows]
    db_windowed = sum(w["samples"] for w in docs if w["subsystem"] == db)
    assert db_windowed >= 200, "db's own samples were lost"
    # Its mis-keyed sample is windowed (its copy came in time) or dead-lettered as late, with
    # the position it was produced at: never silently gone.
    assert db_windowed + sum(orjson.loads(r.value)["rejected"] for r in dead) == 201
    for d in map(orjson.loads, (r.value for r in dead)):
        assert (d["reason_code"], d["origin"].split(":")[1:3]) == ("late", ["0", "500"])
    assert sum(w["samples"] for w in docs if w["subsystem"] == other) == 501
    # The copy went home, marked, onto the telemetry topic itself.
    telemetry = asyncio.run(
        read_topic(s, pso_env.bootstrap, s.topics.telemetry, lambda r: len(r) >= 704, 30)
    )
    copies = [r for r in telemetry if any(h[0] == COPY_HEADER for h in r.headers)]
    assert [(r.partition, orjson.loads(r.value)) for r in copies] == [(1, [sample(db, BASE)])]


def test_a_message_of_10000_bad_samples_makes_one_dead_letter(pso_env: PsoEnv) -> None:
    pso_env.start_worker()
    bad = orjson.dumps([{"ts": 1}] * 10_000)
    good = orjson.dumps([sample("after", BASE + i * 20_000) for i in range(12)])
    asyncio.run(send(pso_env, [(0, b"x", bad), (0, b"x", good)]))
    s = pso_env.settings
    dead = asyncio.run(read_topic(s, pso_env.bootstrap, s.topics.deadletter, lambda r: len(r) >= 1))
    asyncio.run(read_topic(s, pso_env.bootstrap, s.topics.load, lambda r: len(r) >= 1))
    dead = asyncio.run(read_topic(s, pso_env.bootstrap, s.topics.deadletter, lambda r: False, 3))
    (record,) = dead
    doc = orjson.loads(record.value)
    assert doc["rejected"] == 10_000 and len(doc["rejects"]) == 100
    assert len(record.value) <= 2 * len(bad) + 64 * 1024
    assert base64.b64decode(doc["original_b64"]) == bad


def test_a_message_at_the_size_limit_is_dead_lettered_whole(pso_env: PsoEnv) -> None:
    cap = pso_env.settings.max_message_bytes
    pso_env.start_worker()
    at_cap = b"[" + b" " * (cap - 2) + b"]"  # an empty batch, padded to the limit exactly
    over = b"[" + b" " * (cap - 1) + b"]"  # one byte more
    after = orjson.dumps([sample("after", BASE + i * 20_000) for i in range(12)])
    assert len(at_cap) == cap and len(over) == cap + 1
    asyncio.run(send(pso_env, [(0, b"x", at_cap), (0, b"x", over), (0, b"x", after)], 2 * cap))
    s = pso_env.settings
    dead = asyncio.run(read_topic(s, pso_env.bootstrap, s.topics.deadletter, lambda r: len(r) >= 2))
    windows = asyncio.run(read_topic(s, pso_env.bootstrap, s.topics.load, lambda r: len(r) >= 1))
    assert windows, "the agent went on after them"
    docs = sorted((orjson.loads(r.value) for r in dead), key=lambda d: d["source_offset"])
    assert [d["reason_code"] for d in docs] == ["empty_batch", "too_large"]
    assert [base64.b64decode(d["original_b64"]) for d in docs] == [at_cap, over]


def test_a_dead_letter_the_topic_cannot_take_goes_without_the_original(pso_env: PsoEnv) -> None:
    """Someone made the dead-letter topic with a smaller limit than PSO asks for."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from app.kafka.connection import client_kwargs

    s = pso_env.settings
    pso_env.prefix = f"{pso_env.prefix}-small"
    s = pso_env.settings

    async def make_small_dlq() -> None:
        admin = AIOKafkaAdminClient(**client_kwargs(s, pso_env.bootstrap))
        await admin.start()
        try:
            topic = NewTopic(
                s.topics.deadletter, 2, 1, topic_configs={"max.message.bytes": "200000"}
            )
            await admin.create_topics([topic])
            for _ in range(50):  # until the brokers list it
                if s.topics.deadletter in await admin.list_topics():
                    break
                await asyncio.sleep(0.1)
        finally:
            await admin.close()

    asyncio.run(make_small_dlq())
    from app.kafka.topics import create_topics

    created = asyncio.run(create_topics(s, pso_env.bootstrap))
    assert created[s.topics.deadletter].startswith("exists, but allows 200000 bytes a record")
    pso_env.start_worker()
    big = orjson.dumps([{"ts": "x" * 1000}] * 300)  # ~310 KB of bad samples
    after = orjson.dumps([sample("after", BASE + i * 20_000) for i in range(12)])
    asyncio.run(send(pso_env, [(0, b"x", big), (0, b"x", after)]))
    windows = asyncio.run(read_topic(s, pso_env.bootstrap, s.topics.load, lambda r: len(r) >= 1))
    assert windows, "the agent went on"
    (record,) = asyncio.run(
        read_topic(s, pso_env.bootstrap, s.topics.deadletter, lambda r: len(r) >= 1)
    )
    doc = orjson.loads(record.value)
    assert doc["original_b64"] is None and doc["rejected"] == 300
    assert (doc["original_bytes"], doc["original_sha256"]) == (
        len(big),
        hashlib.sha256(big).hexdigest(),
    )
