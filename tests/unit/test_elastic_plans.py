"""The engine's plans for an elastic resource carry scale orders that start a provisioning
delay before the window they are for, within the resource's bounds and steps — some landing
before a true conflict episode starts (acting ahead of time, open loop)."""

from __future__ import annotations

from app.core.closedloop import load_windows
from app.core.engine import PredictionEngine
from app.core.events import RebalanceRecommended
from app.dev.scenarios import generate


def test_scale_orders_land_ahead_of_true_episodes() -> None:
    sc = generate("daily-peaks", days=3, seed=2)
    spec = sc.policy.spec()
    elastic = spec.resources["cpu-pool"].elastic
    assert elastic is not None
    engine = PredictionEngine(spec)
    plans: list[RebalanceRecommended] = []
    for k in range(sc.trace.windows):
        for window in load_windows(sc.trace, k, sc.trace.demand[k]):
            plans.extend(e for e in engine.process(window) if isinstance(e, RebalanceRecommended))
    orders = [a for plan in plans for a in plan.scaling if a.reason == "predicted"]
    assert orders, "no scale-out was planned"
    seen: set[tuple[float, int]] = set()
    for plan in plans:
        for a in plan.scaling:
            if (a.target, a.start_ms) not in seen:  # a schedule repeats orders not yet landed
                assert a.start_ms >= plan.emitted_at_ms  # a new order never starts in the past
                # ... and is decided when it can wait no longer: it starts within a window of
                # being decided, so it lands a full provisioning delay later, in time
                assert a.start_ms < plan.emitted_at_ms + sc.trace.step_ms
                seen.add((a.target, a.start_ms))
            assert elastic.min <= a.target <= elastic.max
            assert a.target / elastic.step == round(a.target / elastic.step)
            if a.reason == "scale_in":
                assert a.lands_ms == a.start_ms and a.target < a.capacity
            else:
                assert a.lands_ms - a.start_ms == elastic.provision_delay_ms
    later = [
        ep for ep in sc.episodes if ep["start_ms"] >= sc.trace.window_ms(sc.loop.warmup_windows)
    ]
    ahead = [
        ep
        for ep in later
        if any(a.lands_ms <= ep["start_ms"] < a.lands_ms + 3_600_000 for a in orders)
    ]
    assert later and ahead, "no scale-out landed before a true episode"
