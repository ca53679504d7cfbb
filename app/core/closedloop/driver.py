"""Drive one policy over a demand trace, window by window, in event time.

`ClosedLoop` is the lock-step the live loop follows too: `step` runs window ``k`` in the
plant, scores it, and hands it to the policy, whose orders the plant takes from their event
time on. A live fleet process replaces only the policy's side (it sends the window as
telemetry and the capacity in place, reads ``pso.rebalance`` and passes each plan through
`app.core.closedloop.orders.orders_from_plan` to `receive`); the plant, the metrics and the
event times are the same, so the same trace gives the same figures.

`run_policy` runs a whole trace and keeps what a report draws (`LoopRun`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.core.closedloop.metrics import LoopMetrics
from app.core.closedloop.orders import FleetOrders
from app.core.closedloop.plant import Plant, WindowOutcome
from app.core.closedloop.policies import Policy, make_policy
from app.core.closedloop.trace import BoolArray, DemandTrace, FloatArray, LoopSpec
from app.core.config import FleetSpec


class ClosedLoop:
    """One policy, one trace, one window at a time."""

    def __init__(
        self, trace: DemandTrace, policy: FleetSpec, loop: LoopSpec, controller: Policy | None
    ) -> None:
        self.trace = trace
        self.plant = Plant(trace, policy, loop)
        self.metrics = LoopMetrics(trace.step_ms, loop.warmup_windows)
        self.controller = controller
        self.k = 0

    @property
    def done(self) -> bool:
        return self.k >= self.trace.windows

    def receive(self, orders: FleetOrders) -> None:
        """Orders for the fleet (from the policy, or read from ``pso.rebalance``)."""
        self.plant.receive(orders)

    def step(self) -> WindowOutcome:
        """Run the next window, score it, and give it to the policy (if any)."""
        if self.done:
            raise IndexError("the trace is over")
        outcome = self.plant.step(self.k)
        self.metrics.add(outcome)
        self.k += 1
        if self.controller is not None:
            for orders in self.controller.decide(outcome, self.plant):
                self.receive(orders)
        return outcome


@dataclass(frozen=True, slots=True)
class LoopRun:
    """One policy's run: its metrics and, per window and resource, what a chart shows."""

    policy: str
    metrics: LoopMetrics
    natural: FloatArray  # (windows, resources): natural total demand
    offered: FloatArray  # (windows, resources): offered (natural + queues, before caps)
    capacity: FloatArray  # (windows, resources): mean capacity
    conflict: BoolArray  # (windows, resources)
    scale_marks: tuple[tuple[int, int], ...]  # (event time, resource) of capacity orders
    cap_marks: tuple[tuple[int, int], ...]  # (event time, resource) of caps set


def run_policy(
    trace: DemandTrace,
    policy: FleetSpec,
    loop: LoopSpec,
    name: str,
    progress: Callable[[int], None] | None = None,
) -> LoopRun:
    """Run the policy called ``name`` over the whole trace; ``progress(windows done)`` now
    and then."""
    run = ClosedLoop(trace, policy, loop, make_policy(name, trace, policy, loop))
    n, n_res = trace.windows, len(trace.resources)
    natural = np.zeros((n, n_res))
    offered = np.zeros((n, n_res))
    capacity = np.zeros((n, n_res))
    conflict = np.zeros((n, n_res), dtype=np.bool_)
    while not run.done:
        out = run.step()
        natural[out.k] = out.natural.sum(axis=0)
        offered[out.k] = out.offered.sum(axis=0)
        capacity[out.k] = out.capacity
        conflict[out.k] = out.conflict
        if progress is not None and (run.k % 500 == 0 or run.done):
            progress(run.k)
    scale_marks = tuple((t, r) for r, pool in enumerate(run.plant.pools) for t in pool.action_times)
    return LoopRun(
        name,
        run.metrics,
        natural,
        offered,
        capacity,
        conflict,
        tuple(sorted(scale_marks)),
        tuple(sorted(run.plant.cap_marks)),
    )
