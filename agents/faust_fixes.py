"""What faust-streaming 0.15 gets wrong for exactly-once recovery and pace, fixed at the edges.

Found by ``tests/integration/test_recovery.py`` (a worker SIGKILLed mid-stream, restarted with
an empty data dir; two workers sharing partitions) and, the two on pace (stalled partitions,
commits back to back), by ``bench/live_throughput.py``. Each fix names what it prevents:

* **Transactions by destination.** Faust keeps one transactional producer per assigned source
  partition and commits a partition's offsets in that producer's transaction, but its
  ``TransactionManager.send`` picks the producer by the *destination* partition. A resource
  share keyed by resource, produced while processing a subsystem's partition, landed in
  another partition's transaction: committed or aborted independently of the offset it came
  from (shares lost after a SIGKILL), or, with two workers, sent to a producer this worker
  does not own (``ProducerSendError``). Outputs to topics the worker does not consume were
  not transactional at all. `SourceTransactionManager` routes every record produced while an
  event is processed into that event's partition's transaction, as Kafka Streams does.
* **Table writes outside the transaction.** ``table[key] = value`` queues its changelog
  record in a buffer that a background task sends later, and an exactly-once commit does not
  flush it: a commit could carry a message's offset without the state it produced (models
  and windows silently behind their input after a restart). `put` produces the changelog
  record right away, inside the current transaction, before the message is acknowledged,
  and only then stores the value locally: a send that raises leaves the store as it was.
* **Agents restarted on half-done records.** Faust's supervisor restarts an agent that
  raised and carries on: the record it failed on, half processed (some outputs sent, state
  in memory moved on), is acknowledged when its stream is finalised and committed with the
  next commit. A stage-2 checkpoint over the 1 MB record limit did that on the live bench
  and stalled stage 2 for good. `stop_worker` refuses every commit from then on
  (`PsoConsumer.stop_committing`) and crashes the app: the open transactions are aborted and
  a restart redoes the record (``tests/integration/test_stalls.py``).
* **Shutdown that hangs.** On stop Faust commits and ends every transaction twice (once
  when the app waits for its streams, once when the consumer stops) without beginning one in
  between; the agents' last acknowledgements make the second commit fail ("Not in the middle
  of a transaction"), the consumer thread is never stopped and the process does not exit.
  `SourceTransactionManager` begins a transaction again before it commits or produces.
* **Offsets stuck behind an aborted transaction.** Faust records a gap in the offsets it is
  delivered (aborted records, transaction markers) only when the last offset it read tests
  true, so never after offset 0; and it will not commit past a gap it did not record. A
  partition whose first committed record sat at offset 0, followed by an aborted transaction
  (a SIGKILLed worker's), was never committed again, and the transaction it shared with
  other partitions stayed open, once those went quiet, until the broker aborted it with the
  outputs in it. `ReadOffsets` keeps offset 0 true (``tests/integration/test_offsets.py``).
* **Busy partitions stalled by quiet ones.** Faust fetches with ``fetch_max_wait_ms=1500``,
  and aiokafka keeps one fetch in flight per broker, for the partitions with nothing
  buffered. A fetch of only quiet partitions (the changelogs a worker holds, a standby) sat
  at the broker for up to 1.5 s while the telemetry partitions, drained meanwhile, waited
  behind it: the live bench's ingest stopped for ~1 s at a time. `PsoApp` takes
  ``fetch_max_wait_ms`` (``PSO_FETCH_MAX_WAIT_MS``, 100 ms).
* **Commits back to back.** Faust's commit timer starts the next commit as soon as the last
  one ends once commits take longer than the interval (~50 ms for four transactions in a
  row, more while catching up), and an agent cannot send to a transaction while it commits:
  agents waited on them often. `PsoConsumer` pauses after a commit, while the worker is busy,
  up to ``commit_pause_ratio`` times as long as the commit took.
* **Records lost after recovery.** After restoring tables Faust resumes the stream partitions
  and only then seeks them to the committed offsets; records fetched in between were
  delivered while the flow was still suspended, skipped, and never fetched again (the first
  telemetry message after a restart vanished). `SeekFirstRecovery` seeks first.

* **State not restored at all.** Under exactly-once, Faust takes a changelog partition's
  highwater from the consumer's *cached* last stable offset, which is None until that
  partition has been fetched once; None counts as an empty changelog. A worker started right
  after a crash could thus skip restoring every table and run on fresh state (seen as
  "highwater -1" for every changelog, then wrong or missing events). `LsoConsumerThread` asks
  the broker (ListOffsets, read_committed: the last stable offset) for partitions not cached.

What remains by design: between computing the offsets to commit and committing, records of
the next, half-processed message may ride along in the transaction. Agents therefore write
their state last and are idempotent on replay (each subsystem's windows in `agents.ingest`
know the next telemetry offset they take; the core skips duplicate windows and shares).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import faust
from aiokafka.producer.transaction_manager import TransactionState
from faust.streams import _current_event, current_event
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.consumer import TransactionManager
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from faust.types import TP
from mode import Service

log = logging.getLogger("pso.faust_fixes")


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


class LsoConsumerThread(AIOKafkaConsumerThread):
    """Highwaters for recovery from the broker when the consumer has not cached them yet;
    fetches held for at most the app's ``fetch_max_wait_ms``."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", 1500)
        return consumer

    def fetch_positions(self) -> dict[TP, int]:
        """The next offset the fetcher hands out, per assigned partition with one (it steps
        over transaction markers and aborted records): read from the consumer's own state,
        without a round trip, as ``highwater`` is (for the stall watch, `agents.health`)."""
        consumer: Any = self._consumer
        out: dict[TP, int] = {}
        try:
            assignment = consumer._subscription.subscription.assignment
            for tp in assignment.tps:
                state = assignment.state_value(tp)
                if state is not None and state.has_valid_position:
                    out[TP(tp.topic, tp.partition)] = int(state.position)
        except Exception:  # not started, restarting, or between assignments
            return {}
        return out

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        consumer: Any = self._ensure_consumer()
        if not self.consumer.in_transaction:
            return await super()._highwaters(partitions)
        offsets: dict[TP, int] = {}
        unknown = []
        for tp in partitions:
            lso = consumer.last_stable_offset(tp)
            if lso is None:
                unknown.append(tp)
            else:
                offsets[tp] = lso
        if unknown:  # a read_committed consumer's ListOffsets answers the last stable offset
            offsets.update(await consumer.end_offsets(unknown))
            log.info("highwaters of %d changelog partitions not fetched yet: asked the broker",
                     len(unknown))
        return offsets


class _ReadOffset(int):
    """An offset that is true even when it is 0."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return True


class ReadOffsets(defaultdict[TP, int | None]):
    """Faust's last-read offset per partition, stored so that offset 0 tests true.

    Faust records a gap in the offsets it is delivered (records of aborted transactions,
    transaction markers) only ``if gap > 1 and r_offset``: after reading offset 0 it never
    does, and since it will not commit past an unrecorded gap, the partition's offsets were
    never committed again. The transaction they share with other partitions then stays open
    once those go quiet, until the broker aborts it with every output in it.
    """

    def __init__(self) -> None:
        super().__init__(lambda: None)

    def __setitem__(self, tp: TP, offset: int | None) -> None:
        super().__setitem__(tp, None if offset is None else _ReadOffset(offset))


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


class PsoTransport(Transport):
    """The aiokafka transport with `SourceTransactionManager` and `PsoConsumer`."""

    TransactionManager = SourceTransactionManager
    Consumer = PsoConsumer


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
            self._recovery = SeekFirstRecovery(
                self.app, self, beacon=self.beacon, loop=self.loop
            )
        return self._recovery


class PsoApp(faust.App):
    """A Faust app on `PsoTransport` with `PsoTableManager`.

    ``fetch_max_wait_ms``: Faust hard-codes 1500 ms. aiokafka keeps one fetch in flight per
    broker, made of the partitions with nothing buffered; when only quiet ones are in it (the
    changelogs a worker holds, standbys), every busy partition waits for it to come back.
    ``commit_pause_ratio``: see `PsoConsumer._commit_handler` (1.0: a pause as long as the
    commit; `agents.app.build_app` passes 3.0).
    """

    def __init__(
        self, id: str, fetch_max_wait_ms: int = 1500, commit_pause_ratio: float = 1.0,
        **options: Any,
    ) -> None:
        options.setdefault("TableManager", PsoTableManager)
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.commit_pause_ratio = commit_pause_ratio
        super().__init__(id, **options)

    def _new_transport(self) -> Any:
        return PsoTransport(self.conf.broker_consumer, self)


async def stop_worker(app: Any, reason: BaseException) -> None:
    """Stop the worker, committing nothing more, when an agent failed half-way through a
    record (a send or a checkpoint that raised): part of the record's outputs are in the open
    transaction and the agent's state in memory has moved on.

    Faust would restart the agent on that state and carry on: the record, acknowledged when
    its stream is finalised, was then committed half done (how a failed checkpoint once
    stalled stage 2 for good), and its shutdown commits what is acknowledged. Here every
    commit is refused first, then the app crashes: the open transactions are aborted and a
    restarted worker redoes the record from the committed offsets."""
    consumer = app.consumer
    if isinstance(consumer, PsoConsumer):
        consumer.stop_committing(reason)
    await app.crash(reason)


async def put(table: Any, key: Any, value: Any, keep: Any = None) -> None:
    """``table[key] = value`` with the changelog record produced now, in this event's
    transaction (Faust's ``__setitem__`` defers it to a buffer an exactly-once commit does
    not flush). Call it from an agent, for the partition of the event being processed.

    ``keep``: what the local store holds instead of ``value`` (the changelog still gets
    ``value``, and recovery restores ``value``): a memory-store caller that keeps the live
    object itself need not hold its serialised copy too."""
    event = current_event()
    if event is None:
        raise RuntimeError("table writes belong to an agent processing an event")
    table._verify_source_topic_partitions(event.message.topic)  # as __setitem__ does
    # The record first: a send that fails (a record over the producer's max_request_size, a
    # producer gone) leaves the local store as it was, still agreeing with the caller's
    # state. Written locally first, a failed checkpoint left a token that the stage, restarted
    # by Faust, took for a forged snapshot: it started a resource afresh and stalled for good.
    await table.changelog_topic.send(
        key=key,
        value=value,
        partition=event.message.partition,
        key_serializer=table.key_serializer,
        value_serializer=table.value_serializer,
        callback=table._on_changelog_sent,
    )
    table.data[key] = value if keep is None else keep
    owners = getattr(table.data, "_key_partition", None)
    if owners is not None:
        # The memory store drops keys of partitions no longer assigned after a rebalance, but
        # only those it restored: record live writes too, or a key first written in a
        # transaction aborted by the rebalance would outlive it here.
        owners[key] = event.message.partition
