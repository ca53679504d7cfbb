"""Telemetry message -> load windows and dead letters: the pure ingest step.

The Faust agent and the offline backtest both run `TelemetryIngest` on raw message bytes, so
live and replay window exactly alike. The caller owns persistence (``touched`` lists the
subsystems a message changed). The agent splits `process` into `parse` and `apply`: it
makes sure every subsystem of the message is in memory in between (see ``agents/ingest.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.codec import (
    MAX_MESSAGE_BYTES,
    BatchColumns,
    SourceRef,
    batch_columns,
    dead_letter,
    fast_fields,
    parse_envelope,
    validate_sample,
)
from app.core.windows import WindowedLoad
from app.events import DeadLetter, LoadWindow, TelemetrySample
from app.settings import WindowConfig


@dataclass(slots=True)
class IngestResult:
    """What one message produced."""

    windows: list[LoadWindow] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    accepted: int = 0
    items: int = 0
    touched: set[str] = field(default_factory=set)


@dataclass(slots=True)
class ParsedMessage:
    """One message split into its elements (batch index, decoded JSON), not validated yet."""

    raw: bytes
    source: SourceRef
    elements: Sequence[tuple[int | None, Any]]
    columns: BatchColumns | None = None  # the elements as columns, if they are the common case

    def subsystems(self) -> set[str]:
        """Every subsystem a sample of this message may belong to (valid or not)."""
        if self.columns is not None:
            return {self.columns.subsystem}
        names: set[str] = set()
        for _index, element in self.elements:
            if type(element) is dict:
                name = element.get("subsystem")
                if type(name) is str:
                    names.add(name)
        return names


class TelemetryIngest:
    """Decode, validate and window telemetry for any number of subsystems.

    ``windows`` maps subsystem -> `WindowedLoad`; pass a pre-filled mapping to resume from
    restored state, or a mapping backed by a table (see ``agents/ingest.py``).
    """

    def __init__(
        self, window: WindowConfig, windows: MutableMapping[str, WindowedLoad] | None = None
    ) -> None:
        self.window = window
        self.windows: MutableMapping[str, WindowedLoad] = {} if windows is None else windows

    def windows_for(self, subsystem: str) -> WindowedLoad:
        state = self.windows.get(subsystem)
        if state is None:
            state = self.windows[subsystem] = WindowedLoad(
                subsystem, self.window.size_ms, self.window.lateness_ms
            )
        return state

    def process(
        self, value: bytes | None, source: SourceRef, into: IngestResult | None = None
    ) -> IngestResult:
        """Window every valid sample of one message; dead-letter the rest.

        Dead letters come in a fixed order: message- and sample-level rejects (in batch order)
        first, then late samples. ``into`` accumulates into an existing result (a replay
        loop reuses one instead of allocating one per message).
        """
        result = IngestResult() if into is None else into
        return self.apply(self.parse(value, source, result), result)

    def parse(self, value: bytes | None, source: SourceRef, into: IngestResult) -> ParsedMessage:
        """The message's elements, not validated yet; message-level rejects go to ``into``."""
        raw = value or b""
        elements: Sequence[tuple[int | None, Any]]
        try:  # the common case, one sample object: no envelope checks to make
            doc = orjson.loads(raw) if raw[:1] == b"{" and len(raw) <= MAX_MESSAGE_BYTES else None
        except orjson.JSONDecodeError:
            doc = None
        if type(doc) is dict:
            into.items += 1
            elements = ((None, doc),)
        else:
            items, elements = parse_envelope(raw, source, into.dead)
            into.items += items
            if items > 1 and elements:
                return ParsedMessage(
                    raw, source, elements, batch_columns([element for _, element in elements])
                )
        return ParsedMessage(raw, source, elements)

    def apply(
        self,
        message: ParsedMessage,
        result: IngestResult,
        skip: Callable[[str], bool] | None = None,
    ) -> IngestResult:
        """`process` after `parse`. Samples of a subsystem for which ``skip`` is true are left
        out (a worker's state that already holds this message), late or not; rejects of
        invalid samples are reported all the same (their ids do not change)."""
        raw, source = message.raw, message.source
        elements = message.elements
        if message.columns is not None:
            elements = self._apply_columns(message.columns, elements, result, skip)
        late: list[DeadLetter] | None = None
        # A batch is usually one subsystem's: look its state up once.
        current: str | None = None
        state: WindowedLoad | None = None
        for index, element in elements:
            fields = fast_fields(element)
            if fields is not None:
                subsystem, ts, metrics, resources = fields
            else:
                sample = validate_sample(element, raw, source, index, result.dead)
                if sample is None:
                    continue
                subsystem, ts = sample.subsystem, sample.ts
                metrics, resources = sample.metrics, sample.resources
            if subsystem != current:
                current = subsystem
                state = None
                if skip is None or not skip(subsystem):
                    state = self.windows.get(subsystem)
                    if state is None:
                        state = self.windows_for(subsystem)
            if state is None:
                continue  # skipped
            outcome = state.add(ts, metrics, resources)
            result.touched.add(subsystem)
            if outcome.accepted:
                result.accepted += 1
                if outcome.closed:
                    result.windows.extend(outcome.closed)
            else:
                late = late or []
                late.append(
                    dead_letter(
                        source,
                        raw,
                        "late",
                        outcome.reason,
                        index=index,
                        sample=TelemetrySample.model_validate(element).model_dump(mode="json"),
                        subsystem=subsystem,
                        ts_ms=ts,
                    )
                )
        if late:
            result.dead.extend(late)
        return result

    def _apply_columns(
        self,
        columns: BatchColumns,
        elements: Sequence[tuple[int | None, Any]],
        result: IngestResult,
        skip: Callable[[str], bool] | None,
    ) -> Sequence[tuple[int | None, Any]]:
        """`apply` of a batch in columns (`WindowedLoad.add_columns`): every sample valid, so
        nothing to reject. Returns the elements left for the per-sample loop: none, or those
        from the first late sample on (a rare case that loop words)."""
        subsystem = columns.subsystem
        if skip is not None and skip(subsystem):
            return ()
        state = self.windows.get(subsystem)
        if state is None:
            state = self.windows_for(subsystem)
        taken, closed = state.add_columns(columns.ts, columns.metrics, columns.resources)
        if taken:
            result.touched.add(subsystem)
            result.accepted += taken
            result.windows.extend(closed)
        return elements[taken:]

    def process_plain_run(self, lines: Sequence[bytes], first: int, into: IngestResult) -> int:
        """`process` of ``lines[first:]``, one message each, while each is the common message:
        one plainly valid sample object, accepted. Returns the index of the first line it
        declined, having changed nothing for it (``len(lines)`` if none): a batch, invalid
        JSON, a sample that needs the model, a late sample. The caller runs `process` on that
        one, which handles and words every case, then resumes after it.

        A replay's inner loop: spares it the envelope and bookkeeping of the general path
        (same windows, same counts).
        """
        windows = self.windows
        closed = into.windows
        touched = into.touched
        loads = orjson.loads
        n, end = first, len(lines)
        try:
            while n < end:
                raw = lines[n]
                if not raw.startswith(b"{") or len(raw) > MAX_MESSAGE_BYTES:
                    return n
                try:
                    fields = fast_fields(loads(raw))
                except orjson.JSONDecodeError:
                    return n
                if fields is None:
                    return n
                subsystem, ts, metrics, resources = fields
                state = windows.get(subsystem)
                if state is None:
                    state = self.windows_for(subsystem)
                outcome = state.add(ts, metrics, resources)
                if not outcome.accepted:
                    return n  # late: nothing was changed, `process` dead-letters it
                touched.add(subsystem)
                if outcome.closed:
                    closed.extend(outcome.closed)
                n += 1
            return n
        finally:
            into.items += n - first
            into.accepted += n - first

    def flush(self, subsystems: Iterable[str] | None = None) -> list[LoadWindow]:
        """Close all open windows (end of a finite input), in subsystem order."""
        names = sorted(self.windows) if subsystems is None else sorted(subsystems)
        closed: list[LoadWindow] = []
        for name in names:
            closed.extend(self.windows[name].flush())
        return closed
