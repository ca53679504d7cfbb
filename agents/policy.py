"""Runtime policy agent: ``pso.capacity`` records into stage 2's stream.

A `ResourcePolicy` read from the compacted ``pso.capacity`` topic is forwarded, keyed by its
resource, into ``{app_id}-resource-shares``: the same partition, and so the same stage-2
state, as that resource's shares. Stage 2 applies it in stream order, so a replay of the
shares topic applies it at the same point. Records that cannot be applied are dead-lettered
with ``invalid_policy`` and the original bytes.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from agents.outputs import Outputs
from app.settings import Settings
from app.wire.records import InvalidPolicy, decode_policy_record, encode

log = logging.getLogger("pso.policy")


def register_policy(
    app: faust.App, settings: Settings, shares_topic: Any, outputs: Outputs
) -> None:
    """Declare the agent that forwards ``pso.capacity`` to the shares topic."""
    capacity_topic = app.topic(
        settings.topics.capacity, key_serializer="raw", value_serializer="raw"
    )

    @app.agent(capacity_topic, name=f"{settings.app_id}-policy")
    async def forward_policy(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            value = event.value if isinstance(event.value, bytes) else None
            try:
                update = decode_policy_record(message.key, value)
            except InvalidPolicy as exc:
                await outputs.reject(message, value, "invalid_policy", str(exc))
                log.warning("pso.capacity record rejected: %s", exc)
                continue
            log.info("resource policy for %s: %s", update.resource, encode(update).decode())
            await shares_topic.send(key=update.resource.encode(), value=encode(update))
