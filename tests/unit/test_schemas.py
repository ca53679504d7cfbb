"""schemas/ is generated from app/wire/events.py; this fails when they drift."""

import jsonschema
import orjson

from app.settings import WindowConfig
from app.wire.codec import SourceRef
from app.wire.records import encode
from app.wire.schemas import SCHEMA_DIR, render_schemas
from app.wire.telemetry import TelemetryIngest


def test_schema_files_match_models() -> None:
    rendered = render_schemas()
    on_disk = {p.name for p in SCHEMA_DIR.glob("*.json")}
    assert on_disk == set(rendered), "run `pso schemas export`"
    for name, data in rendered.items():
        assert (SCHEMA_DIR / name).read_bytes() == data, (
            f"{name} is stale: run `pso schemas export`"
        )


def test_outputs_validate_against_their_schema() -> None:
    ingest = TelemetryIngest(WindowConfig(size_s=60, allowed_lateness_windows=0, max_time_jump_s=0))
    sample = {
        "subsystem": "a",
        "ts": 1795586400000,
        "metrics": {"cpu": 0.5},
        "resources": {"db": 2},
    }
    ingest.process(orjson.dumps(sample), SourceRef("t", 0, 0))
    result = ingest.process(orjson.dumps(dict(sample, ts=1795586460000)), SourceRef("t", 0, 1))
    late = ingest.process(orjson.dumps(sample), SourceRef("t", 0, 2))
    bad = ingest.process(b"nope", SourceRef("t", 0, 3))
    load_schema = orjson.loads((SCHEMA_DIR / "load_window.v1.json").read_bytes())
    dead_schema = orjson.loads((SCHEMA_DIR / "dead_letter.v2.json").read_bytes())
    tele_schema = orjson.loads((SCHEMA_DIR / "telemetry.v1.json").read_bytes())
    (window,) = result.windows
    jsonschema.validate(orjson.loads(encode(window)), load_schema)
    for dead in late.dead + bad.dead:
        jsonschema.validate(orjson.loads(encode(dead)), dead_schema)
    jsonschema.validate(sample, tele_schema)
    jsonschema.validate(dict(sample, ts="2026-11-25T06:00:00Z"), tele_schema)
    assert b"__faust" not in encode(window)
