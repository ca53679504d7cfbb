"""Prediction agents: the pure engine's two stages on Faust.

Stage 1 (``{app_id}-predict-subsystems``) reads closed windows from ``pso.load`` — keyed, and so
partitioned, by subsystem — runs `SubsystemPredictor` and publishes forecasts, anomalies,
saturation warnings and accuracy reports, plus its `ResourceShare` per resource to the internal
topic ``{app_id}-resource-shares``, keyed by resource: stage 1 takes windows in batches and sends
one `ResourceShares` record per resource per batch. Stage 2
(``{app_id}-predict-resources``) reads the shares, runs `ResourcePredictor` and publishes
conflicts, rebalance plans and accuracy reports.

Model state lives in changelog-backed tables as sealed checkpoints (pickle + HMAC-SHA256 under
``PSO_SNAPSHOT_KEY``), written every ``PSO_CHECKPOINT_EVERY`` windows; after a restart or a
rebalance a predictor is rebuilt from its checkpoint plus its input records since then
(`agents.checkpoints`). A resource's checkpoint leaves out the shares still waiting for other
contributors (a backlog of them outgrew a Kafka record): a rebuild reads them back from the
shares topic. A changelog anyone can write to is refused unless the MAC verifies. A stage that
fails half-way through a record stops the worker, committing nothing more (`stop_worker`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust

from agents.checkpoints import CheckpointedStates, Record, TopicRangeReader, app_bootstrap
from agents.compat import put
from agents.labels import register_labels
from agents.outputs import Outputs
from agents.policy import register_policy
from agents.stage1 import STAGE1_BATCH, STAGE1_WAIT_S, SubsystemStage
from agents.stage2 import Liveness, ResourceStage, refill_resource, replay_resource
from app.core.engine import EngineConfig, ResourcePredictor, SubsystemPredictor
from app.core.events import OperatorLabel
from app.core.forecast import SeriesForecaster
from app.kafka.topics import event_time_topic_config
from app.settings import Settings
from app.wire.records import decode_load_record

log = logging.getLogger("pso.predict")


def register_predict(app: faust.App, settings: Settings) -> None:
    """Declare the two prediction stages, their tables and topics on ``app``."""
    spec = settings.policy().spec()
    config = EngineConfig.from_policy(spec)
    # The tables all series share (seasonal grid, ring layout) are built once per process:
    # now, at startup, rather than inside the first window's latency.
    SeriesForecaster(step_ms=config.step_ms, horizon=config.horizon, levels=config.levels)
    partitions = settings.topic_policy.partitions
    load_topic = app.topic(settings.topics.load, key_serializer="raw", value_serializer="raw")
    shares_topic = app.topic(
        settings.shares_topic,
        partitions=partitions,
        internal=True,
        config=event_time_topic_config(settings.topic_policy),
        key_serializer="raw",
        value_serializer="raw",
    )
    outputs = Outputs(app, settings)
    bootstrap = app_bootstrap(app)
    load_reader = TopicRangeReader(settings, bootstrap, settings.topics.load)
    shares_reader = TopicRangeReader(settings, bootstrap, shares_topic.get_topic_name())

    def table(name: str) -> Any:
        return app.Table(name, default=None, partitions=partitions, key_type=str, value_type=bytes)

    def states(table: Any, **kwargs: Any) -> CheckpointedStates:
        async def write(name: str, blob: bytes, keep: Any) -> None:
            await put(table, name, blob, keep=keep)

        return CheckpointedStates(
            table,
            write,
            settings.snapshot_keys(),
            every=settings.checkpoint_every,
            progress=lambda p: p.windows,
            keep_blobs=not settings.store.startswith("memory"),  # other stores persist
            scope=f"{settings.app_id}/{table.name}",
            **kwargs,
        )

    def make_subsystem(name: str) -> SubsystemPredictor:
        sub = spec.subsystems.get(name)
        return SubsystemPredictor(name, config, sub.limits if sub else {})

    def replay_window(predictor: SubsystemPredictor, partition: int, record: Record) -> None:
        """A rebuild replays what the agent took: records it dead-lettered fail the same way
        again and are passed over, as the agent passed over them."""
        try:
            item = decode_load_record(record[2])
            if isinstance(item, OperatorLabel):
                predictor.label(item)
            else:
                predictor.process(item)
        except Exception as exc:
            log.warning("replay: pso.load record %d passed over (%s)", record[0], exc)

    # Bumped when the sealed state's shape changes: old snapshots are never restored.
    # Resources v4: lean checkpoints (pending shares left out, read back from the topic).
    # Subsystems v4: episode suppression moved to app.core.anomaly.episodes (new pickled shape).
    # Subsystems v5, resources v5: operators' labels (`app.core.labels`) in the state.
    shape = f"{config.step_ms // 1000}s-h{config.horizon}"
    subsystems = states(
        table(f"subsystem-models-v5-{shape}"),
        make=make_subsystem,
        reader=load_reader,
        replay=replay_window,
        max_updates=settings.checkpoint_every,
    )
    resources = states(
        table(f"resource-models-v5-{shape}"),
        make=lambda name: ResourcePredictor(name, config, spec),
        reader=shares_reader,
        replay=replay_resource,
        max_updates=settings.checkpoint_every * 1000,
        lean=lambda p: p.lean(),
        refill=refill_resource,
    )
    # Rebuild counters (`rebuilt`, `replayed`), for the ops surface to export.
    setattr(app, "pso_states", (subsystems, resources))  # noqa: B010
    stage1 = SubsystemStage(outputs, subsystems, shares_topic)
    stage2 = ResourceStage(outputs, resources, shares_topic)
    liveness = Liveness(settings.join_timeout_s, config.step_ms)

    @app.agent(load_topic, name=f"{settings.app_id}-predict-subsystems")
    async def predict_subsystems(stream: Any) -> None:
        async for events in stream.take_events(STAGE1_BATCH, within=STAGE1_WAIT_S):
            try:
                await stage1.take(events)
            except Exception as exc:
                await outputs.failed("stage 1", events[-1].message, exc)
                raise

    @app.agent(shares_topic, name=f"{settings.app_id}-predict-resources")
    async def predict_resources(stream: Any) -> None:
        async for event in stream.events():
            try:
                await stage2.take(event)
            except Exception as exc:
                await outputs.failed("stage 2", event.message, exc)
                raise

    @app.timer(max(1.0, settings.join_timeout_s / 4))
    async def join_liveness() -> None:
        for departed in liveness.decide(resources.live_items(), time.monotonic()):
            stage2.due[departed.resource] = departed

    @app.timer(120.0)
    async def forget_replayed_ranges() -> None:
        """Rebuilds happen right after a restart or rebalance: drop their read-ahead."""
        load_reader.forget()
        shares_reader.forget()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode types it positional-only
    async def stop_readers(sender: Any, **kwargs: Any) -> None:
        await load_reader.stop()
        await shares_reader.stop()

    register_policy(app, settings, shares_topic, outputs)
    register_labels(app, settings, load_topic, shares_topic, outputs)
