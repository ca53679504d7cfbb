"""What the live fleet sends: each window's use, and a heartbeat that closes it at once.

The lock-step against a real worker is `tests/integration/test_live_loop.py`; here, without a
broker, that the messages are valid telemetry and that PSO's own windowing (lateness 0, as
the scenarios configure it) closes window ``k`` on message ``k`` with the offline loop's stats.
"""

from __future__ import annotations

import numpy as np
import orjson

from app.core.closedloop import DemandTrace, LoopSpec, load_windows
from app.core.windows import WindowedLoad
from app.dev.live_loop import LiveFleet
from app.dev.scenarios import generate
from app.settings import load_settings
from app.wire.events import TelemetrySample


def _fleet() -> tuple[LiveFleet, DemandTrace]:
    sc = generate("batch-collision", subsystems=3, days=1, step_s=900)
    fleet = LiveFleet(load_settings(), "127.0.0.1:9", sc.trace, sc.policy.spec(), LoopSpec())
    return fleet, sc.trace


def test_each_window_is_valid_telemetry_keyed_by_subsystem() -> None:
    fleet, trace = _fleet()
    messages = fleet.telemetry(0, trace.demand[0])
    assert [key.decode() for key, _ in messages] == list(trace.subsystems)
    for key, value in messages:
        samples = [TelemetrySample.model_validate(s) for s in orjson.loads(value)]
        assert {s.subsystem for s in samples} == {key.decode()}
        assert samples[1].resources == {} and samples[1].metrics == {}  # the heartbeat


def test_window_k_closes_on_message_k_with_the_offline_loops_stats() -> None:
    fleet, trace = _fleet()
    windows = {
        sub: WindowedLoad(sub, size_ms=trace.step_ms, lateness_ms=0) for sub in trace.subsystems
    }
    for k in range(3):
        demand = trace.demand[k] * (1.0 + k)  # what was offered: not the natural demand
        closed = {}
        for key, value in fleet.telemetry(k, demand):
            for s in orjson.loads(value):
                got = windows[key.decode()].add(s["ts"], {}, s.get("resources", {}))
                assert got.accepted
                closed.update({w.subsystem: w for w in got.closed})
        offline = {w.subsystem: w for w in load_windows(trace, k, np.asarray(demand))}
        assert closed.keys() == offline.keys()
        for sub, window in closed.items():
            assert window.window_start_ms == offline[sub].window_start_ms == trace.window_ms(k)
            assert window.resources == offline[sub].resources
