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
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path

from app.core.anomaly import SeriesAnomalyDetector
from app.core.anomaly.episodes import AnomalyEpisodes
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
    notes: list[str] | None = None,
) -> int:
    """Write ``target`` = ``source`` + ``yhat_1..H``, ``lo_1..H``, ``hi_1..H``; return rows.

    Row ``i``'s forecasts are for rows ``i+1 .. i+H``, at the spacing of the first two rows
    (so row 0 has none; `_RowForecasts` says when another replaces it); they stay empty while
    the forecaster is warming up. After a missing value they are the ones made at the last
    row learnt for those same times: ``yhat_1`` of the row after one missing value is that
    forecast's second step, and its ``yhat_H`` empty.
    A row older than one learnt before it is not learnt, and its first forecasts are empty:
    how many such rows there were is appended to ``notes`` (one row dated years ahead makes
    every later row one).
    """
    if not 0.0 < level < 1.0:
        raise SeriesFileError("--level must be between 0 and 100 (exclusive)")
    forecasts = _RowForecasts(horizon, level)
    empty = [""] * (3 * horizon)
    rows = late = first_late = 0
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
            if forecasts.late:
                late += 1
                first_late = first_late or line.number
            rows += 1
            if progress is not None and rows % 1000 == 0:
                progress(1000)
        table.check()
    if progress is not None:
        progress(rows % 1000)
    if late and notes is not None:
        notes.append(
            f"{late} rows were older than a row learnt before them (the first at line "
            f"{first_late}): they were not learnt, and their nearest forecasts are empty"
        )
    return rows


_SPACINGS = 20  # spacings looked at while the forecaster warms up, for one unlike the rest
_BAND_LEVEL = 0.95  # the interval a value must leave to be kept out of training (as the engine)


class _RowForecasts:
    """A file's forecaster, row by row: made once two rows in a row give the spacing, taught
    each value at its step, and asked for the forecasts of the rows after a row.

    As in the engine, a value the series' anomaly detector flags and that falls outside the
    forecaster's interval is learnt as the model expected it (`AnomalyEpisodes`): one absurd
    value (1e300 among values of 10) would otherwise set the forecasts for the rest of the
    file; before the detector can flag anything (its warm-up), a value more than 100 times
    the width of the values seen beyond them is learnt the same way. Once, at the 20th
    spacing, a first spacing that at most two of them keep to (a first row one second before
    the minutely rows) is replaced by the most common one and the rows kept are learnt again,
    if the forecaster is still warming up: at the wrong spacing every row was a gap, and it
    never warmed up.
    """

    def __init__(self, horizon: int, level: float) -> None:
        self.horizon = horizon
        self.level = level
        self.levels = tuple(sorted({level, _BAND_LEVEL}))
        self.forecaster: SeriesForecaster | None = None
        self.first: tuple[int, float] | None = None  # row 0, until the spacing is known
        self.last_index: int | None = None  # the step of the last value learnt
        self.row_index: int | None = None  # this row's step (an unreadable row: the last + 1)
        self.late = False  # this row is older than the last value learnt
        self.recent: deque[tuple[int, float]] = deque(maxlen=_SPACINGS + 1)
        self.spacings: deque[int] = deque(maxlen=_SPACINGS)
        self.spacing_checked = False
        self.seen = _Range()  # the values learnt, for the guard while the detector warms up
        self._start()

    def _start(self) -> None:
        self.detector = SeriesAnomalyDetector()
        self.episodes = AnomalyEpisodes()
        self.band: tuple[float, float, float] | None = None  # for the step after the last
        self.last_index = None

    def after_row(self, ts: int | None, value: float) -> list[str] | None:
        """The ``yhat``, ``lo`` and ``hi`` cells for the ``horizon`` rows after this one (None
        while there is no forecast); ``ts`` None for an unreadable row, ``value`` NaN for a
        missing one."""
        self.late = False
        if ts is not None and not self.spacing_checked:
            self._note(ts, value)
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
                self._learn(index, value)
            else:
                self.late = index < self.last_index
        fc = forecaster.forecast()
        if fc.warming_up or self.last_index is None:
            return None
        # fc.point[0] is for the step after the last value learnt; yhat_1 for the step after
        # this row
        skip = 0 if self.row_index is None else self.row_index + 1 - fc.origin_ms // step
        steps = (fc.point, fc.lower[self.level], fc.upper[self.level])
        return [cell for values in steps for cell in _ahead(values, skip)]

    def _learn(self, index: int, value: float) -> None:
        """Teach the value of step ``index``: as it is, or, if it is an anomaly outside the
        forecaster's interval, as the model expected it."""
        forecaster = self.forecaster
        assert forecaster is not None
        ts = index * forecaster.step_ms
        band = self.band if self.last_index == index - 1 else None
        verdict = self.detector.process_raw(ts, value, forecast=band)
        likelihood = 0.0 if verdict is None else verdict[0]
        outside = None if band is None else not band[1] <= value <= band[2]
        _, trusted = self.episodes.judge(likelihood >= self.detector.threshold, outside, ts)
        if self.detector.n <= self.detector.warmup:  # before it can flag anything
            if self.seen.absurd(value):
                trusted = False  # a glitch among the first values
            else:
                self.seen.add(value)
        forecaster.learn_one(ts, value, trusted=trusted)
        self.last_index = index
        fc = forecaster.forecast()
        wide = self.levels[-1]
        self.band = None if fc.warming_up else (fc.point[0], fc.lower[wide][0], fc.upper[wide][0])

    def _note(self, ts: int, value: float) -> None:
        """Keep the latest rows and spacings; once, at the 20th spacing, replace a first
        spacing that the rows do not keep to (the forecaster still warming up)."""
        recent = self.recent
        if recent and ts > recent[-1][0]:
            self.spacings.append(ts - recent[-1][0])
        recent.append((ts, value))
        forecaster = self.forecaster
        if forecaster is None or self.spacing_checked or len(self.spacings) < _SPACINGS:
            return
        self.spacing_checked = True
        step = forecaster.step_ms
        if sum(abs(d - step) <= 0.1 * step for d in self.spacings) >= 3:
            return  # rows keep to it often enough (a gappy series has longer spacings too)
        if not forecaster.forecast().warming_up:
            return
        counts = Counter(self.spacings)
        usual = min(counts, key=lambda d: (-counts[d], d))  # the most common, then smallest
        self.forecaster = SeriesForecaster(step_ms=usual, horizon=self.horizon, levels=self.levels)
        self._start()
        for row_ts, row_value in list(recent)[:-1]:  # this row is learnt by the caller
            index = row_ts // usual
            if not math.isnan(row_value) and (self.last_index is None or index > self.last_index):
                self._learn(index, row_value)

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
                step_ms=step, horizon=self.horizon, levels=self.levels
            )
            if not math.isnan(first_value):
                self._learn(first_ts // step, first_value)


class _Range:
    """The values seen, and whether a value lies absurdly far from them: more than 100 times
    their width beyond them (without the most extreme on each side, once 10 were seen), or a
    million times larger than any of them. 1e300 among values of 10, not a series that is
    still rising.

    >>> seen = _Range()
    >>> seen.add(10.0)
    >>> seen.absurd(1e300), seen.absurd(1e5)
    (True, False)
    >>> for i in range(10):
    ...     seen.add(10.0 + 0.1 * (i % 3))
    >>> seen.absurd(1e5), seen.absurd(25.0)
    (True, False)
    """

    def __init__(self) -> None:
        self.count = 0
        self.largest = 0.0  # the largest magnitude seen
        self.values: list[float] = []  # the two lowest and the two highest, sorted

    def add(self, x: float) -> None:
        self.count += 1
        self.largest = max(self.largest, abs(x))
        values = sorted([*self.values, x])
        self.values = values if len(values) <= 4 else [*values[:2], *values[-2:]]

    def absurd(self, x: float) -> bool:
        if self.largest > 0.0 and abs(x) > 1e6 * self.largest:
            return True
        if self.count < 10:
            return False
        lo, hi = self.values[1], self.values[-2]
        width = hi - lo
        return width > 0.0 and (x > hi + 100.0 * width or x < lo - 100.0 * width)


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
