"""Prediction agents: the pure engine's two stages on Faust.

Stage 1 (``{app_id}-predict-subsystems``) reads closed windows from ``pso.load`` — keyed, and so
partitioned, by subsystem — runs `SubsystemPredictor` and publishes forecasts, anomalies,
saturation warnings and accuracy reports, plus one `ResourceShare` per resource to the internal
topic ``{app_id}-resource-shares``, keyed by resource. Stage 2
(``{app_id}-predict-resources``) reads the shares, runs `ResourcePredictor` and publishes
conflicts, rebalance plans and accuracy reports.

Model state lives in changelog-backed tables as sealed snapshots (pickle + HMAC-SHA256 under
``PSO_SNAPSHOT_KEY``): a changelog anyone can write to is refused unless the MAC verifies.
The live object is cached next to the bytes it was restored from, so a snapshot is only
unsealed after recovery or a rebalance.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
import orjson

from agents.faust_fixes import put
from agents.policy import register_policy
from app.core.engine import EngineConfig, ResourcePredictor, SubsystemPredictor
from app.core.snapshot import SnapshotRejected, seal, unseal
from app.events import (
    AccuracyReport,
    AnomalyDetected,
    ConflictObserved,
    ConflictPredicted,
    ContributorsDeparted,
    Forecast,
    LoadWindow,
    OutputEvent,
    RebalanceRecommended,
    ResourcePolicy,
    ResourceShare,
    SaturationPredicted,
)
from app.settings import Settings
from app.topics import EVENT_TIME_TOPIC_CONFIG

log = logging.getLogger("pso.predict")


class SealedStates:
    """name -> live predictor, persisted as sealed snapshots in a Faust table."""

    def __init__(self, table: Any, key: bytes, make: Any) -> None:
        self.table = table
        self.key = key
        self.make = make
        self._live: dict[str, tuple[Any, bytes]] = {}

    def get(self, name: str) -> Any:
        stored = self.table.get(name)
        live = self._live.get(name)
        if live is not None and stored is not None and live[1] is stored:
            return live[0]
        if stored is None:
            obj = self.make(name)
        else:
            try:
                obj = unseal(stored, self.key)
            except SnapshotRejected:
                log.error("snapshot of %s failed authentication: starting fresh", name)
                obj = self.make(name)
        self._live[name] = (obj, stored or b"")
        return obj

    def live_items(self) -> list[tuple[str, Any]]:
        """Predictors this worker holds in memory (its partitions, recently used)."""
        return [
            (name, live[0])
            for name, live in sorted(self._live.items())
            if self.table.get(name) is live[1]  # still ours: not revoked by a rebalance
        ]

    async def save(self, name: str, obj: Any) -> None:
        """Persist last, after the event's outputs: see `agents.faust_fixes`."""
        blob = seal(obj, self.key)
        await put(self.table, name, blob)
        self._live[name] = (obj, blob)


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


def register_predict(app: faust.App, settings: Settings) -> None:
    """Declare the two prediction stages, their tables and topics on ``app``."""
    policy = settings.policy()
    config = EngineConfig.from_policy(policy)
    key = settings.snapshot_key.get_secret_value().encode()
    partitions = settings.topic_policy.partitions
    load_topic = app.topic(settings.topics.load, key_serializer="raw", value_serializer="raw")
    shares_topic = app.topic(
        f"{settings.app_id}-resource-shares",
        partitions=partitions,
        internal=True,
        config=EVENT_TIME_TOPIC_CONFIG,
        key_serializer="raw",
        value_serializer="raw",
    )
    outputs = {
        name: app.topic(name, key_serializer="raw", value_serializer="raw")
        for name in settings.topics.all()
    }
    # Bumped when the sealed state's shape changes: old snapshots are never restored.
    version = f"v2-{config.step_ms // 1000}s-h{config.horizon}"
    subsystem_table = app.Table(
        f"subsystem-models-{version}",
        default=None,
        partitions=partitions,
        key_type=str,
        value_type=bytes,
    )
    resource_table = app.Table(
        f"resource-models-{version}",
        default=None,
        partitions=partitions,
        key_type=str,
        value_type=bytes,
    )

    def make_subsystem(name: str) -> SubsystemPredictor:
        sub = policy.subsystems.get(name)
        return SubsystemPredictor(name, config, sub.limits if sub else {})

    subsystems = SealedStates(subsystem_table, key, make_subsystem)
    resources = SealedStates(
        resource_table, key, lambda name: ResourcePredictor(name, config, policy)
    )

    async def publish(events: list[OutputEvent], timestamp_ms: int) -> None:
        for event in events:
            topic, event_key = topic_for(event, settings)
            await outputs[topic].send(
                key=event_key.encode(), value=event.to_json(), timestamp=timestamp_ms / 1000
            )

    @app.agent(load_topic, name=f"{settings.app_id}-predict-subsystems")
    async def predict_subsystems(stream: Any) -> None:
        async for value in stream:
            try:
                window = LoadWindow.model_validate(orjson.loads(value))
            except ValueError:  # PSO writes this topic; anything else there is noise
                log.warning("skipping a pso.load record that is not a LoadWindow")
                continue
            predictor = subsystems.get(window.subsystem)
            out = predictor.process(window)
            await publish(out.events, window.window_end_ms)
            for share in out.shares:
                await shares_topic.send(
                    key=share.resource.encode(),
                    value=share.to_json(),
                    timestamp=window.window_end_ms / 1000,
                )
            await subsystems.save(window.subsystem, predictor)

    # Liveness decisions found by the timer, sent from inside the agent (a transactional
    # producer only sends within an event's transaction).
    due: dict[str, ContributorsDeparted] = {}

    @app.agent(shares_topic, name=f"{settings.app_id}-predict-resources")
    async def predict_resources(stream: Any) -> None:
        async for value in stream:
            for name in sorted(due):
                await shares_topic.send(key=name.encode(), value=due.pop(name).to_json())
            doc = orjson.loads(value)
            if doc.get("type") == "resource_policy":
                update = ResourcePolicy.model_validate(doc)
                predictor = resources.get(update.resource)
                predictor.apply_policy(update)
                await resources.save(update.resource, predictor)
                continue
            if doc.get("type") == "contributors_departed":
                departed = ContributorsDeparted.model_validate(doc)
                predictor = resources.get(departed.resource)
                pending = predictor.join.pending
                oldest_ms = min(pending) * config.step_ms if pending else None
                if oldest_ms != departed.waiting_window_start_ms:
                    continue  # stale: that window was judged meanwhile
                events = predictor.depart(departed.subsystems)
                await publish(events, departed.waiting_window_start_ms)
                await resources.save(departed.resource, predictor)
                continue
            share = ResourceShare.model_validate(doc)
            predictor = resources.get(share.resource)
            events = predictor.add(share)
            await publish(events, share.window_start_ms + share.step_s * 1000)
            await resources.save(share.resource, predictor)

    register_policy(app, settings, shares_topic, outputs[settings.topics.deadletter])

    blocked_since: dict[str, tuple[int, float]] = {}

    @app.timer(max(1.0, settings.join_timeout_s / 4))
    async def join_liveness() -> None:
        """Wall-clock liveness at the edge: a contributor that keeps a resource's oldest window
        waiting for ``join_timeout_s`` is declared departed — by a message in the stream, so
        a replay of the stream takes the same decision at the same point."""
        now = time.monotonic()
        for name, predictor in resources.live_items():
            waiting = predictor.join.blocking()
            if not waiting:
                blocked_since.pop(name, None)
                continue
            oldest = min(predictor.join.pending)
            since = blocked_since.setdefault(name, (oldest, now))
            if since[0] != oldest:
                blocked_since[name] = (oldest, now)
                continue
            if now - since[1] < settings.join_timeout_s:
                continue
            start_ms = oldest * config.step_ms
            due[name] = ContributorsDeparted(
                event_id=f"departed:{name}:{start_ms}:{','.join(waiting)}",
                resource=name,
                subsystems=waiting,
                waiting_window_start_ms=start_ms,
            )
            log.warning("%s: not waiting any longer for %s", name, ", ".join(waiting))
            blocked_since[name] = (oldest, now + settings.join_timeout_s)
