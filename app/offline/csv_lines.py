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
(`decimal_mark` tells the file's mark from its numbers, `number_text` reads them).

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO

__all__ = [
    "UNCLOSED_QUOTE",
    "CsvLine",
    "csv_lines",
    "decimal_mark",
    "delimiter_name",
    "detect_delimiter",
    "number_text",
    "shown_mark",
]

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

    @property
    def blank(self) -> bool:
        """No cell has anything in it: an empty line, or ``;;`` (a spreadsheet's empty row)."""
        return self.cells is not None and not any(cell.strip() for cell in self.cells)


def delimiter_name(delimiter: str) -> str:
    """How a message names a delimiter: ``';'``, or ``a tab``."""
    return "a tab" if delimiter == "\t" else repr(delimiter)


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
    """The cells of ``text`` as strict CSV (a quote closes right before a delimiter or the
    end), none if it is not: ``"a, b";"c"`` is not comma-separated."""
    try:
        return next(csv.reader((text,), delimiter=delimiter, strict=True), [])
    except csv.Error:
        return []


_BLANK = " \t\r\n,;|"  # a line of only these has no cell to name (an empty spreadsheet row)
_EXCEL_SEP = re.compile(r"sep=([^\w\"\r\n ])")  # Excel may open a file with "sep=;"
_NUMBER = re.compile(r"[+-]?[\d.,]*\d[\d.,]*(?:[eE][+-]?\d+)?")
_GROUPS = {
    ".": re.compile(r"[1-9]\d{0,2}(?:\.\d{3})+"),
    ",": re.compile(r"[1-9]\d{0,2}(?:,\d{3})+"),
}


def shown_mark(cell: str) -> str | None:
    """The decimal mark a number's text shows: ``,`` (``12,5``, ``1.234,5``) or ``.``
    (``12.5``, ``1,234.5``); None when it shows none: an integer, or ``1.000`` / ``1,000``
    (a thousand, or one to three decimals?).

    >>> [shown_mark(c) for c in ("12,5", "1.234,5", "0.25", "1,234.5", "1.000", "7", "n/a")]
    [',', ',', '.', '.', None, None, None]
    >>> shown_mark("1.234.567"), shown_mark("1,234,567")
    (',', '.')
    """
    text = cell.strip().lstrip("+-")
    if not _NUMBER.fullmatch(text):
        return None
    point, comma = text.rfind("."), text.rfind(",")
    if point >= 0 and comma >= 0:
        return "." if point > comma else ","
    if text.count(".") > 1:  # a mark seen twice groups thousands: 1.234.567
        return ","
    if text.count(",") > 1:
        return "."
    mark = "." if point >= 0 else "," if comma >= 0 else None
    if mark is None or _GROUPS[mark].fullmatch(text.split("e")[0].split("E")[0]):
        return None
    return mark


def decimal_mark(cells: Iterable[str], delimiter: str) -> str:
    """The decimal mark of the numbers of a file split by ``delimiter``: a point in a
    comma-separated file; else the first cell that shows one says (`shown_mark`); when none
    does, a comma in a ``;`` file (the delimiter of locales that write ``12,5``), else a point.

    >>> decimal_mark(["1.000", "2.500", "1.250,5"], ";"), decimal_mark(["1.000", "2.5"], ";")
    (',', '.')
    >>> decimal_mark(["12,500"], ";"), decimal_mark(["12,500"], "\\t"), decimal_mark(["1,5"], ",")
    (',', '.', '.')
    """
    if delimiter == ",":
        return "."
    for cell in cells:
        mark = shown_mark(cell)
        if mark is not None:
            return mark
    return "," if delimiter == ";" else "."


def number_text(cell: str, mark: str) -> str:
    """``cell`` as Python reads a number, in a file whose decimal mark is ``mark``: the other
    mark, where it groups thousands, dropped; a decimal comma made a point.

    >>> number_text(" 12,5", ","), number_text("-1.234.567,5", ","), number_text("1.000", ",")
    (' 12.5', '-1234567.5', '1000')
    >>> number_text("1,000.25", "."), number_text("12,5", "."), number_text("1.000", ".")
    ('1000.25', '12,5', '1.000')
    """
    if mark == ",":
        if "." in cell:
            text = cell.strip()
            whole, comma, decimals = text.partition(",")
            if _GROUPS["."].fullmatch(whole.lstrip("+-")) and "," not in decimals:
                cell = whole.replace(".", "") + ("." + decimals if comma else "")
            return cell
        return cell.replace(",", ".") if cell.count(",") == 1 else cell
    if "," in cell:
        text = cell.strip()
        whole, dot, decimals = text.partition(".")
        if _GROUPS[","].fullmatch(whole.lstrip("+-")):
            return whole.replace(",", "") + dot + decimals
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
    ``width`` cells (strict CSV, as `_cells` reads it)."""
    cells = _cells(text, delimiter)
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
    with a cell chooses it (`detect_delimiter`), or names it, as Excel's ``sep=;`` does
    (that line is no row, whatever the delimiter).
    """
    lines = _Lines(handle, max_chars)
    number = 0
    width: int | None = None  # the header's cells: what a row spanning lines must have
    started = False
    while True:
        line = lines.next()
        if line is None:
            return
        number += 1
        if not started and isinstance(line, str) and line.strip(_BLANK):
            started = True  # the first line with a cell: Excel's "sep=;" or the header
            named = _EXCEL_SEP.fullmatch(line.rstrip("\r\n"))
            if named:  # not a row
                delimiter = delimiter or named.group(1)
                continue
            delimiter = delimiter or detect_delimiter(line)
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
