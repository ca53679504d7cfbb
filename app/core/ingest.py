"""Decoded samples -> load windows and dead letters: the pure ingest step.

`WindowIngest.apply` takes one message's elements, as the wire codec split them
(`app.wire.telemetry.TelemetryIngest` parses the bytes), and windows each valid sample of a
subsystem this worker holds, forwards those another worker holds (``forward``) and leaves
those it already took (``skip``: a redelivered message). The Faust agent and the offline
backtest both run it, so live and replay window exactly alike. The caller owns persistence
(``touched`` lists the subsystems a message changed).

Every sample of a message ends in exactly one place: a window (``accepted``), held as a
possible time jump (``held``: settled by the subsystem's next samples, see
`app.core.windows`), forwarded, or rejected — and a message's rejects make one `DeadLetter`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.core.config import WindowSpec
from app.core.events import DeadLetter, DeadLetterReason, LoadWindow
from app.core.rejects import BatchColumns, Rejections, SourceRef
from app.core.windows import AddOutcome, HeldSample, WindowedLoad

#: subsystem, ts (epoch ms), metrics, resources of one valid sample
SampleFields = tuple[str, int, dict[str, float], dict[str, float]]


class SampleDecoder(Protocol):
    """How `WindowIngest` reads one element of a message (the wire codec provides it)."""

    def fields(self, element: Any) -> SampleFields | None:
        """The fields of an element that is plainly valid (cheap); None: ask `validate`."""

    def validate(
        self, element: Any, index: int | None, rejections: Rejections
    ) -> SampleFields | None:
        """The fields of a valid element, or None with the reason added to ``rejections``."""


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


class WindowIngest:
    """Window the decoded samples of messages, for any number of subsystems.

    ``windows`` maps subsystem -> `WindowedLoad`; pass a pre-filled mapping to resume from
    restored state, or a mapping the caller fills per message (see ``agents/ingest.py``).
    ``decoder`` reads each element (`app.wire.codec.TelemetryDecoder`).
    """

    def __init__(
        self,
        window: WindowSpec,
        decoder: SampleDecoder,
        windows: MutableMapping[str, WindowedLoad] | None = None,
    ) -> None:
        self.window = window
        self.decoder = decoder
        self.windows: MutableMapping[str, WindowedLoad] = {} if windows is None else windows

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

    def apply(
        self,
        message: ParsedMessage,
        result: IngestResult,
        skip: Callable[[str], bool] | None = None,
        forward: Callable[[str], bool] | None = None,
    ) -> IngestResult:
        """Window one parsed message. Samples of a subsystem for which ``skip`` is true are
        left out (a worker's state that already holds this message), late or not; samples of
        one for which ``forward`` is true go to ``result.forward`` (windowed by another
        worker). Rejects of invalid samples are reported all the same (their ids do not
        change); the message's rejects make one dead letter."""
        source = message.source
        rejections = message.rejections
        elements = message.elements
        if message.columns is not None:
            elements = self._apply_columns(message.columns, elements, result, skip, forward)
        decoder = self.decoder
        held_from: HeldSource | None = None
        # A batch is usually one subsystem's: look its state up once.
        current: str | None = None
        state: WindowedLoad | None = None
        forwarding = False
        for index, element in elements:
            fields = decoder.fields(element)
            if fields is None:
                fields = decoder.validate(element, index, rejections)
                if fields is None:
                    continue
            subsystem, ts, metrics, resources = fields
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
            result.dead.append(rejections.record())
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
            raw = json.dumps(samples, separators=(",", ":"), allow_nan=False).encode()
            rejections = Rejections(source, raw)
            for sample, code, reason in rejected:
                why: DeadLetterReason = "late" if code == "late" else "time_jump"
                rejections.add(
                    why, reason, index=sample.index, subsystem=subsystem, ts_ms=sample.ts_ms
                )
            first = rejected[0][0].index
            suffix = f":held:{subsystem}:{'' if first is None else first}"
            result.rejected += rejections.count
            result.dead.append(rejections.record(suffix))

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
