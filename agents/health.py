"""Worker health on Faust: a sensor that counts, a timer that logs once a minute.

`HealthSensor` feeds `app.ops.health.WorkerHealth` from Faust's sensor hooks (records in per topic
and partition, records sent per topic, accuracy reports published); the timer adds the
consumer's high-water marks, so lag = high-water − position per partition, and logs one
`HealthSnapshot` line. The counters hang on ``app.pso_health`` and the latest snapshot on
its ``latest`` field, for the ops surface (HTTP and Prometheus read them there).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from app.ops.health import HealthSnapshot, WorkerHealth
from app.settings import Settings

log = logging.getLogger("pso.health")


class HealthSensor(faust.Sensor):
    """Counts what flows through the worker; cheap enough for every record."""

    def __init__(self, health: WorkerHealth, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.health = health

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        self.health.record_in(tp.topic, tp.partition, offset)

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
    )
    app.sensors.add(HealthSensor(health))
    setattr(app, "pso_health", health)  # noqa: B010  # where the ops surface will find it

    @app.timer(settings.health_interval_s)
    async def log_health() -> None:
        log.info("%s", refresh(app, health).log_line())

    return health


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
