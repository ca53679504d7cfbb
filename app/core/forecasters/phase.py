"""Where a window sits in the UTC day and week, as linear-spline weights on coarse knots.

The seasonal profile never stores lags. It stores one value per *knot*: ``n_daily`` knots over
the time of day and ``n_weekly`` knots over the time of week (defaults: every 10 min and every
30 min, i.e. 144 + 336 values). A window's seasonal value is the linear interpolation between the
two daily knots and the two weekly knots around the window's centre, so each window touches
exactly four knots with four weights. This module turns a window index into those four
``(knot, weight)`` pairs; it is pure arithmetic on integer milliseconds since the epoch.

Because a window's phase depends only on its index modulo the windows of a week, the rows are
tabulated once per ``(step_ms, daily_knot_ms, weekly_knot_ms)`` and shared by every series
(the table is never pickled: `SeasonalGrid` pickles as a reference to `grid_for`).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
_TABLE_MAX_WINDOWS = 100_800  # one week of 6 s windows; beyond that, rows are computed on demand
_LIST_MAX_WINDOWS = 20_160  # ~4 MB of Python lists at 60 s windows, shared by all series
_TABLE_EXTRA_ROWS = 256  # rows past the end of the week, so a horizon slice never wraps

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class SeasonalGrid:
    """Linear-spline knots over the time of day and the time of week (UTC).

    Knot vector layout: ``[daily knots 0..n_daily-1 | weekly knots 0..n_weekly-1]``.

    Parameters
    ----------
    step_ms
        Window length; a window's phase is taken at its centre (``start + step/2``).
    daily_knot_ms
        Spacing of the time-of-day knots (raised to ``step_ms`` if smaller: a knot finer
        than a window would never be seen).
    weekly_knot_ms
        Spacing of the time-of-week knots (same rule).

    Examples
    --------
    >>> g = grid_for(60_000, 600_000, 1_800_000)
    >>> g.n_daily, g.n_weekly
    (144, 336)
    >>> idx, wt = g.row(0)  # the window 00:00-00:01 UTC, centre 00:00:30
    >>> idx[0], round(wt[0], 3), round(wt[1], 3)
    (0, 0.95, 0.05)
    """

    def __init__(self, step_ms: int, daily_knot_ms: int, weekly_knot_ms: int) -> None:
        if step_ms < 1:
            raise ValueError("step_ms must be >= 1")
        self.step_ms = step_ms
        self.daily_knot_ms = daily_knot_ms
        self.weekly_knot_ms = weekly_knot_ms
        self.n_daily = max(1, round(DAY_MS / max(daily_knot_ms, step_ms)))
        self.n_weekly = max(1, round(WEEK_MS / max(weekly_knot_ms, step_ms)))
        self.n_knots = self.n_daily + self.n_weekly
        # Windows per knot spacing = weight one knot receives per visit (hat weights sum to it).
        self.daily_windows = max(1.0, DAY_MS / self.n_daily / step_ms)
        self.weekly_windows = max(1.0, WEEK_MS / self.n_weekly / step_ms)
        self.week_windows = WEEK_MS // step_ms if WEEK_MS % step_ms == 0 else 0
        self._idx: IntArray | None = None
        self._wt: FloatArray | None = None
        self._idx_rows: list[list[int]] = []
        self._wt_rows: list[list[float]] = []
        if 0 < self.week_windows <= _TABLE_MAX_WINDOWS:
            n = np.arange(self.week_windows + _TABLE_EXTRA_ROWS, dtype=np.int64)
            idx, wt = self._compute(n)
            idx.setflags(write=False)
            wt.setflags(write=False)
            self._idx, self._wt = idx, wt
            if self.week_windows <= _LIST_MAX_WINDOWS:  # Python rows: faster scalar access
                self._idx_rows = idx[: self.week_windows].tolist()
                self._wt_rows = wt[: self.week_windows].tolist()

    def __reduce__(self) -> tuple[object, tuple[int, int, int]]:
        # Pickle as a reference: the table is shared and rebuilt (once) on load.
        return (grid_for, (self.step_ms, self.daily_knot_ms, self.weekly_knot_ms))

    def _compute(self, n: IntArray) -> tuple[IntArray, FloatArray]:
        centre = n * self.step_ms + self.step_ms // 2
        u = (centre % DAY_MS).astype(np.float64) * (self.n_daily / DAY_MS)
        v = (centre % WEEK_MS).astype(np.float64) * (self.n_weekly / WEEK_MS)
        u0 = np.floor(u)
        v0 = np.floor(v)
        f = u - u0
        g = v - v0
        i0 = u0.astype(np.int64) % self.n_daily
        j0 = v0.astype(np.int64) % self.n_weekly
        idx = np.stack(
            [
                i0,
                (i0 + 1) % self.n_daily,
                self.n_daily + j0,
                self.n_daily + (j0 + 1) % self.n_weekly,
            ],
            axis=1,
        )
        wt = np.stack([1.0 - f, f, 1.0 - g, g], axis=1)
        return idx, wt

    def row(self, n: int) -> tuple[list[int], list[float]]:
        """Knots and weights of window ``n`` (``start_ms = n * step_ms``), as Python lists."""
        if self._idx_rows:
            r = n % self.week_windows
            return self._idx_rows[r], self._wt_rows[r]
        if self._idx is not None and self._wt is not None:
            r = n % self.week_windows
            return self._idx[r].tolist(), self._wt[r].tolist()
        idx, wt = self._compute(np.array([n], dtype=np.int64))
        return idx[0].tolist(), wt[0].tolist()

    def rows(self, n: int, count: int) -> tuple[IntArray, FloatArray]:
        """Knots ``(count, 4)`` and weights ``(count, 4)`` of windows ``n .. n+count-1``."""
        if self._idx is not None and self._wt is not None and count <= _TABLE_EXTRA_ROWS:
            r = n % self.week_windows
            return self._idx[r : r + count], self._wt[r : r + count]
        return self._compute(np.arange(n, n + count, dtype=np.int64))


_GRIDS: dict[tuple[int, int, int], SeasonalGrid] = {}


def grid_for(step_ms: int, daily_knot_ms: int, weekly_knot_ms: int) -> SeasonalGrid:
    """The shared `SeasonalGrid` for these spacings (built once per process)."""
    key = (int(step_ms), int(daily_knot_ms), int(weekly_knot_ms))
    grid = _GRIDS.get(key)
    if grid is None:
        if len(_GRIDS) >= 32:  # bounded: configurations are few; never grow without limit
            _GRIDS.pop(next(iter(_GRIDS)))
        grid = SeasonalGrid(*key)
        _GRIDS[key] = grid
    return grid


def log_keep(rate: float, windows_per_visit: float) -> float:
    """Log of the per-unit-weight retention so that one full knot visit keeps ``1 - rate``."""
    rate = min(max(rate, 1e-9), 1.0 - 1e-9)
    return math.log1p(-rate) / windows_per_visit
