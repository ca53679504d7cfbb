"""The engine raises one ``AnomalyDetected`` per episode, and the event carries the onset score.

The score changed meaning (a calibrated likelihood at an episode's onset, damped afterwards);
the live decision did not: an incident of many windows is one event, a second incident after
a calm spell is a second one.
"""

from __future__ import annotations

from functools import cache

import orjson

from app.core.engine import PredictionEngine
from app.core.events import AnomalyDetected, LoadWindow
from app.dev.simulator import FleetSimulator
from app.settings import FleetPolicy
from app.wire.codec import SourceRef
from app.wire.telemetry import TelemetryIngest

HOUR = 3_600_000
SERIES = ("checkout", "rps")


@cache
def scenario() -> tuple[FleetPolicy, tuple[LoadWindow, ...], tuple[tuple[int, int], ...]]:
    """A day of one-minute windows; ``checkout``'s rps is tripled twice for 40 minutes."""
    sim = FleetSimulator(subsystems=2, seed=3, interval_ms=60_000)
    policy = sim.policy()
    start = sim.start_ms
    incidents = (
        (start + 14 * HOUR, start + 14 * HOUR + 40 * 60_000),
        (start + 18 * HOUR, start + 18 * HOUR + 40 * 60_000),
    )
    ingest = TelemetryIngest(policy.window)
    windows: list[LoadWindow] = []
    for i, sample in enumerate(sim.samples(24 * HOUR)):
        if sample["subsystem"] == SERIES[0] and any(a <= sample["ts"] < b for a, b in incidents):
            sample["metrics"][SERIES[1]] = round(sample["metrics"][SERIES[1]] * 3.0, 3)
        windows.extend(ingest.process(orjson.dumps(sample), SourceRef("t", 0, i)).windows)
    return policy, tuple(windows), incidents


def anomalies(engine: PredictionEngine, windows: tuple[LoadWindow, ...]) -> list[AnomalyDetected]:
    return [e for w in windows for e in engine.process(w) if isinstance(e, AnomalyDetected)]


def test_one_event_per_incident_with_the_onset_score() -> None:
    policy, windows, incidents = scenario()
    engine = PredictionEngine(policy.spec())
    events = [e for e in anomalies(engine, windows) if (e.subsystem, e.series) == SERIES]
    for a, b in incidents:
        during = [e for e in events if a <= e.window_start_ms < b]
        assert len(during) == 1, [e.window_start_ms for e in during]
        event = during[0]
        assert event.window_start_ms < a + 5 * 60_000  # at the onset, not later in it
        threshold = engine.subsystem(SERIES[0]).series[("metric", SERIES[1])].detector.threshold
        assert threshold <= event.score <= 1.0  # the onset row of the score column
        assert event.value > event.upper
    # the 40 windows of each incident were all far above normal, yet raised one event each
    later = [
        e for e in events if any(a + 5 * 60_000 <= e.window_start_ms < b for a, b in incidents)
    ]
    assert later == []
