"""When a worker has done everything asked of it: its consumer group has taken every record.

A driver that must act on a worker's outputs in lock-step (the live closed loop, a test)
waits on `WorkerProbe.wait_idle`. Under exactly-once a stage's outputs commit in the same
transaction as its input offsets, so once every input record is committed, every output it
caused is readable — and a stage's outputs are the next stage's inputs, so the check covers
the whole topology when it covers every input topic. Not "committed == end offset": a
partition may end in several transaction markers in a row (one per producer).

A transaction's markers are written partition by partition, so for a moment its input offsets
can be visible while its outputs are not: the probe also waits until no transaction is open on
the input topics and on the outputs the driver reads (``outputs``: their high-water mark equals
their last stable offset). At rest nothing is open, so the check is exact.
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

    def __init__(
        self, settings: Settings, bootstrap: str, topics: list[str], outputs: list[str]
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.topics = topics
        self.outputs = outputs
        self.group = settings.app_id
        self.admin: AIOKafkaAdminClient | None = None
        self.consumer: Any = None
        self.uncommitted: Any = None  # read_uncommitted: high-water marks
        # Ends are read by consumers that are never assigned: assigning a consumer drops its
        # metadata of other topics, and its next offset request would wait out a refresh.
        self.stable: Any = None  # read_committed: last stable offsets
        self.tps: list[TopicPartition] = []
        self.out_tps: list[TopicPartition] = []
        #: per partition, a range (committed, end) found to hold only transaction markers
        self.markers: dict[TopicPartition, tuple[int, int]] = {}

    async def start(self) -> None:
        """Connect (`stop` closes whatever was opened, also after a failed start)."""
        self.admin = AIOKafkaAdminClient(**client_kwargs(self.settings, self.bootstrap))
        await self.admin.start()
        # A short broker wait: the probe's fetches over marker-only ranges come back empty.
        self.consumer = await start_consumer(self.settings, self.bootstrap, fetch_max_wait_ms=10)
        self.uncommitted = await start_consumer(
            self.settings, self.bootstrap, isolation_level="read_uncommitted"
        )
        self.stable = await start_consumer(self.settings, self.bootstrap)
        for topic in self.topics:
            parts = await topic_partitions(self.consumer, topic)
            self.tps += [TopicPartition(topic, p) for p in parts]
        for topic in self.outputs:
            parts = await topic_partitions(self.consumer, topic)
            self.out_tps += [TopicPartition(topic, p) for p in parts]

    async def stop(self) -> None:
        try:
            for consumer in (self.consumer, self.uncommitted, self.stable):
                if consumer is not None:
                    await consumer.stop()
        finally:
            if self.admin is not None:
                await self.admin.close()

    async def idle(self) -> bool:
        """True when no committed record of an input partition lies at or after the group's
        committed offset and no transaction is open. The offsets are read before the ends: a
        transaction committed in between shows as work left (never as idle too early)."""
        assert self.admin is not None
        offsets = await self.admin.list_consumer_group_offsets(self.group)
        committed = {tp: meta.offset for tp, meta in offsets.items()}
        watched = self.tps + self.out_tps
        end = await self.stable.end_offsets(watched)  # last stable offsets
        high = await self.uncommitted.end_offsets(watched)
        if any(high[tp] != end[tp] for tp in watched):
            return False  # a transaction is open
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
