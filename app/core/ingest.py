"""Telemetry message -> load windows and dead letters: the pure ingest step.

The Faust agent and the offline backtest both run `TelemetryIngest` on raw message bytes, so
live and replay window exactly alike. The caller owns persistence (``touched`` lists the
subsystems a message changed). The agent splits `process` into `parse` and `apply`: it
makes sure every subsystem of the message is in memory in between (see ``agents/ingest.py``),
and tells `apply` which subsystems' samples are windowed elsewhere (``forward``: the worker
that owns their home partition windows them).

Every sample of a message ends in exactly one place: a window (``accepted``), held as a
possible time jump (``held``: settled by the subsystem's next samples, see
`app.core.windows`), forwarded, or rejected — and a message's rejects make one `DeadLetter`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.core.windows import AddOutcome, HeldSample, WindowedLoad
from app.settings import WindowConfig
from app.wire.codec import (
    MAX_MESSAGE_BYTES,
    BatchColumns,
    Rejections,
    SourceRef,
    batch_columns,
    fast_fields,
    parse_envelope,
    validate_sample,
)
from app.wire.events import DeadLetter, DeadLetterReason, LoadWindow

#: Where a held sample came from, as windows keep it: topic, partition, offset, key (base64),
#: origin. Plain data, so that window state stays JSON-able.
HeldSource = tuple[str, int | None, int | None, str | None, str | None]


@dataclass(slots=True)
class IngestResult:
    """What one message produced."""

    windows: list[LoadWindow] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    accepted: int = 0
    items: int = 0
    held: int = 0  # samples held as a possible time jump (settled by later samples)
    rejected: int = 0  # samples (or messages) of this message in its dead letter
    touched: set[str] = field(default_factory=set)
    #: (subsystem, element) of the samples `apply` was told to leave to another worker
    forward: list[tuple[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class ParsedMessage:
    """One message split into its elements (batch index, decoded JSON), not validated yet."""

    raw: bytes
    source: SourceRef
    elements: Sequence[tuple[int | None, Any]]
    rejections: Rejections
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
    ``max_message_bytes`` is the input cap (larger messages are dead-lettered as
    ``too_large``); ``max_dead_letter_bytes`` the size a dead letter must fit in (one that
    would not carries the original's length and SHA-256 instead of its bytes).
    """

    def __init__(
        self,
        window: WindowConfig,
        windows: MutableMapping[str, WindowedLoad] | None = None,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_dead_letter_bytes: int | None = None,
    ) -> None:
        self.window = window
        self.windows: MutableMapping[str, WindowedLoad] = {} if windows is None else windows
        self.max_message_bytes = max_message_bytes
        self.max_dead_letter_bytes = max_dead_letter_bytes

    def new_windows(self, subsystem: str) -> WindowedLoad:
        """Fresh window state for ``subsystem``, shaped by the window configuration."""
        w = self.window
        return WindowedLoad(
            subsystem, w.size_ms, w.lateness_ms, w.max_jump_ms, w.jump_confirmations
        )

    def windows_for(self, subsystem: str) -> WindowedLoad:
        state = self.windows.get(subsystem)
        if state is None:
            state = self.windows[subsystem] = self.new_windows(subsystem)
        return state

    def process(
        self, value: bytes | None, source: SourceRef, into: IngestResult | None = None
    ) -> IngestResult:
        """Window every valid sample of one message; dead-letter the rest (one record).

        ``into`` accumulates into an existing result (a replay loop reuses one instead of
        allocating one per message).
        """
        result = IngestResult() if into is None else into
        return self.apply(self.parse(value, source, result), result)

    def parse(self, value: bytes | None, source: SourceRef, into: IngestResult) -> ParsedMessage:
        """The message's elements, not validated yet; message-level rejects are noted in its
        `Rejections` (recorded by `apply`)."""
        raw = value or b""
        rejections = Rejections(source, raw)
        elements: Sequence[tuple[int | None, Any]]
        cap = self.max_message_bytes
        try:  # the common case, one sample object: no envelope checks to make
            doc = orjson.loads(raw) if raw[:1] == b"{" and len(raw) <= cap else None
        except orjson.JSONDecodeError:
            doc = None
        if type(doc) is dict:
            into.items += 1
            elements = ((None, doc),)
        else:
            items, elements = parse_envelope(raw, rejections, cap)
            into.items += items
            if items > 1 and elements:
                columns = batch_columns([element for _, element in elements])
                return ParsedMessage(raw, source, elements, rejections, columns)
        return ParsedMessage(raw, source, elements, rejections)

    def apply(
        self,
        message: ParsedMessage,
        result: IngestResult,
        skip: Callable[[str], bool] | None = None,
        forward: Callable[[str], bool] | None = None,
    ) -> IngestResult:
        """`process` after `parse`. Samples of a subsystem for which ``skip`` is true are left
        out (a worker's state that already holds this message), late or not; samples of one
        for which ``forward`` is true go to ``result.forward`` (windowed by another worker).
        Rejects of invalid samples are reported all the same (their ids do not change)."""
        source = message.source
        rejections = message.rejections
        elements = message.elements
        if message.columns is not None:
            elements = self._apply_columns(message.columns, elements, result, skip, forward)
        held_from: HeldSource | None = None
        # A batch is usually one subsystem's: look its state up once.
        current: str | None = None
        state: WindowedLoad | None = None
        forwarding = False
        for index, element in elements:
            fields = fast_fields(element)
            if fields is not None:
                subsystem, ts, metrics, resources = fields
            else:
                sample = validate_sample(element, index, rejections)
                if sample is None:
                    continue
                subsystem, ts = sample.subsystem, sample.ts
                metrics, resources = sample.metrics, sample.resources
            if subsystem != current:
                current = subsystem
                state = None
                forwarding = forward is not None and forward(subsystem)
                if not forwarding and (skip is None or not skip(subsystem)):
                    state = self.windows.get(subsystem)
                    if state is None:
                        state = self.windows_for(subsystem)
            if forwarding:
                result.forward.append((subsystem, element))
                continue
            if state is None:
                continue  # skipped
            if held_from is None:
                key = None if source.key is None else base64.b64encode(source.key).decode()
                held_from = (source.topic, source.partition, source.offset, key, source.origin)
            outcome = state.add(ts, metrics, resources, held_from, index)
            result.touched.add(subsystem)
            if outcome.accepted:
                result.accepted += 1
            elif outcome.held:
                result.held += 1
            else:
                rejections.add(
                    "time_jump" if outcome.code == "time_jump" else "late",
                    outcome.reason,
                    index=index,
                    subsystem=subsystem,
                    ts_ms=ts,
                )
            if outcome.closed:
                result.windows.extend(outcome.closed)
            if outcome.rejected:
                self._dead_held(subsystem, outcome, result)
        if rejections.count:
            result.rejected += rejections.count
            result.dead.append(rejections.record(max_bytes=self.max_dead_letter_bytes))
        return result

    def _apply_columns(
        self,
        columns: BatchColumns,
        elements: Sequence[tuple[int | None, Any]],
        result: IngestResult,
        skip: Callable[[str], bool] | None,
        forward: Callable[[str], bool] | None,
    ) -> Sequence[tuple[int | None, Any]]:
        """`apply` of a batch in columns (`WindowedLoad.add_columns`): every sample valid, so
        nothing to reject. Returns the elements left for the per-sample loop: none, or those
        from the first sample that loop must word (late, or a possible time jump) on."""
        subsystem = columns.subsystem
        if forward is not None and forward(subsystem):
            result.forward.extend((subsystem, element) for _, element in elements)
            return ()
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

    def _dead_held(self, subsystem: str, outcome: AddOutcome, result: IngestResult) -> None:
        """Dead letters for held samples that were settled against: one per message that
        carried them, with those samples (as parsed) for its bytes."""
        by_message: dict[Any, list[tuple[HeldSample, str, str]]] = {}
        for settled in outcome.rejected:
            by_message.setdefault(settled[0].source, []).append(settled)
        for where, rejected in by_message.items():
            topic, partition, offset, key, origin = where
            source = SourceRef(
                topic,
                partition,
                offset,
                None if key is None else base64.b64decode(key),
                origin,
            )
            samples = [
                {
                    "subsystem": subsystem,
                    "ts": s.ts_ms,
                    "metrics": s.metrics,
                    "resources": s.resources,
                }
                for s, _code, _reason in rejected
            ]
            rejections = Rejections(source, orjson.dumps(samples))
            for sample, code, reason in rejected:
                why: DeadLetterReason = "late" if code == "late" else "time_jump"
                rejections.add(
                    why, reason, index=sample.index, subsystem=subsystem, ts_ms=sample.ts_ms
                )
            first = rejected[0][0].index
            suffix = f":held:{subsystem}:{'' if first is None else first}"
            result.rejected += rejections.count
            result.dead.append(rejections.record(suffix, self.max_dead_letter_bytes))

    def process_plain_run(self, lines: Sequence[bytes], first: int, into: IngestResult) -> int:
        """`process` of ``lines[first:]``, one message each, while each is the common message:
        one plainly valid sample object, accepted. Returns the index of the first line it
        declined, having changed nothing for it (``len(lines)`` if none): a batch, invalid
        JSON, a sample that needs the model, a late sample or a possible time jump. The caller
        runs `process` on that one, which handles and words every case, then resumes after it.

        A replay's inner loop: spares it the envelope and bookkeeping of the general path
        (same windows, same counts).
        """
        windows = self.windows
        closed = into.windows
        touched = into.touched
        loads = orjson.loads
        cap = self.max_message_bytes
        n, end = first, len(lines)
        try:
            while n < end:
                raw = lines[n]
                if not raw.startswith(b"{") or len(raw) > cap:
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
                if not state.trusts(ts):
                    return n  # a possible time jump: `process` holds it
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

    def flush(
        self, subsystems: Iterable[str] | None = None, into: IngestResult | None = None
    ) -> list[LoadWindow]:
        """Close all open windows (end of a finite input), in subsystem order. Held samples
        are applied first (nothing followed to refute them); those that turn out late are
        dead-lettered into ``into``."""
        names = sorted(self.windows) if subsystems is None else sorted(subsystems)
        closed: list[LoadWindow] = []
        scratch = IngestResult() if into is None else into
        for name in names:
            state = self.windows[name]
            settled = state.settle()
            closed.extend(settled.closed)
            if settled.rejected:
                self._dead_held(name, settled, scratch)
            closed.extend(state.flush())
        return closed
