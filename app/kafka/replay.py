"""`pso replay`: re-publish a recorded range of a topic to another topic, for rehearsals.

Keys, values, headers and record timestamps are kept, so a live worker fed from the target
topic sees the same event time as the original run. Copies a PSO worker made of samples it
read away from home (header ``pso-copy-of``) are left out: the target's worker makes its own.
Records keep their source partition when the target has at least as many partitions (so
per-partition order survives exactly);
otherwise the producer's key partitioner places them (per-key order still survives, since the
range reader keeps each source partition's order and a key lives in one partition).

Pacing: ``--speed Nx`` sleeps so that the wall time between two records is their timestamp
difference divided by N (a record older than the first one is sent at once); ``max`` sends
as fast as the broker accepts. Sleeping on the wall clock is fine here: this is an I/O tool.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.kafka.connection import start_consumer, start_producer
from app.kafka.range import RangeReader, SeekMode, topic_partitions
from app.settings import Settings
from app.wire.codec import is_copy

_SPEED = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*x?\s*$", re.IGNORECASE)
_IN_FLIGHT = 1000  # sends awaited in chunks: bounded memory, no round trip per record


def parse_speed(text: str) -> float | None:
    """``10x`` / ``10`` / ``0.5x`` -> the factor; ``max`` -> None (no pacing)."""
    if text.strip().lower() == "max":
        return None
    match = _SPEED.match(text)
    factor = float(match.group(1)) if match else math.nan
    if not match or not math.isfinite(factor) or factor <= 0:
        raise ValueError(f"bad speed {text!r} (use e.g. 10x, 0.5x or max)")
    return factor


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did.

    Attributes
    ----------
    sent
        Records published to the target (the in-range records).
    scanned
        Records fetched from the source, in range or not.
    partitioning
        ``"same"`` (source partition kept) or ``"key"`` (target has fewer partitions).
    first_ts_ms, last_ts_ms
        Smallest and largest record timestamp sent (None when nothing was sent).
    abandoned
        Source partitions given up short of their end offset (broker over-reported it).
    """

    sent: int
    scanned: int
    partitioning: str
    first_ts_ms: int | None
    last_ts_ms: int | None
    abandoned: tuple[int, ...]


async def check_target(settings: Settings, bootstrap: str, topic: str) -> int:
    """Number of partitions of ``topic``; `TopicNotFound` if it does not exist."""
    consumer = await start_consumer(settings, bootstrap)
    try:
        return len(await topic_partitions(consumer, topic))
    finally:
        await consumer.stop()


async def replay(
    settings: Settings,
    bootstrap: str,
    from_topic: str,
    to_topic: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    speed: float | None = None,
    seek: SeekMode = "offsets",
    on_progress: Callable[[int, int, int], None] | None = None,
) -> ReplayResult:
    """Re-publish ``from_topic``'s records with ``start_ms <= timestamp < end_ms`` to ``to_topic``.

    ``speed`` None sends as fast as possible, else paces by timestamp deltas / speed.
    ``on_progress(sent, scanned, planned)`` is called after each record and once at the end.
    Raises `TopicNotFound` for either topic (checked before anything is sent).
    """
    target_partitions = await check_target(settings, bootstrap, to_topic)
    async with RangeReader(settings, bootstrap, from_topic, start_ms, end_ms, seek=seek) as src:
        same = target_partitions >= len(src.partitions)
        producer = await start_producer(settings, bootstrap)
        sent = 0
        first: int | None = None
        last: int | None = None
        pending: list[Any] = []
        wall0 = ts0 = 0.0
        try:
            async for rec in src:
                if is_copy(rec.headers):
                    continue  # a worker's copy of samples: the target's worker makes its own
                if speed is not None:
                    if first is None:
                        wall0, ts0 = time.monotonic(), float(rec.timestamp_ms)
                    delay = wall0 + (rec.timestamp_ms - ts0) / 1000.0 / speed - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                pending.append(
                    await producer.send(
                        to_topic,
                        rec.value,
                        key=rec.key,
                        partition=rec.partition if same else None,
                        timestamp_ms=rec.timestamp_ms,
                        headers=rec.headers or None,
                    )
                )
                sent += 1
                first = rec.timestamp_ms if first is None else min(first, rec.timestamp_ms)
                last = rec.timestamp_ms if last is None else max(last, rec.timestamp_ms)
                if len(pending) >= _IN_FLIGHT:
                    await asyncio.gather(*pending)
                    pending.clear()
                if on_progress is not None:
                    on_progress(sent, src.scanned, src.planned)
            await producer.flush()
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
        if on_progress is not None:
            on_progress(sent, src.scanned, src.planned)
        return ReplayResult(
            sent, src.scanned, "same" if same else "key", first, last, tuple(src.abandoned)
        )


# --------------------------------------------------------------------------- CLI
