"""What the live fleet sends: each window's use, and a heartbeat that closes it at once.

The lock-step against a real worker is `tests/integration/test_live_loop.py`; here, without a
broker, that the messages are valid telemetry and that PSO's own windowing (lateness 0, as
the scenarios configure it) closes window ``k`` on message ``k`` with the offline loop's stats.
"""

from __future__ import annotations

import numpy as np
import orjson

from app.core.closedloop import DemandTrace, LoopSpec, load_windows
from app.core.config import WindowSpec
from app.core.events import LoadWindow
from app.core.windows import WindowedLoad
from app.dev.live_loop import LiveFleet
from app.dev.scenarios import generate
from app.settings import load_settings
from app.wire.events import TelemetrySample


def _fleet() -> tuple[LiveFleet, DemandTrace, WindowSpec]:
    sc = generate("batch-collision", subsystems=3, days=1, step_s=900)
    spec = sc.policy.spec()
    fleet = LiveFleet(load_settings(), "127.0.0.1:9", sc.trace, spec, LoopSpec())
    return fleet, sc.trace, spec.window


def test_each_window_is_valid_telemetry_keyed_by_subsystem() -> None:
    fleet, trace, _ = _fleet()
    messages = fleet.telemetry(0, trace.demand[0])
    assert [key.decode() for key, _ in messages] == list(trace.subsystems)
    for key, value in messages:
        samples = [TelemetrySample.model_validate(s) for s in orjson.loads(value)]
        assert {s.subsystem for s in samples} == {key.decode()}
        assert samples[1].resources == {} and samples[1].metrics == {}  # the heartbeat


def test_window_k_closes_on_message_k_with_the_offline_loops_stats() -> None:
    """From the second window on. A new subsystem's first samples are held until later ones
    confirm its clock (`app.core.windows`), so window 0 closes on message 1: harmless, since
    no forecast is issued on one window."""
    fleet, trace, spec = _fleet()
    assert spec.lateness_ms == 0 and spec.size_ms == trace.step_ms  # as the scenarios write it
    windows = {  # as the worker's ingest windows them
        sub: WindowedLoad(
            sub, spec.size_ms, spec.lateness_ms, spec.max_jump_ms, spec.jump_confirmations
        )
        for sub in trace.subsystems
    }
    offered = [trace.demand[k] * (1.0 + k) for k in range(4)]  # not the natural demand
    for k in range(4):
        closed: dict[str, list[LoadWindow]] = {sub: [] for sub in trace.subsystems}
        for key, value in fleet.telemetry(k, offered[k]):
            for s in orjson.loads(value):
                got = windows[key.decode()].add(s["ts"], {}, s.get("resources", {}))
                assert got.accepted or got.held, got
                closed[key.decode()] += got.closed
        due = [0, 1] if k == 1 else [] if k == 0 else [k]
        for sub, got_windows in closed.items():
            assert [w.window_start_ms for w in got_windows] == [trace.window_ms(j) for j in due]
            for j, window in zip(due, got_windows, strict=True):
                (want,) = [
                    w for w in load_windows(trace, j, np.asarray(offered[j])) if w.subsystem == sub
                ]
                assert window.resources == want.resources
