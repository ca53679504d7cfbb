"""Fuzz through the real broker and worker: every sample ends up in exactly one place.

Hypothesis draws a stream of messages — random bytes, truncated and near-valid JSON, wrong
types, NaN, epoch seconds, late samples, batches mixing good and bad samples — which is
produced to the telemetry topic of a fresh PSO deployment. A flush sample per subsystem then
closes every window. The real outputs must account for every input sample exactly once:
windowed samples + dead-lettered samples == samples sent, and every dead letter carries the
original bytes of a message that was sent.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.codec import SourceRef, decode_message
from tests.integration.conftest import PsoEnv, read_topic

pytestmark = pytest.mark.integration

BASE = 1_795_586_400_000  # 2026-11-25T06:00:00Z
SUBSYSTEMS = ["alpha", "beta", "gamma"]

good_sample = st.fixed_dictionaries(
    {
        "subsystem": st.sampled_from(SUBSYSTEMS),
        # Mostly moving forward in time, sometimes far back (late) or slightly back (reorder).
        "ts": st.integers(0, 40).map(lambda i: BASE + i * 37_000),
        "metrics": st.dictionaries(
            st.sampled_from(["cpu", "rps", "lat"]), st.floats(-1e6, 1e6), max_size=3
        ),
        "resources": st.dictionaries(st.sampled_from(["db", "gpu"]), st.floats(0, 1e3), max_size=2),
    }
)
bad_sample = st.one_of(
    good_sample.map(lambda s: dict(s, ts=s["ts"] // 1000)),  # epoch seconds
    good_sample.map(lambda s: dict(s, resources={"db": -1.0})),
    good_sample.map(lambda s: dict(s, metrics={"cpu": "high"})),
    good_sample.map(lambda s: dict(s, subsystem="")),
    good_sample.map(lambda s: {k: v for k, v in s.items() if k != "ts"}),
    st.integers(),
    st.text(max_size=5),
    st.none(),
)


def encode_batch(items: list[Any]) -> bytes:
    return orjson.dumps(items)


message = st.one_of(
    good_sample.map(orjson.dumps),
    st.lists(st.one_of(good_sample, good_sample, bad_sample), min_size=0, max_size=6).map(
        encode_batch
    ),
    bad_sample.map(lambda s: orjson.dumps(s)),
    good_sample.map(lambda s: orjson.dumps(s)[: max(1, len(orjson.dumps(s)) // 2)]),  # truncated
    good_sample.map(lambda s: orjson.dumps(s).replace(b"{", b'{"metrics": {"x": NaN}, ', 1)),
    st.binary(max_size=40),
)


async def produce(env: PsoEnv, messages: list[bytes]) -> None:
    from app.kafka_io import start_producer

    producer = await start_producer(env.settings, env.bootstrap)
    try:
        for i, value in enumerate(messages):
            await producer.send(
                env.settings.topics.telemetry, value, key=SUBSYSTEMS[i % 3].encode()
            )
        await producer.flush()
    finally:
        await producer.stop()


def expected_items(messages: list[bytes]) -> tuple[int, set[str]]:
    """How many samples the messages carry, and which subsystems sent valid ones (oracle: the
    same pure decoder; the assertion itself is on the broker's real outputs)."""
    items, names = 0, set()
    for value in messages:
        decoded = decode_message(value, SourceRef("x"))
        items += decoded.items
        names.update(s.subsystem for _, s in decoded.samples)
    return items, names


@settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(messages=st.lists(message, min_size=20, max_size=80))
def test_every_sample_lands_exactly_once(pso_env: PsoEnv, messages: list[bytes]) -> None:
    # One deployment per example: a fresh topic prefix on the same broker.
    pso_env.prefix = f"fz-{uuid.uuid4().hex[:8]}"
    pso_env.create_topics()
    pso_env.start_worker()
    sent_items, names = expected_items(messages)
    flush = [
        orjson.dumps({"subsystem": name, "ts": BASE + 400 * 60_000, "metrics": {"flush": 1.0}})
        for name in sorted(names)
    ]
    asyncio.run(produce(pso_env, messages + flush))
    s = pso_env.settings
    empty_batches = sum(1 for m in messages if m.strip() == b"[]")

    def counts(windows: list[Any], dead: list[Any]) -> int:
        windowed = sum(orjson.loads(r.value)["samples"] for r in windows)
        dead_samples = sum(1 for r in dead if orjson.loads(r.value)["reason_code"] != "empty_batch")
        return windowed + dead_samples

    async def collect() -> tuple[list[Any], list[Any]]:
        windows: list[Any] = []
        dead: list[Any] = []
        for _ in range(40):
            windows = await read_topic(s, pso_env.bootstrap, s.topics.load, lambda r: False, 1.0)
            dead = await read_topic(s, pso_env.bootstrap, s.topics.deadletter, lambda r: False, 1.0)
            if counts(windows, dead) >= sent_items:
                break
        return windows, dead

    windows, dead = asyncio.run(collect())
    # Flush samples sit in windows that never close, so they are not counted anywhere.
    assert counts(windows, dead) == sent_items
    docs = [orjson.loads(r.value) for r in dead]
    assert sum(1 for d in docs if d["reason_code"] == "empty_batch") == empty_batches
    originals = set(messages)
    for d in docs:
        assert base64.b64decode(d["original_b64"]) in originals
        assert d["reason"]
    ids = [orjson.loads(r.value)["event_id"] for r in windows]
    assert len(ids) == len(set(ids)), "a window was published twice"
    pso_env.stop_workers()
    pso_env.workers.clear()
