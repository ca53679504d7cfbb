"""`pso topics create`: make PSO's topics, idempotently, with the configured policy.

Input and event topics are partitioned by key (subsystem or resource) and expire by size
(see `event_time_topic_config`); ``pso.capacity`` and ``pso.labels`` are compacted (the
latest capacity per resource, the latest verdict per alarm, is what matters).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from app.kafka.connection import BrokerUnreachable, client_kwargs
from app.settings import Settings, TopicPolicy
from app.wire.codec import dead_letter_bytes


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication: int
    config: dict[str, str]


#: Record timestamps are event time, which may lie in the future (a replay of simulated or
#: skewed telemetry): Kafka 4 rejects timestamps over an hour ahead unless the topic allows it.
EVENT_TIME_TOPIC_CONFIG = {"message.timestamp.after.max.ms": str(2**63 - 1)}


def event_time_topic_config(policy: TopicPolicy) -> dict[str, str]:
    """Config of a topic whose record timestamps are event time: future stamps allowed, and
    retention as configured (by size by default: time retention would measure event time)."""
    return {
        **EVENT_TIME_TOPIC_CONFIG,
        "cleanup.policy": "delete",
        "retention.ms": str(policy.retention_ms),
        "retention.bytes": str(policy.retention_bytes),
    }


#: Room above a record's value for its key, headers and the record batch around it.
RECORD_MARGIN = 64 * 1024


def size_limits(settings: Settings) -> dict[str, int]:
    """One size limit, end to end, from ``PSO_MAX_MESSAGE_BYTES``: ``telemetry`` and
    ``deadletter`` are their topics' ``max.message.bytes`` (a telemetry message at the cap
    fits, and so does its dead letter, which carries it in base64); ``request`` is the
    producers' ``max_request_size``, room for the largest of them."""
    cap = settings.max_message_bytes
    deadletter = dead_letter_bytes(cap) + RECORD_MARGIN
    return {
        "telemetry": cap + RECORD_MARGIN,
        "deadletter": deadletter,
        "request": deadletter + RECORD_MARGIN,
    }


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics PSO needs, with partitions, replication, retention, compaction and size
    limits."""
    policy = settings.topic_policy
    limits = size_limits(settings)
    sized = {
        settings.topics.telemetry: limits["telemetry"],
        settings.topics.deadletter: limits["deadletter"],
    }
    specs = []
    for name in settings.topics.all():
        config = (
            {**EVENT_TIME_TOPIC_CONFIG, "cleanup.policy": "compact"}
            if name in (settings.topics.capacity, settings.topics.labels)
            else event_time_topic_config(policy)
        )
        if name in sized:
            config["max.message.bytes"] = str(sized[name])
        specs.append(TopicSpec(name, policy.partitions, policy.replication, config))
    return specs


async def _start_admin(
    settings: Settings, bootstrap: str, attempts: int = 3, delay_s: float = 1.0
) -> AIOKafkaAdminClient:
    """A started admin client, after a bounded number of connection attempts."""
    for attempt in range(attempts):
        admin = AIOKafkaAdminClient(**client_kwargs(settings, bootstrap))
        try:
            await admin.start()
            return admin
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            await admin.close()
            if attempt + 1 == attempts:
                raise BrokerUnreachable(
                    f"cannot reach Kafka at {bootstrap} after {attempts} attempts "
                    f"({type(exc).__name__})"
                ) from None
            await asyncio.sleep(delay_s)
    raise AssertionError("unreachable")


async def create_topics(settings: Settings, bootstrap: str) -> dict[str, str]:
    """Create missing topics; return ``{name: "created" | "exists"}``."""
    admin = await _start_admin(settings, bootstrap)
    try:
        existing = set(await admin.list_topics())
        result: dict[str, str] = {}
        todo = []
        for spec in topic_specs(settings):
            if spec.name in existing:
                result[spec.name] = "exists"
                needed = spec.config.get("max.message.bytes")
                if needed is not None:
                    allowed = await _max_message_bytes(admin, spec.name)
                    if allowed is not None and allowed < int(needed):
                        result[spec.name] = (
                            f"exists, but allows {allowed} bytes a record where PSO needs "
                            f"{needed} (raise its max.message.bytes)"
                        )
            else:
                todo.append(
                    NewTopic(
                        spec.name, spec.partitions, spec.replication, topic_configs=spec.config
                    )
                )
                result[spec.name] = "created"
        if todo:
            # A concurrent creator winning the race is the idempotent outcome too.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(todo)
        return result
    finally:
        await admin.close()


async def topic_max_message_bytes(settings: Settings, bootstrap: str, topic: str) -> int | None:
    """The topic's ``max.message.bytes`` as the brokers enforce it (None if it cannot be
    read): a worker sizes what it sends there to fit, whoever created the topic."""
    try:
        admin = await _start_admin(settings, bootstrap, attempts=1)
    except BrokerUnreachable:
        return None
    try:
        return await _max_message_bytes(admin, topic)
    finally:
        await admin.close()


async def _max_message_bytes(admin: AIOKafkaAdminClient, topic: str) -> int | None:
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})
        for response in await admin.describe_configs([resource]):
            for entry in response.to_object()["resources"]:
                for config in entry["config_entries"]:
                    if config["config_names"] == "max.message.bytes":
                        return int(config["config_value"])
        return None
    except (KafkaError, OSError, KeyError, ValueError, TypeError):
        return None
