"""What a fleet obeys: capacity orders and per-subsystem caps, and how it reads a plan.

Every policy acts through these, so all of them use the same actuators. `orders_from_plan`
is the fleet's reading of a `RebalanceRecommended` (what a live fleet consuming
``pso.rebalance`` does): the latest plan of a resource replaces its caps and, for an elastic
resource, its schedule of capacity orders not yet started; an allocation cut to ``allocated``
caps the subsystem over the plan's window — the cut is deferred (held, released after the
window, at its first deferral's time) or throttled (queued or lost, per subsystem).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.core.events import RebalanceRecommended


@dataclass(frozen=True, slots=True)
class ScaleOrder:
    """Set ``resource``'s capacity to ``target`` from ``start_ms`` (added capacity lands a
    provisioning delay later; removed capacity goes at once)."""

    resource: str
    target: float
    start_ms: int


@dataclass(frozen=True, slots=True)
class CapOrder:
    """Admit at most ``limit`` of ``subsystem``'s demand on ``resource`` in the windows of
    ``[start_ms, end_ms)``; the rest is deferred until ``release_ms`` or throttled."""

    subsystem: str
    resource: str
    limit: float
    start_ms: int
    end_ms: int
    defer: bool
    release_ms: int


@dataclass(frozen=True, slots=True)
class FleetOrders:
    """Orders the fleet takes at ``at_ms``: per resource, its new schedule (replacing the
    orders not yet started) and its new caps (replacing the previous ones)."""

    at_ms: int
    schedules: dict[str, list[ScaleOrder]] = field(default_factory=dict)
    caps: dict[str, list[CapOrder]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.schedules or self.caps)


def orders_from_plan(plan: RebalanceRecommended, at_ms: int) -> FleetOrders:
    """The fleet's reading of one plan, taken at ``at_ms``.

    Examples
    --------
    >>> from app.core.events import Allocation, Deferral, ScaleAction
    >>> plan = RebalanceRecommended(
    ...     event_id="p", conflict_id="db@600000", mode="advise", emitted_at_ms=0,
    ...     window_start_ms=600_000, window_end_ms=900_000, resources=["db"],
    ...     allocations=[
    ...         Allocation(subsystem="api", resource="db", demand=8.0, allocated=8.0,
    ...                    minimum=0.0, weight=5.0, action="keep"),
    ...         Allocation(subsystem="etl", resource="db", demand=6.0, allocated=2.0,
    ...                    minimum=0.0, weight=1.0, action="defer")],
    ...     deferrals=[Deferral(subsystem="etl", resource="db", amount=4.0,
    ...                         from_ms=600_000, to_ms=960_000)],
    ...     feasible=True, residual_overload=0.0, value_protected=0.0, value_at_risk=0.0,
    ...     scaling=[ScaleAction(resource="db", capacity=10.0, target=20.0, start_ms=60_000,
    ...                          lands_ms=660_000, reason="predicted")])
    >>> orders = orders_from_plan(plan, at_ms=0)
    >>> [(c.subsystem, c.limit, c.start_ms, c.end_ms, c.defer, c.release_ms)
    ...  for c in orders.caps["db"]]
    [('etl', 2.0, 600000, 900000, True, 960000)]
    >>> orders.schedules["db"]
    [ScaleOrder(resource='db', target=20.0, start_ms=60000)]
    """
    end = plan.window_end_ms if plan.window_end_ms is not None else plan.window_start_ms
    caps: dict[str, list[CapOrder]] = {res: [] for res in plan.resources}
    for a in plan.allocations:
        if a.action == "keep":
            continue
        times = [
            d.to_ms
            for d in plan.deferrals
            if (d.subsystem, d.resource) == (a.subsystem, a.resource)
        ]
        release = max(end, min(times)) if times else end
        caps.setdefault(a.resource, []).append(
            CapOrder(
                subsystem=a.subsystem,
                resource=a.resource,
                limit=a.allocated,
                start_ms=plan.window_start_ms,
                end_ms=end,
                defer=a.action == "defer",
                release_ms=release,
            )
        )
    if not plan.allocations and not plan.conflict_id:
        caps = {}  # a scale-only plan leaves the caps alone
    schedules: dict[str, list[ScaleOrder]] = {res: [] for res in plan.resources}
    for s in plan.scaling:
        schedules.setdefault(s.resource, []).append(ScaleOrder(s.resource, s.target, s.start_ms))
    return FleetOrders(at_ms=at_ms, schedules=schedules, caps=caps)
