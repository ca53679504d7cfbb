"""Finite reads of a Kafka topic between two record timestamps (backtests, `pso replay`).

A range read captures every partition's end offset when it starts and stops there, so it is
a bounded read of what was recorded, never a tail. It assigns partitions by hand (no consumer
group, nothing committed), so it never disturbs a live worker's offsets.

Seeking. ``seek="offsets"`` asks the broker for the first offset at or after ``start_ms``
(``ListOffsets`` by timestamp, which Apache Kafka answers from its time index). Some brokers
answer it from the append time instead of the record timestamp (Tansu), so the result is only
a starting point: every record is still filtered by its own timestamp. ``seek="scan"`` starts
at the beginning of every partition and filters by timestamp alone: slower, but right on any
broker. If the broker refuses the timestamp lookup, ``offsets`` falls back to ``scan``.

Order. Records come out merged across partitions by record timestamp (ties broken by the
partition number), and each partition's records in offset order: a k-way merge over the
partitions' heads. Record timestamps are producer-set and need not grow within a partition,
so the merged stream is not globally sorted, but it is deterministic for a given topic
content and keeps every partition's (hence every key's) order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, NamedTuple

from aiokafka.errors import UnsupportedVersionError
from aiokafka.structs import TopicPartition

from app.errors import ExitCode, PsoError
from app.kafka.connection import start_consumer
from app.settings import Settings

log = logging.getLogger(__name__)

SeekMode = Literal["offsets", "scan"]
SEEK_MODES: tuple[SeekMode, ...] = ("offsets", "scan")


class TopicNotFound(PsoError, LookupError):
    """The topic does not exist on the broker (topics are never auto-created)."""

    exit_code = ExitCode.USER_ERROR


class RangeRecord(NamedTuple):
    """One record of a range: what a producer needs to send it again, and where it was."""

    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: list[tuple[str, bytes]]
    partition: int
    offset: int


async def topic_partitions(consumer: Any, topic: str) -> list[int]:
    """Partition numbers of ``topic``, sorted; `TopicNotFound` if the broker has no such topic.

    Fetches the full cluster metadata first: asking about an unknown topic's offsets would
    block. (``consumer.topics()`` does the same fetch but keeps only the names; the consumer's
    own metadata does not track a topic until it is assigned, hence the client call.)
    """
    cluster = await consumer._client.fetch_all_metadata()
    if topic not in cluster.topics():
        raise TopicNotFound(f"unknown topic {topic!r}")
    parts = cluster.partitions_for_topic(topic)
    if not parts:
        raise TopicNotFound(f"topic {topic!r} has no partitions")
    return sorted(int(p) for p in parts)


class RangeReader:
    """Records of ``topic`` with ``start_ms <= timestamp < end_ms``, up to the end at open time.

    Parameters
    ----------
    settings, bootstrap
        Connection (security passes through `app.kafka.connection`).
    topic
        The topic to read.
    start_ms, end_ms
        Record-timestamp bounds in epoch milliseconds; ``None`` means unbounded on that side.
    seek
        ``"offsets"`` (broker timestamp lookup, then filter) or ``"scan"`` (filter only).
    idle_timeout_s
        A partition that returns nothing for this long while short of its captured end offset
        is abandoned with a warning, so a broker that over-reports end offsets (Tansu after
        batched writes) cannot hang the read.
    fetch_timeout_ms
        How long one fetch waits for data.

    Use as ``async with RangeReader(...) as reader: async for rec in reader: ...``. After
    opening, ``planned`` is the number of offsets to scan (an upper bound on the records
    yielded) and ``scanned`` counts the records fetched so far, in range or not.
    """

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        topic: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        seek: SeekMode = "offsets",
        idle_timeout_s: float = 10.0,
        fetch_timeout_ms: int = 200,
    ) -> None:
        if seek not in SEEK_MODES:
            raise ValueError(f"seek must be one of {SEEK_MODES}, not {seek!r}")
        if start_ms is not None and end_ms is not None and start_ms >= end_ms:
            raise ValueError(f"empty time range: start {start_ms} >= end {end_ms}")
        self.settings = settings
        self.bootstrap = bootstrap
        self.topic = topic
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.seek = seek
        self.idle_timeout_s = idle_timeout_s
        self.fetch_timeout_ms = fetch_timeout_ms
        self.partitions: list[int] = []
        self.start_offsets: dict[int, int] = {}
        self.end_offsets: dict[int, int] = {}
        self.planned = 0
        self.scanned = 0
        self.abandoned: list[int] = []
        self._consumer: Any = None

    async def __aenter__(self) -> RangeReader:
        self._consumer = await start_consumer(self.settings, self.bootstrap)
        try:
            await self._plan()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    def _in_range(self, ts: int) -> bool:
        return (self.start_ms is None or ts >= self.start_ms) and (
            self.end_ms is None or ts < self.end_ms
        )

    async def _plan(self) -> None:
        """Assign every partition, capture end offsets, find and seek the start offsets."""
        consumer = self._consumer
        self.partitions = await topic_partitions(consumer, self.topic)
        tps = [TopicPartition(self.topic, p) for p in self.partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        starts = {tp: int(begins[tp]) for tp in tps}
        if self.seek == "offsets" and self.start_ms is not None:
            starts = await self._lookup_starts(tps, starts, ends)
        for tp in tps:
            self.end_offsets[tp.partition] = int(ends[tp])
            self.start_offsets[tp.partition] = min(starts[tp], int(ends[tp]))
            consumer.seek(tp, self.start_offsets[tp.partition])
        self.planned = sum(self.end_offsets[p] - self.start_offsets[p] for p in self.partitions)

    async def _lookup_starts(
        self, tps: list[TopicPartition], starts: dict[TopicPartition, int], ends: dict[Any, Any]
    ) -> dict[TopicPartition, int]:
        """Broker timestamp lookup; no answer for a partition means nothing at/after start."""
        assert self.start_ms is not None
        try:
            found = await self._consumer.offsets_for_times({tp: self.start_ms for tp in tps})
        except UnsupportedVersionError:
            log.warning("broker refuses offsets_for_times on %s: scanning instead", self.topic)
            return starts
        out = {}
        for tp in tps:
            hit = found.get(tp)
            # Never before the log start (retention may have moved it since the lookup).
            out[tp] = int(ends[tp]) if hit is None else max(int(hit.offset), starts[tp])
        return out

    def __aiter__(self) -> AsyncIterator[RangeRecord]:
        return self._records()

    async def _records(self) -> AsyncIterator[RangeRecord]:
        if self._consumer is None:
            raise RuntimeError("RangeReader is not open: use `async with`")
        buffers: dict[int, deque[RangeRecord]] = {p: deque() for p in self.partitions}
        fetching = {p for p in self.partitions if self.start_offsets[p] < self.end_offsets[p]}
        while True:
            await self._refill(buffers, fetching)
            heads = [p for p in self.partitions if buffers[p]]
            if not heads:
                return
            best = min(heads, key=lambda p: (buffers[p][0].timestamp_ms, p))
            yield buffers[best].popleft()

    async def _refill(self, buffers: dict[int, deque[RangeRecord]], fetching: set[int]) -> None:
        """Fetch until every partition still being read has a buffered in-range record.

        The merge may only pick a head once every unfinished partition shows its next one.
        """
        consumer = self._consumer
        loop = asyncio.get_running_loop()
        last_data = {p: loop.time() for p in fetching}
        while needy := sorted(p for p in fetching if not buffers[p]):
            tps = [TopicPartition(self.topic, p) for p in needy]
            batches = await consumer.getmany(*tps, timeout_ms=self.fetch_timeout_ms)
            now = loop.time()
            for tp in tps:
                p = tp.partition
                end = self.end_offsets[p]
                records = batches.get(tp, [])
                if records:
                    last_data[p] = now
                for rec in records:
                    if rec.offset >= end:
                        break
                    self.scanned += 1
                    if self._in_range(rec.timestamp):
                        buffers[p].append(
                            RangeRecord(
                                rec.key, rec.value, rec.timestamp, list(rec.headers), p, rec.offset
                            )
                        )
                if (records and records[-1].offset + 1 >= end) or (
                    not records and await consumer.position(tp) >= end
                ):
                    fetching.discard(p)
                elif not records and now - last_data.get(p, now) > self.idle_timeout_s:
                    log.warning(
                        "%s[%d]: nothing after %.0f s short of end offset %d: stopping there",
                        self.topic,
                        p,
                        self.idle_timeout_s,
                        end,
                    )
                    self.abandoned.append(p)
                    fetching.discard(p)


async def read_range(
    settings: Settings,
    bootstrap: str,
    topic: str,
    start_ms: int | None,
    end_ms: int | None,
    seek: SeekMode = "offsets",
    on_open: Callable[[RangeReader], None] | None = None,
) -> AsyncIterator[tuple[bytes | None, bytes | None, int, list[tuple[str, bytes]], int, int]]:
    """Yield ``(key, value, timestamp_ms, headers, partition, offset)`` for records in range.

    ``start_ms <= timestamp < end_ms`` (``None`` = unbounded), stopping at the end offsets
    captured at start; order as in the module docstring. ``on_open`` sees the opened
    `RangeReader` (its ``planned`` count, for a progress bar). Raises `TopicNotFound`.
    """
    async with RangeReader(settings, bootstrap, topic, start_ms, end_ms, seek=seek) as reader:
        if on_open is not None:
            on_open(reader)
        async for rec in reader:
            yield rec
