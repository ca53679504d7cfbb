"""Ingest's open windows, checkpointed and rebuilt from the telemetry topic: a worker that
restarts from its changelog publishes what an uninterrupted one would (no Kafka here: the
topic is a list of records; the real broker path is `tests/integration/test_recovery.py`)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from agents.ingest import CheckpointedWindows
from app.settings import WindowConfig
from app.wire.codec import SourceRef
from app.wire.records import encode
from app.wire.telemetry import TelemetryIngest
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
                out += [encode(w) for w in result.windows]
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
        expected += [encode(w) for w in ingest.process(value, SourceRef("t", 0, at, key)).windows]
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
                    out += [encode(w) for w in result.windows]
                    await live.checkpoint(offset)
            return out, failed

        return asyncio.run(go())

    reference, ref_failed = run_failing(kill_at=None)
    assert ref_failed == [at]
    out, failed = run_failing(kill_at=at + 30)  # the rebuild replays the poison record
    assert failed == [at]
    assert out == reference


# ------------------------------------------------------------ samples read away from home


class Partitions:
    """The telemetry topic's partitions (lists of records) as the range reader reads them."""

    topic = "telemetry"

    def __init__(self, count: int) -> None:
        self.parts: list[list[tuple[int, bytes | None, bytes, Any]]] = [[] for _ in range(count)]

    def append(self, partition: int, key: bytes | None, value: bytes, headers: Any = ()) -> None:
        part = self.parts[partition]
        part.append((len(part), key, value, headers))

    async def read(self, partition: int, start: int, end: int) -> list[Any]:
        return [r for r in self.parts[partition] if start <= r[0] < end]


def name_homed_at(partition: int, partitions: int, prefix: str) -> str:
    from agents.routing import home_partition

    return next(
        f"{prefix}{i}"
        for i in range(1000)
        if home_partition(f"{prefix}{i}", partitions) == partition
    )


async def deliver(
    topic: Partitions, live: CheckpointedWindows, router: Any, done: list[int]
) -> tuple[list[Any], list[Any]]:
    """Deliver every record not delivered yet, partition by partition (copies a record makes
    are appended to their home partition, as the agent sends them); windows and dead letters."""
    from agents.routing import FOREIGN

    windows: list[Any] = []
    dead: list[Any] = []
    progress = True
    while progress:
        progress = False
        for p, part in enumerate(topic.parts):
            while done[p] < len(part):
                offset, key, value, headers = part[done[p]]
                done[p] += 1
                progress = True
                origin = live.origin_of(headers, value)
                assert origin != FOREIGN
                where = None if origin is None else f"telemetry:{origin}"
                result = await live.take(
                    value, SourceRef("telemetry", p, offset, key, where), origin
                )
                if result is None:
                    continue
                windows += result.windows
                dead += result.dead
                for home, k, copy, hdrs in router.copies(p, offset, result.forward, 1 << 20):
                    topic.append(home, k, copy, hdrs)
                await live.checkpoint(offset)
    return windows, dead


def test_a_subsystem_read_away_from_home_is_forwarded_and_windowed_once() -> None:
    """The loss found from outside: one sample of ``db`` in a batch on partition 0 at offset
    500, then 200 of ``db`` on its own partition 1 at offsets 0..199 — all 200 were skipped
    (the state's one "next offset" compared offsets of two partitions)."""
    from agents.routing import HomeRouter

    other, db = name_homed_at(0, 2, "f"), name_homed_at(1, 2, "db")
    topic = Partitions(2)
    for i in range(500):
        topic.append(0, other.encode(), orjson.dumps({"subsystem": other, "ts": BASE + i * 1000}))
    mixed = [
        {"subsystem": other, "ts": BASE + 500_000},
        {"subsystem": db, "ts": BASE, "metrics": {"x": 1.0}},
    ]
    topic.append(0, other.encode(), orjson.dumps(mixed))  # offset 500, mis-keyed for db
    for i in range(200):
        sample = {"subsystem": db, "ts": BASE + 1000 + i * 1000, "metrics": {"x": 1.0}}
        topic.append(1, db.encode(), orjson.dumps(sample))
    closing = {"subsystem": db, "ts": BASE + 3_600_000, "metrics": {"x": 0.0}}
    router = HomeRouter("pso", "telemetry", [KEY], lambda: 2)

    async def go() -> tuple[list[Any], list[Any], Table]:
        table = Table()
        live = CheckpointedWindows(
            WINDOW,
            table,
            table.write,
            [KEY],
            topic,
            scope="pso/ingest",
            every=5,
            keep_blobs=False,
            router=router,
        )
        done = [0, 0]
        windows, dead = await deliver(topic, live, router, done)
        for _ in range(3):  # a jump of an hour: held until confirmed, then every window closes
            topic.append(1, db.encode(), orjson.dumps(closing))
        more, more_dead = await deliver(topic, live, router, done)
        return windows + more, dead + more_dead, table

    windows, dead, _ = asyncio.run(go())
    assert sum(w.samples for w in windows if w.subsystem == db) == 200
    # The mis-keyed sample reached home after db's own 200 had closed its window: late, and
    # dead-lettered as such at home, naming the message it came in.
    (late,) = dead
    assert (late.reason_code, late.rejected, late.origin) == ("late", 1, "telemetry:0:500:0")
    assert (late.source_partition, late.source_offset) == (1, 200)
    # other's newest is 500 s in: windows up to 420 s closed (lateness 60 s), the rest open
    assert sum(w.samples for w in windows if w.subsystem == other) == 420
    assert len({w.event_id for w in windows}) == len(windows)


def test_a_copy_made_twice_is_windowed_once_and_a_forged_one_is_an_ordinary_message() -> None:
    from agents.routing import COPY_HEADER, HomeRouter

    db = name_homed_at(1, 2, "db")
    topic = Partitions(2)
    router = HomeRouter("pso", "telemetry", [KEY], lambda: 2)
    sample = {"subsystem": db, "ts": BASE, "metrics": {"x": 2.0}}
    ((home, key, copy, headers),) = router.copies(0, 7, [(db, sample)], 1 << 20)
    assert home == 1
    topic.append(1, key, copy, headers)
    topic.append(1, key, copy, headers)  # again: the original's worker crashed before its commit
    forged = [(COPY_HEADER, headers[0][1][:-4] + b"0000")]
    topic.append(1, key, copy, forged)  # someone without the key: an ordinary message of db's
    for i in range(1, 4):
        later = {"subsystem": db, "ts": BASE + 3_600_000 * i, "metrics": {"x": 0.0}}
        topic.append(1, key, orjson.dumps(later))

    async def go() -> list[Any]:
        table = Table()
        live = CheckpointedWindows(
            WINDOW,
            table,
            table.write,
            [KEY],
            topic,
            scope="pso/ingest",
            every=5,
            keep_blobs=False,
            router=router,
        )
        windows, _ = await deliver(topic, live, router, [0, 0])
        return windows

    windows = asyncio.run(go())
    (first,) = [w for w in windows if w.window_start_ms == BASE]
    assert first.samples == 2  # the copy once, the forged message once
