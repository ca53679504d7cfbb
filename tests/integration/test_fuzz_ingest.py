"""Fuzz through the real broker and worker: every sample ends up in exactly one place.

Hypothesis draws a stream of messages — random bytes, truncated and near-valid JSON, wrong
types, NaN, epoch seconds, values across the whole finite float range, timestamps across the
valid range (late samples and time jumps among them), batches mixing good and bad samples and
several subsystems — and produces each to a partition of its own choosing: every subsystem's
samples arrive on every partition, mostly *not* its home (mis-keyed, as a CRC32 or unkeyed
producer would send them). Each valid sample carries a marker metric naming the partition it
was produced to, so that windows can be counted per input partition. Closing samples per
subsystem then settle every held jump and close every window the fuzz opened. The real outputs
must account for every input sample exactly once, per partition: windowed + dead-lettered ==
sent.
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

from agents.routing import home_partition
from app.core.events import MAX_TS_MS, MIN_TS_MS
from app.wire.codec import SourceRef, decode_message
from tests.integration.conftest import PsoEnv, read_topic

pytestmark = pytest.mark.integration

PARTITIONS = 3
BASE = 1_795_586_400_000  # 2026-11-25T06:00:00Z
CLOSE_TS = MAX_TS_MS - 1  # closing samples: the last valid instant
NAMES = ["alpha", "beta", "gamma", "delta"]


def marker(partition: int) -> str:
    """The metric every valid sample produced to ``partition`` carries, once."""
    return f"from_p{partition}"


values = st.one_of(
    st.floats(-1e6, 1e6),
    st.floats(allow_nan=False, allow_infinity=False),  # the whole finite range
    st.sampled_from([1e100, -1e100, 1.0000000000000002e100, 5e-324, -0.0, 1.7976931348623157e308]),
)
stamps = st.one_of(
    # mostly moving forward, sometimes back (late) or slightly back (reordered)
    st.integers(0, 40).map(lambda i: BASE + i * 37_000),
    st.integers(0, 40).map(lambda i: BASE + i * 37_000),
    st.integers(0, 40).map(lambda i: BASE + i * 37_000),
    st.integers(MIN_TS_MS, CLOSE_TS - 600_000),  # anywhere in the valid range: jumps
)


def good_sample(partition: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "subsystem": st.sampled_from(NAMES),
            "ts": stamps,
            "metrics": st.dictionaries(
                st.sampled_from(["cpu", "rps", "lat"]), values, max_size=3
            ).map(lambda m: {**m, marker(partition): 1.0}),
            "resources": st.dictionaries(
                st.sampled_from(["db", "gpu"]), values.map(abs), max_size=2
            ),
        }
    )


def bad_sample(partition: int) -> st.SearchStrategy[Any]:
    good = good_sample(partition)
    return st.one_of(
        good.map(lambda s: dict(s, ts=s["ts"] // 1000)),  # epoch seconds
        good.map(lambda s: dict(s, resources={"db": -1.0})),
        good.map(lambda s: dict(s, metrics={"cpu": "high"})),
        good.map(lambda s: dict(s, subsystem="")),
        good.map(lambda s: {k: v for k, v in s.items() if k != "ts"}),
        st.integers(-(2**63), 2**63 - 1),
        st.text(max_size=5),
        st.none(),
    )


def message(partition: int) -> st.SearchStrategy[bytes]:
    good, bad = good_sample(partition), bad_sample(partition)
    return st.one_of(
        good.map(orjson.dumps),
        st.lists(st.one_of(good, good, bad), min_size=0, max_size=6).map(orjson.dumps),
        bad.map(orjson.dumps),
        good.map(lambda s: orjson.dumps(s)[: max(1, len(orjson.dumps(s)) // 2)]),  # truncated
        good.map(lambda s: orjson.dumps(s).replace(b"{", b'{"metrics": {"x": NaN}, ', 1)),
        st.binary(max_size=40),
    )


traffic = st.tuples(*(st.lists(message(p), min_size=5, max_size=25) for p in range(PARTITIONS)))


async def produce(env: PsoEnv, by_partition: list[list[bytes]]) -> dict[tuple[int, int], bytes]:
    """Produce each partition's messages there, interleaved, keyed by some subsystem whatever
    the message carries (so most samples are away from home). Returns what went where."""
    from app.kafka.connection import start_producer

    written: dict[tuple[int, int], bytes] = {}
    producer = await start_producer(env.settings, env.bootstrap)
    try:
        longest = max(len(m) for m in by_partition)
        for i in range(longest):
            for p, messages in enumerate(by_partition):
                if i < len(messages):
                    key = NAMES[i % len(NAMES)].encode()
                    meta = await producer.send_and_wait(
                        env.settings.topics.telemetry, messages[i], key=key, partition=p
                    )
                    written[(meta.partition, meta.offset)] = messages[i]
    finally:
        await producer.stop()
    return written


def items_and_names(messages: list[bytes]) -> tuple[int, set[str]]:
    """How many samples the messages carry and which subsystems sent valid ones (oracle: the
    same pure decoder; the assertions are on the broker's real outputs)."""
    items, names = 0, set()
    for value in messages:
        decoded = decode_message(value, SourceRef("x"))
        items += decoded.items
        names.update(s.subsystem for _, s in decoded.samples)
    return items, names


def origin_partition(dead: dict[str, Any]) -> int:
    """The partition a dead letter's samples were produced to (a copy names its origin)."""
    if dead["origin"] is not None:
        return int(dead["origin"].split(":")[1])
    return int(dead["source_partition"])


@settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(by_partition=traffic)
def test_every_sample_lands_exactly_once_per_partition(
    pso_env: PsoEnv, by_partition: tuple[list[bytes], ...]
) -> None:
    # One deployment per example: a fresh topic prefix on the same broker.
    pso_env.prefix = f"fz-{uuid.uuid4().hex[:8]}"
    pso_env.partitions = PARTITIONS
    pso_env.create_topics()
    assert len({home_partition(n, PARTITIONS) for n in NAMES}) > 1  # homes differ
    pso_env.start_worker()
    sent: dict[int, int] = {}
    names: set[str] = set()
    for p, messages in enumerate(by_partition):
        sent[p], valid = items_and_names(messages)
        names |= valid
    written = asyncio.run(produce(pso_env, list(by_partition)))
    s = pso_env.settings
    # Three samples at the last instant per subsystem, to partition 0: a jump they confirm,
    # which closes every window the fuzz opened and settles whatever jump is held. A fuzz
    # sample that reaches home after them is late, and counted as such.
    close = [{"subsystem": n, "ts": CLOSE_TS, "metrics": {"close": 1.0}} for n in sorted(names)]
    asyncio.run(produce(pso_env, [[orjson.dumps(close * 3)]]))
    s = pso_env.settings

    def counted(windows: list[Any], dead: list[Any]) -> dict[int, int]:
        per: dict[int, int] = dict.fromkeys(range(PARTITIONS), 0)
        for r in windows:
            metrics = orjson.loads(r.value)["metrics"]
            for p in range(PARTITIONS):
                per[p] += metrics.get(marker(p), {}).get("count", 0)
        for r in dead:
            d = orjson.loads(r.value)
            per[origin_partition(d)] += d["rejected"] - d["rejected_by_reason"].get(
                "empty_batch", 0
            )
        return per

    async def collect() -> tuple[list[Any], list[Any]]:
        windows: list[Any] = []
        dead: list[Any] = []
        for _ in range(60):
            windows = await read_topic(s, pso_env.bootstrap, s.topics.load, lambda r: False, 1.0)
            dead = await read_topic(s, pso_env.bootstrap, s.topics.deadletter, lambda r: False, 1.0)
            if counted(windows, dead) == sent:
                break
        return windows, dead

    windows, dead = asyncio.run(collect())
    # The closing samples sit in windows that never close, so they are counted nowhere.
    assert counted(windows, dead) == sent
    docs = [orjson.loads(r.value) for r in dead]
    assert len(docs) == len({d["event_id"] for d in docs}), "a dead letter was sent twice"
    for d in docs:
        assert d["reason"] and d["rejects"]
        if d["origin"] is None and ":held:" not in d["event_id"]:
            # a message as it was produced, at its position
            original = written[(d["source_partition"], d["source_offset"])]
            assert base64.b64decode(d["original_b64"]) == original
    ids = [orjson.loads(r.value)["event_id"] for r in windows]
    assert len(ids) == len(set(ids)), "a window was published twice"
    pso_env.stop_workers()
    pso_env.workers.clear()
