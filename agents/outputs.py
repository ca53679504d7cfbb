"""Where a stage's events go: the topic and key of each, dead letters of records PSO cannot
use, and what happens when a stage fails half-way through a record.

One `Outputs` per worker, shared by the stages: it holds the output topics and nothing
else, so a stage's own state stays in the stage.
"""

from __future__ import annotations

import logging
from typing import Any

from agents.compat import stop_worker
from app.core.events import (
    AccuracyReport,
    AnomalyDetected,
    ConflictObserved,
    ConflictPredicted,
    DeadLetterReason,
    Forecast,
    OutputEvent,
    RebalanceRecommended,
    SaturationPredicted,
)
from app.settings import Settings
from app.wire.codec import SourceRef, dead_letter
from app.wire.records import encode

log = logging.getLogger("pso.predict")


def topic_for(event: OutputEvent, settings: Settings) -> tuple[str, str]:
    """(topic, key) an event is published to."""
    t = settings.topics
    if isinstance(event, Forecast):
        return t.forecasts, event.subsystem
    if isinstance(event, AnomalyDetected):
        return t.anomalies, event.subsystem
    if isinstance(event, SaturationPredicted):
        return t.conflicts, event.subsystem
    if isinstance(event, ConflictPredicted | ConflictObserved):
        return t.conflicts, event.resource
    if isinstance(event, RebalanceRecommended):
        return t.rebalance, event.resources[0] if event.resources else event.conflict_id
    if isinstance(event, AccuracyReport):
        return t.accuracy, event.scope
    raise TypeError(f"no topic for {type(event).__name__}")


class Outputs:
    """PSO's output topics on one Faust app: publish events, dead-letter records, and stop
    the worker when a stage fails half-way through a record."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.topics = {
            name: app.topic(name, key_serializer="raw", value_serializer="raw")
            for name in settings.topics.all()
        }

    async def publish(self, events: list[OutputEvent], timestamp_ms: int) -> None:
        """Send ``events``, their record timestamp the event time they belong to."""
        for event in events:
            topic, key = topic_for(event, self.settings)
            await self.topics[topic].send(
                key=key.encode(), value=encode(event), timestamp=timestamp_ms / 1000
            )

    async def reject(self, message: Any, value: Any, code: DeadLetterReason, reason: str) -> None:
        """Dead-letter a record of PSO's own topics that PSO cannot use (written by someone
        else, or one its core failed on), with its original bytes, in this transaction."""
        source = SourceRef(message.topic, message.partition, message.offset, message.key)
        raw = value if isinstance(value, bytes) else b""
        await self.topics[self.settings.topics.deadletter].send(
            key=message.key, value=encode(dead_letter(source, raw, code, reason[:500]))
        )

    async def failed(self, stage: str, message: Any, exc: BaseException) -> None:
        """A stage failed on a record outside the core's own guarded work (a send, a
        checkpoint, a rebuild): the record is half done. Stop the worker without committing
        anything more (`stop_worker`) rather than let Faust restart the agent on that state."""
        where = f"{message.topic}[{message.partition}]@{message.offset}"
        log.critical(
            "%s failed on %s: %s: %s; stopping the worker, nothing more committed (a restart "
            "redoes the record from the committed offsets)",
            stage,
            where,
            type(exc).__name__,
            exc,
        )
        await stop_worker(self.app, exc)
