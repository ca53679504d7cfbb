"""Value-ranked rebalance plans for a predicted conflict on shared resources.

Given what every subsystem is forecast to ask of each contended resource in the conflict
window, the planner decides who gets how much so that the business value served is maximal:

    maximise    Σ_{s,r} weight_s · alloc_{s,r}
    subject to  Σ_s alloc_{s,r} <= capacity_r              for every contended resource r
                min_{s,r} <= alloc_{s,r} <= demand_{s,r}    (min capped at demand)

solved as one linear program with HiGHS (`scipy.optimize.linprog`). A subsystem's weight
applies to each resource it uses. As stated the program separates by resource (a fractional
knapsack per resource), so the LP is tiny; it is kept as one LP so coupling constraints can be
added later without changing the shape of the code.

What is cut is then either *deferred* (deferrable subsystems: the shortfall moves to the
earliest later windows with predicted headroom) or *throttled*. When even the guaranteed
minimums do not fit, the plan says so (``feasible=False``) instead of raising.

Pure and deterministic: inputs are walked in sorted order, ties between equal weights are
broken by a tiny objective bonus in subsystem-name order (so the optimum is unique and does
not depend on which vertex the solver lands on), and the solver's answer is clipped back into
its bounds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import linprog

from app.core.config import FleetSpec, SubsystemSpec
from app.core.events import Allocation, ConflictPredicted, Deferral, RebalanceRecommended

PlanMode = Literal["advise", "dry-run"]
_DEFAULT_POLICY = SubsystemSpec()


@dataclass(slots=True)
class _Cell:
    """One (subsystem, resource) decision of the plan."""

    subsystem: str
    resource: str
    demand: float
    minimum: float
    weight: float
    deferrable: bool
    allocated: float = 0.0
    deferred: float = 0.0


class RebalancePlanner:
    """Turn a `ConflictPredicted` and per-subsystem demand into a `RebalanceRecommended`.

    Parameters
    ----------
    tie_epsilon
        Relative size of the objective bonus that breaks ties between equal weights (earlier
        subsystem name first). Weights closer than this (relative to the largest weight) may
        be ordered by name rather than by weight.
    tolerance
        Shortfalls and headrooms at or below this are treated as zero (solver noise).

    Examples
    --------
    >>> from app.core.config import FleetSpec, ResourceSpec, SubsystemSpec
    >>> policy = FleetSpec(
    ...     resources={"db": ResourceSpec(capacity=10.0)},
    ...     subsystems={"api": SubsystemSpec(weight=5.0),
    ...                 "batch": SubsystemSpec(weight=1.0, deferrable=True)})
    >>> conflict = ConflictPredicted(
    ...     event_id="db@1700000100000:predicted:1700000040000", status="predicted",
    ...     conflict_id="db@1700000100000", resource="db", emitted_at_ms=1700000040000,
    ...     emitted_at="2023-11-14T22:14:00.000Z", expected_start_ms=1700000100000,
    ...     expected_end_ms=1700000160000, expected_start="2023-11-14T22:15:00.000Z",
    ...     lead_time_s=60, probability=0.9, predicted_peak=14.0, capacity=10.0,
    ...     contributors=[])
    >>> plan = RebalancePlanner().plan(
    ...     conflict, {"api": {"db": 8.0}, "batch": {"db": 6.0}},
    ...     {"db": [(1700000160000, 3.0), (1700000220000, 5.0)]}, policy, "advise")
    >>> [(a.subsystem, a.allocated, a.action) for a in plan.allocations]
    [('api', 8.0, 'keep'), ('batch', 2.0, 'defer')]
    >>> [(d.amount, d.to_ms) for d in plan.deferrals]
    [(3.0, 1700000160000), (1.0, 1700000220000)]
    >>> plan.feasible, plan.residual_overload
    (True, 0.0)
    """

    def __init__(self, tie_epsilon: float = 1e-6, tolerance: float = 1e-9) -> None:
        if not 0.0 <= tie_epsilon < 1e-3:
            raise ValueError("tie_epsilon must be in [0, 1e-3)")
        if tolerance < 0.0:
            raise ValueError("tolerance must be >= 0")
        self.tie_epsilon = tie_epsilon
        self.tolerance = tolerance

    def plan(
        self,
        conflict: ConflictPredicted,
        demand: Mapping[str, Mapping[str, float]],
        future_headroom: Mapping[str, Sequence[tuple[int, float]]],
        policy: FleetSpec,
        mode: PlanMode = "advise",
        capacities: Mapping[str, float] | None = None,
    ) -> RebalanceRecommended:
        """Plan the conflict window; never raises on data (infeasibility is reported).

        Parameters
        ----------
        conflict
            The conflict being answered; its window is ``expected_start_ms``.
        demand
            subsystem -> resource -> forecast demand in that window, for every contended
            resource. Negative or non-finite demand is read as 0 (and said in ``note``).
        future_headroom
            resource -> ``[(window_start_ms, headroom), ...]`` for later windows.
        policy
            Weights, minimums, deferrability and capacities. Subsystems it does not list
            get weight 1, minimum 0, not deferrable.
        mode
            Passed through to the event.
        capacities
            Overrides of capacity per resource (e.g. from the capacity topic). Otherwise the
            conflict's own capacity for its resource, then ``policy.resources``; a resource
            with no known capacity is left unconstrained (and said in ``note``).
        """
        notes: list[str] = []
        cells = self._cells(demand, policy, notes)
        resources = sorted({conflict.resource, *(c.resource for c in cells)})
        capacity = self._capacities(resources, conflict, policy, capacities, notes)

        residual = 0.0
        lp_resources: list[str] = []
        for res in resources:
            mine = [c for c in cells if c.resource == res]
            cap = capacity[res]
            if cap is None:
                for c in mine:
                    c.allocated = c.demand
                continue
            floor = math.fsum(c.minimum for c in mine)
            if floor > cap:
                excess = floor - cap
                residual += excess
                notes.append(
                    f"{res}: minimums {floor:g} exceed capacity {cap:g} by {excess:g}; "
                    "minimums scaled down proportionally"
                )
                for c in mine:
                    c.allocated = c.minimum * cap / floor
            else:
                lp_resources.append(res)
        in_lp = set(lp_resources)
        lp_cells = [c for c in cells if c.resource in in_lp]
        self._solve(lp_cells, lp_resources, capacity, notes)
        moves = self._defer(cells, future_headroom, conflict.expected_start_ms, notes)
        return self._event(conflict, mode, resources, cells, moves, residual, notes)

    # ----------------------------------------------------------------- inputs

    @staticmethod
    def _cells(
        demand: Mapping[str, Mapping[str, float]], policy: FleetSpec, notes: list[str]
    ) -> list[_Cell]:
        cells: list[_Cell] = []
        for sub in sorted(demand):
            conf = policy.subsystems.get(sub, _DEFAULT_POLICY)
            for res in sorted(demand[sub]):
                raw = demand[sub][res]
                value = float(raw) if math.isfinite(raw) else 0.0
                if value < 0.0 or not math.isfinite(raw):
                    notes.append(f"{sub}/{res}: demand {raw!r} read as 0")
                    value = 0.0
                minimum = min(max(0.0, conf.min.get(res, 0.0)), value)
                cells.append(_Cell(sub, res, value, minimum, conf.weight, conf.deferrable))
        return cells

    @staticmethod
    def _capacities(
        resources: Sequence[str],
        conflict: ConflictPredicted,
        policy: FleetSpec,
        overrides: Mapping[str, float] | None,
        notes: list[str],
    ) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for res in resources:
            cap: float | None = None
            if overrides is not None and res in overrides:
                cap = overrides[res]
            elif res == conflict.resource:
                cap = conflict.capacity
            elif res in policy.resources:
                cap = policy.resources[res].capacity
            if cap is not None and not (math.isfinite(cap) and cap >= 0.0):
                notes.append(f"{res}: capacity {cap!r} unusable; left unconstrained")
                cap = None
            elif cap is None:
                notes.append(f"{res}: no capacity known; left unconstrained")
            out[res] = cap
        return out

    # ----------------------------------------------------------------- the LP

    def _priority(self, cells: Sequence[_Cell]) -> list[_Cell]:
        """Highest weight first, then subsystem name: the order ties are broken in."""
        return sorted(cells, key=lambda c: (-c.weight, c.subsystem, c.resource))

    def _solve(
        self,
        cells: list[_Cell],
        resources: Sequence[str],
        capacity: Mapping[str, float | None],
        notes: list[str],
    ) -> None:
        if not cells:
            return
        names = sorted({c.subsystem for c in cells})
        rank = {name: i for i, name in enumerate(names)}
        scale = max(1.0, max(c.weight for c in cells))
        bonus = [
            self.tie_epsilon * scale * (len(names) - rank[c.subsystem]) / len(names) for c in cells
        ]
        cost = np.array([-(c.weight + b) for c, b in zip(cells, bonus, strict=True)])
        row = {res: i for i, res in enumerate(resources)}
        a_ub = np.zeros((len(resources), len(cells)))
        for j, c in enumerate(cells):
            a_ub[row[c.resource], j] = 1.0
        b_ub = np.array([capacity[res] for res in resources], dtype=float)
        bounds = np.array([(c.minimum, c.demand) for c in cells], dtype=float)
        result = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
        if result.status == 0 and result.x is not None:
            for c, x in zip(cells, result.x, strict=True):
                c.allocated = min(c.demand, max(c.minimum, float(x)))
        else:
            notes.append(f"LP status {result.status} ({result.message}); greedy fallback used")
            self._greedy(cells, resources, capacity)
        self._polish(cells, resources, capacity)

    def _greedy(
        self,
        cells: Sequence[_Cell],
        resources: Sequence[str],
        capacity: Mapping[str, float | None],
    ) -> None:
        """Minimums first, then the rest by priority: the LP's optimum for this program."""
        for res in resources:
            mine = [c for c in cells if c.resource == res]
            cap = capacity[res]
            assert cap is not None
            left = cap - math.fsum(c.minimum for c in mine)
            for c in self._priority(mine):
                extra = max(0.0, min(c.demand - c.minimum, left))
                c.allocated = c.minimum + extra
                left -= extra

    def _polish(
        self,
        cells: Sequence[_Cell],
        resources: Sequence[str],
        capacity: Mapping[str, float | None],
    ) -> None:
        """Take any solver overshoot of capacity back from the lowest-priority cells."""
        for res in resources:
            mine = [c for c in cells if c.resource == res]
            cap = capacity[res]
            assert cap is not None
            over = math.fsum(c.allocated for c in mine) - cap
            for c in reversed(self._priority(mine)):
                if over <= 0.0:
                    break
                take = min(over, c.allocated - c.minimum)
                c.allocated -= take
                over -= take

    # ----------------------------------------------------------------- deferral

    def _defer(
        self,
        cells: Sequence[_Cell],
        future_headroom: Mapping[str, Sequence[tuple[int, float]]],
        window_start_ms: int,
        notes: list[str],
    ) -> list[Deferral]:
        """Greedy in time: each deferrable shortfall fills the earliest later headroom first.

        Subsystems are served in priority order, so when headroom is short the most valuable
        deferred load gets the earliest windows. Headroom is shared: what one deferral uses,
        the next cannot.
        """
        moves: list[Deferral] = []
        # resource -> [(window_start_ms, [headroom left])] in time order
        left: dict[str, list[tuple[int, list[float]]]] = {}
        for res in sorted(future_headroom):
            left[res] = [
                (int(ts), [float(h)])
                for ts, h in sorted(future_headroom[res])
                if ts > window_start_ms and math.isfinite(h) and h > self.tolerance
            ]
        for c in self._priority([c for c in cells if c.deferrable]):
            shortfall = c.demand - c.allocated
            if shortfall <= self.tolerance:
                continue
            for to_ms, window in left.get(c.resource, []):
                if shortfall <= self.tolerance:
                    break
                amount = min(shortfall, window[0])
                if amount <= self.tolerance:
                    continue
                window[0] -= amount
                shortfall -= amount
                c.deferred += amount
                moves.append(
                    Deferral(
                        subsystem=c.subsystem,
                        resource=c.resource,
                        amount=float(amount),
                        from_ms=window_start_ms,
                        to_ms=to_ms,
                    )
                )
            if shortfall > self.tolerance:
                notes.append(
                    f"{c.subsystem}/{c.resource}: {shortfall:g} could not be deferred "
                    "(no headroom left within the horizon)"
                )
        return moves

    # ----------------------------------------------------------------- the event

    def _event(
        self,
        conflict: ConflictPredicted,
        mode: PlanMode,
        resources: list[str],
        cells: Sequence[_Cell],
        moves: Sequence[Deferral],
        residual: float,
        notes: list[str],
    ) -> RebalanceRecommended:
        allocations: list[Allocation] = []
        protected: list[float] = []
        at_risk: list[float] = []
        for c in sorted(cells, key=lambda c: (c.resource, c.subsystem)):
            cut = c.demand - c.allocated
            action: Literal["keep", "throttle", "defer"] = "keep"
            if cut > self.tolerance:
                action = "defer" if c.deferred > self.tolerance else "throttle"
            allocations.append(
                Allocation(
                    subsystem=c.subsystem,
                    resource=c.resource,
                    demand=float(c.demand),
                    allocated=float(c.allocated),
                    minimum=float(c.minimum),
                    weight=float(c.weight),
                    action=action,
                )
            )
            protected.append(c.weight * (c.allocated + c.deferred))
            at_risk.append(c.weight * max(0.0, cut - c.deferred))
        return RebalanceRecommended(
            event_id=f"plan:{conflict.conflict_id}:{conflict.emitted_at_ms}",
            conflict_id=conflict.conflict_id,
            mode=mode,
            emitted_at_ms=conflict.emitted_at_ms,
            window_start_ms=conflict.expected_start_ms,
            resources=resources,
            allocations=allocations,
            deferrals=sorted(moves, key=lambda d: (d.resource, d.subsystem, d.to_ms)),
            feasible=residual <= 0.0,
            residual_overload=float(max(0.0, residual)),
            value_protected=math.fsum(protected),
            value_at_risk=math.fsum(at_risk),
            note="; ".join(notes),
            window_end_ms=conflict.expected_end_ms,
        )
