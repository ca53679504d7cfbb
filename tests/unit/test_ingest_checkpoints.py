"""Ingest's open windows, checkpointed and rebuilt from the telemetry topic: a worker that
restarts from its changelog publishes what an uninterrupted one would (no Kafka here: the
topic is a list of records; the real broker path is `tests/integration/test_recovery.py`)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from agents.ingest import CheckpointedWindows
from app.codec import SourceRef
from app.core.ingest import TelemetryIngest
from app.settings import WindowConfig
from tests.unit.test_checkpoints import KEY, Table, Topic

WINDOW = WindowConfig(size_s=60, allowed_lateness_windows=1)
BASE = 1_795_564_800_000


def telemetry() -> list[tuple[int, bytes, bytes]]:
    """One partition: batches of one subsystem, single samples, batches mixing two
    subsystems under one key, a late sample and a broken message."""
    records: list[bytes] = []
    keys: list[bytes] = []
    for second in range(0, 1800, 10):
        ts = BASE + second * 1000
        for i, name in enumerate(("api", "db", "cache")):
            sample = {"subsystem": name, "ts": ts + i, "metrics": {"rps": float(second % 97 + i)}}
            if name == "cache" and second % 30 == 0:
                other = {"subsystem": "db", "ts": ts + 7, "resources": {"pool": 3.0}}
                records.append(orjson.dumps([sample, other]))  # keyed cache, carries db too
            elif name == "api" and second % 20 == 0:
                records.append(orjson.dumps([sample, dict(sample, ts=ts + 5)]))
            else:
                records.append(orjson.dumps(sample))
            keys.append(name.encode())
        if second == 900:
            records.append(orjson.dumps({"subsystem": "api", "ts": BASE, "metrics": {"x": 1.0}}))
            keys.append(b"api")  # late
            records.append(b'{"subsystem": "db", "ts": ')  # not JSON
            keys.append(b"db")
    return [(i, k, v) for i, (k, v) in enumerate(zip(keys, records, strict=True))]


def windows_of(table: Table, topic: Topic, every: int, max_lag: int = 20_000) -> Any:
    return CheckpointedWindows(
        WINDOW,
        table,
        table.write,
        [KEY],
        topic,
        scope="ingest-windows",
        every=every,
        keep_blobs=False,
        max_lag=max_lag,
    )


def run(
    records: list[tuple[int, bytes, bytes]],
    every: int,
    kill_at: int | None = None,
    resume_at: int | None = None,
    max_lag: int = 20_000,
) -> tuple[list[bytes], list[str], Table, Any]:
    """Windows and dead-letter ids published; at ``kill_at`` a new worker starts from the
    changelog alone and is delivered records again from ``resume_at`` (the committed offset,
    which may lag the state the changelog holds)."""
    topic = Topic(records)

    async def go() -> tuple[list[bytes], list[str], Table, Any]:
        table = Table()
        live = windows_of(table, topic, every, max_lag)
        out: list[bytes] = []
        dead: list[str] = []
        offset, killed = 0, False
        while offset < len(records):
            if offset == kill_at and not killed:
                table = Table(table.changelog)
                live = windows_of(table, topic, every, max_lag)
                killed = True
                offset = resume_at if resume_at is not None else offset
            at, key, value = records[offset]
            result = await live.take(value, SourceRef("t", 0, at, key))
            if result is not None:
                out += [w.to_json() for w in result.windows]
                dead += [d.event_id for d in result.dead]
                await live.checkpoint(at)
            offset += 1
        return out, dead, table, live

    return asyncio.run(go())


def test_the_agent_windows_as_the_pure_core_does() -> None:
    records = telemetry()
    ingest = TelemetryIngest(WINDOW)
    expected: list[bytes] = []
    for at, key, value in records:
        expected += [w.to_json() for w in ingest.process(value, SourceRef("t", 0, at, key)).windows]
    out, dead, _, _ = run(records, every=5)
    assert out == expected and len(expected) > 60
    assert len(dead) == 2  # the late sample and the broken message


@pytest.mark.parametrize("every", [1, 4, 1000])
def test_restart_rebuilds_open_windows_from_checkpoint_and_telemetry(every: int) -> None:
    records = telemetry()
    reference, ref_dead, _, _ = run(records, every)
    kill_at = len(records) * 3 // 5
    out, dead, _, live = run(records, every, kill_at=kill_at)
    assert out == reference and dead == ref_dead
    if every > 1:
        assert live.states.replayed > 0, "a restart between checkpoints replays telemetry"


def test_redelivered_records_the_state_already_holds_are_not_counted_twice() -> None:
    # The changelog holds checkpoints written after the committed offset (they rode along in
    # the last transaction): records from the committed offset on come again.
    records = telemetry()
    reference, _, _, _ = run(records, every=1)
    kill_at = len(records) // 2
    out, _, _, _ = run(records, every=1, kill_at=kill_at, resume_at=kill_at - 40)
    # Redelivered records publish nothing new; everything after them is exactly the reference.
    assert sorted(set(out)) == sorted(set(reference))
    assert out[-len(reference) // 3 :] == reference[-len(reference) // 3 :]


def test_a_quiet_subsystems_checkpoint_is_renewed_so_a_rebuild_stays_short() -> None:
    records = telemetry()
    reference, _, _, _ = run(records, every=1000, max_lag=50)
    kill_at = len(records) - 30
    out, _, _, live = run(records, every=1000, kill_at=kill_at, max_lag=50)
    assert out == reference
    # every=1000 alone would replay from each subsystem's birth (offset 0 on).
    assert 0 < live.states.replayed <= 3 * (30 + 50)


def test_a_record_the_core_failed_on_is_passed_over_by_a_rebuild_as_it_was_live(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A core bug, not bad bytes (`parse` dead-letters those): `apply` raises on one record.
    # Live, the agent dead-letters it and carries on; a rebuild that replays it must do the
    # same, not fail every later message of the subsystem.
    apply = TelemetryIngest.apply

    def failing_apply(self: TelemetryIngest, message: Any, *args: Any, **kwargs: Any) -> Any:
        if b'"poison"' in message.raw:
            raise RuntimeError("core bug")
        return apply(self, message, *args, **kwargs)

    monkeypatch.setattr(TelemetryIngest, "apply", failing_apply)
    records = telemetry()
    at = len(records) // 2
    poison = orjson.dumps({"subsystem": "api", "ts": BASE + 900_500, "metrics": {"poison": 1.0}})
    records = [*records[:at], (at, b"api", poison), *[(i + 1, k, v) for i, k, v in records[at:]]]

    def run_failing(kill_at: int | None) -> tuple[list[bytes], list[int]]:
        topic = Topic(records)

        async def go() -> tuple[list[bytes], list[int]]:
            table = Table()
            live = windows_of(table, topic, every=1000)
            out: list[bytes] = []
            failed: list[int] = []
            for offset, key, value in records:
                if offset == kill_at:
                    live = windows_of(Table(table.changelog), topic, every=1000)
                try:
                    result = await live.take(value, SourceRef("t", 0, offset, key))
                except RuntimeError:  # what the agent dead-letters as internal_error
                    failed.append(offset)
                    continue
                if result is not None:
                    out += [w.to_json() for w in result.windows]
                    await live.checkpoint(offset)
            return out, failed

        return asyncio.run(go())

    reference, ref_failed = run_failing(kill_at=None)
    assert ref_failed == [at]
    out, failed = run_failing(kill_at=at + 30)  # the rebuild replays the poison record
    assert failed == [at]
    assert out == reference
