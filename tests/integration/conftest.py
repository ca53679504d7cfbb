"""Integration fixtures: one real embedded Apache Kafka per session, PSO workers as processes.

``PSO_BROKER=host:port`` points the suite at an existing cluster instead. The broker used is
printed in the terminal summary, so a run always says what it ran against.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.dev.broker import EmbeddedKafka, ExternalBroker
from app.dev.simulator import FleetSimulator
from app.kafka.topics import create_topics
from app.settings import Settings, load_policy, load_settings
from app.wire.codec import SourceRef
from app.wire.records import encode

BROKER_INFO: dict[str, str] = {}


@pytest.fixture(scope="session")
def kafka() -> Iterator[EmbeddedKafka | ExternalBroker]:
    external = os.environ.get("PSO_BROKER")
    broker: EmbeddedKafka | ExternalBroker
    broker = (
        ExternalBroker(external)
        if external
        else EmbeddedKafka.from_settings(load_settings(), heap_mb=384, kind="kafka")
    )
    broker.start()
    kind = "external cluster (PSO_BROKER)" if external else f"embedded {broker.kind}"
    if not external and broker.kind == "kafka":
        from app.dev.broker import KAFKA_VERSION

        kind = f"embedded Apache Kafka {KAFKA_VERSION} (KRaft, pid {broker.pid})"
    BROKER_INFO["broker"] = f"{kind} at {broker.bootstrap}"
    try:
        yield broker
    finally:
        broker.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if BROKER_INFO:
        terminalreporter.write_line(f"integration tests ran against: {BROKER_INFO['broker']}")


@dataclass
class PsoEnv:
    """An isolated PSO deployment on the shared broker: its own app id and topic prefix."""

    bootstrap: str
    prefix: str
    tmp: Path
    partitions: int = 2
    config: Path | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # Extra PSO_* variables for every worker started from now on.
    worker_env: dict[str, str] = field(default_factory=dict)
    # The workers' own secret key (a worker on PSO_BROKER refuses the built-in, public one).
    snapshot_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "PSO_BROKER": self.bootstrap,
                "PSO_APP_ID": self.prefix,
                "PSO_TOPICS__PREFIX": self.prefix,
                "PSO_TOPIC_POLICY__PARTITIONS": str(self.partitions),
                "PSO_DATA_DIR": str(self.tmp / "data"),
                "PSO_SNAPSHOT_KEY": self.snapshot_key,
            }
        )
        if self.config is not None:
            env["PSO_CONFIG"] = str(self.config)
        return env

    @property
    def settings(self) -> Settings:
        return load_settings(
            broker=self.bootstrap,
            app_id=self.prefix,
            topics={"prefix": self.prefix},
            topic_policy={"partitions": self.partitions},
            config=self.config,
        )

    def create_topics(self) -> None:
        asyncio.run(create_topics(self.settings, self.bootstrap))

    def log_path(self, index: int) -> Path:
        return self.tmp / f"worker-{index}.log"

    def spawn_worker(self, module: str = "app.cli") -> subprocess.Popen[bytes]:
        """Start a worker process with its own, empty data dir; do not wait for it.
        ``module``: what ``python -m`` runs (`tests.integration.fault_worker` injects a fault)."""
        index = len(self.workers)
        env = self.env
        env["PSO_DATA_DIR"] = str(self.tmp / f"data-{index}")
        env.update(self.worker_env)
        with self.log_path(index).open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, "worker", "--loglevel", "info"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.workers.append(proc)
        return proc

    def wait_ready(self, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
        log_path = self.log_path(self.workers.index(proc))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"worker died: {log_path.read_text()[-3000:]}")
            if b"Worker ready" in log_path.read_bytes():
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout_s}s: {log_path.read_text()[-3000:]}")

    def start_worker(
        self, timeout_s: float = 60.0, module: str = "app.cli"
    ) -> subprocess.Popen[bytes]:
        proc = self.spawn_worker(module)
        self.wait_ready(proc, timeout_s)
        return proc

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker: no shutdown, no flush, no commit, an open transaction left behind."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


@pytest.fixture
def pso_env(kafka: EmbeddedKafka | ExternalBroker, tmp_path: Path) -> Iterator[PsoEnv]:
    env = PsoEnv(kafka.bootstrap, f"it-{uuid.uuid4().hex[:8]}", tmp_path)
    env.create_topics()
    try:
        yield env
    finally:
        env.stop_workers()


async def read_topic(
    settings: Settings, bootstrap: str, topic: str, until: Any, timeout_s: float = 60.0
) -> list[Any]:
    """Read ``topic`` from the start until ``until(records)`` is true or the time is up."""
    from app.kafka.connection import start_consumer

    consumer = await start_consumer(settings, bootstrap, topic)
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not until(records):
            batches = await consumer.getmany(timeout_ms=300)
            for _tp, recs in sorted(batches.items(), key=lambda kv: kv[0].partition):
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


# ------------------------------------------------------------------ recorded fleet telemetry


def fleet_messages(hours: float = 3) -> tuple[FleetSimulator, list[tuple[bytes, bytes]]]:
    """``hours`` of a 4-subsystem fleet, 30 s samples, batched four to a message."""
    sim = FleetSimulator(
        subsystems=4, seed=11, interval_ms=30_000, start_ms=1_795_564_800_000 + 10 * 3_600_000
    )
    messages: list[tuple[bytes, bytes]] = []
    pending: dict[str, list[dict[str, Any]]] = {}
    for sample in sim.samples(int(hours * 3_600_000)):
        group = pending.setdefault(sample["subsystem"], [])
        group.append(sample)
        if len(group) == 4:
            messages.append((sample["subsystem"].encode(), orjson.dumps(group)))
            del pending[sample["subsystem"]]
    return sim, messages


def offline(policy_path: Path, messages: list[tuple[bytes, bytes]]) -> dict[str, bytes]:
    """event id -> bytes of every event the pure core emits (closed windows included)."""
    from app.core.engine import PredictionEngine
    from app.wire.telemetry import TelemetryIngest

    policy = load_policy(policy_path)
    ingest = TelemetryIngest(policy.window)
    engine = PredictionEngine(policy.spec())
    events: dict[str, bytes] = {}
    for i, (_key, value) in enumerate(messages):
        for window in ingest.process(value, SourceRef("t", 0, i)).windows:
            events[window.event_id] = encode(window)
            for event in engine.process(window):
                events[event.event_id] = encode(event)
    return events


async def produce(env: PsoEnv, messages: list[tuple[bytes, bytes]], pause_s: float = 0.0) -> None:
    """Produce keyed telemetry; with ``pause_s`` one message at a time, as a live fleet would."""
    from app.kafka.connection import start_producer

    producer = await start_producer(env.settings, env.bootstrap)
    try:
        for key, value in messages:
            if pause_s:
                await producer.send_and_wait(env.settings.topics.telemetry, value, key=key)
                await asyncio.sleep(pause_s)
            else:
                await producer.send(env.settings.topics.telemetry, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def output_topics(settings: Settings) -> list[str]:
    t = settings.topics
    return [t.load, t.forecasts, t.anomalies, t.conflicts, t.rebalance, t.accuracy]


async def read_outputs(
    env: PsoEnv, until: Any = None, timeout_s: float = 60.0
) -> list[tuple[str, bytes]]:
    """(event id, value) of every committed record on PSO's output topics.

    Reads until ``until(ids_seen)`` holds (or the time is up), then drains to the end of every
    partition, so what was committed by then is all there: nothing extra slips by unseen.
    """
    from app.kafka.connection import start_consumer

    settings = env.settings
    consumer = await start_consumer(settings, env.bootstrap, *output_topics(settings))
    out: list[tuple[str, bytes]] = []
    ids: set[str] = set()

    async def poll() -> None:
        batches = await consumer.getmany(timeout_ms=200)
        for _tp, recs in sorted(batches.items(), key=lambda kv: (kv[0].topic, kv[0].partition)):
            for rec in recs:
                event_id = orjson.loads(rec.value)["event_id"]
                ids.add(event_id)
                out.append((event_id, rec.value))

    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not (until is not None and until(ids)):
            await poll()
        drain_deadline = time.monotonic() + 30
        while not consumer.assignment():  # subscription not resolved yet: nothing arrived
            assert time.monotonic() < drain_deadline, "output topics not assigned"
            await poll()
        end = await consumer.end_offsets(list(consumer.assignment()))  # read_committed: LSO
        while True:
            behind = [tp for tp, offset in end.items() if await consumer.position(tp) < offset]
            if not behind:
                return out
            assert time.monotonic() < drain_deadline, f"not drained: {behind}"
            await poll()
    finally:
        await consumer.stop()


async def where_are(env: PsoEnv, event_ids: set[str]) -> str:
    """For a failure message: which of ``event_ids`` a read_uncommitted consumer finds on the
    output topics (ids a read_committed reader missed: written in a transaction still open,
    or aborted), and every output partition whose last stable offset lags its high-water
    mark (a transaction still open)."""
    from aiokafka import TopicPartition

    from app.kafka.connection import start_consumer

    settings = env.settings
    consumer = await start_consumer(settings, env.bootstrap, isolation_level="read_uncommitted")
    committed = await start_consumer(settings, env.bootstrap)
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in output_topics(settings)
            for p in range(env.partitions)
        ]
        consumer.assign(tps)
        high = await consumer.end_offsets(tps)
        stable = await committed.end_offsets(tps)
        found: dict[str, tuple[str, int, int]] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all([await consumer.position(tp) >= high[tp] for tp in tps]):
                break
            for tp, recs in (await consumer.getmany(timeout_ms=200)).items():
                for rec in recs:
                    with contextlib.suppress(Exception):
                        event_id = orjson.loads(rec.value)["event_id"]
                        if event_id in event_ids:
                            found[event_id] = (tp.topic, tp.partition, rec.offset)
        lagging = {
            f"{tp.topic}[{tp.partition}]": (stable[tp], high[tp])
            for tp in tps
            if stable[tp] != high[tp]
        }
        return (
            f"found read_uncommitted: {sorted(found.items())[:8]}; "
            f"(last stable, high-water) where they differ: {lagging}; "
            f"inputs: {await _or_error(input_positions(env))}"
        )
    finally:
        await consumer.stop()
        await committed.stop()


async def _or_error(diagnosis: Any) -> str:
    """A diagnosis for a failure message, or why it could not be made (never a new error)."""
    try:
        return str(await diagnosis)
    except Exception as exc:
        return f"({type(exc).__name__}: {exc})"


async def committed_offsets(env: PsoEnv) -> dict[Any, int]:
    """The offsets the app's consumer group has committed, by partition."""
    from aiokafka.admin import AIOKafkaAdminClient

    from app.kafka.connection import client_kwargs

    admin = AIOKafkaAdminClient(**client_kwargs(env.settings, env.bootstrap))
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(env.prefix)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items()}


async def input_positions(env: PsoEnv) -> str:
    """For a failure message: per input partition, the group's committed offset and the
    partition's last stable offset (a stalled partition shows as committed < stable)."""
    from aiokafka import TopicPartition

    from app.kafka.connection import start_consumer

    s = env.settings
    topics = (s.topics.telemetry, s.topics.load, s.shares_topic)
    tps = [TopicPartition(t, p) for t in topics for p in range(env.partitions)]
    committed = await committed_offsets(env)
    consumer = await start_consumer(s, env.bootstrap)
    try:
        stable = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return ", ".join(
        f"{tp.topic.rsplit('.', 1)[-1][-12:]}[{tp.partition}] {committed.get(tp)}/{stable[tp]}"
        for tp in tps
    )


def assert_same_events(expected: dict[str, bytes], records: list[tuple[str, bytes]]) -> int:
    """Records equal ``expected`` by id and content, modulo re-emitted copies of equal bytes.

    Returns the number of re-emitted duplicates.
    """
    live: dict[str, bytes] = {}
    for event_id, value in records:
        first = live.setdefault(event_id, value)
        assert first == value, f"{event_id} emitted twice with different content"
    missing = sorted(set(expected) - set(live))
    extra = sorted(set(live) - set(expected))
    assert not missing and not extra, (len(expected), len(live), missing[:8], extra[:8])
    different = [k for k in expected if expected[k] != live[k]]
    assert not different, different[:5]
    return len(records) - len(live)


async def group_members(env: PsoEnv) -> tuple[str, dict[str, set[tuple[str, int]]]]:
    """The app's consumer group as the broker sees it: state, member id -> assigned partitions.

    A member caught mid-rebalance has no partitions yet (the broker sends empty bytes).
    """
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    admin = AIOKafkaAdminClient(bootstrap_servers=env.bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([env.prefix])
        group = response.to_object()["groups"][0]
        members: dict[str, set[tuple[str, int]]] = {}
        for member in group["members"]:
            raw = member["member_assignment"]
            # A member that joined while the group rebalances has no assignment yet: b"".
            assignment = ConsumerProtocolMemberAssignment.decode(raw).assignment if raw else []
            members[member["member_id"]] = {
                (topic, p) for topic, partitions in assignment for p in partitions
            }
        return group["state"], members
    finally:
        await admin.close()


async def wait_stable_group(
    env: PsoEnv, size: int, topic: str, timeout_s: float = 60.0
) -> dict[str, set[tuple[str, int]]]:
    """Wait until ``size`` members share the group, each assigned some partition of ``topic``."""
    deadline = time.monotonic() + timeout_s
    state, members = "", dict[str, set[tuple[str, int]]]()
    while time.monotonic() < deadline:
        state, members = await group_members(env)
        if (
            state == "Stable"
            and len(members) == size
            and all(any(t == topic for t, _ in tps) for tps in members.values())
        ):
            return members
        await asyncio.sleep(0.5)
    raise AssertionError(f"group not stable with {size} members: {state} {members}")
