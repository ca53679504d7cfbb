"""Worker health on Faust: a sensor that counts, a timer that logs once a minute.

`HealthSensor` feeds `app.ops.health.WorkerHealth` from Faust's sensor hooks (records in per topic
and partition, records sent per topic, accuracy reports published); the timer adds the
consumer's high-water marks, so lag = high-water − position per partition, and logs one
`HealthSnapshot` line. The counters hang on ``app.pso_health`` and the latest snapshot on
its ``latest`` field, for the ops surface (HTTP and Prometheus read them there).

A second timer watches for stalled stages (`app.health.StallWatch`): per input partition of
each agent, the consumer's position and high-water mark, the offsets the agent took and
finished, and the offset last committed. Records waiting while the agent finishes none and
nothing is committed for ``PSO_STALL_AFTER_S`` is logged as one error line naming the stage,
its partitions and their offsets; the stalls stay in ``app.pso_health.stalls.stalled`` for a
readiness check. A third returns the allocator's free pages every
``PSO_HEAP_TRIM_INTERVAL_S`` (`app.ops.heap`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from agents.compat import PsoConsumer
from app.ops.health import HealthSnapshot, InputProgress, StallWatch, WorkerHealth, stall_lines
from app.ops.heap import release_free_heap
from app.settings import Settings

log = logging.getLogger("pso.health")


class HealthSensor(faust.Sensor):
    """Counts what flows through the worker; cheap enough for every record."""

    def __init__(self, health: WorkerHealth, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.health = health

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        self.health.record_in(tp.topic, tp.partition, offset)

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        self.health.record_done(tp.topic, tp.partition, offset)

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> Any:
        value = getattr(message, "value", None)
        self.health.record_out(topic, value if isinstance(value, bytes) else None)
        return None


def register_health(app: faust.App, settings: Settings) -> WorkerHealth:
    """Attach the health sensor and the periodic log line to ``app``."""
    health = WorkerHealth(
        deadletter_topic=settings.topics.deadletter,
        accuracy_topic=settings.topics.accuracy,
        started_s=time.monotonic(),
        stalls=StallWatch(after_s=settings.stall_after_s),
    )
    app.sensors.add(HealthSensor(health))
    setattr(app, "pso_health", health)  # noqa: B010  # where the ops surface will find it

    @app.timer(settings.health_interval_s)
    async def log_health() -> None:
        log.info("%s", refresh(app, health).log_line())

    if settings.heap_trim_interval_s > 0:

        @app.timer(settings.heap_trim_interval_s)
        async def trim_heap() -> None:
            release_free_heap()  # a few ms: RSS back to the live state after seal bursts

    @app.timer(min(30.0, max(0.5, settings.stall_after_s / 4)))
    async def watch_stalls() -> None:
        try:
            check_stalls(app, health, time.monotonic())
        except Exception:  # a watch must never take the worker down (consumer restarting)
            log.exception("stall watch: no look this time")

    return health


def stage_inputs(app: faust.App) -> dict[str, str]:
    """topic -> the name of the agent that consumes it."""
    out: dict[str, str] = {}
    for agent in app.agents.values():
        for topic in getattr(agent.channel, "topics", ()):
            out[str(topic)] = str(agent.name)
    return out


def input_progress(app: faust.App, health: WorkerHealth) -> list[InputProgress]:
    """Every assigned input partition of an agent, as `StallWatch` reads it."""
    consumer = app.consumer
    stages = stage_inputs(app)
    positions: dict[Any, int] = {}
    committed: dict[Any, int] = {}
    if isinstance(consumer, PsoConsumer):
        positions = consumer.fetch_positions()
        committed = consumer.committed_offsets()
    out = []
    for tp in sorted(consumer.assignment()):
        stage = stages.get(tp.topic)
        if stage is None:  # a changelog or the leader topic: no agent's input
            continue
        try:
            end = consumer.highwater(tp)
        except Exception:  # not fetched yet, or the consumer is restarting
            end = None
        key = (tp.topic, tp.partition)
        out.append(
            InputProgress(
                stage=stage,
                topic=tp.topic,
                partition=tp.partition,
                position=positions.get(tp),
                highwater=None if end is None else int(end),
                taken=health.position.get(key),
                done=health.done.get(key),
                committed=committed.get(tp),
            )
        )
    return out


def check_stalls(app: faust.App, health: WorkerHealth, now_s: float) -> None:
    """One look for stalled stages; logs when a stall starts (error) and ends (warning)."""
    if app.rebalancing or app.in_recovery:
        health.stalls.hold(now_s)  # not consuming on purpose
        return
    changes = health.stalls.observe(now_s, input_progress(app, health))
    for line in stall_lines(changes.started, now_s):
        log.error("%s", line)
    for progress in changes.ended:
        log.warning("stage %s moving again on %s", progress.stage, progress.describe())


def refresh(app: faust.App, health: WorkerHealth) -> HealthSnapshot:
    """Read the consumer's cached high-water marks (no broker round trip) and snapshot."""
    consumer = app.consumer
    assigned = consumer.assignment()
    owned = {(tp.topic, tp.partition) for tp in assigned}
    for topic, partition in list(health.position):
        if (topic, partition) not in owned:
            health.forget_partition(topic, partition)
    for tp in assigned:
        try:
            end = consumer.highwater(tp)
        except Exception:  # not fetched yet, or the consumer is restarting
            continue
        if end is not None:
            health.set_highwater(tp.topic, tp.partition, int(end))
    return health.snapshot(time.monotonic())
