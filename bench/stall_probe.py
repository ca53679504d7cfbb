"""Hunt for stage-2 stalls: the live bench's catch-up phase, with a state probe in the worker.

Runs the scenario of `bench/live_throughput.py` (same simulator, same bytes, same worker
environment) but only its end-to-end catch-up, ``--runs`` times on one embedded broker. The
worker dumps its state every few seconds (stage-2 joins, consumer positions and offsets per
partition, paused partitions, unacked messages, transaction producers, agent tracebacks);
when no expected id has shown up for ``--stall-s`` while some are missing, the driver saves
that dump plus what the broker says (high-water vs last stable offset per partition of the
shares topic, the group's committed offsets) and the shares actually on the topic, under
``--out``. Prints one JSON line per run (``ok``, ``missing``, the broker's view).

    python bench/stall_probe.py --runs 3 --minutes 60 --partitions 8 --stop-on-stall

Before lean resource checkpoints, that command stalled stage 2 on its first run: the dump
showed db-main's join with no window judged, waiting for contributors whose shares were all
on the topic (committed), and the worker log the oversized checkpoint behind it
(``tests/integration/test_stage2_backlog.py`` is the deterministic trigger). It reads private
Faust and aiokafka state: a diagnostic, not a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from live.scenario import Offline, build_messages, deployment, produce
from live.tail import Tail
from live.worker_side import worker_main

from app.dev.demo import stop_process
from app.dev.simulator import HOUR_MS, FleetSimulator
from app.settings import Settings

# --------------------------------------------------------------------------- worker side


def state_dump(app: Any) -> dict[str, Any]:
    """What stage 2 and the consumer are doing, as plain JSON."""
    out: dict[str, Any] = {"time": time.time()}
    states = getattr(app, "pso_states", None)
    if states is not None:
        _subsystems, resources = states
        joins = {}
        for name, predictor in resources.live_items():
            join = predictor.join
            pending = sorted(join.pending)
            joins[name] = {
                "windows": predictor.windows,
                "pending": [pending[0], pending[-1], len(pending)] if pending else [],
                "pending_oldest_has": sorted(join.pending[pending[0]]) if pending else [],
                "blocking": join.blocking(),
                "judged_until": join.judged_until,
                "newest": join.newest,
                "late": join.late_shares,
                "last": dict(join.last),
                "first": dict(join.first),
                "departed": sorted(join.departed),
            }
        out["joins"] = joins
    consumer = app.consumer
    parts = {}
    try:
        inner = consumer._thread._consumer
        assignment = inner._subscription.subscription.assignment
    except Exception as exc:
        inner, assignment = None, None
        out["inner_error"] = repr(exc)
    for tp in sorted(consumer.assignment()):
        row: dict[str, Any] = {
            "read": consumer._read_offset.get(tp),
            "committed": consumer._committed_offset.get(tp),
            "acked_n": len(consumer._acked.get(tp, [])),
            "acked_min": min(consumer._acked.get(tp) or [-1]),
            "acked_head": sorted(consumer._acked.get(tp, []))[:30],
            "gap": [(i.begin, i.end) for i in sorted(consumer._gap.get(tp, []))][:10],
            "faust_paused": tp in consumer._paused_partitions,
            "faust_active": tp in (consumer._active_partitions or set()),
            "faust_buffered": tp in consumer._buffered_partitions,
        }
        if assignment is not None:
            with contextlib.suppress(Exception):
                st = assignment.state_value(tp)
                row.update(
                    position=st._position,
                    highwater=st.highwater,
                    lso=st.lso,
                    kafka_paused=st.paused,
                    status=str(st._status),
                )
        parts[f"{tp.topic}[{tp.partition}]"] = row
    out["partitions"] = parts
    out["flow_active"] = consumer.flow_active
    out["unacked"] = sorted(
        f"{m.tp.topic}[{m.tp.partition}]@{m.offset}" for m in list(consumer._unacked_messages)
    )[:50]
    producers = {}
    with contextlib.suppress(Exception):
        for tid, prod in app.producer._transaction_producers.items():
            txn = prod._txn_manager
            producers[tid] = {
                "state": str(txn.state),
                "txn_partitions": sorted(f"{p.topic}[{p.partition}]" for p in txn._txn_partitions),
                "pending": sorted(f"{p.topic}[{p.partition}]" for p in txn._pending_txn_partitions),
                "locked": app.producer._trn_locks[tid].locked(),
            }
    out["producers"] = producers
    with contextlib.suppress(Exception):
        out["tracebacks"] = app.agents.human_tracebacks()
    with contextlib.suppress(Exception):
        out["channels"] = {
            str(getattr(ch, "topics", ch)): ch.queue.qsize() for ch in list(app.topics._topics)
        }
    return out


def probe_worker_main(argv: list[str]) -> None:
    """live_throughput's worker, with a timer writing `state_dump` to ``PSO_PROBE_DUMP``."""
    import agents.app

    dump_path = Path(os.environ["PSO_PROBE_DUMP"])
    build = agents.app.build_app

    def build_with_probe(settings: Settings, bootstrap: str, **overrides: Any) -> Any:
        app = build(settings, bootstrap, **overrides)

        @app.timer(3.0)
        async def probe() -> None:
            try:
                doc = state_dump(app)
            except Exception as exc:
                doc = {"error": repr(exc)}
            tmp = dump_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc, default=str))
            os.replace(tmp, dump_path)
            brief = {
                "t": doc.get("time"),
                "parts": {
                    k: [
                        v.get("read"),
                        v.get("committed"),
                        v.get("acked_n"),
                        v.get("position"),
                        v.get("highwater"),
                        v.get("lso"),
                    ]
                    for k, v in doc.get("partitions", {}).items()
                    if "changelog" not in k
                },
                "producers": {
                    k: [v["state"][17:], v["txn_partitions"]]
                    for k, v in doc.get("producers", {}).items()
                },
            }
            with dump_path.with_suffix(".history.jsonl").open("a") as history:
                history.write(json.dumps(brief, default=str) + "\n")

        return app

    agents.app.build_app = build_with_probe  # type: ignore[assignment]
    worker_main(argv)


# --------------------------------------------------------------------------- driver side


async def broker_view(settings: Settings, bootstrap: str, partitions: int) -> dict[str, Any]:
    """Per input partition: high-water, last stable offset, the group's committed offset."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from app.kafka.connection import client_kwargs, start_consumer

    topics = [settings.topics.load, settings.shares_topic]
    tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    unc = await start_consumer(settings, bootstrap, isolation_level="read_uncommitted")
    com = await start_consumer(settings, bootstrap)
    admin = AIOKafkaAdminClient(**client_kwargs(settings, bootstrap))
    await admin.start()
    try:
        high = await unc.end_offsets(tps)
        stable = await com.end_offsets(tps)
        group = await admin.list_consumer_group_offsets(settings.app_id)
    finally:
        await unc.stop()
        await com.stop()
        await admin.close()
    return {
        f"{tp.topic}[{tp.partition}]": {
            "high": high[tp],
            "stable": stable[tp],
            "committed": group[tp].offset if tp in group else None,
        }
        for tp in tps
    }


async def read_shares(
    settings: Settings, bootstrap: str, partitions: int, committed: bool
) -> list[dict[str, Any]]:
    """Every record of the shares topic: partition, offset, resource, (subsystem, window)s."""
    from aiokafka import TopicPartition

    from app.kafka.connection import start_consumer

    topic = settings.shares_topic
    consumer = await start_consumer(
        settings,
        bootstrap,
        isolation_level="read_committed" if committed else "read_uncommitted",
    )
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    end = await consumer.end_offsets(tps)
    out = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if all([await consumer.position(tp) >= end[tp] for tp in tps]):
                break
            for tp, recs in (await consumer.getmany(timeout_ms=200)).items():
                for r in recs:
                    doc = orjson.loads(r.value)
                    shares = doc.get("shares", [doc])
                    out.append(
                        {
                            "p": tp.partition,
                            "o": r.offset,
                            "type": doc.get("type"),
                            "resource": doc.get("resource"),
                            "shares": [
                                (s.get("subsystem"), s.get("window_start_ms")) for s in shares
                            ],
                        }
                    )
    finally:
        await consumer.stop()
    return out


async def one_run(args: argparse.Namespace, broker: Any, tmp: Path, n: int) -> dict[str, Any]:
    from app.kafka.topics import create_topics

    bootstrap = broker.bootstrap
    run = f"sp-{uuid.uuid4().hex[:6]}"
    start_ms = 1_795_564_800_000 + 10 * HOUR_MS
    sim = FleetSimulator(
        subsystems=args.subsystems, seed=args.seed, interval_ms=1000, start_ms=start_ms
    )
    policy = sim.policy(headroom=0.7)
    config = tmp / f"{run}.yaml"
    config.write_text(yaml.safe_dump(policy.model_dump(mode="json", exclude={"prediction"})))
    P = args.partitions
    shared = deployment(bootstrap, run, P, config)
    e2e = deployment(bootstrap, f"{run}-e2e", P, config)
    for s in (shared, e2e):
        await create_topics(s, bootstrap)
    fill, _ = await build_messages(shared, sim.samples(int(args.minutes * 60_000)), args.batch)
    expected = Offline(policy, e2e).run(fill)
    await produce(shared, bootstrap, shared.topics.telemetry, fill)
    t = e2e.topics
    out_topics = [t.load, t.forecasts, t.anomalies, t.conflicts, t.rebalance, t.accuracy]
    tail = Tail(e2e, bootstrap, out_topics, committed=True)
    await tail.start()
    want = expected.windows | expected.all_events()
    dump = tmp / f"{run}.dump.json"
    env = dict(os.environ)
    env.update(
        {
            "PSO_BROKER": bootstrap,
            "PSO_APP_ID": e2e.app_id,
            "PSO_TOPICS__PREFIX": e2e.topics.prefix,
            "PSO_TOPIC_POLICY__PARTITIONS": str(P),
            "PSO_DATA_DIR": str(tmp / "data"),
            "PSO_CONFIG": str(config),
            "PSO_PROCESSING_GUARANTEE": "exactly_once",
            "PSO_JOIN_TIMEOUT_S": "86400",
            "PSO_BENCH_APP_OPTIONS": json.dumps(
                {k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in args.app_option)}
            ),
            "PSO_PROBE_DUMP": str(dump),
        }
    )
    log_path = args.out / f"{run}.log"
    stats = tmp / f"{run}.stats.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_worker",
        "--mode",
        "pso",
        "--telemetry-topic",
        shared.topics.telemetry,
        "--stats",
        str(stats),
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    started = time.monotonic()
    seen_before, last_change = 0, time.monotonic()
    result: dict[str, Any] = {"run": run, "n": n}
    try:
        while True:
            await asyncio.sleep(0.5)
            if proc.poll() is not None:
                result["exited"] = proc.returncode
                break
            seen = len(want & tail.seen.keys())
            if seen != seen_before:
                seen_before, last_change = seen, time.monotonic()
            if seen == len(want):
                result["ok"] = True
                break
            if time.monotonic() - last_change > args.stall_s:
                result["ok"] = False
                break
            if time.monotonic() - started > args.timeout:
                result["ok"] = False
                result["timeout"] = True
                break
        result["seconds"] = round(time.monotonic() - started, 1)
        missing = want - tail.seen.keys()
        result["missing"] = len(missing)
        result["missing_sample"] = sorted(missing)[:20]
        await asyncio.sleep(4)  # a fresh dump
        result["broker"] = await broker_view(e2e, bootstrap, P)
        with contextlib.suppress(OSError):
            (args.out / f"{run}.history.jsonl").write_text(
                dump.with_suffix(".history.jsonl").read_text()
            )
        if args.linger_s:
            await asyncio.sleep(args.linger_s)
            result["broker_later"] = await broker_view(e2e, bootstrap, P)
            result["missing_later"] = len(want - tail.seen.keys())
        if not result.get("ok"):
            with contextlib.suppress(OSError):
                (args.out / f"{run}.dump.json").write_text(dump.read_text())
            view = await broker_view(e2e, bootstrap, P)
            result["broker"] = view
            for committed in (True, False):
                shares = await read_shares(e2e, bootstrap, P, committed)
                name = "committed" if committed else "uncommitted"
                (args.out / f"{run}.shares-{name}.json").write_text(json.dumps(shares))
    finally:
        stop_process(proc)
        await tail.stop()
    return result


async def main_async(args: argparse.Namespace) -> None:
    from app.dev.broker import EmbeddedKafka, ExternalBroker

    external = os.environ.get("PSO_BROKER")
    broker: Any = ExternalBroker(external) if external else EmbeddedKafka(heap_mb=512)
    with tempfile.TemporaryDirectory(prefix="pso-stall-") as tmp, broker:
        for n in range(args.runs):
            result = await one_run(args, broker, Path(tmp), n)
            print(json.dumps(result), flush=True)
            if not result.get("ok") and args.stop_on_stall:
                break


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        probe_worker_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subsystems", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=100.0)
    parser.add_argument("--batch", type=int, default=60)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--stall-s", type=float, default=90.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--stop-on-stall", action="store_true")
    parser.add_argument("--linger-s", type=float, default=0.0)
    parser.add_argument("--app-option", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("/tmp/stall-probe"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
