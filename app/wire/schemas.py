"""JSON Schemas of every message PSO reads or writes, generated from `app.wire.events`
(``schemas/`` holds them; a test keeps the two in sync)."""

from __future__ import annotations

import json
from pathlib import Path

from app.wire.events import SCHEMAS

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def render_schemas() -> dict[str, bytes]:
    """Schema file name -> canonical JSON bytes, generated from `app.wire.events`."""
    out = {}
    for name, model in SCHEMAS.items():
        schema = model.model_json_schema()
        schema["$id"] = f"https://pso.dev/schemas/{name}"
        out[name] = json.dumps(schema, indent=2, sort_keys=True).encode() + b"\n"
    return out
