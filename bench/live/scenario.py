"""The scenario the live bench runs, and the telemetry topic it fills.

Owns what every phase reads: the fleet's messages as `TelemetryProducer` builds them (validated,
batched, keyed; its bytes captured instead of sent, `CapturingProducer`), the ids the pure core
emits on the same bytes and which message caused each (`Offline`, `Expected`), the deployment
each run gets (its own app id and topics), and the two ways the bytes reach the broker: all at
once before anything is timed (`produce`) or on the simulator's clock for the paced phase
(`send_paced`). ``bench/live_throughput.py``'s docstring defines the scenario.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from app.dev.simulator import SERIES_PER_SUBSYSTEM, five_series
from app.kafka.client import TelemetryProducer
from app.settings import FleetPolicy, Settings, load_settings

SERIES = SERIES_PER_SUBSYSTEM


@dataclass(slots=True)
class Message:
    """One telemetry message as `TelemetryProducer` builds it."""

    key: bytes
    value: bytes
    ts_ms: int
    samples: int


class _Capture:
    """Stands in for the aiokafka producer inside `TelemetryProducer`: keeps what it sends."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, timestamp_ms: int | None = None
    ) -> None:
        count = len(orjson.loads(value)) if value[:1] == b"[" else 1
        self.sent.append(Message(key or b"", value, int(timestamp_ms or 0), count))

    async def flush(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class CapturingProducer(TelemetryProducer):
    """The client's validation, batching and keying, with the bytes kept instead of sent."""

    async def start(self) -> None:
        self._producer = _Capture()

    @property
    def captured(self) -> list[Message]:
        capture = self._producer
        assert isinstance(capture, _Capture)
        return capture.sent


async def build_messages(
    settings: Settings, samples: Iterable[dict[str, Any]], batch: int, split_ms: int | None = None
) -> tuple[list[Message], list[Message]]:
    """Messages before and after event time ``split_ms`` (partial batches flushed at the split)."""
    producer = CapturingProducer(settings, "capture", batch_size=batch)
    await producer.start()
    boundary: int | None = None
    for sample in samples:
        if split_ms is not None and boundary is None and sample["ts"] >= split_ms:
            await producer.flush()
            boundary = len(producer.captured)
        await producer.send(five_series(sample))
    await producer.flush()
    sent = producer.captured
    if boundary is None:
        return sent, []
    return sent[:boundary], sent[boundary:]


@dataclass(slots=True)
class Expected:
    """Ids the worker must publish, by topic, from the pure core on the same bytes."""

    windows: set[str] = field(default_factory=set)
    events: dict[str, set[str]] = field(default_factory=dict)
    by_type: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    #: window or event id -> index (in the messages run) of the message that caused it: the
    #: first after which the core emits it
    cause: dict[str, int] = field(default_factory=dict)

    def all_events(self) -> set[str]:
        return set().union(*self.events.values()) if self.events else set()


class Offline:
    """The pure core on the captured messages: expected ids (live == offline is tested)."""

    def __init__(self, policy: FleetPolicy, settings: Settings, predict: bool = True) -> None:
        from app.core.engine import PredictionEngine
        from app.wire.telemetry import TelemetryIngest

        self.settings = settings
        self.ingest = TelemetryIngest(policy.window)
        self.engine = PredictionEngine(policy.spec()) if predict else None
        self.offset = 0

    def run(self, messages: list[Message]) -> Expected:
        from agents.outputs import topic_for
        from app.wire.codec import SourceRef

        out = Expected()
        started = time.perf_counter()
        for index, message in enumerate(messages):
            source = SourceRef("offline", 0, self.offset, message.key)
            self.offset += 1
            result = self.ingest.process(message.value, source)
            if result.dead:
                raise RuntimeError(f"the scenario produced dead letters: {result.dead[0].reason}")
            for window in result.windows:
                out.windows.add(window.event_id)
                out.cause.setdefault(window.event_id, index)
                if self.engine is None:
                    continue
                for event in self.engine.process(window):
                    topic, _key = topic_for(event, self.settings)
                    out.events.setdefault(topic, set()).add(event.event_id)
                    out.cause.setdefault(event.event_id, index)
                    kind = type(event).__name__
                    out.by_type[kind] = out.by_type.get(kind, 0) + 1
        out.seconds = time.perf_counter() - started
        return out


def deployment(bootstrap: str, name: str, partitions: int, config: Path) -> Settings:
    return load_settings(
        broker=bootstrap,
        app_id=name,
        topics={"prefix": name},
        topic_policy={"partitions": partitions},
        config=config,
    )


async def produce(settings: Settings, bootstrap: str, topic: str, messages: list[Message]) -> None:
    from app.kafka.connection import start_producer

    producer = await start_producer(settings, bootstrap)
    try:
        for m in messages:
            await producer.send(topic, m.value, key=m.key, timestamp_ms=m.ts_ms)
        await producer.flush()
    finally:
        await producer.stop()


@dataclass(slots=True)
class Paced:
    """What `send_paced` did: when each message was handed to the producer."""

    produced: list[float]  # time.time() just before each message's send, in order
    seconds: float = 0.0  # first send -> last send acknowledged (flush)
    behind_max_s: float = 0.0  # how late the latest send was against its schedule


async def send_paced(
    settings: Settings, bootstrap: str, topic: str, messages: list[Message], speed: float
) -> Paced:
    """Send each message when the wall clock reaches its event time, at ``speed`` event
    seconds per wall second (from the first message's event time)."""
    from app.kafka.connection import start_producer

    out = Paced([])
    if not messages:
        return out
    producer = await start_producer(settings, bootstrap)
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.2
        first_ts = messages[0].ts_ms
        started = time.time()
        for msg in messages:
            due = t0 + (msg.ts_ms - first_ts) / 1000 / speed
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            out.behind_max_s = max(out.behind_max_s, loop.time() - due)
            out.produced.append(time.time())
            await producer.send(topic, msg.value, key=msg.key, timestamp_ms=msg.ts_ms)
        await producer.flush()
        out.seconds = time.time() - started
    finally:
        await producer.stop()
    return out
