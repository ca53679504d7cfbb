"""The least work any consumer of the telemetry topic must do, and PSO's own parse cost.

Owns the two in-process references the worker rates are read against: ``ceiling_eps`` (raw
aiokafka ``getmany`` + ``orjson.loads`` of every message, no group, no validation) and
``validation_us_per_sample`` (`TelemetryIngest.parse` and the per-element checks
`TelemetryIngest.apply` runs, without windowing), both measured on the scenario's messages.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import orjson

from app.settings import Settings

from .procstat import cpu_seconds
from .scenario import Message


async def ceiling_pass(
    settings: Settings, bootstrap: str, topic: str, broker_pid: int | None
) -> dict[str, Any]:
    """Raw aiokafka getmany + ``orjson.loads`` of every message (no validation), until the
    end offsets."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from app.kafka.connection import client_kwargs

    consumer = AIOKafkaConsumer(
        **client_kwargs(settings, bootstrap),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    parts = [TopicPartition(topic, p) for p in range(settings.topic_policy.partitions)]
    consumer.assign(parts)
    await consumer.start()
    try:
        end = await consumer.end_offsets(parts)
        remaining = {tp for tp in parts if end[tp] > 0}
        samples = messages = 0
        loads = orjson.loads
        cpu0, broker0 = time.process_time(), cpu_seconds(broker_pid)
        started = time.perf_counter()
        while remaining:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                for r in records:
                    doc = loads(r.value)
                    samples += len(doc) if type(doc) is list else 1
                    messages += 1
                if records and records[-1].offset + 1 >= end[tp]:
                    remaining.discard(tp)
        seconds = time.perf_counter() - started
        cpu, broker1 = time.process_time() - cpu0, cpu_seconds(broker_pid)
    finally:
        await consumer.stop()
    return {
        "eps": samples / seconds,
        "samples": samples,
        "messages": messages,
        "seconds": seconds,
        "cpu_s": cpu,
        "broker_cpu_s": broker1 - broker0 if broker0 is not None and broker1 is not None else None,
    }


def validation_cost(messages: list[Message], window: Any, passes: int = 5) -> dict[str, Any]:
    """PSO's ingest parse + validation per sample on ``messages``, in this process, without
    windowing: `TelemetryIngest.parse`, then for elements it did not take as columns what
    `TelemetryIngest.apply` runs on each before windowing it (`fast_fields`, else pydantic)."""
    from app.core.ingest import IngestResult
    from app.wire.codec import SourceRef, fast_fields, validate_sample
    from app.wire.telemetry import TelemetryIngest

    ingest = TelemetryIngest(window)
    samples = sum(m.samples for m in messages)
    columns = 0

    def parse_pass() -> float:
        nonlocal columns
        columns = 0
        started = time.perf_counter()
        for offset, m in enumerate(messages):
            result = IngestResult()
            parsed = ingest.parse(m.value, SourceRef("bench", 0, offset, m.key), result)
            if parsed.columns is not None:
                columns += 1
                continue
            for index, element in parsed.elements:
                if fast_fields(element) is None:
                    validate_sample(element, index, parsed.rejections)
        return time.perf_counter() - started

    def json_pass() -> float:
        loads = orjson.loads
        started = time.perf_counter()
        for m in messages:
            loads(m.value)
        return time.perf_counter() - started

    parse_s = [parse_pass() for _ in range(passes)]
    json_s = [json_pass() for _ in range(passes)]

    def per_sample(seconds: list[float]) -> float:
        return round(statistics.median(seconds) / samples * 1e6, 3)

    return {
        "us_per_sample": per_sample(parse_s),
        "orjson_loads_us_per_sample": per_sample(json_s),
        "beyond_json_us_per_sample": round(per_sample(parse_s) - per_sample(json_s), 3),
        "passes_us_per_sample": [round(x / samples * 1e6, 3) for x in parse_s],
        "messages": len(messages),
        "messages_validated_as_columns": columns,
        "samples": samples,
    }
