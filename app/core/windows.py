"""Event-time tumbling windows of load per subsystem.

Windows are ``[start, start + size)`` in epoch milliseconds, aligned to the epoch, so the
same sample always lands in the same window whatever the process. Each subsystem has its own
watermark, ``max event time seen − allowed lateness``; a window closes when the watermark
reaches its end. A per-subsystem (not per-partition) watermark makes the closed windows a
function of that subsystem's own sample order only, so a replay through any number of
partitions or workers closes exactly the same windows. Samples whose window has already
closed are *late*: they are handed back to the caller (to be dead-lettered), never dropped.

A sample stamped far ahead of its subsystem's time (more than ``max_jump_ms`` past the newest
event time seen: a clock set to 2099, say) would move the watermark there and make every
later, correct sample late. So it is *held*, not applied, until the subsystem's next samples
decide, in event time and deterministically: when the held jump and the samples that go on
from it (stamped at or after it, less ``max_jump_ms``) number ``confirmations``, the jump is
confirmed and they are applied in arrival order (a subsystem that reports once every few
hours is only delayed); when ``confirmations`` samples come at the subsystem's old time
instead, the jump is refuted and its samples are handed back as ``time_jump`` rejects. A new
subsystem has no time yet: its first samples are held the same way until ``confirmations`` of
them agree, so one bad first sample cannot set its clock either. At the end of a finite input
(`settle`) what is still held is applied: nothing followed to refute it. At most `MAX_HELD`
samples are held per subsystem; beyond that, a sample that would be held is rejected at once.

Everything here is pure: no clock, no I/O. State converts to and from plain JSON-able dicts
(`to_state` / `from_state`) so it can live in a changelog-backed table without pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from app.core.events import LoadWindow, SeriesStats, iso_ms, ms_to_iso


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


#: A sample is held while its subsystem's time is unsure; this many at most per subsystem.
MAX_HELD = 64


@dataclass(slots=True)
class HeldSample:
    """A sample held back as a possible time jump, and where it came from (to reject it)."""

    ts_ms: int
    metrics: dict[str, float]
    resources: dict[str, float]
    source: Any  # who carried it (an `app.wire.codec.SourceRef`): windows only hand it back
    index: int | None  # its position in that message's batch envelope


@dataclass(slots=True)
class HeldJump:
    """Held samples that agree with each other: a candidate new time for the subsystem."""

    low: int
    high: int
    samples: list[HeldSample]
    against: int = 0  # samples at the subsystem's established time since it was held


@dataclass(frozen=True, slots=True)
class AddOutcome:
    """What one sample did: accepted or not (``held``: neither yet), the windows it closed,
    and held samples it settled that were not accepted (``rejected``: sample, code, reason)."""

    accepted: bool
    closed: Sequence[LoadWindow]
    reason: str = ""
    code: str = "late"  # why not accepted: "late" or "time_jump"
    held: bool = False
    rejected: Sequence[tuple[HeldSample, str, str]] = ()


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
    max_jump_ms
        How far ahead of the newest event time a sample may be and still be taken at once;
        beyond it, it is held until confirmed (0: no limit, nothing is held).
    confirmations
        Samples that settle a held jump: that many agreeing confirm it, that many at the old
        time refute it.

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

    def __init__(
        self,
        subsystem: str,
        size_ms: int,
        lateness_ms: int,
        max_jump_ms: int = 0,
        confirmations: int = 3,
    ) -> None:
        self.subsystem = subsystem
        self.size_ms = size_ms
        self.lateness_ms = lateness_ms
        self.max_jump_ms = max_jump_ms
        self.confirmations = confirmations
        self.max_ts: int | None = None
        self.closed_until: int | None = None  # every window ending at or before this is closed
        self.open: dict[int, OpenWindow] = {}
        self.jumps: list[HeldJump] = []  # held samples, by candidate time, oldest first

    @property
    def watermark(self) -> int | None:
        return None if self.max_ts is None else self.max_ts - self.lateness_ms

    def add(
        self,
        ts_ms: int,
        metrics: dict[str, float],
        resources: dict[str, float],
        source: Any = None,
        index: int | None = None,
    ) -> AddOutcome:
        """Fold one sample in; return the windows its event time closed. ``source`` and
        ``index`` say where the sample came from, should it be held and rejected later."""
        if not self.trusts(ts_ms):
            return self._add_watched(HeldSample(ts_ms, metrics, resources, source, index))
        return self._take(ts_ms, metrics, resources)

    def trusts(self, ts_ms: int) -> bool:
        """Whether a sample at ``ts_ms`` would be taken at once (not held, no jump settled)."""
        jump = self.max_jump_ms
        return not jump or (
            not self.jumps and self.max_ts is not None and ts_ms <= self.max_ts + jump
        )

    def _take(
        self, ts_ms: int, metrics: dict[str, float], resources: dict[str, float]
    ) -> AddOutcome:
        """`add` once the sample's time is trusted."""
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
        """`add` of samples ``0, 1, ...`` given as columns (`app.wire.codec.BatchColumns`), a run
        of consecutive samples in one window at a time; stops before the first late one.

        Returns how many samples were added (all accepted) and the windows they closed; it also
        stops before a run that may hold a time jump (its newest sample beyond the jump limit),
        and takes nothing while the subsystem's time is unsure. The state afterwards is the
        same as after `add` of each, in order: a run's own window cannot close during the run
        (that takes a sample a window later), and closing the older windows once after the run
        closes the same ones, in the same order, as closing them sample by sample.
        """
        size = self.size_ms
        closed: list[LoadWindow] = []
        n, end = 0, len(ts)
        jump = self.max_jump_ms
        if jump and (self.jumps or self.max_ts is None):
            return 0, closed  # time unsure: sample by sample
        while n < end:
            start = ts[n] - ts[n] % size
            stop = n + 1
            while stop < end and start <= ts[stop] < start + size:
                stop += 1
            whole = n == 0 and stop == end  # the common case: no copies
            run = ts if whole else ts[n:stop]
            newest = max(run)
            # No sample of the run is a jump if its newest is not: else `add` words it.
            if jump and newest > self.max_ts + jump:  # type: ignore[operator]
                break
            window = self.open.get(start)
            if window is None:
                if self.closed_until is not None and start + size <= self.closed_until:
                    break  # late: `add` words it
                window = self.open[start] = OpenWindow(start)
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

    def _add_watched(self, sample: HeldSample) -> AddOutcome:
        """`add` of a sample while jumps are watched: take it and count it against the held
        jumps, or hold it, and settle whatever that decides (see the module docstring)."""
        jump = self.max_jump_ms
        if self.max_ts is not None and sample.ts_ms <= self.max_ts + jump:
            outcome = self._take(sample.ts_ms, sample.metrics, sample.resources)
            refuted: list[tuple[HeldSample, str, str]] = []
            kept: list[HeldJump] = []
            for held in self.jumps:
                held.against += 1
                if held.against < self.confirmations:
                    kept.append(held)
                else:
                    refuted.extend(self._refute(held))
            self.jumps = kept
            if not refuted:
                return outcome
            return AddOutcome(
                outcome.accepted, outcome.closed, outcome.reason, outcome.code, rejected=refuted
            )
        for held in self.jumps:
            if sample.ts_ms >= held.low - jump:  # at or past the jump: it goes on from there
                break
        else:
            if sum(len(h.samples) for h in self.jumps) >= MAX_HELD:
                return AddOutcome(
                    accepted=False,
                    closed=(),
                    reason=f"time jump: {MAX_HELD} samples of {self.subsystem} are held "
                    f"already, unconfirmed, so {ms_to_iso(sample.ts_ms)} is not held too",
                    code="time_jump",
                )
            held = HeldJump(sample.ts_ms, sample.ts_ms, [])
            self.jumps.append(held)
        held.samples.append(sample)
        held.low = min(held.low, sample.ts_ms)
        held.high = max(held.high, sample.ts_ms)
        if len(held.samples) < self.confirmations:
            return AddOutcome(accepted=False, closed=(), held=True)
        # Confirmed: the subsystem's time is the jump's. Its samples are taken in arrival
        # order, then every other held sample again, as if it arrived now.
        self.jumps.remove(held)
        others = [s for h in self.jumps for s in h.samples]
        self.jumps = []
        closed: list[LoadWindow] = []
        rejected: list[tuple[HeldSample, str, str]] = []
        for s in held.samples:
            outcome = self._take(s.ts_ms, s.metrics, s.resources)
            closed.extend(outcome.closed)
            if not outcome.accepted:
                rejected.append((s, outcome.code, outcome.reason))
        for s in others:
            outcome = self.add(s.ts_ms, s.metrics, s.resources, s.source, s.index)
            closed.extend(outcome.closed)
            rejected.extend(outcome.rejected)
            if not outcome.accepted and not outcome.held:
                rejected.append((s, outcome.code, outcome.reason))
        # The sample that confirmed the jump is the caller's to report, the others are not.
        mine = next((r for r in rejected if r[0] is sample), None)
        return AddOutcome(
            accepted=mine is None,
            closed=closed,
            reason="" if mine is None else mine[2],
            code="late" if mine is None else mine[1],
            rejected=[r for r in rejected if r[0] is not sample],
        )

    def _refute(self, held: HeldJump) -> list[tuple[HeldSample, str, str]]:
        """The samples of a jump that the subsystem's next samples did not follow."""
        since = ms_to_iso(self.max_ts) if self.max_ts is not None else "?"
        return [
            (
                s,
                "time_jump",
                f"time jump: {ms_to_iso(s.ts_ms)} is more than {self.max_jump_ms // 1000} s "
                f"ahead of {self.subsystem}'s time ({since}), and its next "
                f"{self.confirmations} samples did not follow",
            )
            for s in held.samples
        ]

    def _close_until(self, until: int) -> list[LoadWindow]:
        """Close every open window ending at or before ``until``, oldest first."""
        self.closed_until = until
        ready = sorted(s for s in self.open if s + self.size_ms <= until)
        return [self.open.pop(s).close(self.subsystem, self.size_ms) for s in ready]

    def settle(self) -> AddOutcome:
        """Apply every held sample (end of a finite input: nothing followed to refute them),
        oldest jump first; returns the windows that closed and the samples that were late."""
        jumps, self.jumps = self.jumps, []
        closed: list[LoadWindow] = []
        rejected: list[tuple[HeldSample, str, str]] = []
        for held in jumps:
            for s in held.samples:
                outcome = self._take(s.ts_ms, s.metrics, s.resources)
                closed.extend(outcome.closed)
                if not outcome.accepted:
                    rejected.append((s, outcome.code, outcome.reason))
        return AddOutcome(accepted=True, closed=closed, rejected=rejected)

    def flush(self) -> list[LoadWindow]:
        """Close every open window now (end of a finite replay); later samples become late.
        Call `settle` first: held samples are not in any window yet."""
        closed = [self.open.pop(s).close(self.subsystem, self.size_ms) for s in sorted(self.open)]
        if closed:
            last_end = closed[-1].window_end_ms
            self.closed_until = max(self.closed_until or last_end, last_end)
        return closed

    def to_state(self) -> dict[str, Any]:
        return {
            "v": 2,
            "size": self.size_ms,
            "late": self.lateness_ms,
            "jump": self.max_jump_ms,
            "confirm": self.confirmations,
            "max_ts": self.max_ts,
            "closed_until": self.closed_until,
            "open": [self.open[s].to_state() for s in sorted(self.open)],
            "held": [
                [j.low, j.high, j.against, [_held_state(s) for s in j.samples]] for j in self.jumps
            ],
        }

    @classmethod
    def from_state(cls, subsystem: str, state: dict[str, Any]) -> WindowedLoad:
        obj = cls(
            subsystem,
            int(state["size"]),
            int(state["late"]),
            int(state.get("jump", 0)),
            int(state.get("confirm", 3)),
        )
        obj.max_ts = state["max_ts"]
        obj.closed_until = state["closed_until"]
        obj.open = {int(w["start"]): OpenWindow.from_state(w) for w in state["open"]}
        obj.jumps = [
            HeldJump(int(low), int(high), [_held_sample(s) for s in samples], int(against))
            for low, high, against, samples in state.get("held", [])
        ]
        return obj


def _held_state(sample: HeldSample) -> list[Any]:
    source = list(sample.source) if isinstance(sample.source, tuple | list) else sample.source
    return [sample.ts_ms, sample.metrics, sample.resources, source, sample.index]


def _held_sample(state: list[Any]) -> HeldSample:
    ts_ms, metrics, resources, source, index = state
    source = tuple(source) if isinstance(source, list) else source
    return HeldSample(int(ts_ms), dict(metrics), dict(resources), source, index)
