"""Offsets a worker commits on a real broker, around the records of aborted transactions."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiokafka import TopicPartition

from app.kafka.connection import start_producer
from tests.integration.conftest import PsoEnv, committed_offsets

pytestmark = pytest.mark.integration
T0 = 1_795_564_800_000


def sample(minute: int) -> bytes:
    return orjson.dumps({"subsystem": "api", "ts": T0 + minute * 60_000, "metrics": {"rps": 1.0}})


async def write_with_an_aborted_transaction(env: PsoEnv) -> int:
    """Partition 0 of the telemetry topic: one committed record at offset 0, an aborted
    transaction's records, then committed records; returns the partition's end offset."""
    topic = env.settings.topics.telemetry
    producer = await start_producer(
        env.settings, env.bootstrap, transactional_id=f"{env.prefix}-test-writer"
    )
    try:
        for minutes, commit in (([0], True), ([1, 2, 3], False), ([1, 2, 3], True)):
            await producer.begin_transaction()
            for minute in minutes:
                await producer.send_and_wait(topic, sample(minute), key=b"api", partition=0)
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
    finally:
        await producer.stop()
    return 10  # records at 0, 2-4 (aborted), 6-8; transaction markers at 1, 5 and 9


def test_offsets_are_committed_past_an_aborted_transaction_after_offset_0(pso_env: PsoEnv) -> None:
    # Faust records a gap in the delivered offsets only if the last one read is true: after
    # offset 0 it never did, and then never committed this partition again (`ReadOffsets`).
    pso_env.create_topics()
    end = asyncio.run(write_with_an_aborted_transaction(pso_env))
    pso_env.start_worker()
    deadline = time.monotonic() + 60
    offset = None
    while time.monotonic() < deadline:
        offsets = asyncio.run(committed_offsets(pso_env))
        offset = offsets.get(TopicPartition(pso_env.settings.topics.telemetry, 0))
        if offset is not None and offset >= end - 1:
            break
        time.sleep(1)
    assert offset is not None and offset >= end - 1, f"committed offset stuck at {offset}"
