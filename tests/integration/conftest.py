"""Integration fixtures: one real embedded Apache Kafka per session, PSO workers as processes.

``PSO_BROKER=host:port`` points the suite at an existing cluster instead. The broker used is
printed in the terminal summary, so a run always says what it ran against.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.broker import EmbeddedKafka, ExternalBroker
from app.settings import Settings, load_settings
from app.topics import create_topics

BROKER_INFO: dict[str, str] = {}


@pytest.fixture(scope="session")
def kafka() -> Iterator[EmbeddedKafka | ExternalBroker]:
    external = os.environ.get("PSO_BROKER")
    broker: EmbeddedKafka | ExternalBroker
    broker = ExternalBroker(external) if external else EmbeddedKafka(heap_mb=384, kind="kafka")
    broker.start()
    kind = "external cluster (PSO_BROKER)" if external else f"embedded {broker.kind}"
    if not external and broker.kind == "kafka":
        from app.broker import KAFKA_VERSION

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

    def start_worker(self, timeout_s: float = 60.0) -> subprocess.Popen[bytes]:
        log_path = self.tmp / f"worker-{len(self.workers)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker", "--loglevel", "info"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.workers.append(proc)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"worker died: {log_path.read_text()[-3000:]}")
            if b"Worker ready" in log_path.read_bytes():
                return proc
            time.sleep(0.2)
        raise AssertionError(f"worker not ready in {timeout_s}s: {log_path.read_text()[-3000:]}")

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
    from app.kafka_io import start_consumer

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
