"""Live topology throughput, latency and memory on a real broker. Prints one JSON object.

All figures come from ONE run on one broker (an embedded Apache Kafka started here via
`app.dev.broker.EmbeddedKafka`, or ``PSO_BROKER``) and one pre-filled telemetry topic.

Scenario: ``--subsystems`` (100) simulated services (`FleetSimulator`, from 10:00 UTC, the busy
part of the day) × exactly 5 series (the simulator's 3-5 are padded with derived metrics,
``in_flight`` = rps × latency and ``mem_mb``), one sample per second of event time for
``--minutes`` (20), 60 s windows, ``--partitions`` (4). Capacities sit at 0.7 × the weekly
expected peak, so conflicts are predicted. The topic is filled, before anything is timed, with
the bytes `app.kafka.client.TelemetryProducer` builds: validated samples, batch envelopes (a JSON
array) of ``--batch`` (60) consecutive samples of one subsystem per message — each subsystem
flushes once a minute — keyed by subsystem, stamped with the newest sample's event time. The
bytes are captured from the client and sent with one aiokafka producer.

Rates, in samples per second while catching up on that topic:

- ``ceiling_eps``: raw aiokafka (no group, partitions assigned) ``getmany`` + pydantic
  validation of every sample (`app.wire.codec.decode_message`), in this process, from just after the
  consumer starts to the last record decoded; median of ``--ceiling-runs`` (3).
- ``naive_faust_eps``: the peer, a minimal Faust app defined here (memory store, Faust's
  defaults, so at-least-once): one agent decodes each message with the same codec, then per
  sample reads and rewrites its subsystem's entry in a tumbling 60 s windowed table (windowed
  by the sample's event time). From its first telemetry message in (a Faust sensor) to its
  ``--naive-samples``-th (40,000) sample: a prefix, because the rate is flat and the whole
  topic would take minutes.
- ``pso_ingest_eps``: PSO's worker (`agents.app.build_app` under `faust.Worker`, as ``pso
  worker`` runs it) with only the ingest agent registered, from its first telemetry message in
  until the last expected `LoadWindow` is readable on its ``pso.load`` (read_committed).
- ``pso_eps``: the full worker (ingest, stage 1, stage 2), from its first message in until every
  expected window and output event (forecasts, anomalies, conflicts, plans, accuracy reports)
  is readable (read_committed). The expected ids come from the same bytes run through the pure
  core in this process (`TelemetryIngest` + `PredictionEngine`; live == offline is an
  integration test); that run's speed is ``core_inprocess_eps``. The stage-2 join timeout is
  raised so no wall-clock decision adds events while catching up.

Each run has its own app id (group, changelogs) and output topics, and reads the one telemetry
topic (the worker subprocess swaps in `SharedInputTopics`). Every run also reports CPU used by
the worker and by the broker per sample, which stays comparable when other processes share the
2 cores (their load average is in ``scenario``), and, on the embedded broker, the MB each run
wrote per topic.

``p99_window_to_event_ms``: after catching up, the same full worker gets the simulator's next
``--paced-minutes`` (6) at ``--paced-speed`` (10) event seconds per wall second (1,000 samples/s
for 100 subsystems, far below the catch-up rate). Every subsystem flushes at the same instant,
so windows close in bursts of 100 once a minute of event time (a worst case). A window closes
when its `LoadWindow` is appended to ``pso.load``: stamped on arrival by a read_uncommitted
consumer here (append time plus the local fetch delay). An event is stamped when a
read_committed consumer here receives it (when anyone downstream can see it). A forecast, or a
saturation warning, belongs to its subsystem's window that ends at the event's record timestamp;
a conflict event on resource R belongs to the windows ending at its record timestamp of every
subsystem using R, and counts from the last of them to close. p99 over the forecasts and
conflict-topic events of the paced phase; ``latency.append_to_append_p99_ms`` stamps events
with the read_uncommitted consumer instead (it leaves out waiting for the commit).

``rss_mb_2000_subsystems``: the full worker's VmRSS (`worker_rss`) once it has caught up on a
fleet of ``--rss-subsystems`` (2,000) × 5 series, one sample a minute for 6 minutes (three
closed windows each: every model exists and has learned), every expected window and event
readable; reported only if nothing is missing. Beside it, ``rss.same_code_in_process``: a fresh
interpreter runs the same code as the worker's agents (`TelemetryIngest.process` on the
client's bytes, every closed window through `PredictionEngine`) on the same fleet and holds
what a worker's memory-store tables hold (window state, a token per predictor: checkpoints are
sealed, sent to the changelog and dropped, `agents.checkpoints`; their size is reported), so
the difference is Faust's own share. A series' state grows by about 7 % more by its 17th window.

``--profile DIR`` writes a CPU-time cProfile of each worker (``DIR/<mode>.prof``);
``--app-option KEY=VALUE`` passes a `build_app` override to the PSO workers, to try a fix.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from app.dev.simulator import HOUR_MS, SERIES_PER_SUBSYSTEM, FleetSimulator, five_series
from app.kafka.client import TelemetryProducer
from app.settings import FleetPolicy, Settings, TopicNames, load_settings

SERIES = SERIES_PER_SUBSYSTEM
PROFILE_SIGNAL = signal.SIGRTMIN + 2  # mode's worker owns SIGUSR1/SIGUSR2
RUN_SNAPSHOT_KEY = secrets.token_urlsafe(32)


# --------------------------------------------------------------------------- scenario


@dataclass(slots=True)
class Message:
    """One telemetry message as `TelemetryProducer` builds it."""

    key: bytes
    value: bytes
    ts_ms: int
    samples: int


class _Capture:
    """Stands in for the aiokafka producer inside `TelemetryProducer`: keeps what it sends."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, timestamp_ms: int | None = None
    ) -> None:
        count = len(orjson.loads(value)) if value[:1] == b"[" else 1
        self.sent.append(Message(key or b"", value, int(timestamp_ms or 0), count))

    async def flush(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class CapturingProducer(TelemetryProducer):
    """The client's validation, batching and keying, with the bytes kept instead of sent."""

    async def start(self) -> None:
        self._producer = _Capture()

    @property
    def captured(self) -> list[Message]:
        capture = self._producer
        assert isinstance(capture, _Capture)
        return capture.sent


async def build_messages(
    settings: Settings, samples: Iterable[dict[str, Any]], batch: int, split_ms: int | None = None
) -> tuple[list[Message], list[Message]]:
    """Messages before and after event time ``split_ms`` (partial batches flushed at the split)."""
    producer = CapturingProducer(settings, "capture", batch_size=batch)
    await producer.start()
    boundary: int | None = None
    for sample in samples:
        if split_ms is not None and boundary is None and sample["ts"] >= split_ms:
            await producer.flush()
            boundary = len(producer.captured)
        await producer.send(five_series(sample))
    await producer.flush()
    sent = producer.captured
    if boundary is None:
        return sent, []
    return sent[:boundary], sent[boundary:]


@dataclass(slots=True)
class Expected:
    """Ids the worker must publish, by topic, from the pure core on the same bytes."""

    windows: set[str] = field(default_factory=set)
    events: dict[str, set[str]] = field(default_factory=dict)
    by_type: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def all_events(self) -> set[str]:
        return set().union(*self.events.values()) if self.events else set()


class Offline:
    """The pure core on the captured messages: expected ids (live == offline is tested)."""

    def __init__(self, policy: FleetPolicy, settings: Settings, predict: bool = True) -> None:
        from app.core.engine import PredictionEngine
        from app.wire.telemetry import TelemetryIngest

        self.settings = settings
        self.ingest = TelemetryIngest(policy.window)
        self.engine = PredictionEngine(policy.spec()) if predict else None
        self.offset = 0

    def run(self, messages: list[Message]) -> Expected:
        from agents.predict import topic_for
        from app.wire.codec import SourceRef

        out = Expected()
        started = time.perf_counter()
        for message in messages:
            source = SourceRef("offline", 0, self.offset, message.key)
            self.offset += 1
            result = self.ingest.process(message.value, source)
            if result.dead:
                raise RuntimeError(f"the scenario produced dead letters: {result.dead[0].reason}")
            for window in result.windows:
                out.windows.add(window.event_id)
                if self.engine is None:
                    continue
                for event in self.engine.process(window):
                    topic, _key = topic_for(event, self.settings)
                    out.events.setdefault(topic, set()).add(event.event_id)
                    kind = type(event).__name__
                    out.by_type[kind] = out.by_type.get(kind, 0) + 1
        out.seconds = time.perf_counter() - started
        return out


def deployment(bootstrap: str, name: str, partitions: int, config: Path) -> Settings:
    return load_settings(
        broker=bootstrap,
        app_id=name,
        topics={"prefix": name},
        topic_policy={"partitions": partitions},
        config=config,
    )


# --------------------------------------------------------------------------- kafka helpers


async def produce(settings: Settings, bootstrap: str, topic: str, messages: list[Message]) -> None:
    from app.kafka.connection import start_producer

    producer = await start_producer(settings, bootstrap)
    try:
        for m in messages:
            await producer.send(topic, m.value, key=m.key, timestamp_ms=m.ts_ms)
        await producer.flush()
    finally:
        await producer.stop()


async def ceiling_pass(
    settings: Settings, bootstrap: str, topic: str, broker_pid: int | None
) -> dict[str, Any]:
    """Raw aiokafka getmany + codec validation of every sample, until the end offsets."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from app.kafka.connection import client_kwargs
    from app.wire.codec import SourceRef, decode_message

    consumer = AIOKafkaConsumer(
        **client_kwargs(settings, bootstrap),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    parts = [TopicPartition(topic, p) for p in range(settings.topic_policy.partitions)]
    consumer.assign(parts)
    await consumer.start()
    try:
        end = await consumer.end_offsets(parts)
        remaining = {tp for tp in parts if end[tp] > 0}
        samples = messages = dead = 0
        cpu0, broker0 = time.process_time(), cpu_seconds(broker_pid)
        started = time.perf_counter()
        while remaining:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                for r in records:
                    decoded = decode_message(
                        r.value, SourceRef(tp.topic, tp.partition, r.offset, r.key)
                    )
                    samples += len(decoded.samples)
                    dead += len(decoded.dead)
                    messages += 1
                if records and records[-1].offset + 1 >= end[tp]:
                    remaining.discard(tp)
        seconds = time.perf_counter() - started
        cpu, broker1 = time.process_time() - cpu0, cpu_seconds(broker_pid)
    finally:
        await consumer.stop()
    return {
        "eps": samples / seconds,
        "samples": samples,
        "messages": messages,
        "dead": dead,
        "seconds": seconds,
        "cpu_s": cpu,
        "broker_cpu_s": broker1 - broker0 if broker0 is not None and broker1 is not None else None,
    }


class Tail:
    """Reads topics from their beginning in the background; stamps each record's arrival."""

    def __init__(
        self, settings: Settings, bootstrap: str, topics: list[str], committed: bool
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.topics = topics
        self.committed = committed
        self.seen: dict[str, float] = {}  # event id -> first arrival (time.time())
        self.records: list[tuple[str, str, int, str, float]] = []  # topic,key,ts,id,arrival
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from app.kafka.connection import client_kwargs

        self._consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings, self.bootstrap),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed" if self.committed else "read_uncommitted",
            fetch_max_wait_ms=50,
        )
        self._consumer.assign(
            [
                TopicPartition(t, p)
                for t in self.topics
                for p in range(self.settings.topic_policy.partitions)
            ]
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            now = time.time()
            for tp, records in batches.items():
                for r in records:
                    event_id = str(orjson.loads(r.value).get("event_id"))
                    self.seen.setdefault(event_id, now)
                    key = r.key.decode() if r.key else ""
                    self.records.append((tp.topic, key, r.timestamp, event_id, now))

    async def wait_for(self, ids: set[str], timeout_s: float, proc: Worker | None) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ids <= self.seen.keys():
                return True
            if proc is not None:
                proc.check()
            if self._task is not None and self._task.done():
                self._task.result()
            await asyncio.sleep(0.05)
        return ids <= self.seen.keys()

    def last_arrival(self, ids: set[str]) -> float | None:
        times = [self.seen[i] for i in ids if i in self.seen]
        return max(times) if len(times) == len(ids) and times else None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._consumer is not None:
            # aiokafka's fetcher can re-raise a CancelledError from its own task on close.
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer.stop()


# --------------------------------------------------------------------------- worker processes


class Worker:
    """A worker subprocess (this file in ``_worker`` mode) with its stats file and log."""

    def __init__(
        self,
        mode: str,
        settings: Settings,
        telemetry: str,
        tmp: Path,
        guarantee: str,
        profile: Path | None,
        target_samples: int = 0,
        app_options: dict[str, Any] | None = None,
    ) -> None:
        self.mode = mode
        self.stats_path = tmp / f"{settings.app_id}.stats.json"
        self.log_path = tmp / f"{settings.app_id}.log"
        env = dict(os.environ)
        env.update(
            {
                "PSO_BROKER": settings.broker or "",
                "PSO_APP_ID": settings.app_id,
                "PSO_TOPICS__PREFIX": settings.topics.prefix,
                "PSO_TOPIC_POLICY__PARTITIONS": str(settings.topic_policy.partitions),
                "PSO_DATA_DIR": str(tmp / "data"),
                "PSO_CONFIG": str(settings.config),
                "PSO_PROCESSING_GUARANTEE": guarantee,
                # No wall-clock liveness decision while catching up (it would add events).
                "PSO_JOIN_TIMEOUT_S": "86400",
                "PSO_BENCH_APP_OPTIONS": json.dumps(app_options or {}),
            }
        )
        # This run's own checkpoint key, unless one is set: the built-in key is public.
        env.setdefault("PSO_SNAPSHOT_KEY", RUN_SNAPSHOT_KEY)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "_worker",
            "--mode",
            mode,
            "--telemetry-topic",
            telemetry,
            "--stats",
            str(self.stats_path),
            "--target-samples",
            str(target_samples),
        ]
        self.profile = None if profile is None else profile / f"{mode}.prof"
        if self.profile is not None:
            self.profile.parent.mkdir(parents=True, exist_ok=True)
            self.profile.unlink(missing_ok=True)
            cmd += ["--profile", str(self.profile)]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.mode} worker exited with {self.proc.returncode}:\n"
                + self.log_path.read_text(errors="replace")[-3000:]
            )

    def stats(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.stats_path.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def rss(self) -> dict[str, float]:
        return proc_memory(self.proc.pid)

    async def wait_idle(
        self, quiet: float = 0.05, span_s: float = 1.0, timeout_s: float = 60.0
    ) -> None:
        """Until the worker uses under ``quiet`` of a core over ``span_s``."""
        deadline = time.monotonic() + timeout_s
        before = cpu_seconds(self.proc.pid) or 0.0
        while time.monotonic() < deadline:
            await asyncio.sleep(span_s)
            self.check()
            now = cpu_seconds(self.proc.pid) or 0.0
            if now - before < quiet * span_s:
                return
            before = now

    def stop(self) -> None:
        if self.profile is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, PROFILE_SIGNAL)
            deadline = time.monotonic() + 10
            while not self.profile.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (None if unknown)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    worker: Worker,
    done: Any,
    timeout_s: float,
    broker_pid: int | None,
    progress: Any = None,
    every_s: float = 10.0,
) -> dict[str, Any]:
    """Poll until ``done()``; CPU used by the worker and the broker from its first message in.

    CPU shares tell a reader whether a rate was bound by the worker's own core (share near 1)
    or by waiting (commits, the broker, other processes on the 2 cores). With ``progress``,
    every ``every_s``: [seconds since the first message in, worker and broker CPU share over
    the interval, progress()].
    """
    deadline = time.monotonic() + timeout_s
    start: tuple[float | None, float | None, float] | None = None
    mark: tuple[float | None, float | None, float] | None = None
    timeline: list[Any] = []
    ok = False

    def shares(a: tuple[Any, Any, float], b: tuple[Any, Any, float]) -> list[float | None]:
        wall = max(1e-9, b[2] - a[2])
        return [
            round((b[i] - a[i]) / wall, 2) if a[i] is not None and b[i] is not None else None
            for i in (0, 1)
        ]

    def now() -> tuple[float | None, float | None, float]:
        return (cpu_seconds(worker.proc.pid), cpu_seconds(broker_pid), time.time())

    while time.monotonic() < deadline:
        worker.check()
        if start is None and worker.stats().get("first_in"):
            start = mark = now()
        if done():
            ok = True
            break
        if progress is not None and start is not None and mark is not None:
            current = now()
            if current[2] - mark[2] >= every_s:
                timeline.append(
                    [round(current[2] - start[2], 1), *shares(mark, current), progress()]
                )
                mark = current
        await asyncio.sleep(0.05)
    end = now()
    out: dict[str, Any] = {"ok": ok, "stats": worker.stats()}
    if start is not None:
        out["worker_cpu_share"], out["broker_cpu_share"] = shares(start, end)
        for i, name in ((0, "worker_cpu_s"), (1, "broker_cpu_s")):
            a, b = start[i], end[i]
            out[name] = (b - a) if a is not None and b is not None else None
    if progress is not None:
        out["timeline"] = timeline
    return out


# --------------------------------------------------------------------------- worker side


class SharedInputTopics(TopicNames):
    """Topic names of one deployment, except the telemetry topic, which all runs share."""

    telemetry_topic: str

    @property
    def telemetry(self) -> str:
        return self.telemetry_topic


@dataclass(slots=True)
class WorkerStats:
    first_in: float | None = None
    last_in: float | None = None
    messages_in: int = 0
    samples: int = 0
    target_reached: float | None = None


def worker_main(argv: list[str]) -> None:
    """Run one Faust worker: ``pso`` (full), ``ingest`` (ingest agent only) or ``naive``."""
    import faust

    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["pso", "ingest", "naive"], required=True)
    parser.add_argument("--telemetry-topic", required=True)
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--target-samples", type=int, default=0)
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = load_settings()
    stats = WorkerStats()
    topic = args.telemetry_topic

    class Probe(faust.Sensor):
        def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
            if tp.topic == topic:
                now = time.time()
                if stats.first_in is None:
                    stats.first_in = now
                stats.last_in = now
                stats.messages_in += 1

    (settings.data_dir / settings.app_id).mkdir(parents=True, exist_ok=True)
    if args.mode == "naive":
        app = naive_app(settings, topic, stats, args.target_samples)
    else:
        topics = SharedInputTopics(prefix=settings.topics.prefix, telemetry_topic=topic)
        settings = settings.model_copy(update={"topics": topics})
        if args.mode == "ingest":
            import agents.predict

            def no_predict(app: Any, settings: Settings) -> None:
                return None

            agents.predict.register_predict = no_predict  # build_app imports it at call time
        from agents.app import build_app

        assert settings.broker is not None
        options = json.loads(os.environ.get("PSO_BENCH_APP_OPTIONS") or "{}")
        app = build_app(settings, settings.broker, **options)
    app.sensors.add(Probe())

    def dump() -> None:
        tmp = args.stats.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: getattr(stats, k) for k in WorkerStats.__slots__}))
        os.replace(tmp, args.stats)

    def dumper() -> None:
        while True:
            dump()
            time.sleep(0.2)

    threading.Thread(target=dumper, daemon=True).start()
    if args.profile is not None:
        import cProfile

        profiler = cProfile.Profile(time.process_time)  # CPU time: preemption is not cost

        def dump_profile(signum: int, frame: Any) -> None:
            profiler.disable()
            profiler.dump_stats(str(args.profile))

        signal.signal(PROFILE_SIGNAL, dump_profile)  # sent by the bench before SIGTERM
        profiler.enable()
    # "info", as `pso worker` defaults to: at "warning" Faust's terminal spinner sets the root
    # logger to DEBUG, and every aiokafka debug() call then builds a LogRecord.
    worker = faust.Worker(app, loglevel="info", redirect_stdouts=False)
    worker.execute_from_commandline()


def naive_app(settings: Settings, topic_name: str, stats: WorkerStats, target: int) -> Any:
    """The peer: per-sample read-modify-write of a tumbling windowed Faust table."""
    from datetime import timedelta

    import faust

    from app.wire.codec import SourceRef, decode_message

    partitions = settings.topic_policy.partitions
    assert settings.broker is not None
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.broker}",
        store="memory://",
        topic_partitions=partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=str(settings.data_dir / settings.app_id),
        key_serializer="raw",
        value_serializer="raw",
    )
    size_s = settings.policy().window.size_s
    sample_ts = [0.0]  # event time of the sample being applied: the table's time reference
    windowed: Any = app.Table("naive-load", default=dict, partitions=partitions).tumbling(
        size_s, expires=timedelta(days=1)
    )
    table = windowed.relative_to(lambda event: sample_ts[0])
    telemetry = app.topic(topic_name, key_serializer="raw", value_serializer="raw")

    @app.agent(telemetry)
    async def naive(stream: Any) -> None:
        async for event in stream.events():
            m = event.message
            decoded = decode_message(event.value, SourceRef(m.topic, m.partition, m.offset, m.key))
            for _index, sample in decoded.samples:
                sample_ts[0] = sample.ts / 1000
                state = dict(table[sample.subsystem].current())
                for kind, values in (("m", sample.metrics), ("r", sample.resources)):
                    for name, v in values.items():
                        k = f"{kind}:{name}"
                        s = state.get(k)
                        state[k] = (
                            [1, v, v, v, v]
                            if s is None
                            else [s[0] + 1, s[1] + v, min(s[2], v), max(s[3], v), v]
                        )
                table[sample.subsystem] = state
                stats.samples += 1
                if stats.samples == target:
                    stats.target_reached = time.time()

    return app


# --------------------------------------------------------------------------- the run


def us_per_sample(cpu_s: float | None, samples: int) -> float | None:
    """CPU microseconds per sample: comparable across runs however busy the machine is."""
    return round(cpu_s / samples * 1e6, 1) if cpu_s is not None and samples else None


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]  # nearest rank


def summary_ms(values: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50": round(pct(ms, 0.50), 1) if ms else None,  # type: ignore[arg-type]
        "p99": round(pct(ms, 0.99), 1) if ms else None,  # type: ignore[arg-type]
        "max": round(max(ms), 1) if ms else None,
    }


def latencies(
    load_u: Tail, events: Tail, topics: set[str], ids: set[str], users: dict[str, list[str]]
) -> dict[str, list[float]]:
    """Per event: arrival of the event − arrival (uncommitted) of the last window it needs."""
    closed: dict[tuple[str, int], float] = {}
    for _topic, key, ts, _eid, arrival in load_u.records:
        closed.setdefault((key, ts), arrival)
    out: dict[str, list[float]] = {"forecasts": [], "conflicts": []}
    done: set[str] = set()
    for topic, key, ts, eid, arrival in events.records:
        if topic not in topics or eid not in ids or eid in done:
            continue
        done.add(eid)
        needs = users.get(key, [key])
        times = [closed.get((name, ts)) for name in needs]
        if any(t is None for t in times):
            continue
        kind = "forecasts" if topic.endswith(".forecasts") else "conflicts"
        out[kind].append(arrival - max(t for t in times if t is not None))
    return out


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

    # 1. Ceiling.
    passes = [
        await ceiling_pass(shared, bootstrap, telemetry, broker.pid)
        for _ in range(args.ceiling_runs)
    ]
    if any(p["samples"] != samples or p["dead"] for p in passes):
        raise RuntimeError(f"ceiling read {passes[0]['samples']} of {samples} samples")
    ceiling = statistics.median(p["eps"] for p in passes)

    # 2. The naive Faust agent (a prefix of the topic).
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
    tail = Tail(ing, bootstrap, [ing.topics.load], committed=True)
    await tail.start()
    w = Worker("ingest", ing, telemetry, tmp, guarantee, args.profile, app_options=options)
    try:
        m = await measure(w, lambda: expected.windows <= tail.seen.keys(), args.timeout, broker.pid)
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
    ingest_eps = samples / ingest_s if ingest_s else None

    # 4. PSO end to end, then 5. the paced phase on the same worker.
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
            w, lambda: want <= tail_c.seen.keys(), args.timeout, broker.pid, e2e_progress
        )
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
            "timeline": m["timeline"],
            "topic_mb": topic_mb(broker, e2e.app_id),
        }
        pso_eps = samples / e2e_s if e2e_s else None

        # Paced: the simulator's next minutes at --paced-speed, into the same topic.
        await w.wait_idle()
        from app.kafka.connection import start_producer

        producer = await start_producer(shared, bootstrap)
        paced_started = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
            t0 = loop.time() + 0.2
            first_ts = paced[0].ts_ms if paced else 0
            for msg in paced:
                due = t0 + (msg.ts_ms - first_ts) / 1000 / args.paced_speed
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await producer.send(telemetry, msg.value, key=msg.key, timestamp_ms=msg.ts_ms)
            await producer.flush()
        finally:
            await producer.stop()
        send_s = time.perf_counter() - paced_started
        paced_ids = expected_paced.windows | expected_paced.all_events()
        paced_ok = await tail_c.wait_for(paced_ids, 120.0, w)
        await tail_u.wait_for(paced_ids, 10.0, w)
    finally:
        await asyncio.to_thread(w.stop)
        await tail_c.stop()
        await tail_u.stop()
    lat_ids = expected_paced.events.get(e2e.topics.forecasts, set()) | expected_paced.events.get(
        e2e.topics.conflicts, set()
    )
    ev_topics = {e2e.topics.forecasts, e2e.topics.conflicts}
    visible = latencies(tail_u, tail_c, ev_topics, lat_ids, users)
    appended = latencies(tail_u, tail_u, ev_topics, lat_ids, users)
    all_visible = visible["forecasts"] + visible["conflicts"]
    paced_samples = sum(m.samples for m in paced)
    latency = {
        "definition": "LoadWindow appended to pso.load (read_uncommitted arrival) -> event "
        "readable by a read_committed consumer (see the docstring)",
        "paced_speed_x": args.paced_speed,
        "paced_samples_per_s": round(paced_samples / (paced_ms / 1000 / args.paced_speed), 1),
        "paced_send_s": round(send_s, 1),
        "paced_windows": len(expected_paced.windows),
        "paced_missing": len(paced_ids - tail_c.seen.keys()) if not paced_ok else 0,
        "forecasts_ms": summary_ms(visible["forecasts"]),
        "conflicts_ms": summary_ms(visible["conflicts"]),
        "append_to_append_p99_ms": summary_ms(appended["forecasts"] + appended["conflicts"])["p99"],
    }
    p99 = summary_ms(all_visible)["p99"]

    # 6. Memory: the engine holding 2,000 subsystems × 5 series (and 100, to compare with the
    # worker that held the 100 above).
    rss: dict[str, Any] = {}
    if args.rss_subsystems:
        rss = {"worker": await worker_rss(args, broker, tmp, run, guarantee, options)}
        rss["same_code_in_process"] = rss_run(args.rss_subsystems, args.seed)
        small = rss_run(args.subsystems, args.seed)
        rss[f"same_code_in_process_mb_at_{args.subsystems}"] = small["rss_mb"]
        rss[f"worker_mb_at_{args.subsystems}"] = e2e_info["rss_mb_100_subsystems"]
    rss_mb = rss["worker"]["rss_mb"] if rss and not rss["worker"]["missing"] else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a and b else None

    def inverse_ratio(cost_ref: float | None, cost: float | None) -> float | None:
        return round(cost_ref / cost, 3) if cost_ref and cost else None

    ceiling_us = us_per_sample(statistics.median(p["cpu_s"] for p in passes), samples)

    result: dict[str, Any] = {
        "ceiling_eps": round(ceiling, 1),
        "naive_faust_eps": round(naive_eps, 1) if naive_eps else None,
        "pso_ingest_eps": round(ingest_eps, 1) if ingest_eps else None,
        "pso_eps": round(pso_eps, 1) if pso_eps else None,
        "p99_window_to_event_ms": p99,
        "rss_mb_2000_subsystems": rss_mb,
        "broker": broker_description(broker),
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
            "p99_lt_500ms": bool(p99 is not None and p99 < 500),
            "rss_lt_1GiB": bool(rss_mb is not None and rss_mb < 1024),
        },
        "scenario": scenario,
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
        "rss": rss,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    return result


async def worker_rss(
    args: argparse.Namespace,
    broker: Any,
    tmp: Path,
    run: str,
    guarantee: str,
    options: dict[str, Any],
) -> dict[str, Any]:
    """The full worker itself holding ``--rss-subsystems`` × 5 series: VmRSS once it has caught
    up on one sample a minute for 6 minutes of each (three closed windows per subsystem, as in
    `rss_main`) and every expected window and event is readable."""
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
    messages, _ = await build_messages(dep, sim.samples(6 * 60_000), batch=1)
    expected = Offline(policy, dep).run(messages)
    await produce(dep, bootstrap, dep.topics.telemetry, messages)
    t = dep.topics
    out_topics = [t.load, t.forecasts, t.anomalies, t.conflicts, t.rebalance, t.accuracy]
    want = expected.windows | expected.all_events()
    tail = Tail(dep, bootstrap, out_topics, committed=True)
    await tail.start()
    w = Worker("pso", dep, t.telemetry, tmp, guarantee, None, app_options=options)
    try:
        m = await measure(w, lambda: want <= tail.seen.keys(), args.timeout, broker.pid)
        mem = w.rss()
        st = m["stats"]
        caught_up = time.time() - st["first_in"] if m["ok"] and st.get("first_in") else None
    finally:
        await asyncio.to_thread(w.stop)
        await tail.stop()
    return {
        "subsystems": args.rss_subsystems,
        "series": args.rss_subsystems * SERIES,
        "samples": sum(m.samples for m in messages),
        "windows": len(expected.windows),
        "events": len(expected.all_events()),
        "missing": len(want - tail.seen.keys()),
        "rss_mb": round(mem.get("VmRSS", 0.0), 1),
        "peak_rss_mb": round(mem.get("VmHWM", 0.0), 1),
        "caught_up_s": round(caught_up, 1) if caught_up else None,
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
    parser.add_argument("--minutes", type=float, default=6.0)
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
        sealed_bytes += len(seal(p, key, context=("rss", name)))
        tokens[name] = b"checkpoint@%d" % windows
    gc.collect()
    mem = proc_memory(os.getpid())
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
                "interpreter_and_imports_mb": round(baseline, 1),
                "checkpoints_mb_on_changelog": round(sealed_mb, 1),
                "live_kb_per_series": round(live_mb * 1024 / max(1, series), 1),
                "sealed_kb_per_series": round(sealed_mb * 1024 / max(1, series), 1),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MiB."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) / 1024
    return out


def rss_run(subsystems: int, seed: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "_rss",
            "--subsystems",
            str(subsystems),
            "--seed",
            str(seed),
        ],
        capture_output=True,
        check=True,
        timeout=900,
    )
    data: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return data


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker_main(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_rss":
        rss_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subsystems", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=20.0, help="event time to catch up on")
    parser.add_argument("--batch", type=int, default=60, help="samples per message")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--ceiling-runs", type=int, default=3)
    parser.add_argument("--naive-samples", type=int, default=40_000)
    parser.add_argument("--paced-minutes", type=float, default=6.0)
    parser.add_argument(
        "--paced-speed",
        type=float,
        default=10.0,
        help="event seconds per wall second in the paced phase",
    )
    parser.add_argument("--rss-subsystems", type=int, default=2000, help="0 skips it")
    parser.add_argument(
        "--guarantee",
        choices=["exactly_once", "at_least_once"],
        default=None,
        help="default: exactly_once when the broker has transactions",
    )
    parser.add_argument(
        "--app-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra build_app option for the PSO workers (to try a fix), e.g. "
        "broker_commit_interval=0.2; reported in the output",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600.0, help="per phase, seconds")
    parser.add_argument(
        "--profile", type=Path, default=None, help="write cProfile stats of the PSO workers here"
    )
    args = parser.parse_args()

    from app.dev.broker import EmbeddedKafka, ExternalBroker

    started = time.perf_counter()
    external = os.environ.get("PSO_BROKER")
    broker: Any = (
        ExternalBroker(external)
        if external
        else EmbeddedKafka.from_settings(load_settings(), heap_mb=512)
    )
    with tempfile.TemporaryDirectory(prefix="pso-live-bench-") as tmp, broker:
        result = asyncio.run(bench(args, broker, Path(tmp)))
    result["bench_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
