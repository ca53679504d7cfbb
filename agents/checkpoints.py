"""Model state on Faust: sealed checkpoints every few updates, rebuilt from the input topic.

Sealing a subsystem's predictor (pickle + HMAC, ~250 KB for 5 series) on every window, and a
resource's predictor (pending shares included) on every share, made the changelogs carry
~30x the telemetry's bytes and cost most of a worker's CPU. So a predictor is sealed into its
table only every ``every`` updates, together with the input offset it is good up to; a new
one records just its birth (fresh state before its first record), a few bytes. When a worker
holds a table entry it has no live object for — after a restart or a rebalance — it unseals
the checkpoint and replays, from the input topic itself, that key's records between the
checkpoint and the record now being processed. Their events were already published (they sit
below the committed offset), so the replay only rebuilds state; replayed records go through
the very same code as live ones, so the rebuilt state equals the state the lost worker had.

The memory store keeps a few bytes per key instead of the sealed blob (the changelog keeps
the blob, and recovery restores it from there): a second, pickled copy of every model would
double a worker's memory.

A checkpoint must fit in one Kafka record (1 MB by default). What the input topic holds anyway
need not be sealed: with ``lean``, a checkpoint leaves part of the state out (stage 2: the
shares still waiting for other contributors, ~1 KB each and without bound while a partition is
behind) and records the input offset from which a rebuild reads it back (``refill``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from app.core.snapshot import SnapshotRejected, seal, unseal
from app.errors import ExitCode, PsoError
from app.kafka.connection import client_kwargs
from app.settings import Settings

log = logging.getLogger("pso.checkpoints")

#: a record's headers, as aiokafka gives them
Headers = Sequence[tuple[str, bytes]]
#: (offset, key, value, headers) of one record of the input topic
Record = tuple[int, bytes | None, bytes | None, Headers]
#: apply one replayed record of a partition to a live object (its events are dropped)
ReplayFn = Callable[[Any, int, Record], None]
#: write(name, sealed blob, what the local store keeps): the table write, changelog included
WriteFn = Callable[[str, bytes, Any], Awaitable[None]]
#: what a checkpoint seals of a live object, and the input offset from which ``refill`` puts
#: back what it left out (None: nothing left out)
LeanFn = Callable[[Any], tuple[Any, int | None]]

_TOKEN = b"checkpoint@"


class ReplayStalled(PsoError, RuntimeError):
    """The input topic did not deliver the records a rebuild needs in time."""

    exit_code = ExitCode.RUNTIME_FAILURE


class CheckpointLost(PsoError, RuntimeError):
    """The table holds this worker's own token for a key it has no live object for: a
    checkpoint write did not complete. Only a restart (recovery restores the sealed blobs
    from the changelog) rebuilds that state; starting the key afresh would lose it."""

    exit_code = ExitCode.RUNTIME_FAILURE


def app_bootstrap(app: Any) -> str:
    """``host:port,...`` of the brokers a Faust app was configured with."""
    return ",".join(f"{url.host}:{url.port}" for url in app.conf.broker)


class TopicRangeReader:
    """Reads offsets ``[start, end)`` of one partition of a topic, committed records only.

    One consumer (no group: it never commits) is started on first use and reused. The last
    range read per partition is kept, because every key of that partition rebuilds from about
    the same checkpoint offset right after a restart; it is dropped by `forget`.
    """

    def __init__(self, settings: Settings, bootstrap: str, topic: str, timeout_s: float = 60.0):
        self.settings = settings
        self.bootstrap = bootstrap
        self.topic = topic
        self.timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._cache: dict[int, tuple[int, int, list[Record]]] = {}
        self.records_read = 0
        self.gaps = 0  # ranges found (partly) deleted

    async def read(self, partition: int, start: int, end: int) -> list[Record]:
        """Records of ``partition`` with ``start <= offset < end``, in offset order."""
        if end <= start:
            return []
        async with self._lock:
            cached = self._cache.get(partition)
            if cached is None or not cached[0] <= start <= cached[1]:
                cached = (start, start, [])
            lo, hi, records = cached
            if end > hi:
                records = records + await self._fetch(partition, hi, end)
                hi = end
            self._cache[partition] = (lo, hi, records)
        return [r for r in records if start <= r[0] < end]

    def forget(self) -> None:
        self._cache.clear()

    async def stop(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            self._consumer = None

    async def _fetch(self, partition: int, start: int, end: int) -> list[Record]:
        consumer = await self._started()
        tp = TopicPartition(self.topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        out: list[Record] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        # Offsets of transaction markers and aborted records are skipped: the position, not
        # the last record, says when ``end`` is reached.
        while await consumer.position(tp) < end:
            if loop.time() > deadline:
                raise ReplayStalled(
                    f"{self.topic}[{partition}]: offsets {start}..{end} not readable "
                    f"within {self.timeout_s:.0f} s"
                )
            try:
                batch = await consumer.getmany(tp, timeout_ms=200, max_records=10_000)
            except OffsetOutOfRangeError:
                first = (await consumer.beginning_offsets([tp]))[tp]
                log.error(
                    "%s[%d]: offsets %d..%d were deleted (retention) before a rebuild needed "
                    "them: state rebuilt from offset %d on, with a gap",
                    self.topic,
                    partition,
                    start,
                    first,
                    first,
                )
                self.gaps += 1
                consumer.seek(tp, max(first, start))
                continue
            for record in batch.get(tp, []):
                if record.offset < end:
                    out.append((record.offset, record.key, record.value, record.headers or ()))
        self.records_read += len(out)
        return out

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **client_kwargs(self.settings, self.bootstrap),
                enable_auto_commit=False,
                isolation_level="read_committed",
                auto_offset_reset="none",  # a deleted range is reported, not skipped
                max_partition_fetch_bytes=4 * 1024 * 1024,
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer


@dataclass(slots=True)
class _Live:
    obj: Any
    token: Any  # what the table holds for this key while ``obj`` is current
    updates: int  # updates since the last checkpoint
    progress: int  # ``progress(obj)`` at the last checkpoint
    partition: int  # of the input topic
    good_to: int  # the last checkpoint holds the state before this input offset


class CheckpointedStates:
    """name -> live predictor, checkpointed (sealed) into a Faust table every few updates.

    ``progress(obj)`` measures work done (windows learned or judged); a checkpoint is due when
    it has advanced by ``every``, or after ``max_updates`` records in any case (so a resource
    whose windows wait on a silent contributor does not replay an unbounded backlog).
    ``replay(obj, partition, record)`` applies one input record exactly as the agent does,
    minus publishing.
    ``table`` is read (``get``, and ``data`` to swap a restored blob for a token); ``write``
    writes it (`agents.compat.put` on a worker). ``keys[0]`` seals, every key verifies
    (a rotation); a checkpoint's MAC covers ``scope`` (the table: its name carries the state
    version) and the entry's name, so it restores only where it was written.

    ``lean(obj)``: what to seal and the offset from which ``refill(obj, offset, value)``, on a
    rebuild, puts back what was left out, from the input records before the checkpoint.
    ``keyed``: the input's records are keyed by name, and a rebuild replays only the name's own
    records; otherwise every record in the range goes to ``replay``, which picks what is its
    own. ``max_lag``: a checkpoint further than this many input records behind its partition
    is renewed (same state, later offset) when `renew_stale` sweeps, so a rarely heard-of
    name never makes a rebuild read a long stretch of a busy partition.
    """

    def __init__(
        self,
        table: Any,
        write: WriteFn,
        keys: Sequence[bytes],
        make: Callable[[str], Any],
        reader: TopicRangeReader,
        replay: ReplayFn,
        *,
        every: int,
        progress: Callable[[Any], int],
        max_updates: int,
        keep_blobs: bool,
        keyed: bool = True,
        max_lag: int | None = None,
        label: str = "model",
        scope: str,
        lean: LeanFn | None = None,
        refill: ReplayFn | None = None,
    ) -> None:
        if (lean is None) != (refill is None):
            raise ValueError("lean and refill go together")
        self.table = table
        self.write = write
        self.keys = tuple(keys)
        if not self.keys:
            raise ValueError("no snapshot key")
        self.scope = scope
        self.make = make
        self.reader = reader
        self.replay = replay
        self.every = every
        self.progress = progress
        self.max_updates = max_updates
        self.keep_blobs = keep_blobs
        self.keyed = keyed
        self.max_lag = max_lag
        self.label = label  # what the objects are, for the log
        self.lean = lean
        self.refill = refill
        self._live: dict[str, _Live] = {}
        self._next_sweep: dict[int, int] = {}
        self.rebuilt = 0
        self.replayed = 0

    async def get(self, name: str, partition: int, offset: int) -> Any:
        """The live object for ``name``, current up to (not including) input ``offset``."""
        stored = self.table.get(name)
        live = self._live.get(name)
        if live is not None and stored is not None and live.token is stored:
            return live.obj
        if stored is None:  # new: record its birth (fresh before this record), not its bytes
            obj = self.make(name)
            token = await self._checkpoint(name, None, offset)
            # Its first checkpoint comes after 1..every updates, by its name: keys born
            # together (a fleet starting, a worker's first minutes) then seal at different
            # windows instead of all in one burst, which held outputs back and the producer's
            # memory up (2,000 subsystems: ~500 MB of changelog records in one window).
            phase = zlib.crc32(name.encode()) % self.every
            self._live[name] = _Live(obj, token, 0, self.progress(obj) - phase, partition, offset)
            return obj
        self._live[name] = await self._restore(name, stored, partition, offset)
        return self._live[name].obj

    async def updated(self, name: str, obj: Any, offset: int) -> None:
        """``obj`` took the record at ``offset``: checkpoint it if due (call last: see
        `agents.compat`)."""
        live = self._live[name]
        live.updates += 1
        if live.updates < self.max_updates and self.progress(obj) - live.progress < self.every:
            return
        token = await self._checkpoint(name, obj, offset + 1)
        self._live[name] = _Live(obj, token, 0, self.progress(obj), live.partition, offset + 1)

    async def renew_stale(self, partition: int, offset: int) -> int:
        """Re-checkpoint this partition's live objects whose checkpoint lags ``max_lag``
        records behind ``offset``, the input record being processed (call it before the
        record changes any of them: each is then current up to ``offset``). Sweeps once per
        tenth of ``max_lag`` records; returns how many it renewed."""
        if self.max_lag is None or offset < self._next_sweep.get(partition, 0):
            return 0
        self._next_sweep[partition] = offset + max(1, self.max_lag // 10)
        renewed = 0
        for name, live in sorted(self._live.items()):
            if live.partition != partition or offset - live.good_to < self.max_lag:
                continue
            if self.table.get(name) is not live.token:
                continue  # no longer ours (a rebalance): its new owner checkpoints it
            live.token = await self._checkpoint(name, live.obj, offset)
            live.good_to = offset
            renewed += 1
        return renewed

    async def _checkpoint(self, name: str, obj: Any, good_to: int) -> Any:
        """Seal ``obj`` (None: a fresh one) as the state before input offset ``good_to``."""
        sealed, refill_from = obj, None
        if obj is not None and self.lean is not None:
            sealed, refill_from = self.lean(obj)
        state = (
            (good_to, sealed)
            if refill_from is None
            else (good_to, sealed, min(refill_from, good_to))
        )
        blob = seal(state, self.keys[0], context=(self.scope, name))
        token = blob if self.keep_blobs else _token(good_to)
        await self.write(name, blob, token)
        return token

    def live_items(self) -> list[tuple[str, Any]]:
        """Predictors this worker holds in memory (its partitions, recently used)."""
        return [
            (name, live.obj)
            for name, live in sorted(self._live.items())
            if self.table.get(name) is live.token  # still ours: not revoked by a rebalance
        ]

    async def _restore(self, name: str, stored: Any, partition: int, offset: int) -> _Live:
        """Unseal ``name``'s checkpoint and replay its input records up to ``offset``."""
        if isinstance(stored, bytes) and stored.startswith(_TOKEN):
            raise CheckpointLost(
                f"{self.label} {name}: the table holds this worker's checkpoint token "
                f"{stored.decode(errors='replace')} but no live state (a checkpoint write "
                "failed): a restart restores it from the changelog"
            )
        try:
            good_to, obj, *rest = unseal(stored, self.keys, context=(self.scope, name))
        except SnapshotRejected as exc:
            log.error(
                "checkpoint of %s %s in %s refused (%s): starting fresh",
                self.label,
                name,
                self.scope,
                exc,
            )
            obj = self.make(name)
            return _Live(obj, None, self.max_updates, self.progress(obj), partition, offset)
        if obj is None:  # born at ``good_to``: fresh state, then every record since
            obj = self.make(name)
        at_checkpoint = self.progress(obj)
        key = name.encode()
        refill_from = rest[0] if rest and self.refill is not None else good_to
        replayed = refilled = 0
        for record in await self.reader.read(partition, refill_from, offset):
            if record[2] is None or (record[1] != key and self.keyed):
                continue
            if record[0] < good_to:  # before the checkpoint: what it left out only
                assert self.refill is not None
                self.refill(obj, partition, record)
                refilled += 1
            else:
                self.replay(obj, partition, record)
                replayed += 1
        self.rebuilt += 1
        self.replayed += replayed + refilled
        if replayed or refilled:
            log.info(
                "%s of %s: rebuilt from its checkpoint and %d input records (and %d read "
                "again for what the checkpoint left out)",
                self.label,
                name,
                replayed,
                refilled,
            )
        token = stored
        if not self.keep_blobs:  # the unsealed object replaces the blob in memory
            token = self.table.data[name] = _token(good_to)
        return _Live(obj, token, replayed, at_checkpoint, partition, good_to)


def _token(offset: int) -> bytes:
    """What the memory store holds in place of a sealed blob: a fresh object per write (the
    live cache recognises its own write by identity), a few bytes long."""
    return _TOKEN + b"%d" % offset
