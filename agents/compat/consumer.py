"""The consumer: commits paced while busy, refused once a record failed half-way.

Written against faust-streaming 0.15.3. Upstream code it replaces or wraps:

- ``Consumer._commit_handler`` and ``force_commit``:
  https://github.com/faust-streaming/faust/blob/v0.15.3/faust/transport/consumer.py

* **Commits back to back.** Faust's commit timer starts the next commit as soon as the last
  one ends once commits take longer than the interval (~50 ms for four transactions in a
  row, more while catching up), and an agent cannot send to a transaction while it commits:
  agents waited on them often. `PsoConsumer` pauses after a commit, while the worker is busy,
  up to ``commit_pause_ratio`` times as long as the commit took (``bench/live_throughput.py``).
* **Commits after a half-done record**: `PsoConsumer.stop_committing`, see
  `agents.compat.half_done`.
"""

from __future__ import annotations

import time
from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.types import TP
from mode import Service

from agents.compat.consumer_thread import LsoConsumerThread
from agents.compat.read_offsets import ReadOffsets


class PsoConsumer(Consumer):
    """Faust's aiokafka consumer on `LsoConsumerThread`, with `_commit_handler` paced, gaps
    after offset 0 recorded (`ReadOffsets`), and commits that `stop_committing` ends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = ReadOffsets()
        self.commits_stopped: BaseException | None = None

    def fetch_positions(self) -> dict[TP, int]:
        """See `LsoConsumerThread.fetch_positions`."""
        thread = getattr(self, "_thread", None)
        return thread.fetch_positions() if isinstance(thread, LsoConsumerThread) else {}

    def committed_offsets(self) -> dict[TP, int]:
        """The offsets this worker last committed (or found committed when it was assigned
        the partition), per partition."""
        return {tp: int(o) for tp, o in list(self._committed_offset.items()) if o is not None}

    def stop_committing(self, reason: BaseException) -> None:
        """Commit nothing from now on: see `stop_worker`."""
        if self.commits_stopped is None:
            self.commits_stopped = reason

    async def force_commit(self, *args: Any, **kwargs: Any) -> bool:
        if self.commits_stopped is not None:
            return False
        return bool(await super().force_commit(*args, **kwargs))

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return LsoConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @Service.task
    async def _commit_handler(self) -> None:
        """Commit every ``commit_interval``; while busy, pause after a commit up to
        ``commit_pause_ratio`` times as long as it took (agents cannot send to a transaction
        while it commits). Idle, a commit takes a few ms and the interval holds; catching up,
        slower commits come less often, and the first idle moment ends the pause."""
        interval = self.commit_interval
        ratio = getattr(self.app, "commit_pause_ratio", 1.0)
        await self.sleep(interval)
        while not self.should_stop:
            started = time.monotonic()
            await self.commit()
            now = time.monotonic()
            pause_until = now + max(interval, ratio * (now - started))
            await self.sleep(interval)
            while not self.should_stop and self._unacked_messages:
                left = pause_until - time.monotonic()
                if left <= 0:
                    break
                await self.sleep(min(left, 0.005))
