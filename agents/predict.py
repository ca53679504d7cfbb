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
from dataclasses import dataclass, field
from typing import Any

import faust

from agents.checkpoints import CheckpointedStates, Record, TopicRangeReader, app_bootstrap
from agents.compat import processing, put, stop_worker
from agents.policy import register_policy
from app.core.engine import EngineConfig, ResourcePredictor, SubsystemPredictor
from app.core.events import (
    AccuracyReport,
    AnomalyDetected,
    ConflictObserved,
    ConflictPredicted,
    ContributorsDeparted,
    DeadLetterReason,
    Forecast,
    OutputEvent,
    RebalanceRecommended,
    ResourcePolicy,
    ResourceShare,
    SaturationPredicted,
)
from app.core.forecast import SeriesForecaster
from app.kafka.topics import event_time_topic_config
from app.settings import Settings
from app.wire.codec import SourceRef, dead_letter
from app.wire.records import (
    ResourceRecord,
    decode_resource_record,
    decode_window,
    encode,
    encode_shares,
)

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


#: Stage 1 takes up to this many windows at once, waiting at most this long for more: its
#: shares then go out as one record per resource and partition. Catching up on the live bench,
#: uncapped batches held 136-320 windows; the cap bounds what a batch adds to the latency of
#: conflicts under load (~0.4 ms of stage 1 per window), the wait what it adds when quiet.
STAGE1_BATCH = 250
STAGE1_WAIT_S = 0.02


@dataclass
class Stage1Batch:
    """What a batch of windows leaves to send once all are processed: the shares per
    (partition, resource), and per subsystem its predictor and last event. Checkpoints go
    last, after the shares, so that none is committed ahead of the shares it covers."""

    shares: dict[tuple[int, str], list[ResourceShare]] = field(default_factory=dict)
    last: dict[str, tuple[Any, SubsystemPredictor]] = field(default_factory=dict)
    partition_event: dict[int, Any] = field(default_factory=dict)


#: A `ResourceShares` record is split in parts of at most this many bytes: a Kafka record is
#: 1 MB at most by default, and a batch's shares of one resource (~1.8 KB each) can be more.
SHARES_RECORD_BYTES = 512 * 1024


def share_records(
    resource: str, shares: list[ResourceShare], limit: int = SHARES_RECORD_BYTES
) -> list[tuple[list[ResourceShare], bytes]]:
    """``shares`` as consecutive `ResourceShares` records of at most ``limit`` bytes each
    (a single share may be more): (the shares, the record's value)."""
    value = encode_shares(resource, shares)
    if len(value) <= limit or len(shares) == 1:
        return [(shares, value)]
    half = len(shares) // 2
    return share_records(resource, shares[:half], limit) + share_records(
        resource, shares[half:], limit
    )


def apply_resource_record(
    predictor: ResourcePredictor, record: ResourceRecord, source: int | None = None
) -> tuple[list[OutputEvent], int]:
    """Stage 2 on one record: (events, their record timestamp in ms). Live and rebuild alike.

    ``source``: the input offset of the record, so that a checkpoint can leave the shares
    still waiting out and a rebuild read them back from there (`ResourcePredictor.lean`)."""
    if isinstance(record, ResourcePolicy):
        predictor.apply_policy(record)
        return [], 0
    if isinstance(record, ContributorsDeparted):
        pending = predictor.join.pending
        oldest_ms = min(pending) * predictor.config.step_ms if pending else None
        if oldest_ms != record.waiting_window_start_ms:
            return [], 0  # stale: that window was judged meanwhile
        return predictor.depart(record.subsystems), record.waiting_window_start_ms
    return predictor.add(record, source), record.window_start_ms + record.step_s * 1000


def refill_resource(predictor: ResourcePredictor, partition: int, record: Record) -> None:
    """A rebuild, on a shares record from before the checkpoint: put back the shares the
    checkpoint left out (`ResourcePredictor.lean`); the rest of the record was applied."""
    try:
        records = decode_resource_record(record[2])
    except Exception:
        return  # passed over live too
    for item in records:
        if isinstance(item, ResourceShare):
            predictor.restore_pending(item)


def register_predict(app: faust.App, settings: Settings) -> None:
    """Declare the two prediction stages, their tables and topics on ``app``."""
    policy = settings.policy()
    spec = policy.spec()
    config = EngineConfig.from_policy(spec)
    # The tables all series share (seasonal grid, ring layout) are built once per process:
    # now, at startup, rather than inside the first window's latency.
    SeriesForecaster(step_ms=config.step_ms, horizon=config.horizon, levels=config.levels)
    keys = settings.snapshot_keys()
    partitions = settings.topic_policy.partitions
    load_topic = app.topic(settings.topics.load, key_serializer="raw", value_serializer="raw")
    shares_topic = app.topic(
        f"{settings.app_id}-resource-shares",
        partitions=partitions,
        internal=True,
        config=event_time_topic_config(settings.topic_policy),
        key_serializer="raw",
        value_serializer="raw",
    )
    outputs = {
        name: app.topic(name, key_serializer="raw", value_serializer="raw")
        for name in settings.topics.all()
    }
    # Bumped when the sealed state's shape changes: old snapshots are never restored.
    version = f"v3-{config.step_ms // 1000}s-h{config.horizon}"
    # v4: lean checkpoints (pending shares left out, read back from the shares topic).
    resource_version = f"v4-{config.step_ms // 1000}s-h{config.horizon}"
    subsystem_table = app.Table(
        f"subsystem-models-{version}",
        default=None,
        partitions=partitions,
        key_type=str,
        value_type=bytes,
    )
    resource_table = app.Table(
        f"resource-models-{resource_version}",
        default=None,
        partitions=partitions,
        key_type=str,
        value_type=bytes,
    )

    def make_subsystem(name: str) -> SubsystemPredictor:
        sub = policy.subsystems.get(name)
        return SubsystemPredictor(name, config, sub.limits if sub else {})

    bootstrap = app_bootstrap(app)
    load_reader = TopicRangeReader(settings, bootstrap, settings.topics.load)
    shares_reader = TopicRangeReader(settings, bootstrap, shares_topic.get_topic_name())
    keep_blobs = not settings.store.startswith("memory")  # other stores persist what they hold
    every = settings.checkpoint_every

    # A rebuild replays what the agent took: records it dead-lettered fail the same way again
    # and are passed over, as the agent passed over them.
    def replay_window(predictor: SubsystemPredictor, partition: int, record: Record) -> None:
        offset, value = record[0], record[2]
        try:
            predictor.process(decode_window(value))
        except Exception as exc:
            log.warning("replay: pso.load record %d passed over (%s)", offset, exc)

    def replay_resource(predictor: ResourcePredictor, partition: int, record: Record) -> None:
        offset, value = record[0], record[2]
        try:
            records = decode_resource_record(value)
        except Exception as exc:
            log.warning("replay: resource-shares record %d passed over (%s)", offset, exc)
            return
        for i, item in enumerate(records):
            try:
                apply_resource_record(predictor, item, offset)
            except Exception as exc:
                log.warning("replay: resource-shares record %d #%d passed over: %s", offset, i, exc)

    def writer(table: Any) -> Any:
        async def write(name: str, blob: bytes, keep: Any) -> None:
            await put(table, name, blob, keep=keep)

        return write

    subsystems = CheckpointedStates(
        subsystem_table,
        writer(subsystem_table),
        keys,
        make_subsystem,
        load_reader,
        replay_window,
        every=every,
        progress=lambda p: p.windows,
        max_updates=every,
        keep_blobs=keep_blobs,
        scope=f"{settings.app_id}/{subsystem_table.name}",
    )
    resources = CheckpointedStates(
        resource_table,
        writer(resource_table),
        keys,
        lambda name: ResourcePredictor(name, config, spec),
        shares_reader,
        replay_resource,
        every=every,
        progress=lambda p: p.windows,
        max_updates=every * 1000,
        keep_blobs=keep_blobs,
        scope=f"{settings.app_id}/{resource_table.name}",
        lean=lambda p: p.lean(),
        refill=refill_resource,
    )
    # Rebuild counters (`rebuilt`, `replayed`), for the ops surface to export.
    setattr(app, "pso_states", (subsystems, resources))  # noqa: B010

    async def rebuilt(states: CheckpointedStates, name: str, message: Any) -> Any:
        """The live predictor. If its rebuild cannot read its input, the record fails, and
        with it the worker (`failed`): a restart retries from the committed offsets."""
        return await states.get(name, message.partition, message.offset)

    async def failed(stage: str, message: Any, exc: BaseException) -> None:
        """A stage failed on a record outside the core's own guarded work (a send, a
        checkpoint, a rebuild): the record is half done. Stop the worker without committing
        anything more (`stop_worker`) rather than let Faust restart the agent on that state."""
        where = f"{message.topic}[{message.partition}]@{message.offset}"
        log.critical(
            "%s failed on %s: %s: %s; stopping the worker, nothing more committed (a restart "
            "redoes the record from the committed offsets)",
            stage, where, type(exc).__name__, exc,
        )
        await stop_worker(app, exc)

    deadletter = outputs[settings.topics.deadletter]

    async def reject(message: Any, value: Any, code: DeadLetterReason, reason: str) -> None:
        """Dead-letter a record of PSO's own topics that PSO cannot use (written by someone
        else, or one its core failed on), with its original bytes, in this transaction."""
        source = SourceRef(message.topic, message.partition, message.offset, message.key)
        raw = value if isinstance(value, bytes) else b""
        await deadletter.send(
            key=message.key, value=encode(dead_letter(source, raw, code, reason[:500]))
        )

    async def publish(events: list[OutputEvent], timestamp_ms: int) -> None:
        for event in events:
            topic, event_key = topic_for(event, settings)
            await outputs[topic].send(
                key=event_key.encode(), value=encode(event), timestamp=timestamp_ms / 1000
            )

    async def predict_window(event: Any, batch: Stage1Batch) -> None:
        message = event.message
        try:
            window = decode_window(event.value)
        except ValueError as exc:  # PSO writes this topic; anything else is dead-lettered
            log.warning("pso.load record %d is not a LoadWindow", message.offset)
            await reject(message, event.value, "invalid_record", f"not a LoadWindow: {exc}")
            return
        predictor = await rebuilt(subsystems, window.subsystem, message)
        try:
            out = predictor.process(window)
        except Exception as exc:
            log.exception("stage 1 failed on window %s", window.event_id)
            await reject(message, event.value, "internal_error", f"{type(exc).__name__}: {exc}")
            return
        await publish(out.events, window.window_end_ms)
        for share in out.shares:
            batch.shares.setdefault((message.partition, share.resource), []).append(share)
        batch.partition_event[message.partition] = event
        batch.last[window.subsystem] = (event, predictor)

    # A batch's events are acked once it is done; a rebalance waits for that before it revokes
    # (Faust's ``stream_wait_empty``), so a batch ends in the transactions it started in.
    async def predict_batch(events: list[Any]) -> None:
        batch = Stage1Batch()
        for event in events:
            with processing(event):
                await predict_window(event, batch)
        for (partition, resource), shares in sorted(batch.shares.items()):
            with processing(batch.partition_event[partition]):
                for part, value in share_records(resource, shares):
                    await shares_topic.send(
                        key=resource.encode(),
                        value=value,
                        timestamp=max(s.window_start_ms + s.step_s * 1000 for s in part) / 1000,
                    )
        for name, (event, predictor) in batch.last.items():
            with processing(event):
                await subsystems.updated(name, predictor, event.message.offset)

    @app.agent(load_topic, name=f"{settings.app_id}-predict-subsystems")
    async def predict_subsystems(stream: Any) -> None:
        async for events in stream.take_events(STAGE1_BATCH, within=STAGE1_WAIT_S):
            try:
                await predict_batch(events)
            except Exception as exc:
                await failed("stage 1", events[-1].message, exc)
                raise

    # Liveness decisions found by the timer, sent from inside the agent (a transactional
    # producer only sends within an event's transaction).
    due: dict[str, ContributorsDeparted] = {}

    async def predict_resource_record(event: Any) -> None:
        message = event.message
        for name in sorted(due):
            await shares_topic.send(key=name.encode(), value=encode(due.pop(name)))
        try:
            records = decode_resource_record(event.value)
        except ValueError as exc:
            log.warning("resource-shares record %d is not PSO's", message.offset)
            await reject(message, event.value, "invalid_record", f"not a share: {exc}")
            return
        resource = records[0].resource
        predictor = await rebuilt(resources, resource, message)
        rejected: list[str] = []
        for i, record in enumerate(records):
            try:
                events, timestamp_ms = apply_resource_record(predictor, record, message.offset)
            except Exception as exc:  # the others in the record still count
                what = getattr(record, "event_id", resource)
                log.exception("stage 2 failed on %s", what)
                rejected.append(f"#{i} ({what}): {type(exc).__name__}: {exc}")
                continue
            await publish(events, timestamp_ms)
        if rejected:
            await reject(message, event.value, "internal_error", "; ".join(rejected))
        await resources.updated(resource, predictor, message.offset)

    @app.agent(shares_topic, name=f"{settings.app_id}-predict-resources")
    async def predict_resources(stream: Any) -> None:
        async for event in stream.events():
            try:
                await predict_resource_record(event)
            except Exception as exc:
                await failed("stage 2", event.message, exc)
                raise

    @app.timer(120.0)
    async def forget_replayed_ranges() -> None:
        """Rebuilds happen right after a restart or rebalance: drop their read-ahead."""
        load_reader.forget()
        shares_reader.forget()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode types it positional-only
    async def stop_readers(sender: Any, **kwargs: Any) -> None:
        await load_reader.stop()
        await shares_reader.stop()

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
