"""Topic ranges and `pso replay` on the real broker: exact records, keys, headers, timestamps."""

from __future__ import annotations

import asyncio
import heapq
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from app.cli.replay import replay_cmd
from app.dev.broker import EmbeddedKafka, ExternalBroker
from app.kafka.connection import client_kwargs, start_producer
from app.kafka.range import RangeReader, RangeRecord, TopicNotFound, read_range
from app.kafka.replay import parse_speed, replay
from app.settings import Settings, load_settings

pytestmark = pytest.mark.integration

T0 = 1_795_586_400_000  # 2026-11-26T00:00:00Z
START = T0 + 20_000
END = T0 + 80_000
SOURCE_PARTITIONS = 3


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def record_plan() -> list[tuple[bytes | None, bytes | None, int, list[tuple[str, bytes]], int]]:
    """(key, value, timestamp, headers, partition): in-range, before, after and unordered."""
    plan: list[tuple[bytes | None, bytes | None, int, list[tuple[str, bytes]], int]] = []
    for i in range(100):
        key = f"k{i % 6}".encode()
        ts = T0 + i * 1000
        if i % 17 == 5:
            ts = T0 - 3_600_000 + i  # far in the past, in the middle of the log
        if i % 19 == 7:
            ts = T0 + 3_600_000 + i  # far in the future, in the middle of the log
        headers = [("seq", str(i).encode()), ("src", b"test")] if i % 4 else []
        plan.append((key, f'{{"i": {i}}}'.encode(), ts, headers, (i % 6) % SOURCE_PARTITIONS))
    plan.append((None, b"keyless", START + 500, [("h", b"")], 1))
    plan.append((b"tomb", None, START + 600, [], 2))
    plan.append((b"edge-start", b"in", START, [], 0))
    plan.append((b"edge-end", b"out", END, [], 0))
    return plan


@dataclass
class Source:
    settings: Settings
    bootstrap: str
    topic: str
    records: list[RangeRecord]  # everything produced, with the offsets the broker gave

    def in_range(self, start: int | None, end: int | None) -> list[RangeRecord]:
        return [
            r
            for r in self.records
            if (start is None or r.timestamp_ms >= start) and (end is None or r.timestamp_ms < end)
        ]


async def create_topic(s: Settings, bootstrap: str, name: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**client_kwargs(s, bootstrap))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def produce_plan(s: Settings, bootstrap: str, topic: str) -> list[RangeRecord]:
    producer = await start_producer(s, bootstrap)
    out = []
    try:
        for key, value, ts, headers, part in record_plan():
            meta = await producer.send_and_wait(
                topic, value, key=key, partition=part, timestamp_ms=ts, headers=headers or None
            )
            out.append(RangeRecord(key, value, ts, headers, meta.partition, meta.offset))
    finally:
        await producer.stop()
    return out


async def collect(*args: Any, **kwargs: Any) -> list[RangeRecord]:
    return [RangeRecord(*rec) async for rec in read_range(*args, **kwargs)]


@pytest.fixture(scope="module")
def source(kafka: EmbeddedKafka | ExternalBroker) -> Source:
    s = load_settings(broker=kafka.bootstrap)
    topic = f"replay-src-{uuid.uuid4().hex[:8]}"
    asyncio.run(create_topic(s, kafka.bootstrap, topic, SOURCE_PARTITIONS))
    records = asyncio.run(produce_plan(s, kafka.bootstrap, topic))
    return Source(s, kafka.bootstrap, topic, records)


def new_topic(src: Source, partitions: int) -> str:
    name = f"replay-dst-{uuid.uuid4().hex[:8]}"
    asyncio.run(create_topic(src.settings, src.bootstrap, name, partitions))
    return name


def ordered(records: list[RangeRecord]) -> list[RangeRecord]:
    return sorted(records, key=lambda r: (r.partition, r.offset))


def by_partition(records: list[RangeRecord]) -> dict[int, list[RangeRecord]]:
    out: dict[int, list[RangeRecord]] = defaultdict(list)
    for r in records:
        out[r.partition].append(r)
    return dict(out)


def by_key(records: list[RangeRecord]) -> dict[bytes | None, list[tuple[Any, ...]]]:
    out: dict[bytes | None, list[tuple[Any, ...]]] = defaultdict(list)
    for r in records:
        out[r.key].append((r.value, r.timestamp_ms, r.headers))
    return dict(out)


def content(records: list[RangeRecord]) -> list[tuple[Any, ...]]:
    """Order-free comparison form, without the offsets (they differ on the target)."""
    return sorted(
        ((r.key or b""), (r.value or b""), r.timestamp_ms, tuple(r.headers), r.partition)
        for r in records
    )


# --------------------------------------------------------------------------- read_range


@pytest.mark.parametrize("seek", ["offsets", "scan"])
def test_read_range_yields_exactly_the_in_range_records(source: Source, seek: str) -> None:
    got = asyncio.run(collect(source.settings, source.bootstrap, source.topic, START, END, seek))
    expected = source.in_range(START, END)
    assert len(expected) > 40  # the plan really has in-range records and out-of-range ones
    assert len(expected) < len(source.records) - 20
    assert ordered(got) == ordered(expected)  # same key, value, ts, headers, partition, offset
    for recs in by_partition(got).values():  # each partition in offset order
        assert [r.offset for r in recs] == sorted(r.offset for r in recs)
    assert any(r.key is None for r in got) and any(r.value is None for r in got)
    assert b"edge-start" in {r.key for r in got} and b"edge-end" not in {r.key for r in got}


def test_read_range_unbounded_and_half_open(source: Source) -> None:
    everything = asyncio.run(collect(source.settings, source.bootstrap, source.topic, None, None))
    assert ordered(everything) == ordered(source.records)
    after = asyncio.run(collect(source.settings, source.bootstrap, source.topic, END, None))
    assert ordered(after) == ordered(source.in_range(END, None))
    before = asyncio.run(
        collect(source.settings, source.bootstrap, source.topic, None, START, "scan")
    )
    assert ordered(before) == ordered(source.in_range(None, START))


def test_offsets_seek_skips_the_log_before_start_and_merges_by_timestamp(source: Source) -> None:
    async def run(seek: str) -> tuple[int, int, list[RangeRecord]]:
        async with RangeReader(
            source.settings, source.bootstrap, source.topic, START, END, seek=seek
        ) as reader:
            recs = [r async for r in reader]
            return reader.planned, reader.scanned, recs

    planned_scan, scanned_scan, recs_scan = asyncio.run(run("scan"))
    planned_seek, scanned_seek, recs_seek = asyncio.run(run("offsets"))
    assert planned_scan == scanned_scan == len(source.records)
    # Apache Kafka answers offsets_for_times from record timestamps: less of the log is read.
    assert planned_seek == scanned_seek < planned_scan
    assert recs_seek == recs_scan  # same records, same (deterministic) order
    # A k-way merge of the partitions by (timestamp, partition), each partition in offset order.
    parts = by_partition(ordered(source.in_range(START, END)))
    merged = heapq.merge(*(parts[p] for p in sorted(parts)), key=lambda r: r.timestamp_ms)
    assert recs_seek == list(merged)


def test_read_range_empty_and_unknown_topic(source: Source) -> None:
    far = T0 + 10 * 3_600_000

    async def planned_after_far() -> tuple[int, list[RangeRecord]]:
        async with RangeReader(source.settings, source.bootstrap, source.topic, far) as reader:
            return reader.planned, [r async for r in reader]

    assert asyncio.run(planned_after_far()) == (0, [])  # the broker lookup found nothing
    assert (
        asyncio.run(collect(source.settings, source.bootstrap, source.topic, far, None, "scan"))
        == []
    )
    with pytest.raises(TopicNotFound, match="no-such-topic"):
        asyncio.run(collect(source.settings, source.bootstrap, "no-such-topic", None, None))
    with pytest.raises(ValueError, match="empty time range"):
        RangeReader(source.settings, source.bootstrap, source.topic, END, START)


# --------------------------------------------------------------------------- replay


def test_replay_same_partitions_preserves_everything(source: Source) -> None:
    target = new_topic(source, SOURCE_PARTITIONS)
    progress: list[tuple[int, int, int]] = []
    result = asyncio.run(
        replay(
            source.settings,
            source.bootstrap,
            source.topic,
            target,
            START,
            END,
            on_progress=lambda *a: progress.append(a),
        )
    )
    expected = source.in_range(START, END)
    assert result.sent == len(expected) and result.partitioning == "same"
    assert result.first_ts_ms == START and result.last_ts_ms == max(
        r.timestamp_ms for r in expected
    )
    assert progress[-1] == (len(expected), result.scanned, result.scanned)
    got = asyncio.run(collect(source.settings, source.bootstrap, target, None, None, "scan"))
    assert content(got) == content(expected)
    src_parts, dst_parts = by_partition(expected), by_partition(got)
    for part, recs in src_parts.items():  # per-partition order kept exactly
        assert [(r.key, r.value, r.timestamp_ms, r.headers) for r in dst_parts[part]] == [
            (r.key, r.value, r.timestamp_ms, r.headers) for r in recs
        ]


def test_replay_into_fewer_partitions_goes_by_key(source: Source) -> None:
    target = new_topic(source, 1)
    result = asyncio.run(
        replay(source.settings, source.bootstrap, source.topic, target, START, END, speed=1000.0)
    )
    expected = source.in_range(START, END)
    assert result.sent == len(expected) and result.partitioning == "key"
    got = asyncio.run(collect(source.settings, source.bootstrap, target, None, None))
    assert {r.partition for r in got} == {0}
    assert by_key(got) == by_key(expected)  # per-key order, values, timestamps, headers


def test_replay_unknown_target_sends_nothing(source: Source) -> None:
    with pytest.raises(TopicNotFound, match="nowhere"):
        asyncio.run(replay(source.settings, source.bootstrap, source.topic, "nowhere"))


def test_cli_replay_subprocess(source: Source) -> None:
    target = new_topic(source, SOURCE_PARTITIONS)
    env = {**os.environ, "PSO_BROKER": source.bootstrap}
    base = [sys.executable, "-m", "app.cli", "replay", "--from-topic", source.topic]
    done = subprocess.run(
        [*base, "--to-topic", target, "--from", iso(START), "--to", iso(END), "--speed", "max"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    expected = source.in_range(START, END)
    assert f"replayed {len(expected)} of" in done.stderr
    got = asyncio.run(collect(source.settings, source.bootstrap, target, None, None))
    assert content(got) == content(expected)
    bad = subprocess.run(
        [*base, "--to-topic", "missing-topic"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert "unknown topic 'missing-topic'" in bad.stderr and "Traceback" not in bad.stderr


# --------------------------------------------------------------------------- argument checks


def test_parse_speed() -> None:
    assert parse_speed("max") is None and parse_speed("MAX") is None
    assert parse_speed("10x") == 10.0 and parse_speed("0.5x") == 0.5 and parse_speed("3") == 3.0
    for bad in ("0x", "fast", "-2x", "x", ""):
        with pytest.raises(ValueError, match="bad speed"):
            parse_speed(bad)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"speed": "warp"}, "bad speed"),
        ({"seek": "guess"}, "bad seek"),
        ({"start": "yesterday"}, "bad time"),
        ({"start": iso(END), "end": iso(START)}, "empty range"),
        ({"to_topic": "a"}, "must differ"),
    ],
)
def test_cli_argument_errors_are_usage_errors(args: dict[str, str], message: str) -> None:
    from app.errors import UsageError

    kwargs: dict[str, Any] = {"from_topic": "a", "to_topic": "b", "start": None, "end": None}
    kwargs |= {"speed": "max", "seek": "offsets"}
    kwargs |= args
    with pytest.raises(UsageError, match=message):
        replay_cmd(**kwargs)
