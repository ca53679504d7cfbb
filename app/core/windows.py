"""Event-time tumbling windows of load per subsystem.

Windows are ``[start, start + size)`` in epoch milliseconds, aligned to the epoch, so the
same sample always lands in the same window whatever the process. Each subsystem has its own
watermark, ``max event time seen − allowed lateness``; a window closes when the watermark
reaches its end. A per-subsystem (not per-partition) watermark makes the closed windows a
function of that subsystem's own sample order only, so a replay through any number of
partitions or workers closes exactly the same windows. Samples whose window has already
closed are *late*: they are handed back to the caller (to be dead-lettered), never dropped.

Everything here is pure: no clock, no I/O. State converts to and from plain JSON-able dicts
(`to_state` / `from_state`) so it can live in a changelog-backed table without pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.events import LoadWindow, SeriesStats, ms_to_iso

_iso_cache: dict[int, str] = {}


def iso_ms(ms: int) -> str:
    """`ms_to_iso`, cached: every subsystem's windows share the same boundaries."""
    text = _iso_cache.get(ms)
    if text is None:
        if len(_iso_cache) >= 65_536:
            _iso_cache.clear()
        text = _iso_cache[ms] = ms_to_iso(ms)
    return text


def window_start(ts_ms: int, size_ms: int) -> int:
    """Start of the tumbling window that contains ``ts_ms``."""
    return ts_ms - (ts_ms % size_ms)


@dataclass(slots=True)
class SeriesAggregate:
    """Running count/sum/min/max/last of one series in one window.

    ``last`` is the value of the sample with the greatest event time (ties: the later arrival),
    so out-of-order delivery does not change it.
    """

    count: int = 0
    total: float = 0.0
    low: float = 0.0
    high: float = 0.0
    last: float = 0.0
    last_ts: int = -1

    def add(self, value: float, ts_ms: int) -> None:
        if self.count == 0:
            self.low = self.high = value
        else:
            self.low = min(self.low, value)
            self.high = max(self.high, value)
        self.count += 1
        self.total += value
        if ts_ms >= self.last_ts:
            self.last, self.last_ts = value, ts_ms

    def result(self) -> SeriesStats:
        return SeriesStats(
            count=self.count,
            mean=self.total / self.count,
            min=self.low,
            max=self.high,
            last=self.last,
        )

    def to_state(self) -> list[Any]:
        return [self.count, self.total, self.low, self.high, self.last, self.last_ts]

    @classmethod
    def from_state(cls, state: list[Any]) -> SeriesAggregate:
        count, total, low, high, last, last_ts = state
        return cls(int(count), float(total), float(low), float(high), float(last), int(last_ts))


def _fold(aggs: dict[str, SeriesAggregate], values: dict[str, float], ts_ms: int) -> None:
    """`SeriesAggregate.add` of each of one sample's values, inlined (every sample's cost).

    Folded on arrival, while the sample is still in the processor's cache: buffering rows
    and folding them at close was cheaper in a micro-benchmark, but ~20 % of a replay's
    stage 1 went to re-reading those cold dicts.
    """
    for name, value in values.items():
        agg = aggs.get(name)
        if agg is None:
            aggs[name] = SeriesAggregate(1, 0.0 + value, value, value, value, ts_ms)
            continue
        agg.count += 1
        agg.total += value
        if value < agg.low:
            agg.low = value
        elif value > agg.high:
            agg.high = value
        if ts_ms >= agg.last_ts:
            agg.last = value
            agg.last_ts = ts_ms


def _fold_column(
    aggs: dict[str, SeriesAggregate], name: str, column: list[float], last_at: int, ts_ms: int
) -> None:
    """`_fold` of one series over consecutive samples at once, with the same result: the
    values in order (``sum`` adds floats left to right on CPython 3.11), the first of equal
    minima and maxima kept, ``last`` the value at ``last_at``, the last sample with the
    greatest event time ``ts_ms``."""
    agg = aggs.get(name)
    if agg is None:
        aggs[name] = SeriesAggregate(
            len(column), sum(column, 0.0), min(column), max(column), column[last_at], ts_ms
        )
        return
    agg.count += len(column)
    agg.total = sum(column, agg.total)
    low, high = min(column), max(column)
    if low < agg.low:
        agg.low = low
    if high > agg.high:
        agg.high = high
    if ts_ms >= agg.last_ts:
        agg.last = column[last_at]
        agg.last_ts = ts_ms


@dataclass(slots=True)
class OpenWindow:
    """Aggregates of every metric and resource of one subsystem in one open window."""

    start_ms: int
    samples: int = 0
    metrics: dict[str, SeriesAggregate] = field(default_factory=dict)
    resources: dict[str, SeriesAggregate] = field(default_factory=dict)

    def add(self, ts_ms: int, metrics: dict[str, float], resources: dict[str, float]) -> None:
        self.samples += 1
        _fold(self.metrics, metrics, ts_ms)
        _fold(self.resources, resources, ts_ms)

    def close(self, subsystem: str, size_ms: int) -> LoadWindow:
        end = self.start_ms + size_ms
        return LoadWindow(
            event_id=f"load:{subsystem}:{self.start_ms}",
            subsystem=subsystem,
            window_start_ms=self.start_ms,
            window_end_ms=end,
            window_start=iso_ms(self.start_ms),
            window_end=iso_ms(end),
            samples=self.samples,
            metrics={k: self.metrics[k].result() for k in sorted(self.metrics)},
            resources={k: self.resources[k].result() for k in sorted(self.resources)},
        )

    def to_state(self) -> dict[str, Any]:
        return {
            "start": self.start_ms,
            "n": self.samples,
            "m": {k: v.to_state() for k, v in self.metrics.items()},
            "r": {k: v.to_state() for k, v in self.resources.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> OpenWindow:
        return cls(
            start_ms=int(state["start"]),
            samples=int(state["n"]),
            metrics={k: SeriesAggregate.from_state(v) for k, v in state["m"].items()},
            resources={k: SeriesAggregate.from_state(v) for k, v in state["r"].items()},
        )


@dataclass(frozen=True, slots=True)
class AddOutcome:
    """What one sample did: whether it was accepted, and the windows it closed."""

    accepted: bool
    closed: Sequence[LoadWindow]
    reason: str = ""


_ACCEPTED = AddOutcome(accepted=True, closed=())  # shared: most samples close nothing


class WindowedLoad:
    """Tumbling event-time windows for one subsystem.

    Parameters
    ----------
    subsystem
        Name of the subsystem; closed windows carry it.
    size_ms
        Window size in milliseconds.
    lateness_ms
        How far behind the newest event time a sample may be and still update its window.

    Examples
    --------
    >>> w = WindowedLoad("api", size_ms=60_000, lateness_ms=60_000)
    >>> w.add(0, {"cpu": 1.0}, {}).accepted
    True
    >>> [lw.window_start_ms for lw in w.add(120_000, {"cpu": 3.0}, {}).closed]
    [0]
    >>> w.add(30_000, {"cpu": 2.0}, {}).accepted   # its window already closed: late
    False
    """

    def __init__(self, subsystem: str, size_ms: int, lateness_ms: int) -> None:
        self.subsystem = subsystem
        self.size_ms = size_ms
        self.lateness_ms = lateness_ms
        self.max_ts: int | None = None
        self.closed_until: int | None = None  # every window ending at or before this is closed
        self.open: dict[int, OpenWindow] = {}

    @property
    def watermark(self) -> int | None:
        return None if self.max_ts is None else self.max_ts - self.lateness_ms

    def add(self, ts_ms: int, metrics: dict[str, float], resources: dict[str, float]) -> AddOutcome:
        """Fold one sample in; return the windows its event time closed."""
        size = self.size_ms
        start = ts_ms - ts_ms % size
        window = self.open.get(start)
        if window is None:
            # Open windows all end after ``closed_until``: only a new window can be late.
            if self.closed_until is not None and start + size <= self.closed_until:
                return AddOutcome(
                    accepted=False,
                    closed=(),
                    reason=(
                        f"late: window {ms_to_iso(start)} already closed "
                        f"(every window ending by {ms_to_iso(self.closed_until)} is closed)"
                    ),
                )
            window = self.open[start] = OpenWindow(start)
        window.samples += 1  # OpenWindow.add, inlined
        _fold(window.metrics, metrics, ts_ms)
        if resources:
            _fold(window.resources, resources, ts_ms)
        if self.max_ts is None or ts_ms > self.max_ts:
            self.max_ts = ts_ms
            watermark = ts_ms - self.lateness_ms
            until = self.closed_until
            # Windows close only when the watermark enters a later window than before.
            if until is None or (watermark > until and watermark - watermark % size != until):
                return AddOutcome(
                    accepted=True, closed=self._close_until(watermark - watermark % size)
                )
        return _ACCEPTED

    def add_columns(
        self, ts: list[int], metrics: dict[str, list[float]], resources: dict[str, list[float]]
    ) -> tuple[int, list[LoadWindow]]:
        """`add` of samples ``0, 1, ...`` given as columns (`app.codec.BatchColumns`), a run
        of consecutive samples in one window at a time; stops before the first late one.

        Returns how many samples were added (all accepted) and the windows they closed. The
        state afterwards is the same as after `add` of each, in order: a run's own window
        cannot close during the run (that takes a sample a window later), and closing the
        older windows once after the run closes the same ones, in the same order, as
        closing them sample by sample.
        """
        size = self.size_ms
        closed: list[LoadWindow] = []
        n, end = 0, len(ts)
        while n < end:
            start = ts[n] - ts[n] % size
            stop = n + 1
            while stop < end and start <= ts[stop] < start + size:
                stop += 1
            window = self.open.get(start)
            if window is None:
                if self.closed_until is not None and start + size <= self.closed_until:
                    break  # late: `add` words it
                window = self.open[start] = OpenWindow(start)
            whole = n == 0 and stop == end  # the common case: no copies
            run = ts if whole else ts[n:stop]
            newest = max(run)
            last_at = len(run) - 1 - run[::-1].index(newest)
            window.samples += len(run)
            for name, column in metrics.items():
                part = column if whole else column[n:stop]
                _fold_column(window.metrics, name, part, last_at, newest)
            for name, column in resources.items():
                part = column if whole else column[n:stop]
                _fold_column(window.resources, name, part, last_at, newest)
            n = stop
            if self.max_ts is None or newest > self.max_ts:
                self.max_ts = newest
                watermark = newest - self.lateness_ms
                until = self.closed_until
                if until is None or (watermark > until and watermark - watermark % size != until):
                    closed.extend(self._close_until(watermark - watermark % size))
        return n, closed

    def _close_until(self, until: int) -> list[LoadWindow]:
        """Close every open window ending at or before ``until``, oldest first."""
        self.closed_until = until
        ready = sorted(s for s in self.open if s + self.size_ms <= until)
        return [self.open.pop(s).close(self.subsystem, self.size_ms) for s in ready]

    def flush(self) -> list[LoadWindow]:
        """Close every open window now (end of a finite replay); later samples become late."""
        closed = [self.open.pop(s).close(self.subsystem, self.size_ms) for s in sorted(self.open)]
        if closed:
            last_end = closed[-1].window_end_ms
            self.closed_until = max(self.closed_until or last_end, last_end)
        return closed

    def to_state(self) -> dict[str, Any]:
        return {
            "v": 1,
            "size": self.size_ms,
            "late": self.lateness_ms,
            "max_ts": self.max_ts,
            "closed_until": self.closed_until,
            "open": [self.open[s].to_state() for s in sorted(self.open)],
        }

    @classmethod
    def from_state(cls, subsystem: str, state: dict[str, Any]) -> WindowedLoad:
        obj = cls(subsystem, int(state["size"]), int(state["late"]))
        obj.max_ts = state["max_ts"]
        obj.closed_until = state["closed_until"]
        obj.open = {int(w["start"]): OpenWindow.from_state(w) for w in state["open"]}
        return obj
