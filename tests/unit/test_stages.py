"""The prediction stages as the worker runs them, without Faust or Kafka: `SubsystemStage`
and `ResourceStage` take fake events and publish through a fake `Outputs`, with their
predictors checkpointed in a fake table. What they publish is what the pure engine gives for
the same windows; shares go out before the checkpoints that cover them; `Liveness` decides
departures from the time it is given."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import orjson

from agents.checkpoints import CheckpointedStates
from agents.stage1 import SubsystemStage
from agents.stage2 import Liveness, ResourceStage, refill_resource, replay_resource
from app.core.engine import EngineConfig, PredictionEngine, ResourcePredictor, SubsystemPredictor
from app.core.events import ResourceShare
from app.wire.records import encode
from tests.unit.test_checkpoints import KEY, SCOPE, Table, Topic, scenario


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None = None


@dataclass
class Event:
    message: Message
    value: bytes


class Sink:
    """Stands in for `Outputs` and the shares topic: keeps what is sent, in order."""

    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = log

    async def publish(self, events: list[Any], timestamp_ms: int) -> None:
        self.log += [("event", encode(e)) for e in events]

    async def reject(self, message: Any, value: Any, code: str, reason: str) -> None:
        self.log.append(("dead", (message.offset, code)))

    async def send(self, key: bytes, value: bytes, timestamp: float) -> None:
        self.log.append(("shares", value))


class LoggedTable(Table):
    def __init__(self, log: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.log = log

    async def write(self, name: str, blob: bytes, keep: Any) -> None:
        self.log.append(("checkpoint", name))
        await super().write(name, blob, keep)


def states(table: Table, make: Any, replay: Any, **kwargs: Any) -> CheckpointedStates:
    return CheckpointedStates(
        table,
        table.write,
        [KEY],
        make,
        Topic([]),  # type: ignore[arg-type]  # fresh state: nothing to read back
        replay,
        every=5,
        progress=lambda p: p.windows,
        max_updates=50,
        keep_blobs=False,
        scope=SCOPE,
        **kwargs,
    )


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for at in range(0, len(items), size):
        yield items[at : at + size]


def test_the_stages_publish_what_the_engine_publishes() -> None:
    policy, windows = scenario()
    # Capacities at a fifth of the simulator's: conflicts and plans to publish.
    tight = {
        name: replace(r, capacity=r.capacity / 5) for name, r in policy.spec().resources.items()
    }
    spec = replace(policy.spec(), resources=tight)
    config = EngineConfig.from_policy(spec)
    log: list[tuple[str, Any]] = []
    sink = Sink(log)
    stage1 = SubsystemStage(
        sink,  # type: ignore[arg-type]
        states(LoggedTable(log), lambda n: SubsystemPredictor(n, config, {}), None),
        sink,
    )
    stage2 = ResourceStage(
        sink,  # type: ignore[arg-type]
        states(
            Table(),
            lambda n: ResourcePredictor(n, config, spec),
            replay_resource,
            lean=lambda p: p.lean(),
            refill=refill_resource,
        ),
        sink,
    )
    events = [Event(Message("pso.load", 0, i), encode(w)) for i, w in enumerate(windows)]
    broken = Event(Message("pso.load", 0, len(events)), b"not a window")

    async def run() -> None:
        for batch in batches([*events, broken], 7):
            await stage1.take(batch)
        shares = [value for kind, value in log if kind == "shares"]
        for offset, value in enumerate(shares):
            await stage2.take(Event(Message("shares", 0, offset), value))

    asyncio.run(run())
    engine = PredictionEngine(spec)
    expected = [encode(e) for w in windows for e in engine.process(w)]
    published = [value for kind, value in log if kind == "event"]
    assert sorted(published) == sorted(expected)
    kinds = {orjson.loads(v)["type"] for v in published}
    assert {"forecast", "conflict_predicted", "rebalance_recommended"} <= kinds
    assert ("dead", (len(events), "invalid_record")) in log
    # In every batch the checkpoints come after the shares: none is committed ahead of the
    # shares it covers.
    assert any(kind == "checkpoint" for kind, _ in log)
    for batch_log in _per_batch(log):
        kinds_in = [k for k, _ in batch_log if k in ("shares", "checkpoint")]
        assert kinds_in == sorted(kinds_in, key=lambda k: k == "checkpoint"), kinds_in


def _per_batch(log: list[tuple[str, Any]]) -> list[list[tuple[str, Any]]]:
    """The log cut where a batch's first event is published after its last checkpoint."""
    out: list[list[tuple[str, Any]]] = [[]]
    previous = None
    for entry in log:
        if entry[0] == "event" and previous == "checkpoint":
            out.append([])
        out[-1].append(entry)
        previous = entry[0]
    return out


def test_liveness_departs_a_silent_contributor_after_the_timeout_only() -> None:
    policy, windows = scenario()
    spec = policy.spec()
    config = EngineConfig.from_policy(spec)
    predictor = ResourcePredictor("db-main", config, spec)
    subsystems = sorted({w.subsystem for w in windows})
    engine = PredictionEngine(spec)
    # Everyone's first window, then only the first subsystem's: the rest keep it waiting.
    shares: list[ResourceShare] = []
    for w in windows[:60]:
        out = engine.subsystem(w.subsystem).process(w)
        shares += [s for s in out.shares if s.resource == "db-main"]
    first = subsystems[0]
    for share in shares:
        if share.subsystem == first or share.window_start_ms == shares[0].window_start_ms:
            predictor.add(share)
    assert predictor.join.blocking()
    live = Liveness(join_timeout_s=30.0, step_ms=config.step_ms)
    assert live.decide([("db-main", predictor)], now=100.0) == []
    assert live.decide([("db-main", predictor)], now=129.9) == []
    (departed,) = live.decide([("db-main", predictor)], now=130.0)
    assert departed.resource == "db-main" and set(departed.subsystems) == set(subsystems[1:])
    assert departed.waiting_window_start_ms == min(predictor.join.pending) * config.step_ms
    assert live.decide([("db-main", predictor)], now=131.0) == []  # said once, not every tick
