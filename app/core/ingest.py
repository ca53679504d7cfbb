"""Telemetry message -> load windows and dead letters: the pure ingest step.

The Faust agent and the offline backtest both call `TelemetryIngest.process` with raw message
bytes, so live and replay window exactly alike. The caller owns persistence: after each call
it saves the state of the subsystems listed in ``touched`` (one table write per subsystem per
message, not per sample).
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field

from app.codec import SourceRef, dead_letter, decode_message
from app.core.windows import WindowedLoad
from app.events import DeadLetter, LoadWindow
from app.settings import WindowConfig


@dataclass(slots=True)
class IngestResult:
    """What one message produced."""

    windows: list[LoadWindow] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    accepted: int = 0
    items: int = 0
    touched: set[str] = field(default_factory=set)


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

    def process(self, value: bytes | None, source: SourceRef) -> IngestResult:
        decoded = decode_message(value, source)
        result = IngestResult(dead=list(decoded.dead), items=decoded.items)
        raw = value or b""
        for index, sample in decoded.samples:
            state = self.windows_for(sample.subsystem)
            outcome = state.add(sample.ts, sample.metrics, sample.resources)
            result.touched.add(sample.subsystem)
            if outcome.accepted:
                result.accepted += 1
                result.windows.extend(outcome.closed)
            else:
                result.dead.append(
                    dead_letter(
                        source,
                        raw,
                        "late",
                        outcome.reason,
                        index=index,
                        sample=sample.model_dump(mode="json"),
                        subsystem=sample.subsystem,
                        ts_ms=sample.ts,
                    )
                )
        return result

    def flush(self, subsystems: Iterable[str] | None = None) -> list[LoadWindow]:
        """Close all open windows (end of a finite input), in subsystem order."""
        names = sorted(self.windows) if subsystems is None else sorted(subsystems)
        closed: list[LoadWindow] = []
        for name in names:
            closed.extend(self.windows[name].flush())
        return closed
