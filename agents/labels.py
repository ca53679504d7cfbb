"""Labels agent: operators' verdicts (``pso.labels``) into the stage that raised the alarm.

A label is decoded and checked here (`app.wire.records.decode_label_record`), then forwarded
keyed by what its id names, like ``pso.capacity`` records: an anomaly label into ``pso.load``
keyed by its subsystem (stage 1's input, so the label reaches that subsystem's predictor in
stream order and a rebuild replays it with the windows), a conflict label into
``{app_id}-resource-shares`` keyed by its resource (stage 2's). The predictors keep it in
their checkpointed state (`app.core.labels`). A record that is no label is dead-lettered with
``invalid_label``, the reason and the original bytes; the agent carries on.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from agents.outputs import Outputs
from app.core.labels import AnomalyTarget
from app.settings import Settings
from app.wire.records import InvalidLabel, decode_label_record, encode

log = logging.getLogger("pso.labels")


def register_labels(
    app: faust.App, settings: Settings, load_topic: Any, shares_topic: Any, outputs: Outputs
) -> None:
    """Declare the agent that forwards ``pso.labels`` to stage 1 or stage 2."""
    labels_topic = app.topic(settings.topics.labels, key_serializer="raw", value_serializer="raw")

    @app.agent(labels_topic, name=f"{settings.app_id}-labels")
    async def forward_labels(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            value = event.value if isinstance(event.value, bytes) else None
            try:
                label, target = decode_label_record(message.key, value)
            except InvalidLabel as exc:
                await outputs.reject(message, value, "invalid_label", str(exc))
                log.warning("pso.labels record rejected: %s", exc)
                continue
            if isinstance(target, AnomalyTarget):
                topic, key = load_topic, target.subsystem
            else:
                topic, key = shares_topic, target.resource
            log.info("label %s on %s: %s", label.verdict, key, label.id)
            await topic.send(key=key.encode(), value=encode(label), timestamp=label.ts / 1000)
