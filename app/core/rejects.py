"""Where a message came from, and why its samples were rejected: the bookkeeping that makes
one `DeadLetter` per message, whatever rejected its samples (the codec, the windows)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from app.core.events import MAX_REJECTS_LISTED, DeadLetter, DeadLetterReason, Reject

_REASON_CHARS = 500


@dataclass(slots=True)
class SourceRef:
    """Where a message came from, for dead-letter records and deterministic ids."""

    topic: str
    partition: int | None = None
    offset: int | None = None
    key: bytes | None = None
    origin: str | None = None  # topic:partition:offset of the message a forwarded copy is of

    @property
    def where(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(slots=True)
class Rejections:
    """The rejects of one message as they are found; `record` makes its one `DeadLetter`.

    Only the first `MAX_REJECTS_LISTED` are kept one by one (their reasons are worded only
    then: ``reason`` may be a callable), the rest are counted: a message of 10,000 bad samples
    costs one record of about its own size, not 10,000 records carrying it 10,000 times.
    """

    source: SourceRef
    raw: bytes
    listed: list[Reject] = field(default_factory=list)
    count: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    def add(
        self,
        code: DeadLetterReason,
        reason: str | Callable[[], str],
        *,
        index: int | None = None,
        subsystem: str | None = None,
        ts_ms: int | None = None,
    ) -> None:
        self.count += 1
        self.by_reason[code] = self.by_reason.get(code, 0) + 1
        if len(self.listed) < MAX_REJECTS_LISTED:
            text = reason if isinstance(reason, str) else reason()
            self.listed.append(
                Reject(
                    index=index,
                    reason_code=code,
                    reason=text[:_REASON_CHARS],
                    subsystem=subsystem[:200] if type(subsystem) is str else None,
                    ts_ms=ts_ms,
                )
            )

    def record(self, id_suffix: str = "") -> DeadLetter:
        """The message's dead letter (at least one reject must have been added)."""
        first = self.listed[0]
        source = self.source
        letter = DeadLetter(
            event_id=f"dead:{source.where}{id_suffix}",
            reason_code=first.reason_code,
            reason=first.reason,
            source_topic=source.topic,
            source_partition=source.partition,
            source_offset=source.offset,
            origin=source.origin,
            key_b64=_key_b64(source.key),
            rejected=self.count,
            rejected_by_reason=dict(sorted(self.by_reason.items())),
            rejects=self.listed,
            original_bytes=len(self.raw),
            original_sha256=hashlib.sha256(self.raw).hexdigest(),
            original_b64=base64.b64encode(self.raw).decode(),
        )
        return letter


#: A dead letter carries the original key up to this size (Kafka allows keys of any size; a
#: larger one is hostile, and would make the record twice the size it must be).
MAX_KEY_CARRIED = 4096


def _key_b64(key: bytes | None) -> str | None:
    if key is None or len(key) > MAX_KEY_CARRIED:
        return None
    return base64.b64encode(key).decode()


def without_original(letter: DeadLetter) -> DeadLetter:
    """``letter`` with its original bytes left out (their length and SHA-256 stay): what is
    sent when the whole record would be too large for the dead-letter topic."""
    return replace(letter, original_b64=None)


def dead_letter(
    source: SourceRef,
    value: bytes,
    code: DeadLetterReason,
    reason: str,
    *,
    index: int | None = None,
    subsystem: str | None = None,
    ts_ms: int | None = None,
) -> DeadLetter:
    """A dead letter for one reject of one message, with a deterministic id from its position."""
    rejections = Rejections(source, value)
    rejections.add(code, reason, index=index, subsystem=subsystem, ts_ms=ts_ms)
    return rejections.record()


@dataclass(slots=True)
class BatchColumns:
    """A batch envelope of one subsystem's plainly valid samples, as columns: ``ts[i]`` and
    ``metrics[name][i]`` are sample i's. What `fast_fields` would give for each element."""

    subsystem: str
    ts: list[int]
    metrics: dict[str, list[float]]
    resources: dict[str, list[float]]
