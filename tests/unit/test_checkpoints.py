"""Checkpointed predictor state: a worker that restarts from a checkpoint and the input topic
publishes what an uninterrupted one would (no Kafka here: the topic is a list of records; the
real broker path is `tests/integration/test_recovery.py`)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import pickle
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
import pytest

from agents.checkpoints import CheckpointedStates, CheckpointLost, Record
from agents.stage2 import apply_resource_record, refill_resource
from app.core.engine import EngineConfig, ResourcePredictor, SubsystemPredictor
from app.core.events import ContributorsDeparted, LoadWindow, ResourcePolicy, ResourceShare
from app.core.snapshot import SnapshotRejected, seal, unseal
from app.dev.simulator import FleetSimulator
from app.settings import FleetPolicy
from app.wire.codec import SourceRef
from app.wire.records import decode_resource_record, decode_window, encode, encode_shares
from app.wire.telemetry import TelemetryIngest

KEY = b"k" * 32
SCOPE = "pso/subsystem-models-v3"  # where the checkpoints are written: app id and table


@cache
def scenario() -> tuple[FleetPolicy, tuple[LoadWindow, ...]]:
    sim = FleetSimulator(subsystems=3, seed=5, interval_ms=30_000)
    policy = sim.policy(headroom=0.7)
    ingest = TelemetryIngest(policy.window)
    windows: list[LoadWindow] = []
    for i, sample in enumerate(sim.samples(6 * 3_600_000)):
        windows.extend(ingest.process(orjson.dumps(sample), SourceRef("t", 0, i)).windows)
    return policy, tuple(windows)


class Table:
    """What a worker's memory store holds (``data``) and what its changelog holds."""

    def __init__(self, changelog: dict[str, bytes] | None = None) -> None:
        self.changelog: dict[str, bytes] = dict(changelog or {})
        self.data: dict[str, Any] = dict(self.changelog)  # recovery restores the blobs
        self.writes = 0

    def get(self, name: str) -> Any:
        return self.data.get(name)

    async def write(self, name: str, blob: bytes, keep: Any) -> None:
        self.writes += 1
        self.changelog[name] = blob
        self.data[name] = keep


class Topic:
    """One partition of an input topic, records (offset, key, value[, headers]); reads are
    counted."""

    topic = "telemetry"

    def __init__(self, records: list[Any]) -> None:
        self.records = records
        self.reads: list[tuple[int, int]] = []

    async def read(self, partition: int, start: int, end: int) -> list[Record]:
        self.reads.append((start, end))
        return [
            (r[0], r[1], r[2], r[3] if len(r) > 3 else ())
            for r in self.records
            if start <= r[0] < end
        ]


def states(
    table: Table,
    topic: Topic,
    make: Any,
    replay: Any,
    every: int,
    keys: tuple[bytes, ...] = (KEY,),
    scope: str = SCOPE,
) -> CheckpointedStates:
    return CheckpointedStates(
        table,
        table.write,
        keys,
        make,
        topic,  # type: ignore[arg-type]
        replay,
        every=every,
        progress=lambda p: p.windows,
        max_updates=every * 10,
        keep_blobs=False,
        scope=scope,
    )


def _stage1(
    windows: tuple[LoadWindow, ...], policy: FleetPolicy, every: int, kill_at: int | None
) -> tuple[list[bytes], Table, Topic]:
    """Stage 1 over ``windows`` as records of one partition; 'restart' before ``kill_at``."""
    config = EngineConfig.from_policy(policy.spec())
    records = [(i, w.subsystem.encode(), encode(w)) for i, w in enumerate(windows)]
    topic = Topic(records)

    def make(name: str) -> SubsystemPredictor:
        return SubsystemPredictor(name, config, {})

    def replay(p: SubsystemPredictor, partition: int, record: Record) -> None:
        value = record[2]
        p.process(decode_window(value))

    async def run() -> tuple[list[bytes], Table]:
        table = Table()
        live = states(table, topic, make, replay, every)
        out: list[bytes] = []
        for offset, _key, value in records:
            if offset == kill_at:  # a new worker: the changelog is all that is left
                table = Table(table.changelog)
                live = states(table, topic, make, replay, every)
            window = decode_window(value)
            predictor = await live.get(window.subsystem, 0, offset)
            out += [encode(e) for e in predictor.process(window).events]
            await live.updated(window.subsystem, predictor, offset)
        return out, table

    events, table = asyncio.run(run())
    return events, table, topic


@pytest.mark.parametrize("every", [1, 7, 40])
def test_restart_rebuilds_from_checkpoint_and_topic(every: int) -> None:
    policy, windows = scenario()
    reference, _, _ = _stage1(windows, policy, every, kill_at=None)
    kill_at = len(windows) * 2 // 3
    events, _, topic = _stage1(windows, policy, every, kill_at=kill_at)
    # What the restarted worker publishes from the kill on is what the reference published.
    assert events == reference
    if every > 1:
        assert topic.reads, "a restart between checkpoints must replay input records"
        assert all(end <= kill_at + 3 for _start, end in topic.reads)


def test_checkpoints_are_written_every_n_windows_and_memory_keeps_tokens() -> None:
    policy, windows = scenario()
    _, table, _ = _stage1(windows, policy, every=10, kill_at=None)
    subsystems = {w.subsystem for w in windows}
    per_subsystem = len(windows) / len(subsystems)
    # One on each subsystem's first window, then one per 10.
    assert table.writes == pytest.approx(len(subsystems) * (1 + per_subsystem // 10), abs=3)
    for name in subsystems:
        assert len(table.data[name]) < 64  # a token, not a second copy of the model
        assert len(table.changelog[name]) > 10_000  # the sealed model


def trained(name: str, n: int) -> SubsystemPredictor:
    """``name``'s predictor after its first ``n`` windows: state a forger would like to plant."""
    policy, windows = scenario()
    predictor = SubsystemPredictor(name, EngineConfig.from_policy(policy.spec()), {})
    for window in [w for w in windows if w.subsystem == name][:n]:
        predictor.process(window)
    assert predictor.windows == n
    return predictor


def restored(
    changelog: dict[str, bytes] | Table,
    name: str,
    keys: tuple[bytes, ...] = (KEY,),
    scope: str = SCOPE,
) -> SubsystemPredictor:
    """What a new worker holding ``changelog`` makes of ``name`` (nothing to replay)."""
    config = EngineConfig.from_policy(scenario()[0].spec())
    table = changelog if isinstance(changelog, Table) else Table(changelog)

    def make(n: str) -> SubsystemPredictor:
        return SubsystemPredictor(n, config, {})

    live = states(table, Topic([]), make, None, 5, keys, scope)
    predictor: SubsystemPredictor = asyncio.run(live.get(name, 0, 100))
    return predictor


def test_forged_checkpoint_is_refused_and_the_predictor_starts_fresh(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = scenario()[1][0].subsystem
    state = (0, trained(name, 40))
    # Control: the same state sealed with the right key, where it was written, is restored.
    genuine = restored({name: seal(state, KEY, context=(SCOPE, name))}, name)
    assert genuine.windows == 40
    forged = seal(state, b"x" * 32, context=(SCOPE, name))  # the wrong key
    with caplog.at_level(logging.ERROR, logger="pso.checkpoints"):
        predictor = restored({name: forged}, name)
    assert predictor.windows == 0  # fresh: nothing of the forged state
    assert f"checkpoint of model {name} in {SCOPE} refused" in caplog.text


def test_checkpoint_copied_to_another_subsystem_or_table_starts_fresh() -> None:
    names = sorted({w.subsystem for w in scenario()[1]})
    a, b = names[0], names[1]
    blob_of_a = seal((0, trained(a, 40)), KEY, context=(SCOPE, a))
    assert restored({a: blob_of_a}, a).windows == 40  # where it was written: restored
    assert restored({b: blob_of_a}, b).windows == 0  # under another subsystem: refused
    other_table = "pso/resource-models-v3"
    assert restored({a: blob_of_a}, a, scope=other_table).windows == 0


def test_rotation_old_key_verifies_new_key_seals() -> None:
    name = scenario()[1][0].subsystem
    old, new, unknown = b"o" * 32, b"n" * 32, b"u" * 32
    by_old = seal((0, trained(name, 40)), old, context=(SCOPE, name))
    assert restored({name: by_old}, name, keys=(new, old)).windows == 40  # old still verifies
    assert restored({name: by_old}, name, keys=(new, unknown)).windows == 0  # not listed

    # What a worker writes after the rotation is sealed with the first key alone.
    table = Table()
    restored(table, name, keys=(new, old))  # new here: its birth is written
    assert unseal(table.changelog[name], new, context=(SCOPE, name)) == (100, None)
    with pytest.raises(SnapshotRejected):
        unseal(table.changelog[name], old, context=(SCOPE, name))


def test_checkpoint_of_the_previous_format_is_rebuilt_fresh(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = scenario()[1][0].subsystem
    payload = pickle.dumps((0, trained(name, 40)))
    pso1 = b"PSO1" + hmac.new(KEY, b"PSO1" + payload, hashlib.sha256).digest() + payload
    with caplog.at_level(logging.ERROR, logger="pso.checkpoints"):
        predictor = restored({name: pso1}, name)
    assert predictor.windows == 0
    assert "no longer read" in caplog.text


def test_stage2_rebuild_replays_shares_policies_and_departures() -> None:
    policy, windows = scenario()
    config = EngineConfig.from_policy(policy.spec())
    resource = "db-main"
    subsystems = {w.subsystem: SubsystemPredictor(w.subsystem, config, {}) for w in windows}
    values: list[bytes] = []
    for i, w in enumerate(windows):
        values += [encode(s) for s in subsystems[w.subsystem].process(w).shares]
        if i == len(windows) // 3:
            values.append(encode(ResourcePolicy(resource=resource, capacity=5.0)))
        if i == len(windows) // 2:
            values.append(
                encode(
                    ContributorsDeparted(
                        event_id="d",
                        resource=resource,
                        subsystems=[windows[0].subsystem],
                        waiting_window_start_ms=w.window_start_ms,
                    )
                )
            )
    values = [v for v in values if orjson.loads(v)["resource"] == resource]
    # Stage 1 sends batches of shares (here runs of up to 4), policies and departures between.
    packed: list[bytes] = []
    run_of: list[ResourceShare] = []
    for v in [*values, b"{}"]:
        if orjson.loads(v).get("type") == "resource_share" and len(run_of) < 4:
            run_of.append(decode_resource_record(v)[0])
            continue
        if run_of:
            single = len(run_of) == 1  # a lone share as it was sent before batches: still read
            packed.append(encode(run_of[0]) if single else encode_shares(resource, run_of))
            run_of = []
        if orjson.loads(v).get("type") == "resource_share":
            run_of.append(decode_resource_record(v)[0])
        elif v != b"{}":
            packed.append(v)
    assert len(packed) < len(values) // 2
    records = [(i, resource.encode(), v) for i, v in enumerate(packed)]

    def make(name: str) -> ResourcePredictor:
        return ResourcePredictor(name, config, policy.spec())

    def replay(p: ResourcePredictor, partition: int, record: Record) -> None:
        value = record[2]
        for item in decode_resource_record(value):
            apply_resource_record(p, item)

    async def run(kill_at: int | None) -> list[bytes]:
        table = Table()
        live = states(table, Topic(records), make, replay, every=5)
        out: list[bytes] = []
        for offset, _key, value in records:
            if offset == kill_at:
                table = Table(table.changelog)
                live = states(table, Topic(records), make, replay, every=5)
            predictor = await live.get(resource, 0, offset)
            for record in decode_resource_record(value):
                events, _ts = apply_resource_record(predictor, record)
                out += [encode(e) for e in events]
            await live.updated(resource, predictor, offset)
        return out

    reference = asyncio.run(run(None))
    assert any(orjson.loads(e)["type"] == "conflict_predicted" for e in reference)
    assert asyncio.run(run(len(records) * 3 // 4)) == reference
    # The same shares one record each, as before batches: the same events.
    records = [(i, resource.encode(), v) for i, v in enumerate(values)]
    assert asyncio.run(run(None)) == reference


class SizedTable(Table):
    """A table that also keeps the size of every blob written."""

    def __init__(self, changelog: dict[str, bytes] | None = None) -> None:
        super().__init__(changelog)
        self.sizes: list[int] = []

    async def write(self, name: str, blob: bytes, keep: Any) -> None:
        self.sizes.append(len(blob))
        await super().write(name, blob, keep)


def test_stage2_checkpoints_leave_waiting_shares_out_and_a_rebuild_reads_them_back() -> None:
    """One contributor's shares come after everyone else's (its partition far behind in event
    time), so most windows wait in the join when stage 2 checkpoints. The checkpoints must not
    carry those shares — in the live bench they made a checkpoint of 1,080,228 bytes, over the
    1 MB a Kafka record may be, and stage 2 stalled for good — and a worker restarted among
    them must read them back from the shares topic and publish what an uninterrupted one
    does."""
    policy, windows = scenario()
    config = EngineConfig.from_policy(policy.spec())
    resource = "db-main"
    late = sorted({w.subsystem for w in windows})[0]
    subsystems = {w.subsystem: SubsystemPredictor(w.subsystem, config, {}) for w in windows}
    on_time: list[ResourceShare] = []
    behind: list[ResourceShare] = []
    for w in windows:
        for share in subsystems[w.subsystem].process(w).shares:
            if share.resource == resource:
                (behind if w.subsystem == late else on_time).append(share)
    assert len({s.subsystem for s in on_time}) >= 2 and behind
    # A tight runtime capacity (conflicts to publish), then the shares in runs of 3, as stage
    # 1 sends one record per batch.
    shares = on_time + behind
    values = [encode(ResourcePolicy(resource=resource, capacity=5.0))] + [
        encode_shares(resource, shares[at : at + 3]) for at in range(0, len(shares), 3)
    ]
    records = [(i, resource.encode(), value) for i, value in enumerate(values)]
    first_behind = 1 + len(on_time) // 3

    def make(name: str) -> ResourcePredictor:
        return ResourcePredictor(name, config, policy.spec())

    def replay(p: ResourcePredictor, partition: int, record: Record) -> None:
        for item in decode_resource_record(record[2]):
            apply_resource_record(p, item, record[0])

    def lean_states(table: Table, topic: Topic) -> CheckpointedStates:
        return CheckpointedStates(
            table,
            table.write,
            [KEY],
            make,
            topic,  # type: ignore[arg-type]
            replay,
            every=1,
            progress=lambda p: p.windows,
            max_updates=10,
            keep_blobs=False,
            scope=SCOPE,
            lean=lambda p: p.lean(),
            refill=refill_resource,
        )

    full_sizes: list[int] = []

    async def run(kill_at: int | None) -> tuple[list[bytes], SizedTable, Topic]:
        table, topic = SizedTable(), Topic(records)
        live = lean_states(table, topic)
        out: list[bytes] = []
        for offset, _key, value in records:
            if offset == kill_at:  # a new worker: the changelog is all that is left
                table = SizedTable(table.changelog)
                live = lean_states(table, topic)
            predictor = await live.get(resource, 0, offset)
            for record in decode_resource_record(value):
                events, _ts = apply_resource_record(predictor, record, offset)
                out += [encode(e) for e in events]
            if kill_at is None:
                whole = seal((offset + 1, predictor), KEY, context=(SCOPE, resource))
                full_sizes.append(len(whole))
            await live.updated(resource, predictor, offset)
        return out, table, topic

    reference, table, _ = asyncio.run(run(None))
    assert any(orjson.loads(e)["type"] == "conflict_predicted" for e in reference)
    # Sealed whole, the resource would have grown with the backlog; lean, it does not.
    assert max(full_sizes) > 300_000
    # Lean: the predictor's own state, mostly its learnt error paths (two sets of <= 8192
    # float32 each, ~66 KB), and none of the backlog.
    assert max(table.sizes) < 100_000, max(table.sizes)
    kill_at = first_behind + (len(records) - first_behind) // 3  # most windows still waiting
    events, _, topic = asyncio.run(run(kill_at))
    assert events == reference
    # The rebuild read the waiting shares back from before its checkpoint.
    assert min(start for start, _end in topic.reads) < first_behind


def test_a_checkpoint_token_without_its_live_state_is_not_taken_for_a_forged_snapshot() -> None:
    """The local store holds this worker's token where it has no live object (a checkpoint
    write that did not complete): that is lost state, for a restart to restore from the
    changelog — not a forged snapshot to replace with a fresh predictor."""
    policy, _ = scenario()
    config = EngineConfig.from_policy(policy.spec())
    table = Table()
    table.data["db-main"] = b"checkpoint@5"
    live = states(table, Topic([]), lambda n: ResourcePredictor(n, config, policy.spec()), None, 5)
    with pytest.raises(CheckpointLost, match="db-main"):
        asyncio.run(live.get("db-main", 0, 10))


@dataclass
class Counter:
    """A stand-in predictor: what checkpoints count is its windows."""

    windows: int = 0


def test_keys_born_together_seal_in_different_windows() -> None:
    """A fleet that starts at once must not seal every predictor in the same window: with
    2,000 subsystems that burst was ~500 MB of changelog records held back at once."""
    every, names = 10, [f"subsystem-{i}" for i in range(60)]
    table = Table()
    live = states(table, Topic([]), lambda n: Counter(), None, every)

    async def run() -> list[int]:
        objs = {name: await live.get(name, 0, 0) for name in names}
        births = table.writes
        per_window = []
        for step in range(2 * every):
            before = table.writes
            for offset, name in enumerate(names):
                objs[name].windows += 1
                await live.updated(name, objs[name], step * len(names) + offset)
            per_window.append(table.writes - before)
        assert births == len(names)
        return per_window

    per_window = asyncio.run(run())
    assert sum(per_window) == 2 * len(names)  # each key still seals once per `every` windows
    assert max(per_window) <= len(names) // 2  # ... but not all in the same window
