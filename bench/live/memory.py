"""The memory phase: what a worker holds for 2,000 subsystems x 5 series, and why.

Owns ``rss_mb_2000_subsystems`` and the ``rss`` block: `worker_rss` runs the full worker on a
fleet of ``--rss-subsystems`` (one sample a minute, until every key has sealed a checkpoint of
its state) and reads its VmRSS once everything expected is readable; `rss_main` (the ``_rss``
mode, started by `rss_run` in a fresh interpreter) runs the same code as the worker's agents
on the same fleet and holds what its memory-store tables hold, so the difference is Faust's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from app.dev.simulator import HOUR_MS, FleetSimulator
from app.settings import load_settings

from .procstat import proc_memory
from .scenario import SERIES, Offline, build_messages, deployment, produce
from .seals import checkpoint_summary
from .tail import Tail
from .worker import ENTRY, Worker, measure


async def worker_rss(
    args: argparse.Namespace,
    broker: Any,
    tmp: Path,
    run: str,
    guarantee: str,
    options: dict[str, Any],
) -> dict[str, Any]:
    """The full worker itself holding ``--rss-subsystems`` × 5 series: VmRSS once it has caught
    up on one sample a minute for ``--rss-minutes`` of each (36: 33 closed windows per
    subsystem, so every key has sealed a checkpoint of its state; as in `rss_main`) and every
    expected window and event is readable."""
    from app.kafka.topics import create_topics

    bootstrap = broker.bootstrap
    sim = FleetSimulator(
        subsystems=args.rss_subsystems,
        seed=args.seed,
        interval_ms=60_000,
        start_ms=1_795_564_800_000 + 10 * HOUR_MS,
    )
    policy = sim.policy(headroom=0.7)
    config = tmp / "pso-rss.yaml"
    config.write_text(yaml.safe_dump(policy.model_dump(mode="json", exclude={"prediction"})))
    dep = deployment(bootstrap, f"{run}-rss", args.partitions, config)
    await create_topics(dep, bootstrap)
    messages, _ = await build_messages(dep, sim.samples(args.rss_minutes * 60_000), batch=1)
    expected = Offline(policy, dep).run(messages)
    resources = {r for p in sim.profiles for r in p.uses}
    await produce(dep, bootstrap, dep.topics.telemetry, messages)
    t = dep.topics
    out_topics = [t.load, t.forecasts, t.anomalies, t.conflicts, t.rebalance, t.accuracy]
    want = expected.windows | expected.all_events()
    tail = Tail(dep, bootstrap, out_topics, committed=True)
    await tail.start()
    w = Worker("pso", dep, t.telemetry, tmp, guarantee, None, app_options=options)
    try:
        m = await measure(
            w,
            lambda: want <= tail.seen.keys(),
            args.timeout,
            broker.pid,
            output=lambda: len(tail.records),
        )
        done = time.time()
        mem = w.rss()
        st = m["stats"]
        caught_up = time.time() - st["first_in"] if m["ok"] and st.get("first_in") else None
        # Settled: once the worker's heap-trim timer has run after the last checkpoint burst
        # (`app.ops.heap`), what it holds rather than the burst's allocator slack.
        settle_s = load_settings().heap_trim_interval_s + 5.0
        await asyncio.sleep(settle_s)
        settled = w.rss()
    finally:
        await asyncio.to_thread(w.stop)
        await tail.stop()
    problems = w.problems()
    return {
        "subsystems": args.rss_subsystems,
        "series": args.rss_subsystems * SERIES,
        "samples": sum(m.samples for m in messages),
        "windows": len(expected.windows),
        "events": len(expected.all_events()),
        "missing": len(want - tail.seen.keys()),
        "rss_mb": round(mem.get("VmRSS", 0.0), 1),
        "rss_mb_settled": round(settled.get("VmRSS", 0.0), 1),
        "settled_after_s": settle_s,
        "peak_rss_mb": round(mem.get("VmHWM", 0.0), 1),
        "caught_up_s": round(caught_up, 1) if caught_up else None,
        "stalled_at_s": m.get("stalled_at_s"),
        "worker_log": problems,
        "checkpoints": checkpoint_summary(
            w.seals(),
            st.get("first_in") or 0.0,
            done,
            {
                "ingest-windows": args.rss_subsystems,
                "subsystem-models": args.rss_subsystems,
                "resource-models": len(resources),
            },
        ),
    }


def rss_main(argv: list[str]) -> None:
    """In a fresh interpreter: the engine holding ``--subsystems`` × 5 series, as a worker does.

    Same code as the worker's agents: the client's bytes through `TelemetryIngest.process`, every
    closed window through `PredictionEngine` (stage 1 and stage 2 classes). Besides the live
    objects, it keeps what the worker's memory-store tables hold: each subsystem's window state
    (``WindowedLoad.to_state()``) and a token per predictor (its sealed checkpoint goes to the
    changelog, `agents.checkpoints`). Prints one JSON line.
    """
    import gc

    from app.core.engine import PredictionEngine
    from app.core.snapshot import seal
    from app.wire.codec import SourceRef
    from app.wire.telemetry import TelemetryIngest

    parser = argparse.ArgumentParser()
    parser.add_argument("--subsystems", type=int, required=True)
    parser.add_argument("--minutes", type=float, default=36.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sim = FleetSimulator(
        subsystems=args.subsystems,
        seed=args.seed,
        interval_ms=60_000,
        start_ms=1_795_564_800_000 + 10 * HOUR_MS,
    )
    policy = sim.policy(headroom=0.7)
    settings = load_settings(config=None)
    baseline = proc_memory(os.getpid()).get("VmRSS", 0.0)
    messages, _ = asyncio.run(
        build_messages(settings, sim.samples(int(args.minutes * 60_000)), batch=1)
    )
    started = time.perf_counter()
    ingest = TelemetryIngest(policy.window)
    engine = PredictionEngine(policy.spec())
    window_tables: dict[str, Any] = {}
    windows = 0
    for i, m in enumerate(messages):
        result = ingest.process(m.value, SourceRef("rss", 0, i, m.key))
        for name in result.touched:
            window_tables[name] = ingest.windows[name].to_state()
        for window in result.windows:
            windows += 1
            engine.process(window)
    samples = sum(m.samples for m in messages)
    del messages
    # A checkpoint is sealed, sent to the changelog and dropped; the memory store keeps a token.
    key = b"rss-bench-snapshot-key-0123456789"
    sealed_bytes = 0
    tokens = {}
    for name, p in [*engine.subsystems.items(), *engine.resources.items()]:
        sealed_bytes += len(seal(p, key, context=("rss", name)))  # the size: any context
        tokens[name] = b"checkpoint@%d" % windows
    gc.collect()
    mem = proc_memory(os.getpid())
    trimmed = _after_malloc_trim()
    series = sum(len(p.series) for p in engine.subsystems.values())
    sealed_mb = sealed_bytes / 2**20
    live_mb = mem.get("VmRSS", 0.0) - baseline
    print(
        json.dumps(
            {
                "subsystems": len(engine.subsystems),
                "series": series,
                "samples": samples,
                "windows": windows,
                "rss_mb": round(mem.get("VmRSS", 0.0), 1),
                "peak_rss_mb": round(mem.get("VmHWM", 0.0), 1),
                "rss_mb_after_malloc_trim": trimmed,
                "interpreter_and_imports_mb": round(baseline, 1),
                "checkpoints_mb_on_changelog": round(sealed_mb, 1),
                "live_kb_per_series": round(live_mb * 1024 / max(1, series), 1),
                "sealed_kb_per_series": round(sealed_mb * 1024 / max(1, series), 1),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


def _after_malloc_trim() -> float | None:
    """VmRSS once the allocator has returned its free pages (`app.ops.heap`, what a worker's
    timer does): how much of the RSS is allocator slack rather than live state. None off glibc."""
    from app.ops.heap import release_free_heap

    if not release_free_heap():
        return None
    return round(proc_memory(os.getpid()).get("VmRSS", 0.0), 1)


def rss_run(subsystems: int, minutes: int, seed: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            str(ENTRY),
            "_rss",
            "--subsystems",
            str(subsystems),
            "--minutes",
            str(minutes),
            "--seed",
            str(seed),
        ],
        capture_output=True,
        check=True,
        timeout=900,
    )
    data: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return data
