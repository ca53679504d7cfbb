"""Golden test: a fixed telemetry file (out-of-order, late and invalid samples) gives exactly
the windows and dead letters in expected.jsonl, which was reviewed by eye:

- api 06:00 window: 3 samples (06:00:05, 06:00:30 and the out-of-order 06:00:50), cpu mean 0.7,
  last = 0.9 (latest event time, not latest arrival); closed by the 06:03:30 sample.
- 06:00:59 arrives after that window closed -> dead letter `late`.
- 06:01:59 is out of order but within lateness -> joins the api 06:01 window.
- NaN is not JSON -> `invalid_json`; in the worker batch, a negative resource and an empty
  subsystem are rejected by index while the good sample in the same batch is windowed.
- flush closes the remaining open windows in subsystem order.
"""

from pathlib import Path

import orjson

from app.codec import SourceRef
from app.core.ingest import TelemetryIngest
from app.settings import WindowConfig

HERE = Path(__file__).resolve().parents[1] / "data" / "golden"


def run_golden() -> list[bytes]:
    ingest = TelemetryIngest(WindowConfig(size_s=60, allowed_lateness_windows=2))
    out: list[bytes] = []
    lines = (HERE / "telemetry.jsonl").read_bytes().splitlines()
    for i, line in enumerate(lines):
        result = ingest.process(line, SourceRef("golden", 0, i))
        for w in result.windows:
            out.append(orjson.dumps({"line": i + 1, **w.model_dump(mode="json")}))
        for d in result.dead:
            out.append(
                orjson.dumps(
                    {"line": i + 1, "dead": d.reason_code, "index": d.index, "reason": d.reason}
                )
            )
    for w in ingest.flush():
        out.append(orjson.dumps({"line": "flush", **w.model_dump(mode="json")}))
    return out


def test_golden_windows_match_reviewed_file() -> None:
    expected = (HERE / "expected.jsonl").read_bytes().splitlines()
    assert run_golden() == expected


def test_every_sample_lands_once() -> None:
    expected = [orjson.loads(x) for x in (HERE / "expected.jsonl").read_bytes().splitlines()]
    windowed = sum(e["samples"] for e in expected if e.get("type") == "load_window")
    dead = sum(1 for e in expected if "dead" in e)
    # 15 samples in the file (lines, with batch elements counted one by one).
    assert windowed + dead == 15
