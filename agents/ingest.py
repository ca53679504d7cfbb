"""Ingest agent: telemetry bytes -> closed load windows (``pso.load``) and dead letters.

Thin on purpose: decode and window in the pure core (`TelemetryIngest`), publish, then
persist the touched subsystems' window state in a changelog-backed table (one write per
subsystem per message) and, last, the offset of the message. A message at or below that
offset is a replay whose effects are already committed (an exactly-once commit can carry
the state of the message after its offset, see `agents.faust_fixes`): it is skipped, so
no sample is counted twice after a crash. Any exception on a message dead-letters it with
``internal_error``: a message is never acked-and-lost silently, and no bytes can stop the
agent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import faust

from agents.faust_fixes import put
from app.codec import SourceRef, dead_letter
from app.core.ingest import TelemetryIngest
from app.core.windows import WindowedLoad
from app.events import DeadLetter, LoadWindow
from app.settings import Settings

log = logging.getLogger("pso.ingest")


@dataclass(slots=True)
class IngestCounters:
    """Running totals, logged once a minute (Prometheus wiring comes with the ops surface)."""

    messages: int = 0
    samples: int = 0
    accepted: int = 0
    dead: int = 0
    windows: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class TableBackedWindows(MutableMapping[str, WindowedLoad]):
    """Subsystem -> `WindowedLoad`, persisted as JSON-able dicts in a changelog table.

    The table holds plain dicts (no pickle on a changelog topic). Rebuilding a `WindowedLoad`
    from its dict on every message would be wasteful, so the live object is kept as long as
    the table still holds the very dict we last wrote; after recovery or a rebalance it does
    not, and the object is rebuilt from the table.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        self._live: dict[str, tuple[WindowedLoad, dict[str, Any]]] = {}

    def __getitem__(self, subsystem: str) -> WindowedLoad:
        stored = self.table.get(subsystem)
        if stored is None:
            self._live.pop(subsystem, None)
            raise KeyError(subsystem)
        live = self._live.get(subsystem)
        if live is not None and live[1] is stored:
            return live[0]
        obj = WindowedLoad.from_state(subsystem, stored)
        self._live[subsystem] = (obj, stored)
        return obj

    def __setitem__(self, subsystem: str, value: WindowedLoad) -> None:
        # New subsystems: kept live now, persisted by `save` after the message.
        self._live[subsystem] = (value, {})

    def __delitem__(self, subsystem: str) -> None:
        self._live.pop(subsystem, None)
        del self.table[subsystem]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.table.keys()))

    def __len__(self) -> int:
        return len(self.table)

    def get(self, subsystem: str, default: Any = None) -> Any:
        live = self._live.get(subsystem)
        if live is not None and not live[1]:
            return live[0]  # created during this message, not saved yet
        try:
            return self[subsystem]
        except KeyError:
            return default

    async def save(self, subsystem: str) -> None:
        obj = self._live[subsystem][0]
        state = obj.to_state()
        await put(self.table, subsystem, state)
        self._live[subsystem] = (obj, state)


def register_ingest(app: faust.App, settings: Settings) -> IngestCounters:
    """Declare topics, the window-state table and the ingest agent on ``app``."""
    topics = settings.topics
    window = settings.policy().window
    telemetry = app.topic(topics.telemetry, key_serializer="raw", value_serializer="raw")
    load_topic = app.topic(topics.load, key_serializer="raw", value_serializer="raw")
    dlq_topic = app.topic(topics.deadletter, key_serializer="raw", value_serializer="raw")
    # Versioned name: changing the window shape must not restore incompatible state.
    table = app.Table(
        f"load-windows-v1-{window.size_s}s",
        default=None,
        partitions=settings.topic_policy.partitions,
        key_type=str,  # keys and values use Faust's plain "json" codec: no pickle
    )
    # Source partition -> offset of the last message whose effects are all written.
    progress = app.Table(
        "ingest-progress-v1",
        default=None,
        partitions=settings.topic_policy.partitions,
        key_type=str,
    )
    windows = TableBackedWindows(table)
    ingest = TelemetryIngest(window, windows)
    counters = IngestCounters()

    async def publish_window(w: LoadWindow) -> None:
        await load_topic.send(
            key=w.subsystem.encode(), value=w.to_json(), timestamp=w.window_end_ms / 1000
        )

    async def publish_dead(d: DeadLetter, key: bytes | None) -> None:
        counters.dead += 1
        counters.by_reason[d.reason_code] = counters.by_reason.get(d.reason_code, 0) + 1
        await dlq_topic.send(key=key, value=d.to_json())

    @app.agent(telemetry, name=f"{settings.app_id}-ingest")
    async def ingest_agent(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            source = SourceRef(message.topic, message.partition, message.offset, message.key)
            value = event.value
            done = progress.get(str(message.partition))
            if done is not None and message.offset <= done:
                continue  # a replay: its windows, dead letters and state are committed
            counters.messages += 1
            try:
                result = ingest.process(value, source)
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
                await put(progress, str(message.partition), message.offset)
                continue
            counters.samples += result.items
            counters.accepted += result.accepted
            for w in result.windows:
                counters.windows += 1
                await publish_window(w)
            for d in result.dead:
                await publish_dead(d, message.key)
            for name in sorted(result.touched):
                await windows.save(name)
            await put(progress, str(message.partition), message.offset)

    @app.timer(60.0)
    async def log_health() -> None:
        log.info(
            "ingest: messages=%d samples=%d accepted=%d dead=%d windows=%d reasons=%s",
            counters.messages,
            counters.samples,
            counters.accepted,
            counters.dead,
            counters.windows,
            counters.by_reason,
        )

    return counters
