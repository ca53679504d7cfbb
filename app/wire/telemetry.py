"""Telemetry bytes -> load windows and dead letters: the codec and the core's ingest step
together, as the ingest agent and the offline backtest both run them.

`TelemetryIngest.parse` splits a message (one sample object or a batch envelope) into its
elements with the wire codec; `apply` (the core's `WindowIngest`) windows them; `process`
does both. Dead letters are sized to fit the dead-letter topic (`app.wire.codec.fit`).
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any

import orjson

from app.core.config import WindowSpec
from app.core.ingest import IngestResult, ParsedMessage, WindowIngest
from app.core.rejects import Rejections, SourceRef
from app.core.windows import WindowedLoad
from app.settings import WindowConfig
from app.wire.codec import (
    MAX_MESSAGE_BYTES,
    TelemetryDecoder,
    batch_columns,
    fast_fields,
    fit,
    parse_envelope,
)


class TelemetryIngest(WindowIngest):
    """Decode, validate and window telemetry for any number of subsystems.

    ``window`` is ``pso.yaml``'s window section (or its plain `WindowSpec`); ``windows`` maps
    subsystem -> `WindowedLoad` (pre-filled to resume from restored state).
    ``max_message_bytes`` is the input cap (larger messages are dead-lettered as
    ``too_large``); ``max_dead_letter_bytes`` the size a dead letter must fit in (one that
    would not carries the original's length and SHA-256 instead of its bytes).
    """

    def __init__(
        self,
        window: WindowConfig | WindowSpec,
        windows: MutableMapping[str, WindowedLoad] | None = None,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_dead_letter_bytes: int | None = None,
    ) -> None:
        spec = window.spec() if isinstance(window, WindowConfig) else window
        super().__init__(spec, TelemetryDecoder(), windows)
        self.max_message_bytes = max_message_bytes
        self.max_dead_letter_bytes = max_dead_letter_bytes

    def apply(
        self,
        message: ParsedMessage,
        result: IngestResult,
        skip: Any = None,
        forward: Any = None,
    ) -> IngestResult:
        """`WindowIngest.apply`, its dead letters sized to fit the dead-letter topic."""
        before = len(result.dead)
        super().apply(message, result, skip, forward)
        cap = self.max_dead_letter_bytes
        if cap is not None:
            result.dead[before:] = [fit(d, cap) for d in result.dead[before:]]
        return result

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
