"""Joining every contributor's share of one resource, window by window, in event time.

Each subsystem reports, for every closed window, its forecast and actual use of a resource
(a `ResourceShare`). A resource's window can only be judged once all its contributors have
reported it. `ResourceJoin` decides when that is, with a rule that depends only on the shares
themselves — never on a clock — so a replay decides the same way:

* A contributor is *expected* in window ``t`` if it is declared for the resource in
  ``pso.yaml`` (it has a ``min`` there), or if its first share came at least ``join_delay``
  windows before ``t`` (a newcomer is never waited for in its first windows, whose forecasts
  are warming up anyway, and whose arrival order relative to others is not deterministic).
* An expected contributor that has reported nothing for ``idle_windows`` windows behind the
  newest share of the resource is idle and no longer waited for.
* Window ``t`` is ready when every expected, non-idle contributor has reported a window at or
  after ``t``. Its contributors are those expected ones that reported exactly ``t``.
* A share for a window already judged is *late*: counted in ``late_shares`` and not used.

Outputs are therefore identical live and in replay as long as no contributor's stream lags
the others' by more than ``idle_windows`` windows (or ``join_delay`` at its first window).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
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
    idle_windows: int = 5
    first: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    pending: dict[int, dict[str, T]] = field(default_factory=dict)
    judged_until: int | None = None  # every window <= this has been judged
    newest: int | None = None
    late_shares: int = 0

    def add(self, subsystem: str, index: int, share: T) -> list[ReadyWindow[T]]:
        """Take one share (window ``index`` of ``subsystem``); return windows now ready."""
        if self.judged_until is not None and index <= self.judged_until:
            self.late_shares += 1
            return []
        self.first.setdefault(subsystem, index)
        if index > self.last.get(subsystem, index - 1):
            self.last[subsystem] = index
        if self.newest is None or index > self.newest:
            self.newest = index
        self.pending.setdefault(index, {})[subsystem] = share
        return self._drain()

    def _expected(self, subsystem: str, index: int) -> bool:
        if subsystem in self.declared:
            return True
        first = self.first.get(subsystem)
        return first is not None and first <= index - self.join_delay

    def _waiting_for(self, index: int) -> Iterable[str]:
        assert self.newest is not None
        idle_before = self.newest - self.idle_windows
        start = min(self.pending) if self.pending else index
        for name in sorted(self.declared | set(self.first)):
            if not self._expected(name, index):
                continue
            # A declared contributor never seen counts as one window behind the oldest pending
            # one: it is waited for until it turns idle.
            last = self.last.get(name, start - 1)
            if last < idle_before:
                continue
            if last < index:
                yield name

    def _drain(self) -> list[ReadyWindow[T]]:
        ready: list[ReadyWindow[T]] = []
        while self.pending:
            index = min(self.pending)
            if any(True for _ in self._waiting_for(index)):
                break
            shares = self.pending.pop(index)
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
        return gone
