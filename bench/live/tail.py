"""Reading a worker's output topics from the bench process, stamping each record's arrival.

Owns `Tail`: a background consumer (read_committed for "readable", read_uncommitted for
"appended") that records when each event id first arrived. Every "until the last expected
window / event is readable" in the bench, and every latency, is read off a `Tail`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson

from app.settings import Settings

from .worker import Worker


class Tail:
    """Reads topics from their beginning in the background; stamps each record's arrival."""

    def __init__(
        self, settings: Settings, bootstrap: str, topics: list[str], committed: bool
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.topics = topics
        self.committed = committed
        self.seen: dict[str, float] = {}  # event id -> first arrival (time.time())
        self.records: list[tuple[str, str, int, str, float]] = []  # topic,key,ts,id,arrival
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from app.kafka.connection import client_kwargs

        self._consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings, self.bootstrap),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed" if self.committed else "read_uncommitted",
            fetch_max_wait_ms=50,
        )
        self._consumer.assign(
            [
                TopicPartition(t, p)
                for t in self.topics
                for p in range(self.settings.topic_policy.partitions)
            ]
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            now = time.time()
            for tp, records in batches.items():
                for r in records:
                    event_id = str(orjson.loads(r.value).get("event_id"))
                    self.seen.setdefault(event_id, now)
                    key = r.key.decode() if r.key else ""
                    self.records.append((tp.topic, key, r.timestamp, event_id, now))

    async def wait_for(self, ids: set[str], timeout_s: float, proc: Worker | None) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ids <= self.seen.keys():
                return True
            if proc is not None:
                proc.check()
            if self._task is not None and self._task.done():
                self._task.result()
            await asyncio.sleep(0.05)
        return ids <= self.seen.keys()

    def last_arrival(self, ids: set[str]) -> float | None:
        times = [self.seen[i] for i in ids if i in self.seen]
        return max(times) if len(times) == len(ids) and times else None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            # aiokafka's fetcher can re-raise a CancelledError from its own task on close.
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer.stop()
