"""When a worker has done everything asked of it: its consumer group has taken every record.

A driver that must act on a worker's outputs in lock-step (the live closed loop, a test)
waits on `WorkerProbe.wait_idle`. Under exactly-once a stage's outputs commit in the same
transaction as its input offsets, so once every input record is committed, every output it
caused is readable — and a stage's outputs are the next stage's inputs, so the check covers
the whole topology when it covers every input topic. Not "committed == end offset": a
partition may end in several transaction markers in a row (one per producer).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.errors import ExitCode, PsoError
from app.kafka.connection import client_kwargs, start_consumer
from app.kafka.range import topic_partitions
from app.settings import Settings


class WorkerNotIdle(PsoError, TimeoutError):
    """The worker left input unprocessed for too long (one line, exit 2)."""

    exit_code = ExitCode.USER_ERROR


class WorkerProbe:
    """Tells when a worker's consumer group has taken every record of its input topics."""

    def __init__(self, settings: Settings, bootstrap: str, topics: list[str]) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.topics = topics
        self.group = settings.app_id
        self.admin: AIOKafkaAdminClient | None = None
        self.consumer: Any = None
        self.tps: list[TopicPartition] = []
        #: per partition, a range (committed, end) found to hold only transaction markers
        self.markers: dict[TopicPartition, tuple[int, int]] = {}

    async def start(self) -> None:
        self.admin = AIOKafkaAdminClient(**client_kwargs(self.settings, self.bootstrap))
        await self.admin.start()
        # A short broker wait: the probe's fetches over marker-only ranges come back empty.
        self.consumer = await start_consumer(self.settings, self.bootstrap, fetch_max_wait_ms=10)
        for topic in self.topics:
            self.tps += [
                TopicPartition(topic, p) for p in await topic_partitions(self.consumer, topic)
            ]

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.admin is not None:
            await self.admin.close()

    async def idle(self) -> bool:
        """True when no committed record of an input partition lies at or after the group's
        committed offset. The offsets are read before the ends: a transaction committed in
        between shows as work left (never as idle too early)."""
        assert self.admin is not None
        offsets = await self.admin.list_consumer_group_offsets(self.group)
        committed = {tp: meta.offset for tp, meta in offsets.items()}
        end = await self.consumer.end_offsets(self.tps)  # read_committed: last stable offsets
        at = {tp: max(committed.get(tp, 0), 0) for tp in self.tps}
        behind = [
            tp for tp in self.tps if at[tp] < end[tp] and self.markers.get(tp) != (at[tp], end[tp])
        ]
        if not behind:
            return True
        # Between the committed offset and the end there may be only transaction markers.
        self.consumer.assign(behind)
        for tp in behind:
            self.consumer.seek(tp, at[tp])
        give_up = time.monotonic() + 5.0  # a fetch that never comes back: ask again later
        while time.monotonic() < give_up:
            batches = await self.consumer.getmany(timeout_ms=50)
            if any(batches.values()):
                return False
            if all([await self.consumer.position(tp) >= end[tp] for tp in behind]):
                self.markers.update({tp: (at[tp], end[tp]) for tp in behind})
                return True
        return False

    async def wait_idle(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not await self.idle():
            if time.monotonic() > deadline:
                raise WorkerNotIdle(
                    f"the PSO worker (group {self.group!r}) left records of "
                    f"{', '.join(self.topics)} unprocessed for {timeout_s:g} s"
                )
            await asyncio.sleep(0.02)
