"""Single-series tools for ops: an exported metric in, scores or forecasts out.

Both tools are strictly online — row ``i`` is computed from rows ``0..i`` only, so truncating
the input never changes earlier output rows — keep the row count and order, and preserve any
extra input columns. They drive the very models the engine runs per series. The file is read
by `app.offline.series_file` and written whole or not at all (`app.offline.whole_file`).

A missing value (`app.offline.series_file`) teaches nothing: its row is kept, its anomaly
score empty, its forecasts still those for the rows after it, made at the last row learnt (so
the nearest are further ahead and the last ones empty).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from app.core.anomaly import SeriesAnomalyDetector
from app.core.forecast import SeriesForecaster
from app.offline.series_file import DEFAULT_COLUMNS, SeriesColumns, SeriesFileError, open_series
from app.offline.whole_file import written_whole

__all__ = ["forecast_series", "score_anomalies"]

Progress = Callable[[int], None]


def score_anomalies(
    source: Path,
    target: Path,
    progress: Progress | None = None,
    threshold: float | None = None,
    columns: SeriesColumns = DEFAULT_COLUMNS,
) -> int:
    """Write ``target`` = ``source`` + ``anomaly_score`` (and ``is_anomaly``); return rows.

    ``columns``: where the series is in the file.
    """
    detector = (
        SeriesAnomalyDetector() if threshold is None else SeriesAnomalyDetector(threshold=threshold)
    )
    rows = 0
    with source.open(newline=None, encoding="utf-8-sig") as fin, written_whole(target) as fout:
        table = open_series(fin, source, columns)
        writer = table.writer(fout, ["anomaly_score", "is_anomaly"])
        for line, row in table.rows:
            if line.error:
                writer.writerow([*row, "", ""])
                rows += 1
                continue
            ts = table.read_timestamp(row, line.number)
            value = table.read_value(row, line.number)
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


def forecast_series(
    source: Path,
    target: Path,
    horizon: int,
    level: float,
    progress: Progress | None = None,
    columns: SeriesColumns = DEFAULT_COLUMNS,
) -> int:
    """Write ``target`` = ``source`` + ``yhat_1..H``, ``lo_1..H``, ``hi_1..H``; return rows.

    Row ``i``'s forecasts are for rows ``i+1 .. i+H``, at the spacing of the first two rows
    (so row 0 has none); they stay empty while the forecaster is warming up. After a missing
    value they are the ones made at the last row learnt for those same times: ``yhat_1`` of
    the row after one missing value is that forecast's second step, and its ``yhat_H`` empty.
    """
    if not 0.0 < level < 1.0:
        raise SeriesFileError("--level must be between 0 and 100 (exclusive)")
    forecasts = _RowForecasts(horizon, level)
    empty = [""] * (3 * horizon)
    rows = 0
    with source.open(newline=None, encoding="utf-8-sig") as fin, written_whole(target) as fout:
        table = open_series(fin, source, columns)
        writer = table.writer(
            fout, [f"{kind}_{h}" for kind in ("yhat", "lo", "hi") for h in range(1, horizon + 1)]
        )
        for line, row in table.rows:
            ts: int | None = None
            value = math.nan
            if not line.error:  # an unreadable line is kept like a missing value
                ts = table.read_timestamp(row, line.number)
                value = table.read_value(row, line.number)
            cells = forecasts.after_row(ts, value)
            writer.writerow([*row, *(empty if cells is None else map(table.written, cells))])
            rows += 1
            if progress is not None and rows % 1000 == 0:
                progress(1000)
        table.check()
    if progress is not None:
        progress(rows % 1000)
    return rows


class _RowForecasts:
    """A file's forecaster, row by row: made once two rows in a row give the spacing, taught
    each value at its step, and asked for the forecasts of the rows after a row."""

    def __init__(self, horizon: int, level: float) -> None:
        self.horizon = horizon
        self.level = level
        self.forecaster: SeriesForecaster | None = None
        self.first: tuple[int, float] | None = None  # row 0, until the spacing is known
        self.last_index: int | None = None  # the step of the last value learnt
        self.row_index: int | None = None  # this row's step (an unreadable row: the last + 1)

    def after_row(self, ts: int | None, value: float) -> list[str] | None:
        """The ``yhat``, ``lo`` and ``hi`` cells for the ``horizon`` rows after this one (None
        while there is no forecast); ``ts`` None for an unreadable row, ``value`` NaN for a
        missing one."""
        if self.forecaster is None:
            self._find_spacing(ts, value)
        forecaster = self.forecaster
        if forecaster is None:
            return None
        step = forecaster.step_ms
        if ts is not None:
            self.row_index = ts // step
        elif self.row_index is not None:
            self.row_index += 1
        if ts is not None and not math.isnan(value):
            index = ts // step
            if self.last_index is None or index > self.last_index:
                forecaster.learn_one(index * step, value)
                self.last_index = index
        fc = forecaster.forecast()
        if fc.warming_up or fc.origin_ms <= 0:
            return None
        # fc.point[0] is for the step after the last value learnt; yhat_1 for the step after
        # this row
        skip = 0 if self.row_index is None else self.row_index + 1 - fc.origin_ms // step
        steps = (fc.point, fc.lower[self.level], fc.upper[self.level])
        return [cell for values in steps for cell in _ahead(values, skip)]

    def _find_spacing(self, ts: int | None, value: float) -> None:
        """The forecaster, once a row follows the first one in time (an unreadable row in
        between starts over: the spacing comes from two rows in a row)."""
        if ts is None:
            self.first = None
        elif self.first is None:
            self.first = (ts, value)
        elif ts > self.first[0]:
            first_ts, first_value = self.first
            step = ts - first_ts
            self.forecaster = SeriesForecaster(
                step_ms=step, horizon=self.horizon, levels=(self.level,)
            )
            if not math.isnan(first_value):
                self.last_index = first_ts // step
                self.forecaster.learn_one(self.last_index * step, first_value)


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
