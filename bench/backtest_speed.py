"""`pso backtest` throughput on the simulator fleet. Prints one JSON object.

Scenario: ``--subsystems`` (100) simulated services × exactly 5 series (the simulator's 3
metrics and 0-2 resource uses, padded by `app.dev.simulator.five_series` as the live benchmark
pads them), one sample per ``--interval`` seconds (1) for ``--minutes`` (20) — or ``--days`` — of
event time, 60 s windows. The telemetry file is generated into a temporary directory first
(not timed); then `run_backtest` runs end to end (ingest, stage 1 in ``--workers``
processes, stage 2, every output file, metrics.json; the report is not rendered) and
``samples_per_s`` = samples / wall seconds of that call.

The engine's imports (numpy, scipy: ~1 s when Python may not write bytecode caches) happen
before the clock starts and are reported as ``import_s``: a once-per-process cost that would
otherwise dominate a 20-minute scenario. ``cold_samples_per_s`` counts them in.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import orjson

from app.dev.simulator import FleetSimulator, five_series
from app.offline.backtest import run_backtest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subsystems", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--days", type=float, default=None, help="overrides --minutes")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    duration_ms = int((args.days * 1440 if args.days is not None else args.minutes) * 60_000)
    sim = FleetSimulator(
        subsystems=args.subsystems, seed=args.seed, interval_ms=int(args.interval * 1000)
    )
    policy = sim.policy()
    with tempfile.TemporaryDirectory(prefix="pso-bench-") as tmp:
        source = Path(tmp) / "telemetry.jsonl"
        t0 = time.perf_counter()
        with source.open("wb") as fh:
            for sample in sim.samples(duration_ms):
                fh.write(orjson.dumps(five_series(sample)) + b"\n")
        generate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        import app.core.engine  # noqa: F401  (scipy: see the docstring)

        import_s = time.perf_counter() - t0
        started = time.perf_counter()
        metrics = run_backtest(
            source, policy, Path(tmp) / "out", workers=args.workers, render=False
        )
        seconds = time.perf_counter() - started
    samples = metrics["input"]["samples"]
    series = len(metrics["forecast"]["series"])
    print(
        json.dumps(
            {
                "samples_per_s": round(samples / seconds, 1),
                "cold_samples_per_s": round(samples / (seconds + import_s), 1),
                "samples": samples,
                "windows": metrics["input"]["windows"],
                "series": series,
                "series_per_subsystem": round(series / max(1, args.subsystems), 2),
                "seconds": round(seconds, 2),
                "workers": args.workers,
                "subsystems": args.subsystems,
                "interval_s": args.interval,
                "event_time_s": duration_ms / 1000,
                "generate_s": round(generate_s, 2),
                "import_s": round(import_s, 2),
                "conflict_episodes": metrics["conflicts"]["overall"]["episodes"],
            }
        )
    )


if __name__ == "__main__":
    main()
