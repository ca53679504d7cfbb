"""The prediction engine end to end, in one process: deterministic, restorable, schema-valid."""

from __future__ import annotations

import pickle
from collections import Counter
from functools import cache
from typing import Any

import jsonschema
import orjson
import pytest

from app.core.engine import PredictionEngine, iso_ms, share_from_values, share_values
from app.core.ingest import TelemetryIngest
from app.core.snapshot import SnapshotRejected
from app.dev.simulator import FleetSimulator
from app.settings import FleetPolicy
from app.wire.codec import SourceRef
from app.wire.events import (
    SCHEMAS,
    Forecast,
    LoadWindow,
    ResourceShare,
    SeriesForecastBody,
    ms_to_iso,
)
from app.wire.schemas import SCHEMA_DIR, render_schemas

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
    return [event.to_json() for w in windows for event in engine.process(w)]


@cache
def reference() -> tuple[bytes, ...]:
    policy, windows = scenario()
    return tuple(run(PredictionEngine(policy), windows))


def test_same_windows_give_byte_identical_events() -> None:
    policy, windows = scenario()
    assert run(PredictionEngine(policy), windows) == list(reference())


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
    engine = PredictionEngine(policy)
    first = run(engine, windows[:half])
    blob = engine.snapshot("k" * 32)
    restored = PredictionEngine.restore(policy, blob, "k" * 32)
    assert first + run(restored, windows[half:]) == list(reference())


def test_tampered_or_foreign_snapshots_are_refused() -> None:
    policy, windows = scenario()
    engine = PredictionEngine(policy)
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


def test_hot_path_events_equal_validated_ones() -> None:
    """Forecasts and shares are built without validation (`trusted_model`): they must be the
    very models, fields set and bytes that validation gives."""
    policy, windows = scenario()
    engine = PredictionEngine(policy)
    seen: set[str] = set()
    for w in windows[:300]:
        out = engine.subsystem(w.subsystem).process(w)
        for event in [*out.events, *out.shares]:
            if not isinstance(event, Forecast | ResourceShare):
                continue
            seen.add(event.type)
            again = type(event).model_validate_json(event.to_json())
            assert again == event and again.to_json() == event.to_json()
            constructed = type(event).model_construct(**event.model_dump(exclude={"type"}))
            assert event.model_fields_set == constructed.model_fields_set
            body = event.metrics if isinstance(event, Forecast) else {"": event.forecast}
            for part in body.values():
                assert part.model_fields_set == set(SeriesForecastBody.model_fields)
    assert seen == {"forecast", "resource_share"}


def test_share_values_round_trip() -> None:
    """The backtest hands shares between processes as `share_values`: nothing may change."""
    policy, windows = scenario()
    engine = PredictionEngine(policy)
    shares = [s for w in windows[:200] for s in engine.subsystem(w.subsystem).process(w).shares]
    assert shares
    for share in shares:
        again = share_from_values(pickle.loads(pickle.dumps(share_values(share))))
        assert again == share and again.to_json() == share.to_json()
        assert again.model_fields_set == share.model_fields_set


def test_to_json_is_the_bytes_of_model_dump() -> None:
    """`to_json` serialises ``__dict__`` directly: the bytes of the pydantic dump, every type."""
    policy, windows = scenario()
    engine = PredictionEngine(policy)
    ingest = TelemetryIngest(policy.window)
    models: list[Any] = list(windows[:200])
    for w in windows:
        out = engine.subsystem(w.subsystem).process(w)
        models += [*out.events, *out.shares]
        for share in out.shares:
            models += engine.resource(share.resource).add(share)
    models += ingest.process(b'[{"subsystem": "a", "ts": "x"}, 3]', SourceRef("t", 0, 1)).dead
    models += ingest.process(b"{not json", SourceRef("t", 0, 2)).dead
    kinds = Counter(type(m).__name__ for m in models)
    assert {"LoadWindow", "Forecast", "ResourceShare", "ConflictPredicted"} <= kinds.keys()
    assert {"RebalanceRecommended", "AccuracyReport", "DeadLetter"} <= kinds.keys()
    for m in models:
        assert m.to_json() == orjson.dumps(m.model_dump(mode="json")), type(m).__name__


@pytest.mark.parametrize(
    "ms",
    [946_684_800_000, 1_795_597_200_000, 1_795_597_259_999, 4_102_444_799_999, 951_782_400_123],
)
def test_iso_ms_is_ms_to_iso(ms: int) -> None:
    assert iso_ms(ms) == ms_to_iso(ms)
