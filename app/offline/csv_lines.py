"""CSV read one physical line at a time, each line bounded: a broken row spoils only itself.

Why: the ``csv`` module lets a quoted field run on across lines until its closing quote. In a
telemetry export a stray ``"`` is a typo, not a multi-line field, and the module would then
swallow every following row into that field, up to its 128 KiB field limit, and resume
mid-record: hundreds of good rows lost as one bad one (measured: a stray quote on row 51 of
200 left 51 samples). Here every line is parsed on its own, so a quoted field cannot span
lines. A line longer than ``max_chars`` is skipped in pieces, never held whole.

>>> import io
>>> for line in csv_lines(io.StringIO('a,b\\n1,"2\\n3,4\\n'), max_chars=100):
...     print(line.number, line.cells, line.error or "ok")
1 ['a', 'b'] ok
2 ['1', '2'] a quoted field is not closed on its line
3 ['3', '4'] ok
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

__all__ = ["UNCLOSED_QUOTE", "CsvLine", "csv_lines"]

UNCLOSED_QUOTE = "a quoted field is not closed on its line"
_PIECE = 1 << 16  # characters read at a time while skipping an over-long line


@dataclass(frozen=True, slots=True)
class CsvLine:
    """One physical line of a CSV file.

    ``cells`` is None when the line cannot be read as CSV at all (too long, a NUL, a field
    over the ``csv`` module's limit); ``error`` says why a line is not well-formed CSV ("" when
    it is). A line whose quote never closes has both: the cells as the line reads without its
    closing quote, and ``UNCLOSED_QUOTE``. ``too_long``: the line was longer than allowed
    (and was skipped unread).
    """

    number: int
    cells: list[str] | None
    error: str = ""
    too_long: bool = False


def _parse(line: str) -> tuple[list[str] | None, str]:
    try:
        cells = next(csv.reader((line,)), [])
    except csv.Error as exc:
        return None, str(exc)
    # Within one line, only a quote left open keeps the line's end inside a cell.
    if cells and cells[-1][-1:] in ("\n", "\r"):
        cells[-1] = cells[-1].rstrip("\r\n")
        return cells, UNCLOSED_QUOTE
    return cells, ""


def csv_lines(handle: TextIO, max_chars: int) -> Iterator[CsvLine]:
    """Every line of ``handle`` (opened with ``newline=""``) as a `CsvLine`, numbered from 1.

    Blank lines come out as empty ``cells``; decoding errors of ``handle`` propagate.
    """
    number = 0
    while True:
        line = handle.readline(max_chars + 1)
        if not line:
            return
        number += 1
        if len(line) > max_chars and line[-1] not in "\r\n":
            length = len(line)  # no line end in it
            while True:  # skip the rest of the line in pieces
                piece = handle.readline(_PIECE)
                length += len(piece.rstrip("\r\n"))
                if not piece or piece[-1] in "\r\n":
                    break
            yield CsvLine(number, None, f"line is {length} characters (max {max_chars})", True)
            continue
        cells, error = _parse(line)
        yield CsvLine(number, cells, error)
