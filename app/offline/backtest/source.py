"""The backtest's input: JSONL or CSV lines in blocks, routed to the worker that owns each
subsystem; a Kafka topic range copied to a file first (PSO-made copies left out)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from app.offline.backtest.common import (
    _BLOCK_BYTES,
    _FAST_LEN,
    _FAST_PREFIX,
    BacktestError,
    line_error,
)
from app.offline.csv_lines import CsvLine, csv_lines, decimal_mark, delimiter_name, number_text
from app.wire.codec import MAX_MESSAGE_BYTES, is_copy

# --------------------------------------------------------------------------- input


# A line longer than the largest message is rejected as ``too_large`` from its length alone,
# as the live ingest rejects such a message; it is never held whole (a file that is one
# endless line would fill memory), in CSV (`csv_lines`) as in JSONL (`_blocks`, where only
# the first line of a read can be that long: every other one fits inside a block).
_LONGEST_LINE = MAX_MESSAGE_BYTES
assert _BLOCK_BYTES <= _LONGEST_LINE


def _csv_header(lines: Iterator[CsvLine], path: Path) -> tuple[list[str], str] | None:
    """The header row, the first that is not blank, and the file's delimiter (None for an
    empty file); one that cannot name the columns is an error."""
    first = next((line for line in lines if not line.blank), None)
    if first is None:
        return None
    if first.cells is None or first.error:
        raise BacktestError(f"{path}: the CSV header is not CSV: {first.error}")
    header = [h.strip() for h in first.cells]
    if any(_not_utf8(h) for h in header):
        raise BacktestError(f"{path}: the CSV header is not UTF-8 text")
    if "subsystem" not in header or "ts" not in header:
        split = delimiter_name(first.delimiter)
        raise BacktestError(
            f"{path}: CSV header needs 'subsystem' and 'ts' columns"
            f" (split at {split}, it is {header})"
        )
    return header, first.delimiter


def check_csv_header(path: Path) -> None:
    """Raise `BacktestError` now, before any output exists, if the header is unusable."""
    with path.open(newline=None, encoding="utf-8-sig", errors="surrogateescape") as fh:
        _csv_header(csv_lines(fh, _LONGEST_LINE, delimiter=None), path)


def _csv_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """CSV rows as telemetry JSON bytes; a bad row yields bytes that fail to decode.

    Read a line at a time (`app.offline.csv_lines`): a stray quote spoils its own row, not
    the rows after it; line numbers are physical. Bytes that are not UTF-8 are carried as
    surrogates (``surrogateescape``), so such a row is one invalid line with its reason, not
    the end of the backtest. Numbers are read in the file's decimal mark (`_numbers_mark`).
    """
    with path.open(newline=None, encoding="utf-8-sig", errors="surrogateescape") as fh:
        lines = csv_lines(fh, _LONGEST_LINE, delimiter=None)
        found = _csv_header(lines, path)
        if found is None:
            return
        header, delimiter = found
        mark = _numbers_mark(path, header, delimiter)
        for line in lines:
            if line.too_long:  # as the live ingest rejects a message over the largest
                yield line.number, line_error("too_large", line.error)
            elif line.cells is None or line.error:
                yield line.number, line_error("invalid_csv", f"not CSV: {line.error}")
            elif not line.blank:
                yield line.number, _csv_row(header, line.cells, mark)


def _numbers_mark(path: Path, header: list[str], delimiter: str) -> str:
    """The decimal mark of the file's metric and resource cells (`decimal_mark`), read ahead
    in a second pass where the cells are not comma-split."""
    if delimiter == ",":
        return "."
    numeric = [
        i
        for i, name in enumerate(header)
        if name not in ("subsystem", "ts") and not name.startswith("label:")
    ]
    with path.open(newline=None, encoding="utf-8-sig", errors="surrogateescape") as fh:
        lines = csv_lines(fh, _LONGEST_LINE, delimiter=delimiter)
        next((line for line in lines if not line.blank), None)  # the header
        return decimal_mark(
            (
                line.cells[i]
                for line in lines
                if line.cells is not None and not line.error
                for i in numeric
                if i < len(line.cells)
            ),
            delimiter,
        )


def _not_utf8(cell: str) -> bool:
    """Whether ``cell`` carries bytes that were not UTF-8 (as ``surrogateescape`` surrogates)."""
    if cell.isascii():
        return False
    try:
        cell.encode()
    except UnicodeEncodeError:
        return True
    return False


def _csv_row(header: list[str], row: list[str], mark: str = ".") -> bytes:
    if len(row) != len(header):
        return line_error("invalid_csv", f"row has {len(row)} cells, header has {len(header)}")
    if any(_not_utf8(cell) for cell in row):
        return line_error("invalid_csv", "row is not UTF-8 text")
    sample: dict[str, Any] = {"metrics": {}, "resources": {}}
    for name, cell in zip(header, row, strict=True):
        cell = cell.strip()
        if cell == "":
            continue
        if name == "subsystem":
            sample["subsystem"] = cell
        elif name == "ts":
            sample["ts"] = int(cell) if cell.isdigit() else cell
        elif name.startswith("label:"):
            low = cell.lower()
            sample.setdefault("labels", {})[name[6:]] = (
                low in ("1", "true", "yes")
                if low in ("0", "1", "true", "false", "yes", "no")
                else cell
            )
        else:
            value: Any = cell  # not a number: the sample validation names the column
            with contextlib.suppress(ValueError):
                value = float(number_text(cell, mark))
            kind = "resources" if name.startswith("res:") else "metrics"
            sample[kind][name[4:] if kind == "resources" else name] = value
    return orjson.dumps(sample)


def _too_long(length: int) -> bytes:
    return line_error("too_large", f"line is {length} bytes (max {_LONGEST_LINE})")


def _blocks(path: Path) -> Iterator[tuple[Sequence[int], list[bytes]]]:
    """The input in blocks of (line numbers, lines); JSONL lines come unstripped, maybe empty.

    Reading megabytes at a time and splitting in C keeps the per-line cost of the stage-1
    loop (which every worker runs over every line) to a few operations.
    """
    if path.suffix.lower() == ".csv":
        rows = list(_csv_lines(path))  # CSV is the small, hand-made case
        yield [n for n, _ in rows], [line for _, line in rows]
        return
    with path.open("rb") as fh:
        first, tail = 1, b""
        skipped = 0  # bytes so far of a line too long to keep (0: none)
        while block := fh.read(_BLOCK_BYTES):
            if skipped:
                end = block.find(b"\n")
                if end < 0:
                    skipped += len(block)
                    continue
                lines = [_too_long(skipped + end), *block[end + 1 :].split(b"\n")]
                skipped = 0
            else:
                lines = (tail + block).split(b"\n")
            tail = lines.pop()
            if lines and len(lines[0]) > _LONGEST_LINE:
                lines[0] = _too_long(len(lines[0]))
            if len(tail) > _LONGEST_LINE:
                skipped, tail = len(tail), b""
            yield range(first, first + len(lines)), lines
            first += len(lines)
        if skipped:
            yield range(first, first + 1), [_too_long(skipped)]
        elif tail:
            yield range(first, first + 1), [tail]


class _Router:
    """Which worker owns which subsystem: the n-th subsystem to appear goes to ``n % workers``.

    Every worker reads every line and routes it with the same code, so all of them assign
    the same owners; first-appearance order spreads a fleet evenly over the workers (a hash
    of the name left one of two workers with 52 % of a 100-subsystem fleet).
    """

    def __init__(self, workers: int, worker: int) -> None:
        self.workers = workers
        self.worker = worker
        self.by_name: dict[str, int] = {}
        #: owners by the raw bytes of names seen in the ``{"subsystem":"NAME"`` form
        self.by_prefix: dict[bytes, int] = {}

    def owner(self, name: str) -> int:
        owner = self.by_name.get(name)
        if owner is None:
            owner = self.by_name[name] = len(self.by_name) % self.workers
        return owner

    def route(self, line: bytes) -> tuple[bytes | None, list[int] | None]:
        """The part of ``line`` this worker owns (the line itself, a sub-batch, or None).

        Lines without a usable subsystem (not JSON, not objects...) belong to worker 0,
        which dead-letters them exactly as the live ingest would. A batch mixing owners is
        split; the second value then maps sub-batch positions back to the line's indices.
        """
        workers, worker = self.workers, self.worker
        if workers == 1:
            return line, None
        end = line.find(b'"', _FAST_LEN) if line.startswith(_FAST_PREFIX) else -1
        if end > 0:
            raw = line[_FAST_LEN:end]
            owner = self.by_prefix.get(raw)
            if owner is None and b"\\" not in raw:
                owner = self.by_prefix[raw] = self.owner(raw.decode("utf-8", "replace"))
            # A second "subsystem" key would override the first one: parse those lines.
            if owner is not None and line.count(b'"subsystem"') == 1:
                return (line if owner == worker else None), None
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            return (line if worker == 0 else None), None
        if isinstance(doc, dict):
            sub = doc.get("subsystem")
            owner = self.owner(sub) if isinstance(sub, str) else 0
            return (line if owner == worker else None), None
        if isinstance(doc, list) and doc:
            owners = [
                self.owner(e["subsystem"])
                if isinstance(e, dict) and isinstance(e.get("subsystem"), str)
                else 0
                for e in doc
            ]
            if all(o == owners[0] for o in owners):
                return (line if owners[0] == worker else None), None
            mine = [i for i, o in enumerate(owners) if o == worker]
            return (orjson.dumps([doc[i] for i in mine]), mine) if mine else (None, None)
        return (line if worker == 0 else None), None


# --------------------------------------------------------------------------- kafka input


async def copy_topic(
    settings: Any,
    bootstrap: str,
    topic: str,
    start_ms: int | None,
    end_ms: int | None,
    target: Path,
) -> int:
    from app.kafka.range import read_range  # type: ignore[import-not-found,unused-ignore]

    count = 0
    with target.open("wb") as fh:
        async for _key, value, _ts, headers, *_rest in read_range(
            settings, bootstrap, topic, start_ms, end_ms
        ):
            if is_copy(headers):
                continue  # a worker's copy of samples it read away from home: derived
            line = (value or b"").replace(b"\r", b" ").replace(b"\n", b" ")
            fh.write(line + b"\n")
            count += 1
    return count
