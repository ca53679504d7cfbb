"""Joining every contributor's share of one resource, window by window, in event time.

Each subsystem reports, for every closed window, its forecast and actual use of a resource
(a `ResourceShare`). A resource's window can only be judged once all its contributors have
reported it. `ResourceJoin` decides when that is from the shares themselves — never a clock —
so a replay decides the same way however the shares of different subsystems interleave:

* A contributor is *expected* in window ``t`` if it is declared for the resource in
  ``pso.yaml`` (it has a ``min`` there), or if its first share came at least ``join_delay``
  windows before ``t`` (a newcomer is not waited for in its first windows, whose forecasts
  are warming up anyway, and whose arrival relative to the others is not deterministic).
* Window ``t`` is ready when every expected contributor that has not *departed* has reported
  a window at or after ``t``. Its contributors are the expected ones that reported exactly
  ``t``.
* A contributor departs in two ways. In event time: it has reported nothing for
  ``idle_windows`` windows behind the newest share of the resource (a long silence in the
  data; generous by default — a day of 60 s windows — because partitions of a topic being
  caught up can be hundreds of windows apart in event time). Or explicitly, by `depart`: the
  live topology's liveness policy (a wall-clock timeout at the edge, recorded as a message in
  the stream so a replay repeats it). A departed contributor rejoins with its next share.
* A share for a window already judged is *late*: counted in ``late_shares`` and not used.

Pending shares are most of a join's size (~1 KB each: a whole forecast), and a backlog of them
(one contributor's partition far behind the others in event time) has no bound. So a join can
be kept without them (`without_pending`): ``sources`` remembers, per pending window, the lowest
*source* position (the live edge passes input offsets; opaque here) of a share in it, and
`restore` puts a share read back from there into the place it had. Every share from a source
at or after `refill_from` whose window is not judged yet was pending, and no other was, so
re-reading from there restores ``pending`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class ReadyWindow(Generic[T]):
    """A window of a resource whose contributors have all reported."""

    index: int  # window start // step
    shares: dict[str, T]


@dataclass(slots=True)
class ResourceJoin(Generic[T]):
    """Per-resource join of contributor shares (see module docstring)."""

    declared: frozenset[str] = frozenset()
    join_delay: int = 2
    idle_windows: int = 1440
    first: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    departed: set[str] = field(default_factory=set)
    pending: dict[int, dict[str, T]] = field(default_factory=dict)
    #: pending window -> lowest source of a share in it (shares added with a source)
    sources: dict[int, int] = field(default_factory=dict)
    judged_until: int | None = None  # every window <= this has been judged
    newest: int | None = None
    late_shares: int = 0

    def add(
        self, subsystem: str, index: int, share: T, source: int | None = None
    ) -> list[ReadyWindow[T]]:
        """Take one share (window ``index`` of ``subsystem``); return windows now ready.

        ``source``: where the share can be read again (see `refill_from`)."""
        # Even a late share says the contributor exists and how far it has got.
        self.departed.discard(subsystem)
        self.first.setdefault(subsystem, index)
        if index > self.last.get(subsystem, index - 1):
            self.last[subsystem] = index
        if self.newest is None or index > self.newest:
            self.newest = index
        if self.judged_until is not None and index <= self.judged_until:
            self.late_shares += 1
            return []
        self.pending.setdefault(index, {})[subsystem] = share
        if source is not None and source < self.sources.get(index, source + 1):
            self.sources[index] = source
        return self._drain()

    def refill_from(self) -> int | None:
        """The lowest source of a pending share: re-reading from there restores ``pending``.
        None when nothing is pending, or when a pending share came without a source."""
        if not self.pending or not self.pending.keys() <= self.sources.keys():
            return None
        return min(self.sources[index] for index in self.pending)

    def without_pending(self) -> ResourceJoin[T]:
        """A copy without the pending shares (everything else shared, not copied: for
        pickling a checkpoint); `restore` puts them back."""
        return replace(self, pending={})

    def restore(self, subsystem: str, index: int, share: T) -> bool:
        """Put back a share read again from at or after `refill_from` into a join restored
        `without_pending`: one for a window not judged yet was pending, and goes back; any
        other was judged or late already and is ignored. Nothing else changes."""
        if self.judged_until is not None and index <= self.judged_until:
            return False
        self.pending.setdefault(index, {})[subsystem] = share
        return True

    def drain_all(self) -> list[ReadyWindow[T]]:
        """End of a finite input: stop waiting for anyone and judge every pending window."""
        ready: list[ReadyWindow[T]] = []
        while self.pending:
            ready.extend(self.depart(self.blocking()))
        return ready

    def depart(self, subsystems: list[str]) -> list[ReadyWindow[T]]:
        """Stop waiting for ``subsystems`` until they report again; return windows now ready."""
        self.departed.update(subsystems)
        return self._drain()

    def blocking(self) -> list[str]:
        """Contributors the oldest pending window is waiting for (empty: nothing pending)."""
        if not self.pending:
            return []
        return self._waiting_for(min(self.pending))

    def _expected(self, subsystem: str, index: int) -> bool:
        if subsystem in self.declared:
            return True
        first = self.first.get(subsystem)
        return first is not None and first <= index - self.join_delay

    def _waiting_for(self, index: int) -> list[str]:
        assert self.newest is not None
        idle_before = self.newest - self.idle_windows
        oldest = min(self.pending) if self.pending else index
        waiting = []
        for name in sorted(self.declared | set(self.first)):
            if name in self.departed or not self._expected(name, index):
                continue
            # A declared contributor never seen counts as one window behind the oldest pending
            # one: it is waited for until it turns idle or departs.
            last = self.last.get(name, oldest - 1)
            if last >= index or last < idle_before:
                continue
            waiting.append(name)
        return waiting

    def _any_waiting(self, index: int) -> bool:
        """Whether `_waiting_for` ``index`` (the oldest pending window) is non-empty.

        The same test, stopped at the first contributor still waited for, newest-seen first:
        shares of a window mostly come in first-seen order, so until its last one arrives a
        contributor seen late is still missing (one check, not one per contributor).
        """
        assert self.newest is not None
        idle_before = self.newest - self.idle_windows
        last_of, departed, first_of = self.last, self.departed, self.first
        ready_by = index - self.join_delay
        for name in reversed(first_of):
            if name in departed or (name not in self.declared and first_of[name] > ready_by):
                continue
            last = last_of.get(name, index - 1)
            if last < index and last >= idle_before:
                return True
        for name in self.declared:
            if name in first_of or name in departed:
                continue
            last = last_of.get(name, index - 1)  # never seen: one behind the oldest pending
            if last < index and last >= idle_before:
                return True
        return False

    def _drain(self) -> list[ReadyWindow[T]]:
        ready: list[ReadyWindow[T]] = []
        while self.pending:
            index = min(self.pending)
            if self._any_waiting(index):
                break
            shares = self.pending.pop(index)
            self.sources.pop(index, None)
            used = {n: shares[n] for n in sorted(shares) if self._expected(n, index)}
            self.judged_until = index
            ready.append(ReadyWindow(index, used))
        return ready

    def forget_idle(self) -> list[str]:
        """Drop contributors idle for ``idle_windows`` (bounded state); return their names."""
        if self.newest is None:
            return []
        cutoff = self.newest - self.idle_windows
        gone = sorted(
            n for n, last in self.last.items() if last < cutoff and n not in self.declared
        )
        for name in gone:
            del self.last[name]
            del self.first[name]
            self.departed.discard(name)
        return gone
