"""The prediction engine end to end, in one process: deterministic, restorable, schema-valid."""

from __future__ import annotations

import pickle
from collections import Counter
from functools import cache
from typing import Any

import jsonschema
import orjson
import pytest

from app.core.bodies import share_from_values, share_values
from app.core.engine import PredictionEngine
from app.core.events import LoadWindow, iso_ms, ms_to_iso
from app.core.snapshot import SnapshotRejected
from app.dev.simulator import FleetSimulator
from app.settings import FleetPolicy
from app.wire.codec import SourceRef
from app.wire.events import SCHEMAS
from app.wire.records import encode, to_core
from app.wire.schemas import SCHEMA_DIR, render_schemas
from app.wire.telemetry import TelemetryIngest

HOURS = 16


@cache
def scenario() -> tuple[FleetPolicy, tuple[LoadWindow, ...]]:
    sim = FleetSimulator(subsystems=4, seed=2, interval_ms=30_000)
    policy = sim.policy(headroom=0.7)  # tight capacity: conflicts during the day
    ingest = TelemetryIngest(policy.window)
    windows: list[LoadWindow] = []
    for i, sample in enumerate(sim.samples(HOURS * 3_600_000)):
        windows.extend(ingest.process(orjson.dumps(sample), SourceRef("t", 0, i)).windows)
    return policy, tuple(windows)


def run(engine: PredictionEngine, windows: tuple[LoadWindow, ...]) -> list[bytes]:
    return [encode(event) for w in windows for event in engine.process(w)]


@cache
def reference() -> tuple[bytes, ...]:
    policy, windows = scenario()
    return tuple(run(PredictionEngine(policy.spec()), windows))


def test_same_windows_give_byte_identical_events() -> None:
    policy, windows = scenario()
    assert run(PredictionEngine(policy.spec()), windows) == list(reference())


def test_every_kind_of_event_is_produced_and_matches_its_schema() -> None:
    kinds = Counter(orjson.loads(e)["type"] for e in reference())
    for kind in (
        "forecast",
        "conflict_predicted",
        "conflict_observed",
        "rebalance_recommended",
        "accuracy_report",
    ):
        assert kinds[kind] > 0, kinds
    schemas = {
        model.model_fields["type"].default: orjson.loads((SCHEMA_DIR / name).read_bytes())
        for name, model in SCHEMAS.items()
        if "type" in model.model_fields
    }
    seen: set[str] = set()
    for raw in reference():
        doc = orjson.loads(raw)
        if doc["type"] in seen and doc["type"] == "forecast":
            continue  # one forecast is enough to check; there are thousands
        seen.add(doc["type"])
        jsonschema.validate(doc, schemas[doc["type"]])


def test_no_nan_and_ordered_intervals_in_forecasts() -> None:
    for raw in reference():
        doc = orjson.loads(raw)  # orjson would have written NaN as null
        if doc["type"] != "forecast":
            continue
        for body in [*doc["metrics"].values(), *doc["resources"].values()]:
            assert None not in body["point"]
            narrow, wide = sorted(body["intervals"], key=lambda i: i["level"])
            for h, point in enumerate(body["point"]):
                assert wide["lower"][h] <= narrow["lower"][h] <= point
                assert point <= narrow["upper"][h] <= wide["upper"][h]


def test_snapshot_restore_continues_identically() -> None:
    policy, windows = scenario()
    half = len(windows) // 2
    engine = PredictionEngine(policy.spec())
    first = run(engine, windows[:half])
    blob = engine.snapshot("k" * 32)
    restored = PredictionEngine.restore(policy, blob, "k" * 32)
    assert first + run(restored, windows[half:]) == list(reference())


def test_tampered_or_foreign_snapshots_are_refused() -> None:
    policy, windows = scenario()
    engine = PredictionEngine(policy.spec())
    run(engine, windows[:50])
    blob = engine.snapshot("k" * 32)
    with pytest.raises(SnapshotRejected):
        PredictionEngine.restore(policy, blob, "x" * 32)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(SnapshotRejected):
        PredictionEngine.restore(policy, tampered, "k" * 32)


def test_plans_never_exceed_capacity_when_feasible() -> None:
    policy, _ = scenario()
    for raw in reference():
        doc = orjson.loads(raw)
        if doc["type"] != "rebalance_recommended" or not doc["feasible"]:
            continue
        for resource in doc["resources"]:
            total = sum(a["allocated"] for a in doc["allocations"] if a["resource"] == resource)
            assert total <= policy.resources[resource].capacity + 1e-6
        assert doc["residual_overload"] == 0


def test_schemas_include_every_output_type() -> None:
    assert set(render_schemas()) == {p.name for p in SCHEMA_DIR.glob("*.json")}


def test_core_types_mirror_the_wire_models_field_for_field() -> None:
    """The core's dataclasses and the wire's pydantic models are one contract written twice
    (the core imports no pydantic): same names, same fields, in the same order."""
    import dataclasses

    import app.core.events as core
    import app.wire.events as wire

    mirrored = 0
    for name in dir(wire):
        model = getattr(wire, name)
        if not (isinstance(model, type) and issubclass(model, wire._Wire)) or model is wire._Wire:
            continue
        if name in ("TelemetrySample", "ResourceShares"):
            continue  # inputs and envelopes the core never sees
        mine = getattr(core, name)
        assert [f.name for f in dataclasses.fields(mine)] == list(model.model_fields), name
        mirrored += 1
    assert mirrored >= 18


def test_every_event_is_what_its_wire_model_validates_byte_for_byte() -> None:
    """Every kind of event the core makes validates against its wire model (finite, in range)
    and serialises to the bytes the validated model serialises to."""
    import app.wire.events as wire

    policy, windows = scenario()
    engine = PredictionEngine(policy.spec())
    ingest = TelemetryIngest(policy.window)
    events: list[Any] = list(windows[:200])
    for w in windows:
        out = engine.subsystem(w.subsystem).process(w)
        events += [*out.events, *out.shares]
        for share in out.shares:
            events += engine.resource(share.resource).add(share)
    events += ingest.process(b'[{"subsystem": "a", "ts": "x"}, 3]', SourceRef("t", 0, 1)).dead
    events += ingest.process(b"{not json", SourceRef("t", 0, 2)).dead
    kinds = Counter(type(m).__name__ for m in events)
    assert {"LoadWindow", "Forecast", "ResourceShare", "ConflictPredicted"} <= kinds.keys()
    assert {"RebalanceRecommended", "AccuracyReport", "DeadLetter"} <= kinds.keys()
    checked: set[str] = set()
    for event in events:
        kind = type(event).__name__
        if kind in checked and kind in ("Forecast", "ResourceShare", "LoadWindow"):
            continue  # thousands of these: one of each is enough after the first 200 windows
        again = getattr(wire, kind).model_validate_json(encode(event))
        assert again.to_json() == encode(event), kind
        assert to_core(again) == event, kind
        checked.add(kind)


def test_share_values_round_trip() -> None:
    """The backtest hands shares between processes as `share_values`: nothing may change."""
    policy, windows = scenario()
    engine = PredictionEngine(policy.spec())
    shares = [s for w in windows[:200] for s in engine.subsystem(w.subsystem).process(w).shares]
    assert shares
    for share in shares:
        again = share_from_values(pickle.loads(pickle.dumps(share_values(share))))
        assert again == share and encode(again) == encode(share)


@pytest.mark.parametrize(
    "ms",
    [946_684_800_000, 1_795_597_200_000, 1_795_597_259_999, 4_102_444_799_999, 951_782_400_123],
)
def test_iso_ms_is_ms_to_iso(ms: int) -> None:
    assert iso_ms(ms) == ms_to_iso(ms)
