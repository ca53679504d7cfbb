"""The policies compared on the same demand, all acting through the same actuators.

After each window a policy reads what it may know and returns the fleet's orders:

* ``none`` — nothing: capacity stays as configured, nothing is throttled or deferred.
* ``reactive`` — the usual threshold alert: only once a window's offered load has exceeded
  capacity does it act — scale out to what that load needs at the target utilisation, and
  cap subsystems by the same value-ranked planner on the current demand until then (for one
  horizon, or until capacity grows). Capacity is given back with the same hysteresis as PSO.
* ``hpa`` — the Kubernetes HPA rule on the resource's utilisation (`app.core.closedloop.hpa`).
* ``pso`` — PSO itself: the prediction engine is fed each subsystem's window of demand (what
  a fleet sends as telemetry) and the capacity in place when it changes (what a fleet writes
  to ``pso.capacity``); the fleet obeys every `RebalanceRecommended` it emits. Nothing else:
  its forecasts' upper bounds and its conflict predictions decide.
* ``oracle`` — perfect foresight of the natural demand over the same horizon, and of its
  fleet's backlog (queued and held work, released by the plant's rule), through the same
  scale rule and planner, re-planned every window: the bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from app.core.closedloop.hpa import HpaController
from app.core.closedloop.orders import FleetOrders, ScaleOrder, orders_from_plan
from app.core.closedloop.plant import Cell, Plant, WindowOutcome
from app.core.closedloop.trace import DemandTrace, FloatArray, LoopSpec
from app.core.config import FleetSpec
from app.core.engine import PredictionEngine
from app.core.events import (
    LoadWindow,
    RebalanceRecommended,
    ResourcePolicy,
    ScaleAction,
    SeriesStats,
    iso_ms,
)
from app.core.planner import PlanMode, RebalancePlanner
from app.core.scaling import (
    ScalePlanner,
    elastic_plan,
    planner_conflict,
    scale_only_plan,
)

POLICIES: tuple[str, ...] = ("none", "reactive", "hpa", "pso", "oracle")
_EPS = 1e-9


class Policy(Protocol):
    """What the driver asks of a policy after every window."""

    name: str

    def decide(self, outcome: WindowOutcome, plant: Plant) -> list[FleetOrders]:
        """Orders after window ``outcome.k`` (``plant``: the fleet as it stands, read only)."""
        ...


class _Base:
    def __init__(self, trace: DemandTrace, policy: FleetSpec, loop: LoopSpec) -> None:
        self.trace = trace
        self.policy = policy
        self.loop = loop
        self.horizon = policy.prediction.horizon
        self.mode: PlanMode = policy.prediction.mode
        self.planner = RebalancePlanner()

    def origin(self, outcome: WindowOutcome) -> int:
        """When the window just run closed: the event time of every decision on it."""
        return self.trace.window_ms(outcome.k + 1)

    def at(self, decided_ms: int) -> int:
        return decided_ms + self.loop.actuation_delay_s * 1000

    def elastic(self, r: int) -> ScalePlanner | None:
        name = self.trace.resources[r]
        spec = self.policy.resources[name].elastic
        return None if spec is None else ScalePlanner(name, spec, self.trace.step_ms)


class NonePolicy(_Base):
    name = "none"

    def decide(self, outcome: WindowOutcome, plant: Plant) -> list[FleetOrders]:
        return []


class ReactivePolicy(_Base):
    name = "reactive"

    def __init__(self, trace: DemandTrace, policy: FleetSpec, loop: LoopSpec) -> None:
        super().__init__(trace, policy, loop)
        self.scalers = [self.elastic(r) for r in range(len(trace.resources))]
        self.caps_until: list[int | None] = [None] * len(trace.resources)
        self.capped_at: list[float] = [0.0] * len(trace.resources)

    def decide(self, outcome: WindowOutcome, plant: Plant) -> list[FleetOrders]:
        origin = self.origin(outcome)
        out = []
        for r, name in enumerate(self.trace.resources):
            asked = float(outcome.offered[:, r].sum())
            capacity = plant.pools[r].landed
            breach = asked > float(outcome.capacity[r]) * (1.0 + _EPS) + _EPS
            scaler = self.scalers[r]
            scaled = scaler is not None and scaler.decide(
                origin, [asked], capacity, reason="observed", scale_out=breach
            )
            schedule = scaler.schedule if scaler is not None else []
            until = self.caps_until[r]
            capped = until is not None and until > origin
            plan: RebalanceRecommended | None = None
            if (breach and not capped) or (capped and capacity > self.capped_at[r] + _EPS):
                plan = self._plan(r, name, outcome, origin, capacity, schedule)
            elif scaled:
                plan = scale_only_plan(name, origin, schedule, self.mode)
            if plan is not None:
                out.append(orders_from_plan(plan, self.at(origin)))
        return out

    def _plan(
        self,
        r: int,
        name: str,
        outcome: WindowOutcome,
        origin: int,
        capacity: float,
        schedule: Sequence[ScaleAction],
    ) -> RebalanceRecommended:
        end = origin + self.horizon * self.trace.step_ms
        demand = {
            sub: {name: float(outcome.offered[s, r])}
            for s, sub in enumerate(self.trace.subsystems)
            if self.trace.uses[s, r]
        }
        conflict = planner_conflict(
            name,
            f"{name}@{origin}:observed",
            origin,
            origin,
            end,
            sum(d[name] for d in demand.values()),
            capacity,
        )
        self.caps_until[r] = end
        self.capped_at[r] = capacity
        return elastic_plan(
            self.planner, conflict, demand, capacity, [], schedule, self.policy, self.mode
        )


class HpaPolicy(_Base):
    name = "hpa"

    def __init__(self, trace: DemandTrace, policy: FleetSpec, loop: LoopSpec) -> None:
        super().__init__(trace, policy, loop)
        self.controllers: list[HpaController | None] = []
        for name in trace.resources:
            spec = policy.resources[name].elastic
            self.controllers.append(None if spec is None else HpaController(spec))

    def decide(self, outcome: WindowOutcome, plant: Plant) -> list[FleetOrders]:
        origin = self.origin(outcome)
        out = []
        for r, name in enumerate(self.trace.resources):
            hpa = self.controllers[r]
            if hpa is None:
                continue
            step = hpa.spec.step
            delay = hpa.spec.provision_delay_ms
            pool = plant.pools[r]
            landed = pool.landed
            pending = list(pool.pending)
            load = float(outcome.offered[:, r].sum())
            for tick in range(origin, origin + self.trace.step_ms, hpa.period_ms):
                while pending and pending[0][0] <= tick:
                    landed += pending.pop(0)[1]
                committed = landed + math.fsum(a for _, a in pending)
                current = committed / step
                desired = hpa.tick(tick, current, landed / step, load)
                if abs(desired - current) < _EPS:
                    continue
                target = desired * step
                if target > committed:
                    pending.append((tick + delay, target - committed))
                else:
                    remove = committed - target
                    while pending and remove > _EPS:
                        lands, amount = pending.pop()
                        if amount > remove:
                            pending.append((lands, amount - remove))
                        remove -= min(amount, remove)
                    landed -= max(0.0, remove)
                at = self.at(tick)
                out.append(FleetOrders(at, schedules={name: [ScaleOrder(name, target, at)]}))
        return out


class PsoPolicy(_Base):
    name = "pso"

    def __init__(self, trace: DemandTrace, policy: FleetSpec, loop: LoopSpec) -> None:
        super().__init__(trace, policy, loop)
        self.engine = PredictionEngine(policy)
        self.told = [policy.resources[name].capacity for name in trace.resources]
        self.plans = 0
        #: (window after which it was obeyed, event id) of each plan: what the live loop checks
        self.plan_log: list[tuple[int, str]] = []

    def decide(self, outcome: WindowOutcome, plant: Plant) -> list[FleetOrders]:
        for r, name in enumerate(self.trace.resources):
            landed = float(outcome.capacity_end[r])
            if landed != self.told[r]:
                self.engine.resource(name).apply_policy(
                    ResourcePolicy(resource=name, capacity=landed)
                )
                self.told[r] = landed
        out = []
        for window in load_windows(self.trace, outcome.k, outcome.offered):
            for event in self.engine.process(window):
                if isinstance(event, RebalanceRecommended):
                    self.plans += 1
                    self.plan_log.append((outcome.k, event.event_id))
                    out.append(orders_from_plan(event, self.at(event.emitted_at_ms)))
        return out


def load_windows(trace: DemandTrace, k: int, demand: FloatArray) -> list[LoadWindow]:
    """Window ``k`` of every subsystem as PSO's ingest closes it from one sample per window
    whose resource use is ``demand[s, r]`` (what the subsystem asked: what a fleet sends)."""
    start, end = trace.window_ms(k), trace.window_ms(k + 1)
    first, last = iso_ms(start), iso_ms(end)
    windows = []
    for s, sub in enumerate(trace.subsystems):
        resources = {}
        for r, res in enumerate(trace.resources):
            if trace.uses[s, r]:
                v = float(demand[s, r])
                resources[res] = SeriesStats(count=1, mean=v, min=v, max=v, last=v)
        windows.append(
            LoadWindow(
                event_id=f"window:{sub}:{start}",
                subsystem=sub,
                window_start_ms=start,
                window_end_ms=end,
                window_start=first,
                window_end=last,
                samples=1,
                metrics={},
                resources=resources,
            )
        )
    return windows


class OraclePolicy(_Base):
    name = "oracle"

    def __init__(self, trace: DemandTrace, policy: FleetSpec, loop: LoopSpec) -> None:
        super().__init__(trace, policy, loop)
        self.totals = trace.totals()
        self.scalers = [self.elastic(r) for r in range(len(trace.resources))]

    def backlog(self, plant: Plant, r: int, first: int, n: int) -> dict[int, list[float]]:
        """Subsystem -> its backlog's demand on resource ``r`` over windows ``first..+n``
        (the oracle knows its fleet's queues as well as the future)."""
        out = {}
        for cell in plant.cells:
            if cell.res == r and (cell.queue or cell.held):
                natural = self.trace.demand[first : first + n, cell.sub, r]
                out[cell.sub] = _backlog_path(
                    cell, natural, self.trace.window_ms(first), self.trace.step_ms
                )
        return out

    def decide(self, outcome: WindowOutcome, plant: Plant) -> list[FleetOrders]:
        origin = self.origin(outcome)
        first = outcome.k + 1
        step = self.trace.step_ms
        out = []
        for r, name in enumerate(self.trace.resources):
            path = [float(v) for v in self.totals[first : first + self.horizon, r]]
            if not path:
                continue
            backlog = self.backlog(plant, r, first, len(path))
            path = [p + math.fsum(b[h] for b in backlog.values()) for h, p in enumerate(path)]
            capacity = plant.pools[r].landed
            scaler = self.scalers[r]
            scaled = scaler is not None and scaler.decide(origin, path, capacity)
            schedule = scaler.schedule if scaler is not None else []

            def planned(h: int, cap: float = capacity, sc: ScalePlanner | None = scaler) -> float:
                return cap if sc is None else sc.planned(origin + h * step, cap)

            over = [h for h, v in enumerate(path) if v > planned(h) * (1.0 + _EPS) + _EPS]
            plan: RebalanceRecommended | None = None
            if over:  # re-planned every window: the backlog moves with the caps
                h0 = over[0]
                h1 = h0
                while h1 + 1 in over and planned(h1 + 1) <= planned(h0):
                    h1 += 1  # the run, until more capacity lands
                worst = max(range(h0, h1 + 1), key=lambda h: (path[h] - planned(h), -h))
                demand = {
                    sub: {
                        name: float(self.trace.demand[first + worst, s, r])
                        + (backlog[s][worst] if s in backlog else 0.0)
                    }
                    for s, sub in enumerate(self.trace.subsystems)
                    if self.trace.uses[s, r]
                }
                start, end = origin + h0 * step, origin + (h1 + 1) * step
                conflict = planner_conflict(
                    name, f"{name}@{start}:oracle", origin, start, end, path[worst], capacity
                )
                headroom = [
                    (origin + h * step, planned(h) - path[h]) for h in range(h1 + 1, len(path))
                ]
                plan = elastic_plan(
                    self.planner,
                    conflict,
                    demand,
                    planned(worst),
                    headroom,
                    schedule,
                    self.policy,
                    self.mode,
                )
            elif scaled:
                plan = scale_only_plan(name, origin, schedule, self.mode)
            if plan is not None:
                out.append(orders_from_plan(plan, self.at(origin)))
        return out


def _backlog_path(cell: Cell, natural: FloatArray, first_ms: int, step_ms: int) -> list[float]:
    """What a cell's backlog (queued work, and held work once released) will ask of its
    resource in the windows ahead, by the plant's rule: oldest first, no faster than its
    peak natural rate."""
    queued = math.fsum(item[1] for item in cell.queue)
    held = sorted((h[0], h[2]) for h in cell.held)
    out = []
    for h, fresh in enumerate(natural):
        start = first_ms + h * step_ms
        while held and held[0][0] <= start:
            queued += held.pop(0)[1]
        extra = min(queued, max(0.0, cell.ceiling - float(fresh)))
        out.append(extra)
        queued -= extra
    return out


def make_policy(name: str, trace: DemandTrace, policy: FleetSpec, loop: LoopSpec) -> Policy:
    """The policy called ``name`` (one of `POLICIES`)."""
    classes: dict[str, type[_Base]] = {
        "none": NonePolicy,
        "reactive": ReactivePolicy,
        "hpa": HpaPolicy,
        "pso": PsoPolicy,
        "oracle": OraclePolicy,
    }
    if name not in classes:
        raise ValueError(f"unknown policy {name!r} (one of {', '.join(POLICIES)})")
    made: Policy = classes[name](trace, policy, loop)  # type: ignore[assignment]
    return made
