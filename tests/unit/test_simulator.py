"""The simulator is deterministic by seed and produces valid, seasonal telemetry."""

from app.dev.simulator import DAY_MS, FleetSimulator
from app.wire.events import TelemetrySample


def test_same_seed_same_samples() -> None:
    a = list(FleetSimulator(subsystems=5, seed=3).samples(3_600_000))
    b = list(FleetSimulator(subsystems=5, seed=3).samples(3_600_000))
    c = list(FleetSimulator(subsystems=5, seed=4).samples(3_600_000))
    assert a == b and a != c
    assert len(a) == 5 * 360
    for sample in a[:50]:
        TelemetrySample.model_validate(sample)


def test_daily_cycle_and_shared_resource_conflicts() -> None:
    sim = FleetSimulator(subsystems=8, seed=1, interval_ms=60_000, incidents=False)
    capacity = sim.policy().resources["db-main"].capacity
    totals: dict[int, float] = {}
    for s in sim.samples(DAY_MS):
        totals[s["ts"]] = totals.get(s["ts"], 0.0) + s["resources"].get("db-main", 0.0)
    over = [ts for ts, total in totals.items() if total > capacity]
    assert 0 < len(over) < len(totals) / 2  # conflicts happen, at some times of day only
    night = [totals[ts] for ts in totals if (ts % DAY_MS) < 5 * 3_600_000]
    assert max(night) < capacity


def test_names_are_unique_for_large_fleets() -> None:
    names = [p.name for p in FleetSimulator(subsystems=35).profiles]
    assert len(set(names)) == 35
