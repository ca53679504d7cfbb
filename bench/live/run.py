"""One run of the live bench: the phases in order, and the JSON object they make.

Owns `bench`: it builds the scenario and fills the topic, then runs validation, the ceiling,
the naive peer, PSO ingest only, PSO end to end with the paced phase on the same worker, and
the memory phase, each on its own deployment, and assembles the result with its
`DEFINITIONS` (one line per top-level figure; ``bench/live_throughput.py``'s docstring is the
long form), ratios, targets, the broker it ran on and the MB each run wrote per topic.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from app.dev.simulator import HOUR_MS, FleetSimulator

from .ceiling import ceiling_pass, validation_cost
from .figures import us_per_sample
from .latency import latency_report
from .memory import rss_run, worker_rss
from .procstat import cpu_seconds
from .scenario import SERIES, Offline, build_messages, deployment, produce, send_paced
from .seals import checkpoint_summary, seal_bursts
from .tail import Tail
from .worker import Worker, measure


def topic_mb(broker: Any, prefix: str) -> dict[str, float] | None:
    """MB on the embedded broker's disk of ``prefix``'s topics: changelogs, internal, outputs."""
    data_dir = getattr(broker, "data_dir", None)
    if broker.kind != "kafka" or data_dir is None:
        return None
    out: dict[str, float] = {}
    for part in (Path(data_dir) / "kraft-logs").glob(f"{prefix}*"):
        topic = part.name.rsplit("-", 1)[0]
        if topic.endswith("-changelog"):
            group = topic.removeprefix(prefix + "-").removesuffix("-changelog") + " changelog"
        elif topic.startswith(prefix + "."):
            group = topic.removeprefix(prefix + ".")
        else:
            group = topic.removeprefix(prefix + "-")
        size = sum(f.stat().st_size for f in part.glob("*.log"))
        out[group] = out.get(group, 0.0) + size / 2**20
    return {k: round(v, 1) for k, v in sorted(out.items()) if v >= 0.05}


def broker_description(broker: Any) -> str:
    from app.dev.broker import KAFKA_VERSION

    if broker.kind == "external":
        return f"external cluster (PSO_BROKER) at {broker.bootstrap}"
    if broker.kind == "kafka":
        return (
            f"embedded Apache Kafka {KAFKA_VERSION} (KRaft single node, app/dev/broker "
            f"EmbeddedKafka, JVM heap {broker.heap_mb} MB, same 2-core machine) "
            f"at {broker.bootstrap}"
        )
    return f"embedded {broker.kind} (no transactions) at {broker.bootstrap}"


#: What each top-level figure is (bench/live_throughput.py's docstring has the long form).
DEFINITIONS = {
    "ceiling_eps": "samples/s: raw aiokafka getmany + orjson.loads of each message, no "
    "validation (the least any consumer must do), in the bench process; median of runs",
    "validation_us_per_sample": "PSO's ingest parse + validation (TelemetryIngest.parse incl. "
    "orjson.loads and batch_columns; fast_fields/pydantic per element where parse leaves "
    "elements), no windowing, in-process, same messages; wall µs per sample, median of passes",
    "pso_ingest_eps": "samples/s: ingest-only worker, first telemetry in -> last LoadWindow "
    "readable (read_committed); checkpoints sealed inside (ingest.checkpoints)",
    "pso_eps": "samples/s: full worker, first telemetry in -> every expected window and event "
    "readable (read_committed); checkpoints sealed inside (end_to_end.checkpoints)",
    "latency_ms": "paced phase (latency.paced_samples_per_s): telemetry message handed to the "
    "producer -> each forecast / conflict-topic event it causes readable (read_committed); "
    "cause = first message in produce order after which the pure core emits the event",
    "checkpoint_seal_ms": "paced phase: per burst of one table's seals (<= 0.25 s apart), wall "
    "time its agent spent inside CheckpointedStates._checkpoint (pickle + HMAC + handing the "
    "bytes to the changelog producer); paced_checkpoints.bursts",
    "rss_mb_2000_subsystems": "full worker VmRSS after catching up on 2,000 subsystems x 5 "
    "series with every key's first state checkpoint sealed, read once its heap-trim timer has "
    "run after the last checkpoint burst (rss.worker.rss_mb_settled; rss_mb: at catch-up)",
    "ratios": "rates / ceiling_eps (and / naive_faust_eps)",
}


async def bench(args: argparse.Namespace, broker: Any, tmp: Path) -> dict[str, Any]:
    from app.kafka.topics import create_topics

    bootstrap = broker.bootstrap
    run = f"lt-{uuid.uuid4().hex[:6]}"
    options = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.app_option)}
    guarantee = args.guarantee or (
        "exactly_once" if broker.supports_transactions else "at_least_once"
    )
    start_ms = 1_795_564_800_000 + 10 * HOUR_MS
    sim = FleetSimulator(
        subsystems=args.subsystems, seed=args.seed, interval_ms=1000, start_ms=start_ms
    )
    policy = sim.policy(headroom=0.7)
    config = tmp / "pso.yaml"
    config.write_text(yaml.safe_dump(policy.model_dump(mode="json", exclude={"prediction"})))
    users: dict[str, list[str]] = {}
    for p in sim.profiles:
        for res in p.uses:
            users.setdefault(res, []).append(p.name)
    P = args.partitions
    shared = deployment(bootstrap, run, P, config)
    telemetry = shared.topics.telemetry
    ing = deployment(bootstrap, f"{run}-ing", P, config)
    e2e = deployment(bootstrap, f"{run}-e2e", P, config)
    naive = deployment(bootstrap, f"{run}-naive", P, config)
    for s in (shared, ing, e2e):
        await create_topics(s, bootstrap)

    # Telemetry: catch-up part, then the paced continuation (same simulator walk).
    t = time.perf_counter()
    catchup_ms = int(args.minutes * 60_000)
    paced_ms = int(args.paced_minutes * 60_000)
    fill, paced = await build_messages(
        shared, sim.samples(catchup_ms + paced_ms), args.batch, start_ms + catchup_ms
    )
    generate_s = time.perf_counter() - t
    samples = sum(m.samples for m in fill)
    offline = Offline(policy, e2e)
    expected = offline.run(fill)
    expected_paced = offline.run(paced)
    t = time.perf_counter()
    await produce(shared, bootstrap, telemetry, fill)
    fill_s = time.perf_counter() - t
    scenario = {
        "subsystems": args.subsystems,
        "series_per_subsystem": SERIES,
        "event_time_s": catchup_ms / 1000,
        "samples": samples,
        "messages": len(fill),
        "batch_samples_per_message": args.batch,
        "telemetry_mb": round(sum(len(m.value) for m in fill) / 2**20, 1),
        "partitions": P,
        "processing_guarantee": guarantee,
        "app_options": options,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "expected_windows": len(expected.windows),
        "expected_events": expected.by_type,
        "generate_s": round(generate_s, 1),
        "fill_s": round(fill_s, 1),
    }
    core_eps = samples / expected.seconds
    # Keys each checkpointed table has in this scenario: each must be sealed inside a phase.
    keys = {
        "ingest-windows": args.subsystems,
        "subsystem-models": args.subsystems,
        "resource-models": len(users),
    }

    # 1-minute load average as each phase starts (other processes share the 2 cores).
    loadavg: dict[str, float] = {}

    def phase(name: str) -> None:
        loadavg[name] = round(os.getloadavg()[0], 2)

    # 0. PSO's own parse + validation, in this process, on the same messages.
    phase("validation")
    validation = validation_cost(fill, policy.window)

    # 1. Ceiling.
    phase("ceiling")
    passes = [
        await ceiling_pass(shared, bootstrap, telemetry, broker.pid)
        for _ in range(args.ceiling_runs)
    ]
    if any(p["samples"] != samples for p in passes):
        raise RuntimeError(f"ceiling read {passes[0]['samples']} of {samples} samples")
    ceiling = statistics.median(p["eps"] for p in passes)

    # 2. The naive Faust agent (a prefix of the topic).
    phase("naive")
    target = min(samples, args.naive_samples)
    w = Worker("naive", naive, telemetry, tmp, guarantee, args.profile, target_samples=target)
    try:
        m = await measure(w, lambda: w.stats().get("target_reached"), args.timeout, broker.pid)
    finally:
        await asyncio.to_thread(w.stop)
    st = m["stats"]
    naive_s = st["target_reached"] - st["first_in"] if m["ok"] else None
    naive_eps = target / naive_s if naive_s else None
    naive_info = {
        "samples": target,
        "seconds": round(naive_s, 2) if naive_s else None,
        "guarantee": "at_least_once (Faust default)",
        "worker_cpu_share": m.get("worker_cpu_share"),
        "broker_cpu_share": m.get("broker_cpu_share"),
        "worker_cpu_us_per_sample": us_per_sample(m.get("worker_cpu_s"), target),
        "broker_cpu_us_per_sample": us_per_sample(m.get("broker_cpu_s"), target),
    }

    # 3. PSO ingest only: telemetry -> closed windows readable on pso.load.
    phase("ingest")
    tail = Tail(ing, bootstrap, [ing.topics.load], committed=True)
    await tail.start()
    w = Worker("ingest", ing, telemetry, tmp, guarantee, args.profile, app_options=options)
    try:
        m = await measure(
            w,
            lambda: expected.windows <= tail.seen.keys(),
            args.timeout,
            broker.pid,
            output=lambda: len(tail.records),
        )
        ingest_done = time.time()
    finally:
        await asyncio.to_thread(w.stop)
        await tail.stop()
    st = m["stats"]
    last = tail.last_arrival(expected.windows)
    ingest_s = last - st["first_in"] if m["ok"] and last and st.get("first_in") else None
    ingest = {
        "samples": samples,
        "windows": len(expected.windows),
        "windows_seen": len(expected.windows & tail.seen.keys()),
        "seconds": round(ingest_s, 2) if ingest_s else None,
        "last_telemetry_in_s": round(st["last_in"] - st["first_in"], 2)
        if st.get("last_in") and st.get("first_in")
        else None,
        "worker_cpu_share": m.get("worker_cpu_share"),
        "broker_cpu_share": m.get("broker_cpu_share"),
        "worker_cpu_us_per_sample": us_per_sample(m.get("worker_cpu_s"), samples),
        "broker_cpu_us_per_sample": us_per_sample(m.get("broker_cpu_s"), samples),
    }
    ingest["topic_mb"] = topic_mb(broker, ing.app_id)
    ingest["stalled_at_s"] = m.get("stalled_at_s")
    ingest["worker_log"] = w.problems()
    ingest["checkpoints"] = checkpoint_summary(
        w.seals(), st.get("first_in") or 0.0, ingest_done, {"ingest-windows": args.subsystems}
    )
    ingest_eps = samples / ingest_s if ingest_s else None

    # 4. PSO end to end, then 5. the paced phase on the same worker.
    phase("end_to_end")
    out_topics = [
        e2e.topics.load,
        e2e.topics.forecasts,
        e2e.topics.anomalies,
        e2e.topics.conflicts,
        e2e.topics.rebalance,
        e2e.topics.accuracy,
    ]
    tail_c = Tail(e2e, bootstrap, out_topics, committed=True)
    lat_topics = [e2e.topics.load, e2e.topics.forecasts, e2e.topics.conflicts]
    tail_u = Tail(e2e, bootstrap, lat_topics, committed=False)
    await tail_c.start()
    await tail_u.start()
    w = Worker("pso", e2e, telemetry, tmp, guarantee, args.profile, app_options=options)
    try:
        want = expected.windows | expected.all_events()
        fc_ids = expected.events.get(e2e.topics.forecasts, set())
        cf_ids = expected.events.get(e2e.topics.conflicts, set())

        def e2e_progress() -> dict[str, int]:
            seen = tail_c.seen.keys()
            return {
                "windows": len(expected.windows & seen),
                "forecasts": len(fc_ids & seen),
                "conflicts": len(cf_ids & seen),
            }

        m = await measure(
            w,
            lambda: want <= tail_c.seen.keys(),
            args.timeout,
            broker.pid,
            e2e_progress,
            output=lambda: len(tail_c.records),
        )
        e2e_done = time.time()
        st = m["stats"]
        last = tail_c.last_arrival(want)
        last_window = tail_c.last_arrival(expected.windows)
        e2e_s = last - st["first_in"] if m["ok"] and last and st.get("first_in") else None
        e2e_info = {
            "samples": samples,
            "windows": len(expected.windows),
            "events": len(expected.all_events()),
            "missing": len(want - tail_c.seen.keys()),
            "seconds": round(e2e_s, 2) if e2e_s else None,
            "windows_out_s": round(last_window - st["first_in"], 2)
            if last_window and st.get("first_in")
            else None,
            "worker_cpu_share": m.get("worker_cpu_share"),
            "broker_cpu_share": m.get("broker_cpu_share"),
            "worker_cpu_us_per_sample": us_per_sample(m.get("worker_cpu_s"), samples),
            "broker_cpu_us_per_sample": us_per_sample(m.get("broker_cpu_s"), samples),
            "rss_mb_100_subsystems": round(w.rss().get("VmRSS", 0.0), 1),
            "stalled_at_s": m.get("stalled_at_s"),
            "timeline": m["timeline"],
            "topic_mb": topic_mb(broker, e2e.app_id),
        }
        pso_eps = samples / e2e_s if e2e_s else None

        # 5. Paced: the simulator's next minutes at --paced-rate samples/s, same topic.
        await w.wait_idle()
        phase("paced")
        speed = args.paced_rate / args.subsystems  # event s per wall s (1 sample/s each)
        paced_started = time.time()
        cpu0 = (cpu_seconds(w.proc.pid), cpu_seconds(broker.pid))
        sent = await send_paced(shared, bootstrap, telemetry, paced, speed)
        paced_ids = expected_paced.windows | expected_paced.all_events()
        paced_ok = await tail_c.wait_for(paced_ids, 120.0, w)
        await tail_u.wait_for(paced_ids, 10.0, w)
        paced_done = time.time()
        cpu1 = (cpu_seconds(w.proc.pid), cpu_seconds(broker.pid))
    finally:
        await asyncio.to_thread(w.stop)
        await tail_c.stop()
        await tail_u.stop()
    seals = w.seals()
    e2e_info["worker_log"] = w.problems()
    e2e_info["checkpoints"] = checkpoint_summary(seals, st.get("first_in") or 0.0, e2e_done, keys)
    paced_checkpoints = checkpoint_summary(seals, paced_started, paced_done, keys)
    paced_bursts = seal_bursts(seals, paced_started, paced_done)
    paced_samples = sum(m.samples for m in paced)
    paced_cpu = [
        b - a if a is not None and b is not None else None for a, b in zip(cpu0, cpu1, strict=True)
    ]
    latency = {
        "paced_target_samples_per_s": args.paced_rate,
        "paced_event_s_per_wall_s": round(speed, 2),
        "paced_samples": paced_samples,
        "paced_samples_per_s": round(paced_samples / sent.seconds, 1) if sent.seconds else None,
        "paced_send_s": round(sent.seconds, 1),
        "sender_behind_schedule_ms_max": round(sent.behind_max_s * 1000, 1),
        "paced_windows": len(expected_paced.windows),
        "paced_missing": len(paced_ids - tail_c.seen.keys()) if not paced_ok else 0,
        # Whether the worker had the CPU it needed (other processes share the 2 cores).
        "worker_cpu_share": None
        if paced_cpu[0] is None
        else round(paced_cpu[0] / (paced_done - paced_started), 2),
        "broker_cpu_share": None
        if paced_cpu[1] is None
        else round(paced_cpu[1] / (paced_done - paced_started), 2),
        "worker_cpu_us_per_sample": us_per_sample(paced_cpu[0], paced_samples),
        **latency_report(
            expected_paced, sent.produced, tail_c, tail_u, e2e.topics, users, paced_bursts
        ),
    }
    latency_ms = {k: latency["all"][k] for k in ("p50", "p99", "max")}
    seal_ms = {k: paced_checkpoints["burst_ms"][k] for k in ("p50", "max")}

    # 6. Memory: the engine holding 2,000 subsystems × 5 series (and 100, to compare with the
    # worker that held the 100 above).
    rss: dict[str, Any] = {}
    if args.rss_subsystems:
        phase("rss")
        rss = {"worker": await worker_rss(args, broker, tmp, run, guarantee, options)}
        rss["same_code_in_process"] = rss_run(args.rss_subsystems, args.rss_minutes, args.seed)
        small = rss_run(args.subsystems, args.rss_minutes, args.seed)
        rss[f"same_code_in_process_mb_at_{args.subsystems}"] = small["rss_mb"]
        rss[f"worker_mb_at_{args.subsystems}"] = e2e_info["rss_mb_100_subsystems"]
    rss_mb = rss["worker"]["rss_mb_settled"] if rss and not rss["worker"]["missing"] else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    def inverse_ratio(cost_ref: float | None, cost: float | None) -> float | None:
        return round(cost_ref / cost, 3) if cost_ref and cost else None

    ceiling_us = us_per_sample(statistics.median(p["cpu_s"] for p in passes), samples)

    p99 = latency_ms["p99"]
    result: dict[str, Any] = {
        "ceiling_eps": round(ceiling, 1),
        "validation_us_per_sample": validation["us_per_sample"],
        "naive_faust_eps": round(naive_eps, 1) if naive_eps else None,
        "pso_ingest_eps": round(ingest_eps, 1) if ingest_eps else None,
        "pso_eps": round(pso_eps, 1) if pso_eps else None,
        "latency_ms": latency_ms,
        "checkpoint_seal_ms": seal_ms,
        "rss_mb_2000_subsystems": rss_mb,
        "broker": broker_description(broker),
        "definitions": DEFINITIONS,
        "ratios": {
            "ingest_vs_ceiling": ratio(ingest_eps, ceiling),
            "pso_vs_ceiling": ratio(pso_eps, ceiling),
            "pso_vs_naive": ratio(pso_eps, naive_eps),
        },
        # The same ratios from CPU microseconds per sample (worker process only; the ceiling's
        # is this process): what the rates would be if each had a core to itself.
        "ratios_by_cpu": {
            "ingest_vs_ceiling": inverse_ratio(ceiling_us, ingest.get("worker_cpu_us_per_sample")),
            "pso_vs_ceiling": inverse_ratio(ceiling_us, e2e_info.get("worker_cpu_us_per_sample")),
            "pso_vs_naive": inverse_ratio(
                naive_info.get("worker_cpu_us_per_sample"),
                e2e_info.get("worker_cpu_us_per_sample"),
            ),
        },
        "targets_met": {
            "ingest_ge_40pct_ceiling": bool(ingest_eps and ingest_eps >= 0.4 * ceiling),
            "pso_ge_15pct_ceiling": bool(pso_eps and pso_eps >= 0.15 * ceiling),
            "pso_ge_10x_naive": bool(pso_eps and naive_eps and pso_eps >= 10 * naive_eps),
            "p99_produce_to_event_lt_1s": bool(
                p99 is not None and p99 < 1000 and not latency["missing"]
            ),
            "rss_lt_1GiB": bool(rss_mb is not None and rss_mb < 1024),
        },
        "scenario": scenario,
        "validation": validation,
        "ceiling": {
            "runs_eps": [round(p["eps"], 1) for p in passes],
            "samples": samples,
            "seconds": [round(p["seconds"], 3) for p in passes],
            "cpu_us_per_sample": us_per_sample(
                statistics.median(p["cpu_s"] for p in passes), samples
            ),
            "broker_cpu_us_per_sample": us_per_sample(
                statistics.median(p["broker_cpu_s"] or 0.0 for p in passes), samples
            ),
        },
        "naive": naive_info,
        "ingest": ingest,
        "end_to_end": e2e_info,
        "core_inprocess_eps": round(core_eps, 1),
        "latency": latency,
        "paced_checkpoints": paced_checkpoints,
        "rss": rss,
        "loadavg_at_phase_start": loadavg,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    return result
