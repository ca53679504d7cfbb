"""Single-series tools for ops: an exported metric in, scores or forecasts out.

Both tools are strictly online — row ``i`` is computed from rows ``0..i`` only, so truncating
the input never changes earlier output rows — keep the row count and order, and preserve any
extra input columns. They drive the very models the engine runs per series.

Timestamps may be RFC 3339 (with or without offset; naive means UTC), ``YYYY-MM-DD HH:MM:SS``
(NAB style), or epoch seconds / milliseconds. The columns are ``timestamp`` and ``value``
unless named otherwise (any case). The header chooses the delimiter (``,``, ``;``, tab or
``|``) and, where it is not a comma, the values their decimal mark (`_decimal_mark`); the
output keeps both.

A value that is empty or not a number is "missing": nothing is learnt from its row, which is
kept (its anomaly score empty; its forecasts still those for the rows after it, made at the
last row learnt, so the nearest are further ahead and the last ones empty). So is a row whose
quote does not close: a stray ``"`` spoils its own row only (`app.offline.csv_lines`). A row
shorter than the header is padded and a row's empty cells past it are dropped, so the outputs
stay under their names.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from app.core.anomaly import SeriesAnomalyDetector
from app.core.forecast import SeriesForecaster
from app.errors import PsoError
from app.offline.csv_lines import CsvLine, csv_lines, decimal_mark, number_text

Progress = Callable[[int], None]


class SeriesFileError(PsoError, ValueError):
    """The input file is not a usable series (message names the row or column)."""


def parse_timestamp(text: str) -> int:
    """Epoch milliseconds from RFC 3339, ``YYYY-MM-DD HH:MM:SS`` or epoch s/ms."""
    raw = text.strip()
    try:
        number = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ValueError(f"timestamp {text!r} is not finite")
        return int(number if number > 1e11 else number * 1000)
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"timestamp {text!r} is not RFC 3339 or epoch") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


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
class _Table:
    """An opened series file: its header, its data rows (each line with its cells), where the
    timestamps and values are, and the delimiter its cells are split by."""

    header: list[str]
    rows: Iterator[tuple[CsvLine, list[str]]]
    t_col: int
    v_col: int
    delimiter: str
    header_line: int = 1
    mark: str = "."  # the decimal mark of the value column (`decimal_mark`)
    numbers: int = 0  # values read as numbers so far
    not_number: tuple[int, str] | None = None  # the first value cell that was not one
    last_ts: int | None = None
    forwards: int = 0  # rows later than the row before them...
    backwards: int = 0  # ...and earlier

    def timestamp(self, row: list[str], lineno: int) -> int:
        """The row's timestamp in epoch ms, counted for `check`."""
        ts = _timestamp(row, self.t_col, lineno)
        if self.last_ts is not None:
            self.forwards += ts > self.last_ts
            self.backwards += ts < self.last_ts
        self.last_ts = ts
        return ts

    def value(self, row: list[str], lineno: int) -> float:
        """The row's value (NaN: missing), counted for `check`."""
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
        in a comma-separated file), or rows that mostly go back in time (newest first)."""
        if self.backwards > self.forwards:
            raise SeriesFileError(
                f"{self.backwards} rows are earlier than the row before them, {self.forwards}"
                " later: the models learn in time order, so sort the rows oldest first"
            )
        if self.numbers == 0 and self.not_number is not None:
            lineno, cell = self.not_number
            raise SeriesFileError(
                f"no value in column {self.header[self.v_col]!r} is a number"
                f" (row {lineno}: {cell!r})"
            )

    def writer(self, fout: TextIO, added: list[str]) -> Any:
        """A CSV writer in the input's delimiter, the header and ``added`` written."""
        writer = csv.writer(fout, delimiter=self.delimiter, lineterminator="\n")
        writer.writerow([*self.header, *added])
        return writer


def _rows(handle: TextIO, columns: SeriesColumns) -> _Table:
    """The file as a `_Table`; the two columns are found by name, in any case.

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
            split = "a tab" if first.delimiter == "\t" else repr(first.delimiter)
            raise SeriesFileError(
                f"missing column {column!r}: the header, split at {split}, is {header}"
                f" (name yours with {option}, the delimiter with --delimiter)"
            )
        found.append(names.index(column.strip().lower()))
    rows = _padded(lines, len(header))
    return _Table(header, rows, found[0], found[1], first.delimiter, first.number)


def _decimal_mark(source: Path, table: _Table) -> str:
    """The decimal mark of the value column, read ahead (`decimal_mark`): a point in a
    comma-separated file; elsewhere the first value that shows one says, so ``1.000`` is a
    thousand in a file of ``1.234,5`` and one in a file of ``0.25``."""
    if table.delimiter == ",":
        return "."
    with source.open(newline=None, encoding="utf-8-sig", errors="replace") as fh:
        lines = csv_lines(fh, _MAX_LINE_CHARS, delimiter=table.delimiter)
        return decimal_mark(
            line.cells[table.v_col]
            for line in lines
            if line.number > table.header_line
            and line.cells is not None
            and len(line.cells) > table.v_col
        )


def _padded(lines: Iterator[CsvLine], width: int) -> Iterator[tuple[CsvLine, list[str]]]:
    """The data rows as wide as the header: a short row padded, a row's empty cells past
    the header's width dropped (a delimiter at the end of every line), so the outputs stay
    under their names."""
    for line in lines:
        row = line.cells
        if row:
            if len(row) < width:
                row = [*row, *[""] * (width - len(row))]
            elif len(row) > width and not any(cell.strip() for cell in row[width:]):
                row = row[:width]
            yield line, row


def _names_a_descriptor(target: Path) -> bool:
    """Whether ``target`` leads to a process's descriptor (``/dev/stdout``, ``/dev/fd/3``,
    a link to them): its file is a shell's redirection, which must be written, not replaced."""
    path = os.path.abspath(target)
    for _ in range(40):  # the kernel's own limit on a chain of links
        path = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        if path.startswith("/proc/"):
            return True
        if not os.path.islink(path):
            return False
        path = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
    return False


@contextlib.contextmanager
def _output(target: Path) -> Iterator[TextIO]:
    """``target`` opened for writing, whole or not at all.

    Rows go to a temporary file next to ``target``, which replaces it once every row was
    written and synced: a bad row half-way leaves no partial output and an earlier ``target``
    intact, and ``-o`` may name the input itself. A symlink's file is replaced, not the link;
    a hard link to the old file keeps the old rows (as with ``sed -i``). Written as the rows
    come instead: a device, a pipe or a descriptor (``/dev/stdout``, ``/dev/fd/3``), appended
    so a ``>> log`` redirection keeps what the log held; and a writable file in a directory
    this process may not create files in.
    """
    if _names_a_descriptor(target) or (target.exists() and not target.is_file()):
        with target.open("a", newline="") as fh:
            yield fh
        return
    real = Path(os.path.realpath(target))
    if real.is_symlink():  # a loop of links
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(target))
    if real.exists() and not os.access(real, os.W_OK):  # what open(target, "w") would say
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target))
    try:
        fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=".pso-", suffix=".part")
    except PermissionError:
        if not real.exists():
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target)) from None
        with target.open("w", newline="") as fh:  # the file is writable, its directory not
            yield fh
        return
    except OSError as exc:  # reported on the path the user named, not on the temporary one
        raise type(exc)(exc.errno, exc.strerror, str(target)) from None
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _new_file_mode(real))
        os.replace(tmp, real)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _new_file_mode(target: Path) -> int:
    """The mode ``open(target, "w")`` would leave: the old file's, else 0o666 less the umask."""
    with contextlib.suppress(OSError):
        return target.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def count_rows(path: Path) -> int:
    with path.open("rb") as fh:
        return max(0, sum(1 for _ in fh) - 1)


def score_anomalies(
    source: Path,
    target: Path,
    progress: Progress | None = None,
    threshold: float | None = None,
    columns: SeriesColumns = SeriesColumns(),
) -> int:
    """Write ``target`` = ``source`` + ``anomaly_score`` (and ``is_anomaly``); return rows.

    ``columns``: where the series is in the file.
    """
    detector = (
        SeriesAnomalyDetector() if threshold is None else SeriesAnomalyDetector(threshold=threshold)
    )
    rows = 0
    with source.open(newline=None, encoding="utf-8-sig") as fin, _output(target) as fout:
        table = _rows(fin, columns)
        table.mark = _decimal_mark(source, table)
        writer = table.writer(fout, ["anomaly_score", "is_anomaly"])
        for line, row in table.rows:
            if line.error:
                writer.writerow([*row, "", ""])
                rows += 1
                continue
            ts = table.timestamp(row, line.number)
            value = table.value(row, line.number)
            if math.isnan(value):
                writer.writerow([*row, "", ""])
            else:
                verdict = detector.process_one(ts, value)
                score = table.written(f"{verdict.score:.6f}")
                writer.writerow([*row, score, int(verdict.is_anomaly)])
            rows += 1
            if progress is not None and rows % 1000 == 0:
                progress(1000)
        table.check()
    if progress is not None:
        progress(rows % 1000)
    return rows


def _timestamp(row: list[str], column: int, lineno: int) -> int:
    try:
        return parse_timestamp(row[column])
    except (ValueError, IndexError) as exc:
        raise SeriesFileError(f"row {lineno}: {exc}") from None


def forecast_series(
    source: Path,
    target: Path,
    horizon: int,
    level: float,
    progress: Progress | None = None,
    columns: SeriesColumns = SeriesColumns(),
) -> int:
    """Write ``target`` = ``source`` + ``yhat_1..H``, ``lo_1..H``, ``hi_1..H``; return rows.

    Row ``i``'s forecasts are for rows ``i+1 .. i+H``, at the spacing of the first two rows
    (so row 0 has none); they stay empty while the forecaster is warming up. After a missing
    value they are the ones made at the last row learnt for those same times: ``yhat_1`` of
    the row after one missing value is that forecast's second step, and its ``yhat_H`` empty.
    """
    if not 0.0 < level < 1.0:
        raise SeriesFileError("--level must be between 0 and 100 (exclusive)")
    forecaster: SeriesForecaster | None = None
    first: tuple[int, float] | None = None  # row 0, until the spacing is known
    last_index: int | None = None
    row_index: int | None = None  # the row's time in steps (an unreadable row: the last + 1)
    empty = [""] * (3 * horizon)
    rows = 0
    with source.open(newline=None, encoding="utf-8-sig") as fin, _output(target) as fout:
        table = _rows(fin, columns)
        table.mark = _decimal_mark(source, table)
        writer = table.writer(
            fout, [f"{kind}_{h}" for kind in ("yhat", "lo", "hi") for h in range(1, horizon + 1)]
        )
        for line, row in table.rows:
            ts: int | None = None
            value = math.nan
            if not line.error:  # an unreadable line is kept like a missing value
                ts = table.timestamp(row, line.number)
                value = table.value(row, line.number)
            if forecaster is None and ts is None:
                first = None  # the spacing comes from two rows in a row, not across a bad one
            if ts is not None and forecaster is None:
                if first is None:
                    first = (ts, value)
                elif ts > first[0]:
                    step = ts - first[0]
                    forecaster = SeriesForecaster(step_ms=step, horizon=horizon, levels=(level,))
                    if not math.isnan(first[1]):
                        last_index = first[0] // step
                        forecaster.learn_one(last_index * step, first[1])
            out = empty
            if forecaster is not None:
                step = forecaster.step_ms
                if ts is not None:
                    row_index = ts // step
                elif row_index is not None:
                    row_index += 1
                if ts is not None and not math.isnan(value):
                    index = ts // step
                    if last_index is None or index > last_index:
                        forecaster.learn_one(index * step, value)
                        last_index = index
                fc = forecaster.forecast()
                if not fc.warming_up and fc.origin_ms > 0:
                    # fc.point[0] is for the step after the last row learnt; this row's
                    # yhat_1 is for the step after this row
                    skip = 0 if row_index is None else row_index + 1 - fc.origin_ms // step
                    out = [
                        table.written(cell)
                        for steps in (fc.point, fc.lower[level], fc.upper[level])
                        for cell in _ahead(steps, skip)
                    ]
            writer.writerow([*row, *out])
            rows += 1
            if progress is not None and rows % 1000 == 0:
                progress(1000)
        table.check()
    if progress is not None:
        progress(rows % 1000)
    return rows


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _ahead(steps: tuple[float, ...], skip: int) -> list[str]:
    """A forecast's steps from ``skip`` on, as many as it has: empty cells where it has none
    (past its horizon, or before its first step for a row older than the last one learnt).

    >>> _ahead((1.0, 2.0, 3.0), 0), _ahead((1.0, 2.0, 3.0), 2), _ahead((1.0, 2.0, 3.0), -1)
    (['1', '2', '3'], ['3', '', ''], ['', '1', '2'])
    """
    n = len(steps)
    return [_fmt(steps[j]) if 0 <= j < n else "" for j in range(skip, skip + n)]
