"""`pso demo`: the whole pipeline on one machine, with a live terminal view.

Starts the embedded broker (unless ``PSO_BROKER`` is set), creates the topics, starts one PSO
worker as a child process, and feeds it the built-in simulator in accelerated event time
(``speed`` × wall clock). A small share of deliberately bad and late samples shows the
dead-letter path. The view is just another consumer of ``pso.load`` and ``pso.deadletter``.
Ctrl-C, or the end of ``duration_s``, stops everything and prints a summary; nothing is left
running, not even after a SIGKILL of the demo: the broker and the worker have a parent-death
signal (`app.dev.parent_death`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from app.dev.parent_death import die_with_parent
from app.settings import BUILTIN_SNAPSHOT_KEY, Settings

WINDOW_MS = 60_000
SAMPLE_EVERY_MS = 10_000


@dataclass
class SubsystemView:
    windows: int = 0
    last_start: int = 0
    samples: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=dict)


@dataclass
class DemoState:
    produced: int = 0
    chaos: int = 0
    dead: int = 0
    dead_by_reason: dict[str, int] = field(default_factory=dict)
    subsystems: dict[str, SubsystemView] = field(default_factory=dict)
    event_time_ms: int = 0
    predictions: dict[str, int] = field(default_factory=dict)
    latest: list[str] = field(default_factory=list)


def render(state: DemoState, bootstrap: str, kind: str, elapsed: float) -> Group:
    table = Table(title="PSO load windows (closed, event time)", expand=False)
    for col in (
        "subsystem",
        "windows",
        "last window",
        "samples",
        "rps",
        "cpu",
        "latency ms",
        "db-main",
        "gpu-pool",
    ):
        table.add_column(col, justify="right" if col != "subsystem" else "left")
    from app.wire.events import ms_to_iso

    for name in sorted(state.subsystems):
        v = state.subsystems[name]
        table.add_row(
            name,
            str(v.windows),
            ms_to_iso(v.last_start)[11:16] if v.last_start else "-",
            str(v.samples),
            f"{v.metrics.get('rps', 0):.0f}",
            f"{v.metrics.get('cpu', 0):.2f}",
            f"{v.metrics.get('latency_ms', 0):.1f}",
            f"{v.resources['db-main']:.1f}" if "db-main" in v.resources else "-",
            f"{v.resources['gpu-pool']:.2f}" if "gpu-pool" in v.resources else "-",
        )
    head = Text(
        f"broker {bootstrap} ({kind})  ·  {elapsed:5.1f}s  ·  samples in {state.produced}  ·  "
        f"dead-lettered {state.dead} {dict(sorted(state.dead_by_reason.items()))}",
        style="bold",
    )
    counts = "  ·  ".join(f"{k} {v}" for k, v in sorted(state.predictions.items()))
    story = Text("\n".join(state.latest) or "(predictions appear as the models learn)")
    return Group(head, table, Text(f"predictions: {counts or '-'}", style="bold"), story)


async def _produce(
    settings: Settings,
    bootstrap: str,
    state: DemoState,
    subsystems: int,
    speed: float,
    stop: asyncio.Event,
) -> None:
    """Feed simulator samples in accelerated event time, plus a little deliberate chaos."""
    from app.dev.simulator import FleetSimulator
    from app.kafka.connection import start_producer

    # Yesterday 11:00 UTC: the simulated fleet climbs towards its midday peak, where shared
    # resources run short, within the first minute of a demo at 60x.
    day_ms = 86_400_000
    start_ms = (int(time.time() * 1000) - day_ms) // day_ms * day_ms + 11 * 3_600_000
    sim = FleetSimulator(
        subsystems=subsystems, seed=7, start_ms=start_ms, interval_ms=SAMPLE_EVERY_MS
    )
    samples = sim.samples(10 * 365 * 86_400_000)
    producer = await start_producer(settings, bootstrap)
    topic = settings.topics.telemetry
    began = time.monotonic()
    step = 0
    try:
        pending: dict[str, list[dict[str, Any]]] = {}
        for sample in samples:
            if stop.is_set():
                break
            due = start_ms + (time.monotonic() - began) * speed * 1000
            if sample["ts"] > due:
                await _flush(producer, topic, pending, state)
                await asyncio.sleep(min(0.2, (sample["ts"] - due) / speed / 1000))
            pending.setdefault(sample["subsystem"], []).append(sample)
            state.event_time_ms = sample["ts"]
            step += 1
            if step % 400 == 0:  # chaos: a broken message and a late sample now and then
                await producer.send(topic, key=b"chaos", value=b'{"subsystem": "api", "ts": ')
                late = dict(sample, ts=sample["ts"] - 10 * WINDOW_MS)
                pending[sample["subsystem"]].append(late)
                state.produced += 1  # the broken message is one item in
                state.chaos += 2
        await _flush(producer, topic, pending, state)
    finally:
        await producer.stop()


async def _flush(
    producer: Any, topic: str, pending: dict[str, list[dict[str, Any]]], state: DemoState
) -> None:
    for name in sorted(pending):
        batch = pending[name]
        await producer.send(
            topic,
            key=name.encode(),
            value=orjson.dumps(batch),
            timestamp_ms=max(s["ts"] for s in batch),
        )
        state.produced += len(batch)
    pending.clear()


async def _watch(settings: Settings, bootstrap: str, state: DemoState, stop: asyncio.Event) -> None:
    from app.kafka.connection import start_consumer

    topics = settings.topics
    consumer = await start_consumer(
        settings,
        bootstrap,
        topics.load,
        topics.deadletter,
        topics.forecasts,
        topics.anomalies,
        topics.conflicts,
        topics.rebalance,
    )
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for rec in records:
                    doc = orjson.loads(rec.value)
                    if tp.topic not in (topics.load, topics.deadletter):
                        _note_prediction(state, doc)
                        continue
                    if tp.topic == topics.deadletter:
                        state.dead += 1
                        code = doc.get("reason_code", "?")
                        state.dead_by_reason[code] = state.dead_by_reason.get(code, 0) + 1
                        continue
                    if doc.get("type") != "load_window":
                        continue  # an operator's label routed to stage 1
                    view = state.subsystems.setdefault(doc["subsystem"], SubsystemView())
                    view.windows += 1
                    view.samples += doc["samples"]
                    view.last_start = max(view.last_start, doc["window_start_ms"])
                    view.metrics = {k: v["mean"] for k, v in doc["metrics"].items()}
                    view.resources = {k: v["mean"] for k, v in doc["resources"].items()}
    finally:
        await consumer.stop()


def _note_prediction(state: DemoState, doc: dict[str, Any]) -> None:
    """Count a prediction event; keep a one-line story of the interesting ones."""
    kind = doc["type"] + (f":{doc['status']}" if "status" in doc else "")
    state.predictions[kind] = state.predictions.get(kind, 0) + 1
    from app.wire.events import ms_to_iso

    line = None
    if doc["type"] == "conflict_predicted" and doc["status"] == "predicted":
        top = ", ".join(c["subsystem"] for c in doc["contributors"][:2])
        line = (
            f"{ms_to_iso(doc['emitted_at_ms'])[11:16]} conflict predicted on {doc['resource']}: "
            f"p={doc['probability']:.2f}, {doc['lead_time_s'] // 60} min ahead, "
            f"peak {doc['predicted_peak']:.1f}/{doc['capacity']:.0f} ({top})"
        )
    elif doc["type"] == "anomaly":
        line = (
            f"{doc['window_start'][11:16]} anomaly {doc['subsystem']}/{doc['series']}: "
            f"{doc['value']:.2f} (expected {doc['expected']:.2f})"
        )
    elif doc["type"] == "rebalance_recommended" and doc["allocations"]:
        cut = [a for a in doc["allocations"] if a["action"] != "keep"]
        line = (
            f"plan for {doc['conflict_id']}: "
            + ", ".join(f"{a['action']} {a['subsystem']} to {a['allocated']:.1f}" for a in cut[:3])
            if cut
            else None
        )
    if line:
        state.latest = [*state.latest[-5:], line]


def _start_worker(
    settings: Settings, bootstrap: str, config: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    # The worker inherits this process's environment, with its own PSO_* on top: handing an
    # environment to a child, not reading a setting (those go through `Settings`; the test
    # of no stray os.environ allows this one copy).
    env = dict(os.environ)
    env.update(
        {
            "PSO_BROKER": bootstrap,
            "PSO_CONFIG": str(config),
            "PSO_APP_ID": settings.app_id,
            "PSO_DATA_DIR": str(log_path.parent / "worker-data"),
        }
    )
    # faust-streaming 0.15's exactly-once shutdown can hang on "Not in the middle of a
    # transaction"; the demo stops its worker a lot, so it runs at-least-once unless told.
    env.setdefault("PSO_PROCESSING_GUARANTEE", "at_least_once")
    if settings.snapshot_key.get_secret_value() == BUILTIN_SNAPSHOT_KEY:
        # The built-in key is public (a worker on PSO_BROKER refuses it): one of this run's own.
        env["PSO_SNAPSHOT_KEY"] = secrets.token_urlsafe(32)
    # Parent-death signal, as for the embedded broker: a demo killed by SIGKILL, which runs no
    # cleanup, still takes its worker down. SIGKILL, not SIGTERM: the broker dies with the demo
    # too, and a graceful stop would wait on it (a fresh clone's test saw a worker still
    # running 60 s after); an aborted transaction loses nothing, the state is in the changelog.
    cmd = die_with_parent(
        [sys.executable, "-m", "app.cli", "worker", "--loglevel", "warning"], sig=signal.SIGKILL
    )
    with log_path.open("ab") as log:
        return subprocess.Popen(
            cmd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """Stop a child started in its own session: SIGTERM to its group, SIGKILL after
    ``timeout_s`` (the demo's worker, the benches' workers)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def run_demo(settings: Settings, duration_s: float, subsystems: int, speed: float) -> int:
    """Run the demo; return the process exit code."""
    from app.dev.broker import EmbeddedKafka, ExternalBroker
    from app.dev.simulator import FleetSimulator, policy_yaml
    from app.kafka.topics import create_topics

    console = Console()
    workdir = Path(tempfile.mkdtemp(prefix="pso-demo-"))
    config = workdir / "pso.yaml"
    config.write_text(policy_yaml(FleetSimulator(subsystems=subsystems, seed=7)))
    broker: EmbeddedKafka | ExternalBroker
    if settings.broker:
        broker = ExternalBroker(settings.broker)
    else:
        console.print("[bold]starting the embedded Kafka broker…[/]")
        broker = EmbeddedKafka.from_settings(settings, heap_mb=512)
    worker: subprocess.Popen[bytes] | None = None
    state = DemoState()
    kind = "external" if settings.broker else getattr(broker, "kind", "kafka")
    if not settings.broker and getattr(broker, "kind", None) == "tansu":
        settings = settings.model_copy(update={"processing_guarantee": "at_least_once"})
    try:
        broker.start()
        bootstrap = broker.bootstrap
        kind = "external" if settings.broker else str(getattr(broker, "kind", "kafka"))
        result = asyncio.run(create_topics(settings, bootstrap))
        console.print(
            f"broker {bootstrap} ({kind}); topics: "
            f"{sum(v == 'created' for v in result.values())} created, "
            f"{sum(v == 'exists' for v in result.values())} existed"
        )
        worker_log = workdir / "worker.log"
        worker = _start_worker(settings, bootstrap, config, worker_log)
        console.print(
            f"worker pid {worker.pid} (log {worker_log}); simulator: {subsystems} "
            f"subsystems at {speed:g}× event time"
        )
        asyncio.run(
            _run_live(
                settings, bootstrap, kind, state, subsystems, speed, duration_s, worker, console
            )
        )
    except KeyboardInterrupt:
        console.print("[yellow]stopping…[/]")
    finally:
        if worker is not None:
            stop_process(worker)
        broker.stop()
    _summary(console, state)
    if worker is not None and worker.returncode not in (0, -signal.SIGTERM, None):
        console.print(f"[red]worker exited with {worker.returncode}; see {workdir / 'worker.log'}")
        return 1
    return 0


async def _run_live(
    settings: Settings,
    bootstrap: str,
    kind: str,
    state: DemoState,
    subsystems: int,
    speed: float,
    duration_s: float,
    worker: subprocess.Popen[bytes],
    console: Console,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    began = time.monotonic()
    producer = asyncio.create_task(_produce(settings, bootstrap, state, subsystems, speed, stop))
    watcher = asyncio.create_task(_watch(settings, bootstrap, state, stop))
    try:
        with Live(
            render(state, bootstrap, kind, 0),
            console=console,
            refresh_per_second=4,
            transient=False,
        ) as live:
            while not stop.is_set():
                await asyncio.sleep(0.25)
                elapsed = time.monotonic() - began
                live.update(render(state, bootstrap, kind, elapsed))
                if duration_s and elapsed >= duration_s:
                    stop.set()
                if worker.poll() is not None:
                    console.print(f"[red]worker exited early ({worker.returncode})")
                    stop.set()
                for task in (producer, watcher):
                    if task.done() and task.exception() is not None:
                        stop.set()
    finally:
        stop.set()
        for task in (producer, watcher):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=10)
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_signal_handler(signal.SIGTERM)
        for task in (producer, watcher):
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


def _summary(console: Console, state: DemoState) -> None:
    table = Table(title="demo summary")
    table.add_column("subsystem")
    table.add_column("windows closed", justify="right")
    table.add_column("samples windowed", justify="right")
    for name in sorted(state.subsystems):
        v = state.subsystems[name]
        table.add_row(name, str(v.windows), str(v.samples))
    console.print(table)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(state.predictions.items()))
    console.print(f"predictions: {counts or 'none yet'}")
    for line in state.latest:
        console.print(f"  {line}")
    console.print(
        f"events in: {state.produced} samples (incl. {state.chaos} deliberate bad/late) · "
        f"dead-lettered: {state.dead} {dict(sorted(state.dead_by_reason.items()))} · "
        f"subsystems with closed windows: {len(state.subsystems)}"
    )
