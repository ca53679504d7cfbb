"""Ingest agent: telemetry bytes -> closed load windows (``pso.load``) and dead letters.

Thin on purpose: decode and window in the pure core (`TelemetryIngest`), publish. No table
write per message: each subsystem's open windows are sealed into a changelog-backed table
only every ``PSO_CHECKPOINT_EVERY`` closed windows, with the telemetry offset they are good
up to (`agents.checkpoints`, as the predictors are). A worker that finds a checkpoint it has
no live state for (after a restart or a rebalance) unseals it and replays the subsystem's
samples from the telemetry topic itself, through the same code. Writing the state with every
message cost more than windowing it (two changelog records per message: the live bench's
ingest ran at about half the rate).

A subsystem's windows live on its home partition (`agents.routing`): samples read on another
partition — a producer that keys differently, or not at all, or a batch that mixes subsystems —
are forwarded home as a copy, in the transaction of the message they came in, and windowed
there. So each subsystem's state has one ordered input, its home partition, and knows the
offset of the next message of it that it has not taken (``next_offset``), and per origin
partition the next copy (``copies_from``). A message below them is a replay whose effects are
already committed (an exactly-once commit can carry the state of the message after its offset,
see `agents.compat`; at-least-once redelivers): that subsystem's samples in it are
skipped, so no sample is counted twice after a crash. Any exception on a message dead-letters
it with ``internal_error``, and a dead letter too large to send goes without the original's
bytes (their length and SHA-256 stay): a message is never acked-and-lost silently, and no bytes
can stop the agent.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson

from agents.checkpoints import (
    CheckpointedStates,
    CheckpointLost,
    Headers,
    Record,
    ReplayStalled,
    TopicRangeReader,
    WriteFn,
    app_bootstrap,
)
from agents.compat import put, stop_worker
from agents.routing import FOREIGN, HomeRouter, Origin
from app.core.events import DeadLetter, LoadWindow
from app.core.ingest import IngestResult
from app.core.windows import WindowedLoad
from app.kafka.topics import RECORD_MARGIN, size_limits, topic_max_message_bytes
from app.settings import Settings, WindowConfig
from app.wire.codec import MAX_MESSAGE_BYTES, SourceRef, dead_letter, without_original
from app.wire.records import encode
from app.wire.telemetry import TelemetryIngest

log = logging.getLogger("pso.ingest")

#: A dead letter's Kafka key is the original's, or its SHA-256 when longer than this.
MAX_KEY_BYTES = 1024

#: A subsystem's checkpoint is renewed once it lags this many telemetry records behind its
#: partition: a restart never replays more than about this many records per partition.
REPLAY_BOUND = 20_000


@dataclass(slots=True)
class IngestCounters:
    """Running totals, logged once a minute (Prometheus wiring comes with the ops surface)."""

    messages: int = 0
    samples: int = 0
    accepted: int = 0
    held: int = 0
    forwarded: int = 0
    copies: int = 0
    dead: int = 0
    dead_trimmed: int = 0  # dead letters sent without the original bytes (too large)
    windows: int = 0
    foreign_copies: int = 0  # another deployment's copies, left to it
    by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class SubsystemWindows:
    """One subsystem's open windows on its home partition, and how far into it they are."""

    windows: WindowedLoad
    next_offset: int = 0  # first telemetry offset of its home partition not taken yet
    closed: int = 0  # windows closed so far: what checkpoints are counted in
    #: origin partition -> (offset, chunk) of the first copy from it not taken yet
    copies_from: dict[int, tuple[int, int]] = field(default_factory=dict)

    def holds(self, offset: int, origin: Origin | None) -> bool:
        """Whether this state took the message at ``offset`` (or the copy ``origin``) already."""
        if offset < self.next_offset:
            return True
        if origin is None:
            return False
        taken = self.copies_from.get(origin.partition, (0, 0))
        return (origin.offset, origin.chunk) < taken

    def took(self, offset: int, origin: Origin | None) -> None:
        self.next_offset = offset + 1
        if origin is not None:
            self.copies_from[origin.partition] = (origin.offset, origin.chunk + 1)


class CheckpointedWindows:
    """Telemetry -> windows for the subsystems homed on a worker's partitions, their state
    checkpointed in a table and rebuilt from the telemetry topic: the agent minus Faust.

    `take` a message, publish what it returns (its windows, dead letters and the copies its
    ``forward`` samples need: `agents.routing.HomeRouter.copies`), then `checkpoint` (state
    last: see `agents.compat`). Without a ``router`` every subsystem is at home (one
    partition).
    """

    def __init__(
        self,
        window: WindowConfig,
        table: Any,
        write: WriteFn,
        keys: Sequence[bytes],
        reader: TopicRangeReader,
        *,
        scope: str,
        every: int,
        keep_blobs: bool,
        max_lag: int = REPLAY_BOUND,
        router: HomeRouter | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_dead_letter_bytes: int | None = None,
    ) -> None:
        self.window = window
        self.router = router
        # A message's subsystems, while applied.
        self.ingest = TelemetryIngest(
            window,
            {},
            max_message_bytes=max_message_bytes,
            max_dead_letter_bytes=max_dead_letter_bytes,
        )
        self.states = CheckpointedStates(
            table,
            write,
            keys,
            self._make,
            reader,
            self._replay,
            every=every,
            progress=lambda state: state.closed,
            max_updates=100 * every,
            keep_blobs=keep_blobs,
            keyed=False,  # a batch may carry other subsystems than its key: read them all
            max_lag=max_lag,
            label="windows",
            scope=scope,
        )
        self._taken: dict[str, SubsystemWindows] = {}

    def _make(self, name: str) -> SubsystemWindows:
        return SubsystemWindows(self.ingest.new_windows(name))

    def origin_of(self, headers: Headers | None, value: bytes) -> Origin | str | None:
        """Whether a telemetry record is a copy of ours (`Origin`), another deployment's
        (`agents.routing.FOREIGN`: leave it alone) or an ordinary message (None)."""
        return None if self.router is None else self.router.origin_of(headers, value)

    async def take(
        self, value: bytes | None, source: SourceRef, origin: Origin | None = None
    ) -> IngestResult | None:
        """Window one message (partition and offset in ``source``; ``origin``: it is a copy
        of ours); None if every subsystem in it already holds it and nothing is to be
        forwarded. Raises `ReplayStalled` if a rebuild cannot read telemetry."""
        partition, offset = source.partition or 0, source.offset or 0
        await self.states.renew_stale(partition, offset)
        ingest = self.ingest
        result = IngestResult()
        parsed = ingest.parse(value, source, result)
        names = sorted(parsed.subsystems())
        router = self.router
        away: set[str] = set()
        if router is not None and origin is None:  # a copy is home already
            away = {name for name in names if router.home(name) != partition}
        mine: dict[str, SubsystemWindows] = {}
        try:
            for name in names:
                if name in away:
                    continue
                state: SubsystemWindows = await self.states.get(name, partition, offset)
                if not state.holds(offset, origin):
                    mine[name] = state
                    ingest.windows[name] = state.windows
            if names and not mine and not away:
                self._taken = {}
                return None  # and so does the committed output: nothing to publish again
            ingest.apply(
                parsed,
                result,
                skip=lambda name: name not in mine,
                forward=away.__contains__ if away else None,
            )
        finally:
            ingest.windows.clear()
        for w in result.windows:
            mine[w.subsystem].closed += 1
        for state in mine.values():
            state.took(offset, origin)
        self._taken = mine
        return result

    async def checkpoint(self, offset: int) -> None:
        """After the outputs of the message `take` took at ``offset``: checkpoint if due."""
        taken, self._taken = self._taken, {}
        for name, state in taken.items():
            await self.states.updated(name, state, offset)

    def _replay(self, state: SubsystemWindows, partition: int, record: Record) -> None:
        """One telemetry record into ``state`` (its windows are not published again): only
        the samples of ``state``'s subsystem count, exactly as `take` took them."""
        offset, key, value, headers = record
        if value is None or offset < state.next_offset:
            return
        origin = self.origin_of(headers, value)
        if origin == FOREIGN:
            return
        copy = origin if isinstance(origin, Origin) else None
        if state.holds(offset, copy):
            return
        name = state.windows.subsystem
        # A record that cannot hold the name (no JSON escape in it either) has nothing of ours.
        if b"\\" not in value and orjson.dumps(name) not in value:
            state.next_offset = offset + 1
            return
        state.took(offset, copy)
        ingest, scratch = self.ingest, IngestResult()
        ingest.windows[name] = state.windows
        where = f"{self.router.topic}:{copy}" if copy is not None and self.router else None
        source = SourceRef(self.states.reader.topic, partition, offset, key, where)
        try:
            ingest.apply(ingest.parse(value, source, scratch), scratch, name.__ne__)
        except Exception as exc:
            # The agent dead-lettered this record when the core failed on it live; a rebuild
            # passes over it the same way rather than failing every later message.
            log.warning("replay: telemetry record %d passed over for %s (%s)", offset, name, exc)
            return  # nor counted, as the agent did not count it
        finally:
            del ingest.windows[name]
        state.closed += len(scratch.windows)


def register_ingest(app: faust.App, settings: Settings) -> IngestCounters:
    """Declare topics, the checkpoint table and the ingest agent on ``app``."""
    topics = settings.topics
    window = settings.policy().window
    limits = size_limits(settings)
    telemetry = app.topic(
        topics.telemetry,
        key_serializer="raw",
        value_serializer="raw",
        config={"max.message.bytes": str(limits["telemetry"])},
    )
    load_topic = app.topic(topics.load, key_serializer="raw", value_serializer="raw")
    dlq_topic = app.topic(
        topics.deadletter,
        key_serializer="raw",
        value_serializer="raw",
        config={"max.message.bytes": str(limits["deadletter"])},
    )
    # Versioned name: changing the window shape must not restore incompatible state.
    table = app.Table(
        f"ingest-windows-v3-{window.size_s}s",
        default=None,
        partitions=settings.topic_policy.partitions,
        key_type=str,
        value_type=bytes,
    )
    counters = IngestCounters()

    async def write(name: str, blob: bytes, keep: Any) -> None:
        await put(table, name, blob, keep=keep)

    def partitions() -> int:
        """The telemetry topic's partitions, as the consumer knows them (else the policy's)."""
        known = app.consumer.topic_partitions(topics.telemetry)
        return int(known) if known else settings.topic_policy.partitions

    keys = settings.snapshot_keys()
    router = HomeRouter(settings.app_id, topics.telemetry, keys, partitions)
    reader = TopicRangeReader(settings, app_bootstrap(app), topics.telemetry)
    windows = CheckpointedWindows(
        window,
        table,
        write,
        keys,
        reader,
        scope=f"{settings.app_id}/{table.name}",
        every=settings.checkpoint_every,
        keep_blobs=not settings.store.startswith("memory"),
        router=router,
        max_message_bytes=settings.max_message_bytes,
        max_dead_letter_bytes=limits["deadletter"] - RECORD_MARGIN,
    )
    states = windows.states
    setattr(app, "pso_ingest_states", states)  # noqa: B010  # rebuild counters, for ops

    async def publish_window(w: LoadWindow) -> None:
        await load_topic.send(
            key=w.subsystem.encode(), value=encode(w), timestamp=w.window_end_ms / 1000
        )

    async def publish_dead(d: DeadLetter, key: bytes | None) -> None:
        """Send a dead letter; one the producer refuses (too large for it) goes again without
        the original bytes, and one that still fails is logged with what identifies it: the
        agent carries on either way."""
        counters.dead += 1
        counters.by_reason[d.reason_code] = counters.by_reason.get(d.reason_code, 0) + 1
        if key is not None and len(key) > MAX_KEY_BYTES:
            key = hashlib.sha256(key).hexdigest().encode()
        try:
            await dlq_topic.send(key=key, value=encode(d))
            return
        except Exception as exc:
            if d.original_b64 is None:
                log.error("dead letter %s not sent (%s): %s", d.event_id, exc, d.original_sha256)
                return
            log.warning("dead letter %s refused (%s): sent without the original", d.event_id, exc)
        counters.dead_trimmed += 1
        try:
            await dlq_topic.send(key=key, value=encode(without_original(d)))
        except Exception as exc:
            log.error("dead letter %s not sent (%s): %s", d.event_id, exc, d.original_sha256)

    async def publish(message: Any, source: SourceRef, result: IngestResult) -> None:
        """What one message produced: its windows, its dead letters, the copies that take
        samples of other partitions home; then its subsystems' checkpoints, if due."""
        counters.samples += result.items
        counters.accepted += result.accepted
        counters.held += result.held
        for w in result.windows:
            counters.windows += 1
            await publish_window(w)
        for d in result.dead:
            await publish_dead(d, source.key)
        if result.forward:
            counters.forwarded += len(result.forward)
            partition, offset = source.partition or 0, source.offset or 0
            cap = settings.max_message_bytes
            for home, key, copy, headers in router.copies(partition, offset, result.forward, cap):
                counters.copies += 1
                await telemetry.send(
                    key=key,
                    value=copy,
                    partition=home,
                    headers=headers,
                    timestamp=message.timestamp,
                )
        await windows.checkpoint(source.offset or 0)

    async def fit_dead_letters() -> None:
        """Size dead letters to the dead-letter topic as the brokers enforce it (a topic made
        by someone else may allow less than PSO asks for): one that would not fit is sent
        without the original's bytes rather than refused, which would abort the transaction
        it is in, again at every retry."""
        allowed = await topic_max_message_bytes(settings, app_bootstrap(app), topics.deadletter)
        if allowed is not None and allowed - RECORD_MARGIN < limits["deadletter"] - RECORD_MARGIN:
            log.warning(
                "%s allows %d bytes a record (PSO asks for %d): larger dead letters go "
                "without the original bytes",
                topics.deadletter,
                allowed,
                limits["deadletter"],
            )
            windows.ingest.max_dead_letter_bytes = max(4096, allowed - RECORD_MARGIN)

    @app.agent(telemetry, name=f"{settings.app_id}-ingest")
    async def ingest_agent(stream: Any) -> None:
        await fit_dead_letters()
        async for event in stream.events():
            message = event.message
            value = event.value
            counters.messages += 1
            raw = value if isinstance(value, bytes) else b""
            found = windows.origin_of(message.headers, raw)
            if found == FOREIGN:
                counters.foreign_copies += 1  # another deployment's copy: its business
                continue
            origin = found if isinstance(found, Origin) else None
            where = None if origin is None else f"{message.topic}:{origin}"
            source = SourceRef(message.topic, message.partition, message.offset, message.key, where)
            try:
                result = await windows.take(value, source, origin)
            except (ReplayStalled, CheckpointLost) as exc:  # state cannot be had: stop, and a
                await failed(message, exc)  # restart retries from the committed offsets
                raise
            except Exception as exc:  # the core failed on these bytes: dead-letter them
                log.exception(
                    "ingest failed on %s:%s:%s", source.topic, source.partition, source.offset
                )
                await publish_dead(
                    dead_letter(
                        source,
                        raw,
                        "internal_error",
                        f"{type(exc).__name__}: {exc}"[:500],
                        max_bytes=windows.ingest.max_dead_letter_bytes,
                    ),
                    message.key,
                )
                continue
            if result is None:
                continue
            try:
                await publish(message, source, result)
            except Exception as exc:  # a send or a checkpoint failed half-way through
                await failed(message, exc)
                raise

    async def failed(message: Any, exc: BaseException) -> None:
        """The message is half done (state moved on, part of its outputs sent): stop the
        worker without committing anything more (`agents.compat.stop_worker`)."""
        log.critical(
            "ingest failed on %s[%s]@%s: %s: %s; stopping the worker, nothing more committed "
            "(a restart redoes the message from the committed offsets)",
            message.topic,
            message.partition,
            message.offset,
            type(exc).__name__,
            exc,
        )
        await stop_worker(app, exc)

    @app.timer(120.0)
    async def forget_replayed_ranges() -> None:
        """Rebuilds happen right after a restart or rebalance: drop their read-ahead."""
        reader.forget()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode types it positional-only
    async def stop_reader(sender: Any, **kwargs: Any) -> None:
        await reader.stop()

    @app.timer(60.0)
    async def log_health() -> None:
        log.info(
            "ingest: messages=%d samples=%d accepted=%d held=%d forwarded=%d dead=%d "
            "windows=%d reasons=%s rebuilt=%d replayed=%d",
            counters.messages,
            counters.samples,
            counters.accepted,
            counters.held,
            counters.forwarded,
            counters.dead,
            counters.windows,
            counters.by_reason,
            states.rebuilt,
            states.replayed,
        )

    return counters
