"""Regenerate expected.jsonl: only after reviewing the diff by eye (see tests/unit/test_golden_windows.py)."""
from pathlib import Path
import orjson
from app.codec import SourceRef
from app.core.ingest import TelemetryIngest
from app.settings import WindowConfig
ing = TelemetryIngest(WindowConfig(size_s=60, allowed_lateness_windows=2))
out = []
for i, line in enumerate(Path("tests/data/golden/telemetry.jsonl").read_bytes().splitlines()):
    r = ing.process(line, SourceRef("golden", 0, i))
    for w in r.windows: out.append({"line": i+1, **w.model_dump(mode="json")})
    for d in r.dead: out.append({"line": i+1, "dead": d.reason_code, "index": d.index, "reason": d.reason})
for w in ing.flush(): out.append({"line": "flush", **w.model_dump(mode="json")})
for o in out: print(orjson.dumps(o).decode())
