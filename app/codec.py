"""Bytes in, validated samples or dead letters out. Pure: the ingest agent's only parser.

Any bytes at all must produce a result: samples to window, or `DeadLetter` records that
carry the original bytes and a precise reason. Nothing here raises on bad input.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from app.events import DeadLetter, DeadLetterReason, TelemetrySample

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_BATCH = 10_000


@dataclass(slots=True)
class SourceRef:
    """Where a message came from, for dead-letter records and deterministic ids."""

    topic: str
    partition: int | None = None
    offset: int | None = None
    key: bytes | None = None


@dataclass(slots=True)
class Decoded:
    """The outcome of decoding one message: good samples (with batch index) and rejects."""

    samples: list[tuple[int | None, TelemetrySample]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    items: int = 0  # samples the message carried (1 for an undecodable message)


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """One line naming each bad field: ``metrics.cpu: Input should be a finite number``."""
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "(sample)"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"(+{more} more)")
    return "; ".join(parts)


def dead_letter(
    source: SourceRef,
    value: bytes,
    code: DeadLetterReason,
    reason: str,
    *,
    index: int | None = None,
    sample: Any = None,
    subsystem: str | None = None,
    ts_ms: int | None = None,
) -> DeadLetter:
    """Build a dead-letter record with a deterministic id from the source position."""
    where = f"{source.topic}:{source.partition}:{source.offset}"
    return DeadLetter(
        event_id=f"dead:{where}:{'' if index is None else index}:{code}",
        reason_code=code,
        reason=reason,
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        index=index,
        subsystem=subsystem,
        ts_ms=ts_ms,
        key_b64=None if source.key is None else base64.b64encode(source.key).decode(),
        original_b64=base64.b64encode(value).decode(),
        sample=_json_safe(sample),
    )


def _json_safe(value: Any) -> Any:
    """Keep the offending element only if it round-trips as JSON (it came from orjson)."""
    if value is None:
        return None
    try:
        orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return repr(value)[:2000]
    return value


def decode_message(value: bytes | None, source: SourceRef) -> Decoded:
    """Decode one Kafka message value: a sample object or a JSON array of samples."""
    raw = value or b""
    out = Decoded()
    if len(raw) > MAX_MESSAGE_BYTES:
        out.items = 1
        out.dead.append(
            dead_letter(
                source, raw, "too_large", f"message is {len(raw)} bytes (max {MAX_MESSAGE_BYTES})"
            )
        )
        return out
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        out.items = 1
        out.dead.append(dead_letter(source, raw, "invalid_json", f"not JSON: {exc}"))
        return out
    if isinstance(doc, list):
        if not doc:
            out.dead.append(
                dead_letter(source, raw, "empty_batch", "batch envelope is an empty array")
            )
            return out
        if len(doc) > MAX_BATCH:
            out.items = 1
            out.dead.append(
                dead_letter(
                    source, raw, "too_large", f"batch of {len(doc)} samples (max {MAX_BATCH})"
                )
            )
            return out
        out.items = len(doc)
        for i, element in enumerate(doc):
            _validate_into(out, element, raw, source, i)
    else:
        out.items = 1
        _validate_into(out, doc, raw, source, None)
    return out


def _validate_into(
    out: Decoded, element: Any, raw: bytes, source: SourceRef, index: int | None
) -> None:
    if not isinstance(element, dict):
        kind = type(element).__name__
        out.dead.append(
            dead_letter(
                source,
                raw,
                "invalid_sample",
                f"sample must be a JSON object, got {kind}",
                index=index,
                sample=element,
            )
        )
        return
    try:
        out.samples.append((index, TelemetrySample.model_validate(element)))
    except ValidationError as exc:
        subsystem = element.get("subsystem")
        out.dead.append(
            dead_letter(
                source,
                raw,
                "invalid_sample",
                describe_validation_error(exc),
                index=index,
                sample=element,
                subsystem=subsystem if isinstance(subsystem, str) else None,
            )
        )
