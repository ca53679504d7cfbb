"""Producer client for subsystems written in Python.

Validates every sample against the telemetry contract before it leaves the process, batches
samples per subsystem into one message (a JSON array: the batch envelope), keys each message
by subsystem and stamps it with the newest sample's event time. Async and sync flavours::

    from app.kafka.client import SyncTelemetryProducer

    with SyncTelemetryProducer(bootstrap="127.0.0.1:9092") as pso:
        pso.send({"subsystem": "billing-api", "ts": "2026-11-25T06:00:00Z",
                  "metrics": {"cpu": 0.72}, "resources": {"db-main": 38}})
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson
from pydantic import ValidationError

from app.errors import ExitCode, PsoError
from app.kafka.connection import start_producer
from app.settings import Settings, load_settings
from app.wire.codec import describe_validation_error
from app.wire.events import TelemetrySample
from app.wire.lines import bounded_lines


class InvalidSample(PsoError, ValueError):
    """The sample does not match the telemetry contract; the message says which field."""

    exit_code = ExitCode.USER_ERROR


def validate_sample(sample: dict[str, Any] | TelemetrySample) -> TelemetrySample:
    if isinstance(sample, TelemetrySample):
        return sample
    try:
        return TelemetrySample.model_validate(sample)
    except ValidationError as exc:
        raise InvalidSample(describe_validation_error(exc)) from None


# A line of `pso produce`'s file may be a batch of many samples (they are validated and sent
# again in batches of ``--batch``), so it may be longer than one message; this bounds memory.
MAX_LINE_BYTES = 64 * 1024 * 1024


def iter_jsonl_samples(
    path: Path, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, TelemetrySample | None, str | None]]:
    """(line number, sample, error) for each sample of a JSONL file; batches are unrolled."""
    with path.open("rb") as fh:
        for lineno, line in enumerate(bounded_lines(fh, max_line_bytes), start=1):
            if line is None:
                yield lineno, None, f"line longer than {max_line_bytes} bytes"
                continue
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield lineno, None, f"not JSON ({exc})"
                continue
            for item in doc if isinstance(doc, list) else [doc]:
                if not isinstance(item, dict):
                    yield lineno, None, f"sample must be an object, got {type(item).__name__}"
                    continue
                try:
                    yield lineno, validate_sample(item), None
                except InvalidSample as exc:
                    yield lineno, None, str(exc)


class TelemetryProducer:
    """Async producer of validated, batched, subsystem-keyed telemetry.

    Parameters
    ----------
    settings
        PSO settings (security options pass through).
    bootstrap
        ``host:port`` of the cluster.
    topic
        Target topic (default: the telemetry topic of ``settings``).
    batch_size
        Samples per message; a subsystem's buffer is sent when it is full and on `flush`.
    """

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        topic: str | None = None,
        batch_size: int = 100,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.topic = topic or settings.topics.telemetry
        self.batch_size = batch_size
        self.sent = 0
        self.messages = 0
        self._buffers: dict[str, list[TelemetrySample]] = {}
        self._producer: Any = None

    async def start(self) -> None:
        self._producer = await start_producer(self.settings, self.bootstrap)

    async def send(self, sample: dict[str, Any] | TelemetrySample) -> None:
        """Validate and buffer one sample (raises `InvalidSample` if it is not valid)."""
        valid = validate_sample(sample)
        buffer = self._buffers.setdefault(valid.subsystem, [])
        buffer.append(valid)
        if len(buffer) >= self.batch_size:
            await self._send_batch(valid.subsystem)

    async def _send_batch(self, subsystem: str) -> None:
        batch = self._buffers.pop(subsystem, [])
        if not batch:
            return
        docs = [s.model_dump(mode="json", exclude_defaults=True) for s in batch]
        value = orjson.dumps(docs if len(docs) > 1 else docs[0])
        await self._producer.send(
            self.topic,
            value=value,
            key=subsystem.encode(),
            timestamp_ms=max(s.ts for s in batch),
        )
        self.sent += len(batch)
        self.messages += 1

    async def flush(self) -> None:
        """Send every partial batch and wait until the broker has them."""
        for subsystem in sorted(self._buffers):
            await self._send_batch(subsystem)
        if self._producer is not None:
            await self._producer.flush()

    async def stop(self) -> None:
        try:
            await self.flush()
        finally:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class SyncTelemetryProducer:
    """Blocking wrapper of `TelemetryProducer` for code that is not asyncio (runs a loop thread)."""

    def __init__(
        self,
        bootstrap: str | None = None,
        topic: str | None = None,
        batch_size: int = 100,
        settings: Settings | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        address = bootstrap or self.settings.broker
        if not address:
            raise ValueError("give bootstrap= or set PSO_BROKER")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._async = TelemetryProducer(self.settings, address, topic, batch_size)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def start(self) -> None:
        self._run(self._async.start())

    def send(self, sample: dict[str, Any] | TelemetrySample) -> None:
        self._run(self._async.send(sample))

    def flush(self) -> None:
        self._run(self._async.flush())

    def close(self) -> None:
        try:
            self._run(self._async.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
