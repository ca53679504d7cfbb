"""Regenerate the golden backtest input and expected outputs (then review the diff by eye).

    .venv/bin/python tests/data/backtest/regenerate.py            # expected outputs only
    .venv/bin/python tests/data/backtest/regenerate.py --input    # also the input + pso.yaml

Scenario: 3 simulated services sharing ``db-main`` (billing-api, checkout, search), 6 hours
of a Wednesday from 09:00 UTC, one sample per minute, 5-minute windows, horizon 4 windows,
capacity at 0.6 × the weekly expected peak so the midday ramp breaches it. Checkout gets a
labelled incident: ``rps`` × 3 from 13:00 to 13:30 with ``labels.anomaly: true``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import orjson
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from app.dev.simulator import FleetSimulator  # noqa: E402
from app.offline.backtest import run_backtest  # noqa: E402
from app.settings import WindowConfig, load_policy  # noqa: E402

START_MS = 1_795_597_200_000  # 2026-11-25T09:00:00Z
HOUR_MS = 3_600_000
INCIDENT = (START_MS + 4 * HOUR_MS, START_MS + 4 * HOUR_MS + 30 * 60_000)


def write_input() -> None:
    sim = FleetSimulator(subsystems=3, seed=7, start_ms=START_MS, interval_ms=60_000)
    policy = sim.policy(window=WindowConfig(size_s=300, allowed_lateness_windows=1), headroom=0.6)
    doc = policy.model_dump(mode="json")
    doc["prediction"] = {"horizon": 4, "accuracy_every_windows": 24}
    (HERE / "pso.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    with (HERE / "input.jsonl").open("wb") as fh:
        for sample in sim.samples(6 * HOUR_MS):
            if sample["subsystem"] == "checkout" and INCIDENT[0] <= sample["ts"] < INCIDENT[1]:
                sample["metrics"]["rps"] = round(sample["metrics"]["rps"] * 3, 3)
                sample["labels"] = {"anomaly": True}
            fh.write(orjson.dumps(sample) + b"\n")


def write_expected() -> None:
    out = HERE / "expected"
    shutil.rmtree(out, ignore_errors=True)
    run_backtest(HERE / "input.jsonl", load_policy(HERE / "pso.yaml"), out, workers=1, render=False)
    metrics = orjson.loads((out / "metrics.json").read_bytes())
    del metrics["runtime"]
    metrics["input"]["source"] = "input.jsonl"
    (out / "metrics.json").write_bytes(
        orjson.dumps(metrics, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )


if __name__ == "__main__":
    if "--input" in sys.argv:
        write_input()
    write_expected()
