"""The simulated fleet (the plant): natural demand meets capacity, caps, queues and deferrals.

One `Plant.step` is one window ``[T, E)``:

1. **Capacity** (`Pool`): orders are carried out at their start (or when received, if later);
   capacity added lands ``provision_delay`` after that, capacity removed goes at once (pending
   additions are cancelled first). A window's capacity is the time average of what was in
   place, so an order landing mid-window counts for the part of the window it covers.
2. **Offered demand** per subsystem and resource: its natural demand plus its queue (work
   throttled or overflowed earlier, and deferred work released now), oldest first — the queue
   no faster than the subsystem's peak natural rate (its concurrency: a job deferred for an
   hour runs again at the rate it ran, not all at once). This is what a subsystem asks of
   the resource, and what it reports as its use.
3. **Caps** from the latest plan: a subsystem admits at most ``limit`` (plus ``1 − compliance``
   of the excess); the cut is taken from its newest work. Cut fresh work is *deferred* (held
   until the cap's release time) under a ``defer`` cap, else *throttled*.
4. **Overload**: when what is admitted exceeds capacity, the window is a conflict and every
   subsystem is served the same fraction, capacity / admitted (oldest work first).
5. Work not served — throttled or overflowed — waits in the subsystem's queue for at most its
   *patience* (0: lost at once); work that waits longer is lost. Lost work is unmet demand,
   weighted by the subsystem's business value; work served late counts its delay.

Everything is in event time and deterministic (cells walked in a fixed order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from app.core.closedloop.orders import CapOrder, FleetOrders, ScaleOrder
from app.core.closedloop.trace import BoolArray, DemandTrace, FloatArray, LoopSpec
from app.core.config import ElasticSpec, FleetSpec

_EPS = 1e-9
HOUR_MS = 3_600_000
#: a cap re-issued within this share of the limit in force is not a new action (the HPA's
#: tolerance): churn counts what subsystems are told to change, not how often they are told
CAP_TOLERANCE = 0.1


@dataclass(slots=True)
class Pool:
    """One resource's capacity: what is in place, what is on its way, and the schedule.

    Examples
    --------
    >>> from app.core.config import ElasticSpec
    >>> pool = Pool("db", 100.0, ElasticSpec(min=50.0, max=300.0, step=10.0,
    ...                                       provision_delay_s=600))
    >>> pool.receive(60_000, [ScaleOrder("db", 200.0, 0)])  # its start is past: at once
    >>> pool.advance(60_000, 120_000), pool.committed, pool.actions
    (100.0, 200.0, 1)
    >>> pool.advance(600_000, 720_000)  # lands at 660 s: half of this window
    150.0
    >>> pool.receive(720_000, [ScaleOrder("db", 120.0, 720_000)])
    >>> pool.advance(720_000, 780_000), pool.actions  # removal is at once
    (120.0, 2)
    """

    name: str
    landed: float
    elastic: ElasticSpec | None
    pending: list[tuple[int, float]] = field(default_factory=list)
    schedule: list[ScaleOrder] = field(default_factory=list)
    inbox: list[tuple[int, list[ScaleOrder]]] = field(default_factory=list)
    started: set[tuple[float, int]] = field(default_factory=set)
    actions: int = 0
    #: (event time, capacity in place from then) of every change, for the report
    changes: list[tuple[int, float]] = field(default_factory=list)
    #: event times of the orders carried out (actions), for the report
    action_times: list[int] = field(default_factory=list)

    @property
    def committed(self) -> float:
        """In place plus on its way."""
        return self.landed + math.fsum(amount for _, amount in self.pending)

    def receive(self, at_ms: int, orders: Sequence[ScaleOrder]) -> None:
        """A new schedule, taken at ``at_ms`` (replaces the orders not yet started)."""
        if self.elastic is not None:
            self.inbox.append((at_ms, list(orders)))
            self.inbox.sort(key=lambda item: item[0])

    def set_target(self, target: float, at_ms: int) -> None:
        """Carry out one order now: provision the difference, or remove it at once."""
        spec = self.elastic
        assert spec is not None
        target = min(spec.max, max(spec.min, target))
        delta = target - self.committed
        if abs(delta) <= _EPS * max(1.0, target):
            return
        self.actions += 1
        self.action_times.append(at_ms)
        if delta > 0.0:
            self.pending.append((at_ms + spec.provision_delay_ms, delta))
            return
        remove = -delta
        while remove > _EPS and self.pending:
            lands, amount = self.pending[-1]
            take = min(amount, remove)
            remove -= take
            if take >= amount - _EPS:
                self.pending.pop()
            else:
                self.pending[-1] = (lands, amount - take)
        if remove > _EPS:
            self.landed = max(0.0, self.landed - remove)
            self.changes.append((at_ms, self.landed))

    def advance(self, start_ms: int, end_ms: int) -> float:
        """Carry out everything due in ``[start_ms, end_ms)``; the window's mean capacity."""
        t = start_ms
        area = 0.0
        while True:
            due = self._next_event()
            if due is None or due >= end_ms:
                break
            due = max(due, t)
            area += self.landed * (due - t)
            t = due
            self._events_at(t)
        area += self.landed * (end_ms - t)
        return area / (end_ms - start_ms)

    def _next_event(self) -> int | None:
        times = [lands for lands, _ in self.pending[:1]]
        if self.inbox:
            times.append(self.inbox[0][0])
        if self.schedule:
            times.append(self.schedule[0].start_ms)
        return min(times) if times else None

    def _events_at(self, t: int) -> None:
        landed = False
        while self.pending and self.pending[0][0] <= t:
            self.landed += self.pending.pop(0)[1]
            landed = True
        if landed:
            self.changes.append((t, self.landed))
        while self.inbox and self.inbox[0][0] <= t:
            _, orders = self.inbox.pop(0)
            fresh = [o for o in orders if (o.target, o.start_ms) not in self.started]
            self.schedule = sorted(fresh, key=lambda o: o.start_ms)
        while self.schedule and self.schedule[0].start_ms <= t:
            order = self.schedule.pop(0)
            self.started.add((order.target, order.start_ms))
            self.set_target(order.target, t)


def changes(before: CapOrder | None, after: CapOrder, now_ms: int) -> bool:
    """Whether ``after`` is a new instruction to its subsystem (an action), not the one in
    force re-issued: no cap in force or pending before, a switch between throttle and
    defer, or a limit that moves by more than `CAP_TOLERANCE` of the previous one.

    Examples
    --------
    >>> cap = CapOrder("etl", "db", 10.0, 0, 120_000, False, 120_000)
    >>> changes(None, cap, 0), changes(cap, cap, 60_000), changes(cap, cap, 120_000)
    (True, False, True)
    >>> from dataclasses import replace
    >>> changes(cap, replace(cap, limit=10.5), 0), changes(cap, replace(cap, limit=8.0), 0)
    (False, True)
    """
    if before is None or before.end_ms <= now_ms or before.defer != after.defer:
        return True
    return abs(after.limit - before.limit) > CAP_TOLERANCE * max(before.limit, _EPS)


@dataclass(slots=True)
class Cell:
    """One subsystem's demand on one resource: its queue, its held (deferred) work, its cap."""

    sub: int
    res: int
    weight: float
    patience_ms: int
    ceiling: float  # the most it asks in a window (its peak natural rate)
    #: [arrival_ms, amount, deferred?], oldest first
    queue: list[list[float]] = field(default_factory=list)
    #: [release_ms, arrival_ms, amount]
    held: list[list[float]] = field(default_factory=list)
    cap: CapOrder | None = None


@dataclass(frozen=True, slots=True)
class WindowOutcome:
    """What happened in one window (per resource arrays follow ``trace.resources``)."""

    k: int
    start_ms: int
    natural: FloatArray  # (subsystems, resources)
    offered: FloatArray  # (subsystems, resources): natural + queue, before caps
    admitted: FloatArray  # (resources,)
    capacity: FloatArray  # (resources,): time average over the window
    capacity_end: FloatArray  # (resources,): in place at the window's end
    conflict: BoolArray  # (resources,)
    unmet_value: float  # weight x unit-hours lost
    delayed: float  # unit-hours served late
    delay_weighted_s: float  # sum of unit-hours x seconds late
    deferred: float  # unit-hours deferred on instruction
    actions: int


class Plant:
    """The fleet under one policy's orders (see the module docstring)."""

    def __init__(self, trace: DemandTrace, policy: FleetSpec, loop: LoopSpec) -> None:
        self.trace = trace
        self.loop = loop
        self.pools = []
        for name in trace.resources:
            spec = policy.resources.get(name)
            if spec is None:
                raise ValueError(f"resource {name!r} has no capacity in the policy")
            self.pools.append(Pool(name, spec.capacity, spec.elastic))
        self.cells: list[Cell] = []
        peaks = trace.demand.max(axis=0) if trace.windows else np.zeros(trace.uses.shape)
        for s, sub in enumerate(trace.subsystems):
            conf = policy.subsystems.get(sub)
            weight = conf.weight if conf is not None else 1.0
            patience = loop.patience_ms(sub, policy)
            for r in range(len(trace.resources)):
                if trace.uses[s, r]:
                    self.cells.append(Cell(s, r, weight, patience, float(peaks[s, r])))
        self.cell_at = {(c.sub, c.res): c for c in self.cells}
        self.cap_inbox: list[tuple[int, str, list[CapOrder]]] = []
        self.cap_actions = 0
        #: (event time, resource index) of every cap set, for the report
        self.cap_marks: list[tuple[int, int]] = []

    def receive(self, orders: FleetOrders) -> None:
        """Orders to carry out from ``orders.at_ms`` on."""
        index = {name: r for r, name in enumerate(self.trace.resources)}
        for res, schedule in sorted(orders.schedules.items()):
            if res in index:
                self.pools[index[res]].receive(orders.at_ms, schedule)
        for res, caps in sorted(orders.caps.items()):
            if res in index:
                self.cap_inbox.append((orders.at_ms, res, caps))
        self.cap_inbox.sort(key=lambda item: item[0])

    def _take_caps(self, start_ms: int) -> None:
        index = {name: r for r, name in enumerate(self.trace.resources)}
        subs = {name: s for s, name in enumerate(self.trace.subsystems)}
        while self.cap_inbox and self.cap_inbox[0][0] <= start_ms:
            at_ms, res, caps = self.cap_inbox.pop(0)
            r = index[res]
            before = {}
            for cell in self.cells:
                if cell.res == r:
                    before[cell.sub] = cell.cap
                    cell.cap = None
            for cap in caps:
                target = self.cell_at.get((subs.get(cap.subsystem, -1), r))
                if target is not None:
                    target.cap = cap
                    if changes(before.get(target.sub), cap, start_ms):
                        self.cap_actions += 1
                        self.cap_marks.append((max(at_ms, cap.start_ms), r))

    def step(self, k: int) -> WindowOutcome:
        """Run window ``k`` (windows must be stepped in order)."""
        trace, loop = self.trace, self.loop
        start, end = trace.window_ms(k), trace.window_ms(k + 1)
        hours = trace.step_ms / HOUR_MS
        actions_before = self.cap_actions + sum(p.actions for p in self.pools)
        self._take_caps(start)
        capacity = np.array([p.advance(start, end) for p in self.pools])
        natural = trace.demand[k]
        n_res = len(trace.resources)
        offered = np.zeros(natural.shape)
        admitted_total = np.zeros(n_res)
        admits: list[tuple[float, float, float, bool]] = []
        deferred = 0.0
        for cell in self.cells:
            self._release(cell, start)
            fresh = float(natural[cell.sub, cell.res])
            queued = 0.0
            if cell.queue:
                room = max(0.0, cell.ceiling - fresh)
                queued = min(room, math.fsum(item[1] for item in cell.queue))
            asked = queued + fresh
            offered[cell.sub, cell.res] = asked
            admit = asked
            cap = cell.cap
            active = cap is not None and cap.start_ms <= start < cap.end_ms
            if cap is not None and active and asked > cap.limit:
                allowed = cap.limit + (1.0 - loop.compliance) * (asked - cap.limit)
                admit = min(asked, max(0.0, allowed))
            admits.append((queued, fresh, admit, active))
            admitted_total[cell.res] += admit
        conflict = admitted_total > capacity * (1.0 + _EPS) + _EPS
        fraction = np.where(conflict, capacity / np.maximum(admitted_total, _EPS), 1.0)
        unmet = delayed = delay_weighted = 0.0
        for cell, (queued, fresh, admit, active) in zip(self.cells, admits, strict=True):
            served = float(fraction[cell.res]) * admit
            late, late_weighted = self._serve_queue(cell, min(served, queued), start, hours)
            delayed += late
            delay_weighted += late_weighted
            fresh_admitted = max(0.0, admit - queued)
            fresh_cut = fresh - fresh_admitted
            fresh_served = max(0.0, served - queued)
            overflow = max(0.0, fresh_admitted - fresh_served)
            cap = cell.cap
            if active and cap is not None and cap.defer and fresh_cut > _EPS:
                cell.held.append([float(cap.release_ms), float(start), fresh_cut])
                deferred += fresh_cut * hours
            else:
                overflow += max(0.0, fresh_cut)
            if overflow > _EPS:
                if cell.patience_ms > 0:
                    cell.queue.append([float(start), overflow, 0.0])
                else:
                    unmet += cell.weight * overflow * hours
            unmet += cell.weight * self._expire(cell, end) * hours
        actions = self.cap_actions + sum(p.actions for p in self.pools) - actions_before
        return WindowOutcome(
            k=k,
            start_ms=start,
            natural=natural,
            offered=offered,
            admitted=admitted_total,
            capacity=capacity,
            capacity_end=np.array([p.landed for p in self.pools]),
            conflict=conflict,
            unmet_value=unmet,
            delayed=delayed,
            delay_weighted_s=delay_weighted,
            deferred=deferred,
            actions=actions,
        )

    @staticmethod
    def _release(cell: Cell, start_ms: int) -> None:
        """Deferred work whose release time has come joins the queue (by arrival)."""
        if not cell.held:
            return
        due = [h for h in cell.held if h[0] <= start_ms]
        if due:
            cell.held = [h for h in cell.held if h[0] > start_ms]
            cell.queue.extend([h[1], h[2], 1.0] for h in due)
            cell.queue.sort(key=lambda item: item[0])

    @staticmethod
    def _serve_queue(cell: Cell, served: float, start_ms: int, hours: float) -> tuple[float, float]:
        """Serve the queue oldest first; (unit-hours served late, x seconds late)."""
        late = late_weighted = 0.0
        left = served
        while cell.queue and left > _EPS:
            item = cell.queue[0]
            take = min(item[1], left)
            left -= take
            late += take * hours
            late_weighted += take * hours * (start_ms - item[0]) / 1000.0
            if take >= item[1] - _EPS:
                cell.queue.pop(0)
            else:
                item[1] -= take
        return late, late_weighted

    @staticmethod
    def _expire(cell: Cell, end_ms: int) -> float:
        """Work that could no longer be served within its patience is lost; its amount."""
        limit = end_ms - cell.patience_ms
        lost = 0.0
        if cell.queue and cell.queue[0][0] < limit:
            lost += math.fsum(item[1] for item in cell.queue if item[0] < limit)
            cell.queue = [item for item in cell.queue if item[0] >= limit]
        if cell.held and any(h[1] < limit for h in cell.held):
            lost += math.fsum(h[2] for h in cell.held if h[1] < limit)
            cell.held = [h for h in cell.held if h[1] >= limit]
        return lost
