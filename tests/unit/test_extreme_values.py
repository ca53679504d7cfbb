"""Numeric range: no finite input can make a window or a model raise. Values beyond ±1e100
are rejected at the contract (`app.wire.events.MAX_ABS_VALUE`); every value within it goes through
windows, forecasters, detectors and the conflict predictor to events that validate."""

from __future__ import annotations

import random

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

import app.wire.events as wire
from app.core.engine import PredictionEngine
from app.core.events import MAX_ABS_VALUE
from app.core.ingest import IngestResult
from app.settings import FleetPolicy, ResourceConfig, WindowConfig
from app.wire.codec import SourceRef
from app.wire.records import encode
from app.wire.telemetry import TelemetryIngest

BASE = 1_795_586_400_000


def test_two_values_of_1e308_in_one_window_lose_nothing() -> None:
    """Found from outside: both valid, their sum overflowed when the window closed, so that
    window and an earlier one were lost and the message that closed them dead-lettered."""
    ingest = TelemetryIngest(WindowConfig(size_s=60, allowed_lateness_windows=0, max_time_jump_s=0))
    out = IngestResult()
    for i, x in enumerate([1.0, 1e308, 1e308, 1e100, 1e100, 2.0]):
        ts = BASE + (0 if i < 1 else 60_000 if i < 5 else 120_000) + i
        raw = orjson.dumps({"subsystem": "a", "ts": ts, "metrics": {"x": x}})
        ingest.process(raw, SourceRef("t", 0, i), out)
    assert [w.samples for w in out.windows] == [1, 2]  # 1e308s rejected, both windows closed
    assert out.windows[1].metrics["x"].mean == 1e100
    assert [r.reason_code for d in out.dead for r in d.rejects] == ["invalid_sample"] * 2


extreme = st.sampled_from(
    [MAX_ABS_VALUE, -MAX_ABS_VALUE, 5e-324, -5e-324, 0.0, -0.0, 1e50, 3.0, 1e-300]
) | st.floats(-MAX_ABS_VALUE, MAX_ABS_VALUE)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(extreme, extreme, extreme), min_size=30, max_size=120), st.integers(0, 9))
def test_values_anywhere_in_range_never_make_the_engine_raise(
    values: list[tuple[float, float, float]], seed: int
) -> None:
    policy = FleetPolicy(resources={"db": ResourceConfig(capacity=MAX_ABS_VALUE)})
    ingest = TelemetryIngest(policy.window)
    engine = PredictionEngine(policy.spec())
    rng = random.Random(seed)
    events = []
    out = IngestResult()
    for i, row in enumerate(values):
        for k, name in enumerate(("a", "b", "c")):
            v = row[k]
            raw = orjson.dumps(
                {
                    "subsystem": name,
                    "ts": BASE + i * 60_000 + k,
                    "metrics": {"x": v, "y": rng.choice([v, -v, 0.0])},
                    "resources": {"db": abs(v) * rng.choice([1.0, 1.0, 0.5])},
                }
            )
            ingest.process(raw, SourceRef("t", 0, i), out)
        for window in out.windows:
            events += engine.process(window)
        out.windows.clear()
    assert not out.dead
    events += engine.finish()
    for event in events:
        getattr(wire, type(event).__name__).model_validate_json(encode(event))  # finite, valid
