"""Ingest agent: telemetry bytes -> closed load windows (``pso.load``) and dead letters.

Thin on purpose: decode and window in the pure core (`TelemetryIngest`), publish. No table
write per message: each subsystem's open windows are sealed into a changelog-backed table
only every ``PSO_CHECKPOINT_EVERY`` closed windows, with the telemetry offset they are good
up to (`agents.checkpoints`, as the predictors are). A worker that finds a checkpoint it has
no live state for (after a restart or a rebalance) unseals it and replays the subsystem's
samples from the telemetry topic itself, through the same code. Writing the state with every
message cost more than windowing it (two changelog records per message: the live bench's
ingest ran at about half the rate).

Each subsystem's state knows the offset of the next message it has not taken
(``next_offset``). A message below it is a replay whose effects are already committed (an
exactly-once commit can carry the state of the message after its offset, see
`agents.faust_fixes`): that subsystem's samples in it are skipped, so no sample is counted
twice after a crash. Any exception on a message dead-letters it with ``internal_error``: a
message is never acked-and-lost silently, and no bytes can stop the agent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson

from agents.checkpoints import (
    CheckpointedStates,
    ReplayStalled,
    TopicRangeReader,
    WriteFn,
    app_bootstrap,
)
from agents.faust_fixes import put
from app.codec import SourceRef, dead_letter
from app.core.ingest import IngestResult, TelemetryIngest
from app.core.windows import WindowedLoad
from app.events import DeadLetter, LoadWindow
from app.settings import Settings, WindowConfig

log = logging.getLogger("pso.ingest")

#: A subsystem's checkpoint is renewed once it lags this many telemetry records behind its
#: partition: a restart never replays more than about this many records per partition.
REPLAY_BOUND = 20_000


@dataclass(slots=True)
class IngestCounters:
    """Running totals, logged once a minute (Prometheus wiring comes with the ops surface)."""

    messages: int = 0
    samples: int = 0
    accepted: int = 0
    dead: int = 0
    windows: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class SubsystemWindows:
    """One subsystem's open windows on a worker, and how far into its partition they are."""

    windows: WindowedLoad
    next_offset: int = 0  # first telemetry offset of its partition not taken yet
    closed: int = 0  # windows closed so far: what checkpoints are counted in


class CheckpointedWindows:
    """Telemetry -> windows for the subsystems of a worker's partitions, their state
    checkpointed in a table and rebuilt from the telemetry topic: the agent minus Faust.

    `take` a message, publish what it returns, then `checkpoint` (state last: see
    `agents.faust_fixes`).
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
    ) -> None:
        self.window = window
        self.ingest = TelemetryIngest(window, {})  # a message's subsystems, while applied
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
        return SubsystemWindows(WindowedLoad(name, self.window.size_ms, self.window.lateness_ms))

    async def take(self, value: bytes | None, source: SourceRef) -> IngestResult | None:
        """Window one message (partition and offset in ``source``); None if every subsystem in
        it already holds it. Raises `ReplayStalled` if a rebuild cannot read telemetry."""
        partition, offset = source.partition or 0, source.offset or 0
        await self.states.renew_stale(partition, offset)
        ingest = self.ingest
        result = IngestResult()
        parsed = ingest.parse(value, source, result)
        names = sorted(parsed.subsystems())
        mine: dict[str, SubsystemWindows] = {}
        try:
            for name in names:
                state: SubsystemWindows = await self.states.get(name, partition, offset)
                if state.next_offset <= offset:  # else: it already holds this message
                    mine[name] = state
                    ingest.windows[name] = state.windows
            if names and not mine:
                self._taken = {}
                return None  # and so does the committed output: nothing to publish again
            ingest.apply(parsed, result, skip=lambda name: name not in mine)
        finally:
            ingest.windows.clear()
        for w in result.windows:
            mine[w.subsystem].closed += 1
        for state in mine.values():
            state.next_offset = offset + 1
        self._taken = mine
        return result

    async def checkpoint(self, offset: int) -> None:
        """After the outputs of the message `take` took at ``offset``: checkpoint if due."""
        taken, self._taken = self._taken, {}
        for name, state in taken.items():
            await self.states.updated(name, state, offset)

    def _replay(self, state: SubsystemWindows, offset: int, value: bytes) -> None:
        """One telemetry record into ``state`` (its windows are not published again): only
        the samples of ``state``'s subsystem count, exactly as `take` took them."""
        if offset < state.next_offset:
            return
        state.next_offset = offset + 1
        name = state.windows.subsystem
        # A record that cannot hold the name (no JSON escape in it either) has nothing of ours.
        if b"\\" not in value and orjson.dumps(name) not in value:
            return
        ingest, scratch = self.ingest, IngestResult()
        ingest.windows[name] = state.windows
        try:
            ingest.apply(ingest.parse(value, SourceRef("replay"), scratch), scratch, name.__ne__)
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
    telemetry = app.topic(topics.telemetry, key_serializer="raw", value_serializer="raw")
    load_topic = app.topic(topics.load, key_serializer="raw", value_serializer="raw")
    dlq_topic = app.topic(topics.deadletter, key_serializer="raw", value_serializer="raw")
    # Versioned name: changing the window shape must not restore incompatible state.
    table = app.Table(
        f"ingest-windows-v2-{window.size_s}s",
        default=None,
        partitions=settings.topic_policy.partitions,
        key_type=str,
        value_type=bytes,
    )
    counters = IngestCounters()

    async def write(name: str, blob: bytes, keep: Any) -> None:
        await put(table, name, blob, keep=keep)

    reader = TopicRangeReader(settings, app_bootstrap(app), topics.telemetry)
    windows = CheckpointedWindows(
        window,
        table,
        write,
        settings.snapshot_keys(),
        reader,
        scope=f"{settings.app_id}/{table.name}",
        every=settings.checkpoint_every,
        keep_blobs=not settings.store.startswith("memory"),
    )
    states = windows.states
    setattr(app, "pso_ingest_states", states)  # noqa: B010  # rebuild counters, for ops

    async def publish_window(w: LoadWindow) -> None:
        await load_topic.send(
            key=w.subsystem.encode(), value=w.to_json(), timestamp=w.window_end_ms / 1000
        )

    async def publish_dead(d: DeadLetter, key: bytes | None) -> None:
        counters.dead += 1
        counters.by_reason[d.reason_code] = counters.by_reason.get(d.reason_code, 0) + 1
        await dlq_topic.send(key=key, value=d.to_json())

    async def take(value: bytes | None, source: SourceRef) -> None:
        """One message: window it, publish what it closed and rejected, checkpoint if due."""
        result = await windows.take(value, source)
        if result is None:
            return
        counters.samples += result.items
        counters.accepted += result.accepted
        for w in result.windows:
            counters.windows += 1
            await publish_window(w)
        for d in result.dead:
            await publish_dead(d, source.key)
        await windows.checkpoint(source.offset or 0)

    @app.agent(telemetry, name=f"{settings.app_id}-ingest")
    async def ingest_agent(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            source = SourceRef(message.topic, message.partition, message.offset, message.key)
            value = event.value
            counters.messages += 1
            try:
                await take(value, source)
            except ReplayStalled as exc:  # the worker stops (a restart retries from the
                log.critical("%s", exc)  # committed offsets) rather than ack the record
                await app.crash(exc)
                raise
            except Exception as exc:
                log.exception(
                    "ingest failed on %s:%s:%s", source.topic, source.partition, source.offset
                )
                raw = value if isinstance(value, bytes) else b""
                await publish_dead(
                    dead_letter(
                        source, raw, "internal_error", f"{type(exc).__name__}: {exc}"[:500]
                    ),
                    message.key,
                )

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
            "ingest: messages=%d samples=%d accepted=%d dead=%d windows=%d reasons=%s "
            "rebuilt=%d replayed=%d",
            counters.messages,
            counters.samples,
            counters.accepted,
            counters.dead,
            counters.windows,
            counters.by_reason,
            states.rebuilt,
            states.replayed,
        )

    return counters
