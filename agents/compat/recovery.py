"""Recovery that seeks stream partitions before it resumes them.

Written against faust-streaming 0.15.3. Upstream code it replaces or wraps:

- ``Recovery._resume_streams`` and ``on_recovery_completed``:
  https://github.com/faust-streaming/faust/blob/v0.15.3/faust/tables/recovery.py
- the table manager's ``recovery``:
  https://github.com/faust-streaming/faust/blob/v0.15.3/faust/tables/manager.py

* **Records lost after recovery.** After restoring tables Faust resumes the stream partitions
  and only then seeks them to the committed offsets; records fetched in between were
  delivered while the flow was still suspended, skipped, and never fetched again (the first
  telemetry message after a restart vanished). `SeekFirstRecovery` seeks first
  (``tests/integration/test_recovery.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP


@contextmanager
def _seek_before_resume(consumer: Any, is_changelog: Any) -> Iterator[None]:
    """Within the block, stream partitions resumed before ``perform_seek`` are resumed only
    once it has sought them (changelog partitions pass straight through)."""
    deferred: set[TP] = set()
    resume, seek = consumer.resume_partitions, consumer.perform_seek

    def resume_partitions(tps: Iterable[TP]) -> None:
        tps = set(tps)
        streams = {tp for tp in tps if not is_changelog(tp)}
        deferred.update(streams)
        if tps - streams:
            resume(tps - streams)

    async def perform_seek() -> None:
        await seek()
        if deferred:
            resume(set(deferred))
            deferred.clear()

    consumer.resume_partitions, consumer.perform_seek = resume_partitions, perform_seek
    try:
        yield
    finally:
        del consumer.resume_partitions, consumer.perform_seek  # back to the class's methods
        if deferred:  # no seek happened (e.g. a new rebalance began): resume as Faust would
            resume(deferred)


class SeekFirstRecovery(Recovery):
    """Faust's recovery, seeking stream partitions before they are resumed."""

    async def _resume_streams(self, generation_id: int = 0) -> None:
        with _seek_before_resume(self.app.consumer, self._is_changelog_tp):
            await super()._resume_streams(generation_id)

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        with _seek_before_resume(self.app.consumer, self._is_changelog_tp):
            await super().on_recovery_completed(generation_id)


class PsoTableManager(TableManager):
    """Faust's table manager with `SeekFirstRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
