"""The closed loop: policies acting on a simulated fleet, in event time, without Kafka.

Modules, one concept each: ``trace`` (the natural demand and how the fleet behaves),
``orders`` (what a fleet obeys, and its reading of a plan), ``plant`` (the fleet: capacity,
caps, queues, deferrals), ``hpa`` (the Kubernetes HPA rule), ``policies`` (none, reactive,
hpa, pso, oracle), ``metrics`` (what a run is judged on), ``driver`` (the lock-step).
"""

from app.core.closedloop.driver import ClosedLoop, LoopRun, run_policy
from app.core.closedloop.metrics import ROW_KEYS, LoopMetrics, Verdict, verdict
from app.core.closedloop.orders import CapOrder, FleetOrders, ScaleOrder, orders_from_plan
from app.core.closedloop.plant import Plant, Pool, WindowOutcome
from app.core.closedloop.policies import POLICIES, Policy, load_windows, make_policy
from app.core.closedloop.trace import DemandTrace, LoopSpec

__all__ = [
    "POLICIES",
    "ROW_KEYS",
    "CapOrder",
    "ClosedLoop",
    "DemandTrace",
    "FleetOrders",
    "LoopMetrics",
    "LoopRun",
    "LoopSpec",
    "Plant",
    "Policy",
    "Pool",
    "ScaleOrder",
    "Verdict",
    "WindowOutcome",
    "load_windows",
    "make_policy",
    "orders_from_plan",
    "run_policy",
    "verdict",
]
