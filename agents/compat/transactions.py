"""Transactions by source partition, and a shutdown that does not hang.

Written against faust-streaming 0.15.3. Upstream code it replaces or wraps:

- ``TransactionManager.send`` (replaced) and ``commit`` (wrapped):
  https://github.com/faust-streaming/faust/blob/v0.15.3/faust/transport/consumer.py

* **Transactions by destination.** Faust keeps one transactional producer per assigned source
  partition and commits a partition's offsets in that producer's transaction, but its
  ``TransactionManager.send`` picks the producer by the *destination* partition. A resource
  share keyed by resource, produced while processing a subsystem's partition, landed in
  another partition's transaction: committed or aborted independently of the offset it came
  from (shares lost after a SIGKILL), or, with two workers, sent to a producer this worker
  does not own (``ProducerSendError``). Outputs to topics the worker does not consume were
  not transactional at all. `SourceTransactionManager` routes every record produced while an
  event is processed into that event's partition's transaction, as Kafka Streams does
  (``tests/integration/test_recovery.py``).
* **Shutdown that hangs.** On stop Faust commits and ends every transaction twice (once when
  the app waits for its streams, once when the consumer stops) without beginning one in
  between; the agents' last acknowledgements make the second commit fail ("Not in the middle
  of a transaction"), the consumer thread is never stopped and the process does not exit.
  `SourceTransactionManager` begins a transaction again before it commits or produces
  (every integration test stops its workers).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from aiokafka.producer.transaction_manager import TransactionState
from faust.streams import _current_event, current_event
from faust.transport.consumer import TransactionManager
from faust.types import TP


@contextmanager
def processing(event: Any) -> Iterator[None]:
    """Within the block, ``event`` is the event being processed: sends and table writes go
    into its partition's transaction (`SourceTransactionManager`, `put`). Faust sets this for
    the event a stream yields; the events of a ``take_events`` batch need it set by hand."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class SourceTransactionManager(TransactionManager):
    """Produce inside the transaction of the partition whose event is being processed."""

    def _tid(self, tp: TP) -> str:
        return f"{self.app.conf.id}-{self.app.assignor.group_for_topic(tp.topic)}-{tp.partition}"

    async def _reopen(self, tid: str) -> None:
        """Begin a transaction for ``tid`` if its last one ended without a next one."""
        driver: Any = self.producer
        producer = driver._transaction_producers.get(tid)
        if producer is None or producer._txn_manager.state is not TransactionState.READY:
            return
        async with driver._trn_locks[tid]:
            if producer._txn_manager.state is TransactionState.READY:
                await producer.begin_transaction()

    async def commit(self, offsets: Mapping[TP, int], start_new_transaction: bool = True) -> bool:
        for tid in sorted({self._tid(tp) for tp in offsets}):
            await self._reopen(tid)
        return await super().commit(offsets, start_new_transaction=start_new_transaction)

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
        *,
        transactional_id: str | None = None,
    ) -> Any:
        event = current_event()
        if event is not None:
            tid = self._tid(event.message.tp)
            if tid in self.producer._transaction_producers:  # type: ignore[attr-defined]
                await self._reopen(tid)
                return await self.producer.send(
                    topic, key, value, partition, timestamp, headers, transactional_id=tid
                )
        # Outside an event (timers, Faust's own buffered writes): Faust's routing.
        return await super().send(topic, key, value, partition, timestamp, headers)
