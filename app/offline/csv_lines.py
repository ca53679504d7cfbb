"""CSV read line by line, each line bounded: a broken row spoils only itself.

Why: the ``csv`` module lets a quoted field run on across lines until its closing quote. In a
telemetry export a stray ``"`` is a typo, and the module would then swallow every following
row into that field, up to its 128 KiB field limit, and resume mid-record: hundreds of good
rows lost as one bad one (measured: a stray quote on row 51 of 200 left 51 samples). Here a
row is one line, except that a quoted field may span a few lines when that makes a well-formed
row with as many cells as the header (a note exported by a spreadsheet). A quote that closes
no such row spoils its own line only, and reading goes on at the next line. A line longer than
``max_chars`` is skipped in pieces, never held whole.

The delimiter may be left to the header to tell: a file exported where the decimal mark is a
comma separates its cells by ``;`` (or a tab, or ``|``), and its numbers read ``12,5``
(`number_text` makes them ``12.5``).

>>> import io
>>> text = 'a,b\\n1,"2\\n3,4\\n5,"six\\nlines"\\n7,8'
>>> for line in csv_lines(io.StringIO(text), max_chars=100):
...     print(line.number, line.cells, line.error or "ok")
1 ['a', 'b'] ok
2 ['1', '2'] a quoted field is not closed on its line
3 ['3', '4'] ok
4 ['5', 'six\\nlines'] ok
6 ['7', '8'] ok
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

__all__ = ["UNCLOSED_QUOTE", "CsvLine", "csv_lines", "detect_delimiter", "number_text"]

UNCLOSED_QUOTE = "a quoted field is not closed on its line"
_PIECE = 1 << 16  # characters read at a time while skipping an over-long line
_MAX_SPAN = 16  # lines one quoted field may span
_DELIMITERS = (",", ";", "\t", "|")  # in order of preference


@dataclass(frozen=True, slots=True)
class CsvLine:
    """One row of a CSV file, numbered by the line it starts on (the header is line 1).

    ``cells`` is None when the line cannot be read as CSV at all (too long, a field over the
    ``csv`` module's limit); ``error`` says why a line is not well-formed CSV ("" when it
    is). A line whose quote never closes has both: the cells as the line reads without its
    closing quote, and ``UNCLOSED_QUOTE``. ``too_long``: the line was longer than allowed
    (and was skipped unread). ``delimiter``: what the file's cells are split by.
    """

    number: int
    cells: list[str] | None
    error: str = ""
    too_long: bool = False
    delimiter: str = ","


def detect_delimiter(header: str) -> str:
    """The delimiter of a file with this header: a comma wherever it splits the header into
    cells (every comma-separated file reads as before), else the one of ``;``, tab and ``|``
    that splits it into the most cells (a comma on a tie: one column).

    A header whose names hold commas *and* whose cells are split by another delimiter
    (``Zeit;CPU, %``) reads as comma-separated: name the delimiter then (``--delimiter``).

    >>> detect_delimiter("timestamp;value"), detect_delimiter("ts,cpu;gpu"), detect_delimiter("x")
    (';', ',', ',')
    >>> detect_delimiter('"Zeit, UTC";"Wert, kWh"'), detect_delimiter("ts\\tcpu")
    (';', '\\t')
    """
    best, cells = ",", 1
    for delimiter in _DELIMITERS:
        found = len(_cells(header, delimiter))
        if delimiter == "," and found > 1:
            return ","
        if found > cells:
            best, cells = delimiter, found
    return best


def _cells(text: str, delimiter: str) -> list[str]:
    """The cells of a header line as strict CSV (a quote closes right before a delimiter),
    none if it is not: ``"a, b";"c"`` is not comma-separated."""
    try:
        return next(csv.reader((text,), delimiter=delimiter, strict=True), [])
    except csv.Error:
        return []


_EXCEL_SEP = re.compile(r"sep=([^\w\"\r\n ])")  # Excel may open a file with "sep=;"
_GROUPED = re.compile(r"[+-]?\d{1,3}(?:\.\d{3})+,\d*")  # 1.234,5: a point groups thousands


def number_text(cell: str, delimiter: str) -> str:
    """``cell`` with a decimal comma made a point, in a file whose cells are not split by
    commas (``12,5`` there is twelve and a half, ``1.234,5`` is 1234.5); any other cell is
    unchanged (``1.100`` stays 1.1: with no comma, a point is a decimal point).

    >>> number_text(" 12,5", ";"), number_text("12,5", ","), number_text("-1.234.567,5", ";")
    (' 12.5', '12,5', '-1234567.5')
    """
    if delimiter == "," or "," not in cell:
        return cell
    if cell.count(",") == 1 and "." not in cell:
        return cell.replace(",", ".")
    text = cell.strip()
    if _GROUPED.fullmatch(text):
        return text.replace(".", "").replace(",", ".")
    return cell


def _parse(text: str, delimiter: str) -> tuple[list[str] | None, str]:
    """The cells of one line and "", or None and what is wrong with it."""
    try:
        cells = next(csv.reader((text,), delimiter=delimiter), [])
    except csv.Error as exc:
        return None, str(exc)
    # Within one line, only a quote left open keeps the line's end inside a cell.
    if cells and cells[-1][-1:] == "\n":
        cells[-1] = cells[-1][:-1]
        return cells, UNCLOSED_QUOTE
    return cells, ""


def _record(text: str, width: int, delimiter: str) -> list[str] | None:
    """The cells of several lines read as one row, if they make a well-formed row of
    ``width`` cells (strict CSV: the quote closes right before a delimiter or the end)."""
    try:
        cells = next(csv.reader((text,), strict=True, delimiter=delimiter), [])
    except csv.Error:
        return None
    return cells if len(cells) == width else None


class _Lines:
    """Physical lines of a text file, at most ``max_chars`` read at once, with push-back."""

    def __init__(self, handle: TextIO, max_chars: int) -> None:
        self.handle = handle
        self.max_chars = max_chars
        self.back: list[str | int] = []

    def next(self) -> str | int | None:
        """The next line (ending with ``\\n``), the length of an over-long one, or None."""
        if self.back:
            return self.back.pop()
        line = self.handle.readline(self.max_chars + 1)
        if not line:
            return None
        if len(line) <= self.max_chars or line[-1] == "\n":
            return line if line[-1] == "\n" else line + "\n"
        length = len(line)  # no line end in it: skip the rest in pieces
        while True:
            piece = self.handle.readline(_PIECE)
            length += len(piece.rstrip("\n"))
            if not piece or piece[-1] == "\n":
                return length


def _span(
    lines: _Lines, first: str, width: int, max_chars: int, delimiter: str
) -> tuple[list[str] | None, int]:
    """A row whose quoted field spans lines, from ``first`` on, and how many more lines it
    took; (None, 0) when no well-formed row of ``width`` cells closes it within
    ``_MAX_SPAN`` lines and ``max_chars`` characters (the lines read are then un-read)."""
    joined = first
    taken: list[str | int] = []
    while len(taken) < _MAX_SPAN - 1:
        more = lines.next()
        if more is None:
            break
        taken.append(more)
        if isinstance(more, int) or len(joined) + len(more) > max_chars:
            break
        joined += more
        record = _record(joined, width, delimiter)
        if record is not None:
            return record, len(taken)
    lines.back.extend(reversed(taken))
    return None, 0


def csv_lines(handle: TextIO, max_chars: int, delimiter: str | None = ",") -> Iterator[CsvLine]:
    """Every row of ``handle`` as a `CsvLine`; the first line is the header.

    ``handle`` is opened with ``newline=None`` (universal newlines: ``\\r\\n`` and a lone
    ``\\r`` end a line, as they do for the ``csv`` module). Blank lines come out as empty
    ``cells``; decoding errors of ``handle`` propagate. ``delimiter`` None: the first line
    that is not blank chooses it (`detect_delimiter`), or names it, as Excel's ``sep=;``
    does (that line is then no row).
    """
    lines = _Lines(handle, max_chars)
    number = 0
    width: int | None = None  # the header's cells: what a row spanning lines must have
    while True:
        line = lines.next()
        if line is None:
            return
        number += 1
        if delimiter is None and isinstance(line, str) and line.strip():
            named = _EXCEL_SEP.fullmatch(line.rstrip("\r\n"))
            if named:  # Excel's first line naming the delimiter: not a row
                delimiter = named.group(1)
                continue
            delimiter = detect_delimiter(line)
        split = delimiter or ","
        if isinstance(line, int):
            too_long = f"line is {line} characters (max {max_chars})"
            yield CsvLine(number, None, too_long, too_long=True, delimiter=split)
            continue
        cells, error = _parse(line, split)
        if error == UNCLOSED_QUOTE and width is not None:
            record, taken = _span(lines, line, width, max_chars, split)
            if record is not None:
                yield CsvLine(number, record, delimiter=split)
                number += taken
                continue
        if width is None and cells is not None:
            width = len(cells)
        yield CsvLine(number, cells, error, delimiter=split)
