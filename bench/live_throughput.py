"""Live topology throughput, latency and memory on a real broker. Prints one JSON object.

All figures come from ONE run on one broker (an embedded Apache Kafka started here via
`app.dev.broker.EmbeddedKafka`, or ``PSO_BROKER``) and one pre-filled telemetry topic. The JSON
names what each figure is (``definitions``); this docstring is the long form.

Scenario: ``--subsystems`` (100) simulated services (`FleetSimulator`, from 10:00 UTC, the busy
part of the day) × exactly 5 series (the simulator's 3-5 are padded with derived metrics,
``in_flight`` = rps × latency and ``mem_mb``), one sample per second of event time for
``--minutes`` (40), 60 s windows, ``--partitions`` (4). Capacities sit at 0.7 × the weekly
expected peak, so conflicts are predicted. The topic is filled, before anything is timed, with
the bytes `app.kafka.client.TelemetryProducer` builds: validated samples, batch envelopes (a JSON
array) of ``--batch`` (60) consecutive samples of one subsystem per message — each subsystem
flushes once a minute — keyed by subsystem, stamped with the newest sample's event time. The
bytes are captured from the client and sent with one aiokafka producer.

Checkpoints are part of every measured worker phase: a worker seals each subsystem's open
windows (ingest), each subsystem's predictor (stage 1) and each resource's (stage 2) every
``PSO_CHECKPOINT_EVERY`` (30) closed windows, so each phase runs more than 30 windows of event
time per key: 40 minutes close 37 windows per subsystem in the catch-up phases, the paced phase
closes another 120, and the memory phase 33. Every worker phase reports the keys it sealed per
table (``checkpoints.keys_sealed``; ``every_key_sealed`` says whether each subsystem and resource
was sealed at least once inside the phase).

Rates, in samples per second while catching up on that topic:

- ``ceiling_eps``: raw aiokafka (no group, partitions assigned) ``getmany`` + ``orjson.loads``
  of every message, in this process, from just after the consumer starts to the last record
  decoded; median of ``--ceiling-runs`` (3). No validation: the least work any consumer of this
  topic must do.
- ``validation_us_per_sample``: what PSO's own ingest parse and validation path costs per sample
  on the same messages, in this process, without windowing: `TelemetryIngest.parse` (size check,
  ``orjson.loads``, the envelope checks of `app.wire.codec.parse_envelope`, and for a batch of one
  subsystem's plainly valid samples — every message here — `app.wire.codec.batch_columns`, which
  type-, range- and name-checks the batch a column at a time), plus, for a message parse leaves
  as elements, `app.wire.codec.fast_fields` (and pydantic where it declines) per element, as
  `TelemetryIngest.apply` runs them. Median of 5 passes over the catch-up messages, wall time
  (``validation`` also gives ``orjson.loads`` alone on the same bytes).
- ``naive_faust_eps``: the peer, a minimal Faust app defined here (memory store, Faust's
  defaults, so at-least-once): one agent decodes each message with the reference codec
  (`app.wire.codec.decode_message`, pydantic per sample), then per sample reads and rewrites its
  subsystem's entry in a tumbling 60 s windowed table (windowed by the sample's event time).
  From its first telemetry message in (a Faust sensor) to its ``--naive-samples``-th (40,000)
  sample: a prefix, because the rate is flat and the whole topic would take minutes.
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
2 cores (their 1-minute load average as each phase starts is in ``loadavg_at_phase_start``),
and, on the embedded broker, the MB each run wrote per topic. A worker phase that stops making
progress (nothing new on its outputs for 60 s while it uses under 10 % of a core, expected
output still missing) ends early with ``stalled_at_s``; ``worker_log`` counts agent crashes
and ERROR lines in the worker's log and gives the first crash's reason.

``latency_ms`` ({p50, p99, max}): after catching up, the same full worker gets the simulator's
next ``--paced-minutes`` (120) at ``--paced-rate`` (10,000) samples per wall second: event time
runs at rate / subsystems (100) event seconds per wall second, and a message is sent when the
wall clock reaches its event time (its newest sample's) on that scale. Every subsystem flushes
at the same instant, so 100 messages (6,000 samples) go out at once every 0.6 s and windows close
in bursts of 100 (a worst case); the JSON gives the rate reached, how late the sender was,
and the CPU share the worker and the broker had meanwhile (whether the worker got what it needed).
A message is *produced* when this process hands it to its aiokafka producer (``time.time()``
just before ``send``). An event is *readable* when a read_committed consumer here receives it
(its fetches wait at most 50 ms). The message that *causes* an event is the first message,
in produce order, after which the pure core run on the same bytes in the same order emits that
event (`Offline.run` records it): for a forecast or a saturation warning, the message of its
subsystem whose newest sample moved the watermark (max event time − 2 windows of lateness)
past the end of the window; for a conflict on resource R, of those messages for R's
contributors' windows, the last one produced (R's window is judged when its last contributor
reports it). The worker cannot emit an event before its cause exists, so every latency is
>= 0 (``negative`` counts any that are not: it would mean the definition is wrong). Latency =
readable − produced, over every forecast and conflict-topic event (conflicts and saturation
warnings) of the paced phase. ``latency.stages`` splits it at the window: produce -> its
`LoadWindow` appended to ``pso.load`` (stamped by a read_uncommitted consumer here), and window
appended -> event readable (the figure this bench reported before, which left ingest and its
commit out).

``checkpoint_seal_ms`` ({p50, max}): how long a burst of checkpoint seals takes, in the paced
phase. The worker subprocess wraps `agents.checkpoints.CheckpointedStates._checkpoint` (bench
code only: `SealLog`): each call's table, key, sealed bytes, time in pickle + HMAC, wall time
from entry to return (the seal, and the table write that hands the bytes to the changelog
producer, which can wait for the producer to drain earlier batches), and the error if it
raised. A birth record (a few bytes for a new key) is logged but is not a seal. One agent
writes each table, one key after another; a *burst* is a run of one table's seals each
starting within ``SEAL_BURST_GAP_S`` (0.25 s) of the previous one's end, and its duration is
the time its agent spent inside `_checkpoint` over the run: what the seals hold that agent up
by (``burst_span_ms``, first entry -> last return, also counts the agent's other work between
seals: the ingest agent seals one key per message). ``checkpoints`` per phase lists every
burst and every failed checkpoint; ``latency`` splits the paced latencies by whether an
event's produce -> readable interval overlaps a burst's span, and lists the worst ones with
where they fell relative to the nearest burst. The commit that ships a burst's bytes to the
broker comes after it and shows only in those latencies.

``rss_mb_2000_subsystems``: the full worker's VmRSS (`worker_rss`) once it has caught up on a
fleet of ``--rss-subsystems`` (2,000) × 5 series, one sample a minute for ``--rss-minutes``
(36: 33 closed windows each, so every subsystem and resource has sealed its first checkpoint
of state, not only its birth), every expected window and event readable; reported only if
nothing is missing. Beside it, ``rss.same_code_in_process``: a fresh interpreter runs the same
code as the worker's agents (`TelemetryIngest.process` on the client's bytes, every closed
window through `PredictionEngine`) on the same fleet and holds what a worker's memory-store
tables hold (window state, a token per predictor: checkpoints are sealed, sent to the
changelog and dropped, `agents.checkpoints`; their size is reported), so the difference is
Faust's own share.

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
    #: window or event id -> index (in the messages run) of the message that caused it: the
    #: first after which the core emits it
    cause: dict[str, int] = field(default_factory=dict)

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
        from agents.outputs import topic_for
        from app.wire.codec import SourceRef

        out = Expected()
        started = time.perf_counter()
        for index, message in enumerate(messages):
            source = SourceRef("offline", 0, self.offset, message.key)
            self.offset += 1
            result = self.ingest.process(message.value, source)
            if result.dead:
                raise RuntimeError(f"the scenario produced dead letters: {result.dead[0].reason}")
            for window in result.windows:
                out.windows.add(window.event_id)
                out.cause.setdefault(window.event_id, index)
                if self.engine is None:
                    continue
                for event in self.engine.process(window):
                    topic, _key = topic_for(event, self.settings)
                    out.events.setdefault(topic, set()).add(event.event_id)
                    out.cause.setdefault(event.event_id, index)
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


@dataclass(slots=True)
class Paced:
    """What `send_paced` did: when each message was handed to the producer."""

    produced: list[float]  # time.time() just before each message's send, in order
    seconds: float = 0.0  # first send -> last send acknowledged (flush)
    behind_max_s: float = 0.0  # how late the latest send was against its schedule


async def send_paced(
    settings: Settings, bootstrap: str, topic: str, messages: list[Message], speed: float
) -> Paced:
    """Send each message when the wall clock reaches its event time, at ``speed`` event
    seconds per wall second (from the first message's event time)."""
    from app.kafka.connection import start_producer

    out = Paced([])
    if not messages:
        return out
    producer = await start_producer(settings, bootstrap)
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.2
        first_ts = messages[0].ts_ms
        started = time.time()
        for msg in messages:
            due = t0 + (msg.ts_ms - first_ts) / 1000 / speed
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            out.behind_max_s = max(out.behind_max_s, loop.time() - due)
            out.produced.append(time.time())
            await producer.send(topic, msg.value, key=msg.key, timestamp_ms=msg.ts_ms)
        await producer.flush()
        out.seconds = time.time() - started
    finally:
        await producer.stop()
    return out


async def ceiling_pass(
    settings: Settings, bootstrap: str, topic: str, broker_pid: int | None
) -> dict[str, Any]:
    """Raw aiokafka getmany + ``orjson.loads`` of every message (no validation), until the
    end offsets."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from app.kafka.connection import client_kwargs

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
        samples = messages = 0
        loads = orjson.loads
        cpu0, broker0 = time.process_time(), cpu_seconds(broker_pid)
        started = time.perf_counter()
        while remaining:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                for r in records:
                    doc = loads(r.value)
                    samples += len(doc) if type(doc) is list else 1
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
        "seconds": seconds,
        "cpu_s": cpu,
        "broker_cpu_s": broker1 - broker0 if broker0 is not None and broker1 is not None else None,
    }


def validation_cost(messages: list[Message], window: Any, passes: int = 5) -> dict[str, Any]:
    """PSO's ingest parse + validation per sample on ``messages``, in this process, without
    windowing: `TelemetryIngest.parse`, then for elements it did not take as columns what
    `TelemetryIngest.apply` runs on each before windowing it (`fast_fields`, else pydantic)."""
    from app.core.ingest import IngestResult
    from app.wire.codec import SourceRef, fast_fields, validate_sample
    from app.wire.telemetry import TelemetryIngest

    ingest = TelemetryIngest(window)
    samples = sum(m.samples for m in messages)
    columns = 0

    def parse_pass() -> float:
        nonlocal columns
        columns = 0
        started = time.perf_counter()
        for offset, m in enumerate(messages):
            result = IngestResult()
            parsed = ingest.parse(m.value, SourceRef("bench", 0, offset, m.key), result)
            if parsed.columns is not None:
                columns += 1
                continue
            for index, element in parsed.elements:
                if fast_fields(element) is None:
                    validate_sample(element, index, parsed.rejections)
        return time.perf_counter() - started

    def json_pass() -> float:
        loads = orjson.loads
        started = time.perf_counter()
        for m in messages:
            loads(m.value)
        return time.perf_counter() - started

    parse_s = [parse_pass() for _ in range(passes)]
    json_s = [json_pass() for _ in range(passes)]

    def per_sample(seconds: list[float]) -> float:
        return round(statistics.median(seconds) / samples * 1e6, 3)

    return {
        "us_per_sample": per_sample(parse_s),
        "orjson_loads_us_per_sample": per_sample(json_s),
        "beyond_json_us_per_sample": round(per_sample(parse_s) - per_sample(json_s), 3),
        "passes_us_per_sample": [round(x / samples * 1e6, 3) for x in parse_s],
        "messages": len(messages),
        "messages_validated_as_columns": columns,
        "samples": samples,
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
        self.seals_path = tmp / f"{settings.app_id}.seals.jsonl"
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
            "--seals",
            str(self.seals_path),
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

    def problems(self) -> dict[str, Any]:
        """Agent crashes (Faust restarts the agent) and ERROR/CRITICAL lines in its log."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return {}
        crashes = [line for line in lines if "Crashed reason=" in line]
        return {
            "agent_crashes": len(crashes),
            "first_crash": crashes[0].split("]: ", 1)[-1][:300] if crashes else None,
            "error_lines": sum(
                1 for line in lines if "] [ERROR] " in line or "] [CRITICAL] " in line
            ),
        }

    def seals(self) -> list[dict[str, Any]]:
        """The checkpoints it wrote so far (`SealLog`; up to 0.2 s behind while it runs)."""
        try:
            lines = self.seals_path.read_bytes().splitlines()
        except OSError:
            return []
        return [orjson.loads(line) for line in lines if line]

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
    output: Any = None,
    stall_s: float = 60.0,
) -> dict[str, Any]:
    """Poll until ``done()``; CPU used by the worker and the broker from its first message in.

    CPU shares tell a reader whether a rate was bound by the worker's own core (share near 1)
    or by waiting (commits, the broker, other processes on the 2 cores). With ``progress``,
    every ``every_s``: [seconds since the first message in, worker and broker CPU share over
    the interval, progress()]. A worker that is not done yet, whose ``output()`` (a count of
    records read from its outputs) has not grown for ``stall_s`` while it used under 10 % of a
    core (an idle worker's timers take ~4 %), is given up on (``stalled_at_s``) instead of
    waited for until ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    start: tuple[float | None, float | None, float] | None = None
    mark: tuple[float | None, float | None, float] | None = None
    idle_mark: tuple[float | None, float | None, float] | None = None
    idle_output = -1
    timeline: list[Any] = []
    ok = stalled = False

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
        if start is not None:
            current = now()
            if idle_mark is None or current[2] - idle_mark[2] >= stall_s:
                count = output() if output is not None else -1
                if idle_mark is not None and current[0] is not None and idle_mark[0] is not None:
                    idle = current[0] - idle_mark[0] < 0.1 * (current[2] - idle_mark[2])
                    stalled = idle and count == idle_output
                    if stalled:
                        break
                idle_mark, idle_output = current, count
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
    if stalled:
        out["stalled_at_s"] = round(end[2] - start[2], 1) if start is not None else None
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


class SealLog:
    """Times every checkpoint a PSO worker writes, in the bench's worker subprocess only.

    Wraps `agents.checkpoints.CheckpointedStates._checkpoint` (seal, then the table write that
    hands the bytes to the changelog producer) and the ``seal`` it calls (pickle + HMAC). Each
    call is one JSON line in ``path``: table, key, ``state`` (false for a birth record: no
    object yet), wall-clock entry and return (``time.time()``, comparable with the bench's
    stamps), seconds in pickle + HMAC, sealed bytes, and ``error`` if the call raised. Lines
    are written by the stats thread, not on the event loop.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._written = 0
        self._lock = threading.Lock()

    def install(self) -> None:
        import contextvars

        import agents.checkpoints as checkpoints
        from app.core.snapshot import seal  # what agents.checkpoints calls

        checkpoint = checkpoints.CheckpointedStates._checkpoint
        # The seal's seconds and bytes, per task: agents seal concurrently, each in its task.
        last: contextvars.ContextVar[tuple[float, int]] = contextvars.ContextVar("last_seal")
        records = self.records

        def timed_seal(obj: Any, key: str | bytes, **kwargs: Any) -> bytes:
            started = time.perf_counter()
            blob = seal(obj, key, **kwargs)
            last.set((time.perf_counter() - started, len(blob)))
            return blob

        async def timed_checkpoint(
            self: checkpoints.CheckpointedStates, name: str, obj: Any, good_to: int
        ) -> Any:
            entered = time.time()
            last.set((0.0, 0))
            error: str | None = None
            try:
                return await checkpoint(self, name, obj, good_to)
            except BaseException as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
                raise
            finally:
                seal_s, size = last.get()
                records.append(
                    {
                        "table": str(getattr(self.table, "name", self.label)),
                        "key": name,
                        "state": obj is not None,
                        "t0": entered,
                        "t1": time.time(),
                        "seal_s": seal_s,
                        "bytes": size,
                        "error": error,
                    }
                )

        checkpoints.seal = timed_seal  # type: ignore[attr-defined]
        checkpoints.CheckpointedStates._checkpoint = timed_checkpoint  # type: ignore[method-assign]

    def flush(self) -> None:
        with self._lock:
            end = len(self.records)
            if end == self._written:
                return
            with self.path.open("ab") as out:
                for record in self.records[self._written : end]:
                    out.write(orjson.dumps(record) + b"\n")
            self._written = end


def worker_main(argv: list[str]) -> None:
    """Run one Faust worker: ``pso`` (full), ``ingest`` (ingest agent only) or ``naive``."""
    import faust

    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["pso", "ingest", "naive"], required=True)
    parser.add_argument("--telemetry-topic", required=True)
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--target-samples", type=int, default=0)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--seals", type=Path, default=None, help="SealLog output (JSON lines)")
    args = parser.parse_args(argv)
    settings = load_settings()
    stats = WorkerStats()
    topic = args.telemetry_topic
    seal_log = SealLog(args.seals) if args.seals is not None and args.mode != "naive" else None
    if seal_log is not None:
        seal_log.install()

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
            if seal_log is not None:
                seal_log.flush()
            time.sleep(0.2)

    if seal_log is not None:
        import atexit

        atexit.register(seal_log.flush)

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


def produce_to_readable(
    ids: set[str], cause: dict[str, int], produced: list[float], seen: dict[str, float]
) -> dict[str, tuple[float, float]]:
    """id -> (its causing message produced, it seen) for every id of ``ids`` seen."""
    return {i: (produced[cause[i]], seen[i]) for i in ids if i in seen and i in cause}


def latency_report(
    expected: Expected,
    produced: list[float],
    committed: Tail,
    appended: Tail,
    topics: TopicNames,
    users: dict[str, list[str]],
    bursts: list[Burst],
) -> dict[str, Any]:
    """Paced-phase latencies, produce -> readable, overall, by stage and around seal bursts."""
    by_kind = {
        "forecasts": expected.events.get(topics.forecasts, set()),
        "conflicts": expected.events.get(topics.conflicts, set()),
    }
    pairs = {
        kind: produce_to_readable(ids, expected.cause, produced, committed.seen)
        for kind, ids in by_kind.items()
    }
    every = {**pairs["forecasts"], **pairs["conflicts"]}
    spans = [(b.start, b.end) for b in bursts]

    def overlaps(p: float, r: float) -> bool:
        return any(start < r and end > p for start, end in spans)

    during = [r - p for p, r in every.values() if overlaps(p, r)]
    outside = [r - p for p, r in every.values() if not overlaps(p, r)]

    def nearest_burst_s(p: float) -> float | None:
        return min((p - start for start, _ in spans), key=abs) if spans else None

    worst = sorted(every.items(), key=lambda kv: kv[1][0] - kv[1][1])[:10]
    windows_appended = produce_to_readable(
        expected.windows, expected.cause, produced, appended.seen
    )
    windows_readable = produce_to_readable(
        expected.windows, expected.cause, produced, committed.seen
    )
    window_to_event = latencies(
        appended, committed, {topics.forecasts, topics.conflicts}, set(every), users
    )
    return {
        "all": summary_ms([r - p for p, r in every.values()]),
        "forecasts": summary_ms([r - p for p, r in pairs["forecasts"].values()]),
        "conflicts": summary_ms([r - p for p, r in pairs["conflicts"].values()]),
        "missing": sum(len(ids) for ids in by_kind.values()) - len(every),
        "negative": sum(1 for p, r in every.values() if r < p),
        "stages": {
            "produce_to_window_appended": summary_ms([r - p for p, r in windows_appended.values()]),
            "produce_to_window_readable": summary_ms([r - p for p, r in windows_readable.values()]),
            "window_appended_to_event_readable": summary_ms(
                window_to_event["forecasts"] + window_to_event["conflicts"]
            ),
        },
        "overlapping_a_seal_burst": summary_ms(during),
        "not_overlapping_a_seal_burst": summary_ms(outside),
        # [latency ms, which, produced - start of the nearest seal burst (s; < 0: before)]
        "worst": [
            [
                round((r - p) * 1000, 1),
                "forecast" if eid in pairs["forecasts"] else "conflict",
                None if (near := nearest_burst_s(p)) is None else round(near, 2),
            ]
            for eid, (p, r) in worst
        ],
    }


#: one table's seals closer than this (one's start after the previous one's end) are a burst
SEAL_BURST_GAP_S = 0.25


@dataclass(slots=True)
class Burst:
    """A run of one table's checkpoint seals (`SealLog` records), each starting within
    `SEAL_BURST_GAP_S` of the previous one's end. One agent writes each table and seals one
    key after another, so the seals of a burst never overlap."""

    table: str
    start: float
    end: float
    seals: int = 0
    bytes: int = 0
    seal_s: float = 0.0  # pickle + HMAC
    inside_s: float = 0.0  # inside `_checkpoint`: seal + handing the bytes to the producer

    @property
    def span_s(self) -> float:
        return self.end - self.start


def table_group(name: str) -> str:
    """``subsystem-models-v3-60s-h15`` -> ``subsystem-models``: the table without its version."""
    return name.rsplit("-v", 1)[0]


def is_seal(r: dict[str, Any], since: float, until: float) -> bool:
    """A checkpoint of state (not a birth record) that succeeded and began in the range."""
    return bool(r["state"]) and not r.get("error") and since <= r["t0"] < until


def seal_bursts(records: list[dict[str, Any]], since: float, until: float) -> list[Burst]:
    """Bursts of state seals that started in ``[since, until)``, per table, by start."""
    bursts: list[Burst] = []
    current: dict[str, Burst] = {}
    for r in sorted((r for r in records if is_seal(r, since, until)), key=lambda r: r["t0"]):
        group = table_group(r["table"])
        b = current.get(group)
        if b is None or r["t0"] - b.end > SEAL_BURST_GAP_S:
            b = current[group] = Burst(group, r["t0"], r["t1"])
            bursts.append(b)
        b.end = max(b.end, r["t1"])
        b.seals += 1
        b.bytes += r["bytes"]
        b.seal_s += r["seal_s"]
        b.inside_s += r["t1"] - r["t0"]
    return bursts


def checkpoint_summary(
    records: list[dict[str, Any]],
    since: float,
    until: float,
    keys: dict[str, int] | None = None,
) -> dict[str, Any]:
    """What a phase sealed: keys per table, failures, and every burst (seconds from ``since``).

    ``keys``: how many keys each table group has in the scenario, to say whether every one
    of them was sealed inside the phase. A burst's ``ms`` is the time its agent spent inside
    `_checkpoint` (sealing, and waiting to hand the bytes to the producer); ``span_ms`` is
    first entry -> last return, which also counts the agent's other work between seals."""
    inside = [r for r in records if is_seal(r, since, until)]
    failed = [r for r in records if r.get("error") and since <= r["t0"] < until]
    sealed: dict[str, set[str]] = {}
    for r in inside:
        sealed.setdefault(table_group(r["table"]), set()).add(r["key"])
    bursts = seal_bursts(records, since, until)

    def ms(values: list[float], q: float) -> float | None:
        value = pct(values, q)
        return None if value is None else round(value * 1000, 1)

    out: dict[str, Any] = {
        "keys_sealed": {k: len(v) for k, v in sorted(sealed.items())},
        "births": sum(1 for r in records if not r["state"] and since <= r["t0"] < until),
        "seals": len(inside),
        "failed": [
            {
                "table": table_group(r["table"]),
                "key": r["key"],
                "bytes": r["bytes"],
                "error": r["error"],
            }
            for r in failed
        ],
        "sealed_mb": round(sum(r["bytes"] for r in inside) / 2**20, 1),
        "seal_kb_p50": {
            k: round(
                statistics.median(r["bytes"] for r in inside if table_group(r["table"]) == k)
                / 1024,
                1,
            )
            for k in sorted(sealed)
        },
        "burst_ms": {
            "n": len(bursts),
            "p50": ms([b.inside_s for b in bursts], 0.5),
            "max": ms([b.inside_s for b in bursts], 1.0),
        },
        "burst_span_ms": {
            "p50": ms([b.span_s for b in bursts], 0.5),
            "max": ms([b.span_s for b in bursts], 1.0),
        },
        # [table, at_s, ms, span_ms, seals, MB, pickle + HMAC ms]
        "bursts": [
            [
                b.table,
                round(b.start - since, 2),
                round(b.inside_s * 1000, 1),
                round(b.span_s * 1000, 1),
                b.seals,
                round(b.bytes / 2**20, 1),
                round(b.seal_s * 1000, 1),
            ]
            for b in bursts
        ],
    }
    if keys is not None:
        out["every_key_sealed"] = not failed and all(
            len(sealed.get(k, ())) >= n for k, n in keys.items()
        )
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


#: What each top-level figure is (the module docstring has the long form).
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
    "series with every key's first state checkpoint sealed (rss.worker)",
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
    rss_mb = rss["worker"]["rss_mb"] if rss and not rss["worker"]["missing"] else None

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
        sealed_bytes += len(seal(p, key))
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


def rss_run(subsystems: int, minutes: int, seed: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
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


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker_main(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_rss":
        rss_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subsystems", type=int, default=100)
    parser.add_argument(
        "--minutes",
        type=float,
        default=40.0,
        help="event time to catch up on (> 33 for a checkpoint of every key inside)",
    )
    parser.add_argument("--batch", type=int, default=60, help="samples per message")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--ceiling-runs", type=int, default=3)
    parser.add_argument("--naive-samples", type=int, default=40_000)
    parser.add_argument(
        "--paced-minutes",
        type=float,
        default=120.0,
        help="event time of the paced phase (checkpoints every 30 windows: 4 bursts)",
    )
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=10_000.0,
        help="samples per wall second in the paced phase",
    )
    parser.add_argument("--rss-subsystems", type=int, default=2000, help="0 skips it")
    parser.add_argument(
        "--rss-minutes",
        type=int,
        default=36,
        help="one sample a minute per subsystem (36: 33 closed windows, a checkpoint each)",
    )
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
    parser.add_argument("--timeout", type=float, default=1200.0, help="per phase, seconds")
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
