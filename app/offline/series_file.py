"""A series file read as exporters write it: one timestamp and one value column of a CSV.

Timestamps may be RFC 3339 (with or without offset; naive means UTC), ``YYYY-MM-DD HH:MM:SS``
(NAB style), or epoch seconds / milliseconds. The columns are ``timestamp`` and ``value``
unless named otherwise (any case). The header chooses the delimiter (``,``, ``;``, tab or
``|``) and, where it is not a comma, the values their decimal mark (`_value_column_mark`); a tool's
output keeps both (`SeriesTable.writer`, `SeriesTable.written`).

A value that is empty or not a number is "missing" (NaN), and so is every value of a row whose
quote does not close: a stray ``"`` spoils its own row only (`app.offline.csv_lines`). A row
shorter than the header is padded and a row's empty cells past it are dropped, so outputs
stay under their names. A file that is no series — no value a number, rows mostly going back
in time — is a `SeriesFileError` once read (`SeriesTable.check`).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from app.errors import PsoError
from app.offline.csv_lines import CsvLine, csv_lines, decimal_mark, delimiter_name, number_text

__all__ = [
    "DEFAULT_COLUMNS",
    "SeriesColumns",
    "SeriesFileError",
    "SeriesTable",
    "TimestampOutOfRange",
    "count_rows",
    "open_series",
    "parse_timestamp",
    "parse_value",
]


class SeriesFileError(PsoError, ValueError):
    """The input file is not a usable series (message names the row or column)."""


_FIRST_MS, _LAST_MS = -62_135_596_800_000, 253_402_300_799_999  # years 1 and 9999


class TimestampOutOfRange(PsoError, ValueError):
    """An epoch number that is no time of the years 1 to 9999 (``-1e306``, ``1e300``)."""


def parse_timestamp(text: str) -> int:
    """Epoch milliseconds from RFC 3339, ``YYYY-MM-DD HH:MM:SS`` or an epoch number, whose
    size says its unit (seconds below 1e11, then ms, µs from 1e14, ns from 1e17: the present
    is 1.8e9 s, 1.8e12 ms, 1.8e15 µs, 1.8e18 ns); years 1 to 9999.

    >>> [parse_timestamp(t) for t in ("1767225600", "1767225600000", "1767225600000000")]
    [1767225600000, 1767225600000, 1767225600000]
    >>> parse_timestamp("1767225601997000000"), parse_timestamp("-86400")
    (1767225601997, -86400000)
    """
    raw = text.strip()
    try:
        number = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ValueError(f"timestamp {text!r} is not finite")
        size = abs(number)
        if _INTEGER.fullmatch(raw):  # exact: a float has no room for a nanosecond's digits
            whole = int(raw)
            ms = whole // 1_000_000 if size >= 1e17 else whole // 1000 if size >= 1e14 else whole
            return _in_range(ms if size >= 1e11 else whole * 1000, text)
        scale = 1e-6 if size >= 1e17 else 1e-3 if size >= 1e14 else 1.0 if size >= 1e11 else 1e3
        return _in_range(number * scale, text)
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"timestamp {text!r} is not RFC 3339 or epoch") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return _in_range(parsed.timestamp() * 1000, text)


_INTEGER = re.compile(r"[+-]?\d+")


def _in_range(ms: float, text: str) -> int:
    if not _FIRST_MS <= ms <= _LAST_MS:
        raise TimestampOutOfRange(f"timestamp {text!r} is outside the years 1 to 9999")
    return int(ms)


def parse_value(text: str, mark: str = ".") -> float:
    """The number in a cell (``mark``: the file's decimal mark), NaN when it is not one (a
    missing value)."""
    try:
        value = float(number_text(text, mark))
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


_MAX_LINE_CHARS = 1 << 20  # a longer line is refused unread (a file of one endless line)


@dataclass(frozen=True, slots=True)
class SeriesColumns:
    """Where a series file keeps its series: the timestamp and value columns (by name, in
    any case) and the delimiter (None: the header tells, `app.offline.csv_lines`)."""

    timestamp: str = "timestamp"
    value: str = "value"
    delimiter: str | None = None


DEFAULT_COLUMNS = SeriesColumns()  # NAB's layout: timestamp,value


def _lines(handle: TextIO, delimiter: str | None) -> Iterator[CsvLine]:
    """The file's lines (`app.offline.csv_lines`), with a file that is not UTF-8 text, or a
    line that is not CSV at all, as a `SeriesFileError`: decoding happens as rows are read."""
    try:
        for line in csv_lines(handle, _MAX_LINE_CHARS, delimiter=delimiter):
            if line.cells is None:
                raise SeriesFileError(f"row {line.number}: not CSV: {line.error}")
            yield line
    except UnicodeDecodeError as exc:
        raise SeriesFileError(_not_utf8(exc)) from None


def _not_utf8(exc: UnicodeDecodeError) -> str:
    """What to say of a file that is not UTF-8, and how to make it so (the text is decoded
    in blocks: the row is not known)."""
    if exc.start < 2 and exc.object[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "UTF-16 text (a spreadsheet's 'Unicode text'): iconv -f utf-16 -t utf-8 IN > OUT"
    return (
        f"not UTF-8 text ({exc.reason}, byte 0x{exc.object[exc.start]:02x});"
        " from a spreadsheet in Windows-1252: iconv -f cp1252 -t utf-8 IN > OUT"
    )


@dataclass
class SeriesTable:
    """An opened series file: its header, its data rows (each line with its cells), where the
    timestamps and values are, and the delimiter its cells are split by."""

    header: list[str]
    rows: Iterator[tuple[CsvLine, list[str]]]
    t_col: int
    v_col: int
    delimiter: str
    header_line: int = 1
    mark: str = "."  # the decimal mark of the value column (`decimal_mark`)
    values: int = 0  # rows whose value was read so far...
    numbers: int = 0  # ...and the values that were numbers
    not_number: tuple[int, str] | None = None  # the first value cell that was not one
    last_ts: int | None = None
    forwards: int = 0  # rows later than the row before them...
    backwards: int = 0  # ...and earlier

    def read_timestamp(self, row: list[str], lineno: int) -> int:
        """The row's timestamp in epoch ms; counts whether rows go forwards, for `check`
        (call it once per row)."""
        ts = _timestamp(row, self.t_col, lineno)
        if self.last_ts is not None:
            self.forwards += ts > self.last_ts
            self.backwards += ts < self.last_ts
        self.last_ts = ts
        return ts

    def read_value(self, row: list[str], lineno: int) -> float:
        """The row's value (NaN: missing); counts the numbers, for `check` (call it once per
        row)."""
        self.values += 1
        value = parse_value(row[self.v_col], self.mark)
        if value == value:
            self.numbers += 1
        elif self.not_number is None and row[self.v_col].strip():
            self.not_number = (lineno, row[self.v_col])
        return value

    def written(self, number: str) -> str:
        """One of the tools' numbers as the file writes its own: ``0,25`` in a file whose
        decimal mark is a comma, so a spreadsheet reads it back as a number."""
        return number.replace(".", ",") if self.mark == "," else number

    def check(self) -> None:
        """Say what makes a file no series, rather than write it back with its outputs empty
        or meaningless: values none of which is a number (a column of text, or decimal commas
        in a comma-separated file), rows that mostly go back in time (newest first), or rows
        that all share one timestamp."""
        if self.values > 1 and self.forwards == 0 and self.backwards == 0:
            raise SeriesFileError(
                f"all {self.values} rows have the same timestamp: a series needs time to move"
            )
        if self.backwards > self.forwards:
            raise SeriesFileError(
                f"{self.backwards} rows are earlier than the row before them, {self.forwards}"
                " later: the models learn in time order, so sort the rows oldest first"
            )
        if self.numbers == 0 and self.values > 0:
            name = self.header[self.v_col]
            if self.not_number is None:
                raise SeriesFileError(f"every value in column {name!r} is empty")
            lineno, cell = self.not_number
            raise SeriesFileError(
                f"no value in column {name!r} is a number (row {lineno}: {cell!r})"
            )

    def writer(self, fout: TextIO, added: list[str]) -> Any:
        """A CSV writer in the input's delimiter, the header and ``added`` written."""
        writer = csv.writer(fout, delimiter=self.delimiter, lineterminator="\n")
        writer.writerow([*self.header, *added])
        return writer


def open_series(handle: TextIO, source: Path, columns: SeriesColumns) -> SeriesTable:
    """``source``, opened as ``handle``, as a `SeriesTable`; the two columns are found by
    name, in any case.

    Blank lines are left out, before the header too; a row shorter than the header is padded,
    so its outputs stay under their names. A data line whose quote never closes keeps its
    cells but has an ``error``: the tools write it with empty outputs and learn nothing from
    it, like a missing value.
    """
    lines = _lines(handle, columns.delimiter)
    first = next((line for line in lines if not line.blank), None)
    if first is None or first.cells is None:
        raise SeriesFileError(
            f"the file is empty (expected a header {columns.timestamp},{columns.value})"
        )
    if first.error:
        raise SeriesFileError(f"row {first.number}: not CSV: {first.error}")
    header = first.cells
    names = [h.strip().lower() for h in header]
    found = []
    for column, option in (
        (columns.timestamp, "--timestamp-column"),
        (columns.value, "--value-column"),
    ):
        if column.strip().lower() not in names:
            split = delimiter_name(first.delimiter)
            raise SeriesFileError(
                f"missing column {column!r}: the header, split at {split}, is {header}"
                f" (name yours with {option}, the delimiter with --delimiter)"
            )
        found.append(names.index(column.strip().lower()))
    rows = _padded(lines, len(header))
    table = SeriesTable(header, rows, found[0], found[1], first.delimiter, first.number)
    table.mark = _value_column_mark(source, table)
    return table


def _value_column_mark(source: Path, table: SeriesTable) -> str:
    """The decimal mark of the value column, read ahead in a second pass (`decimal_mark`):
    ``1.000`` is a thousand in a file of ``1.234,5`` and one in a file of ``0.25``."""
    if table.delimiter == ",":
        return "."
    with source.open(newline=None, encoding="utf-8-sig", errors="replace") as fh:
        lines = csv_lines(fh, _MAX_LINE_CHARS, delimiter=table.delimiter)
        return decimal_mark(
            (
                line.cells[table.v_col]
                for line in lines
                if line.number > table.header_line
                and line.cells is not None
                and len(line.cells) > table.v_col
            ),
            table.delimiter,
        )


def _padded(lines: Iterator[CsvLine], width: int) -> Iterator[tuple[CsvLine, list[str]]]:
    """The data rows as wide as the header: a short row padded, a row's empty cells past
    the header's width dropped (a delimiter at the end of every line), so the outputs stay
    under their names."""
    for line in lines:
        row = line.cells
        if row and not line.blank:  # a spreadsheet's empty row (;;) is no data
            if len(row) < width:
                row = [*row, *[""] * (width - len(row))]
            elif len(row) > width and not any(cell.strip() for cell in row[width:]):
                row = row[:width]
            yield line, row


def _timestamp(row: list[str], column: int, lineno: int) -> int:
    try:
        return parse_timestamp(row[column])
    except (ValueError, IndexError) as exc:
        raise SeriesFileError(f"row {lineno}: {exc}") from None


def count_rows(path: Path) -> int:
    """Lines after the header (the progress bar's total)."""
    with path.open("rb") as fh:
        return max(0, sum(1 for _ in fh) - 1)
