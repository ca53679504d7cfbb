"""Stage 2 on Faust: the shares of ``{app_id}-resource-shares`` -> conflicts, rebalance plans
and accuracy reports, one `ResourcePredictor` per shared resource.

`ResourceStage` applies each record (a batch of shares, a runtime policy, a departure) in
stream order, live and in a rebuild alike (`apply_resource_record`). `Liveness` is the one
wall-clock decision: a contributor that keeps a resource's oldest window waiting too long is
declared departed — by a record written into the stream itself, so that a replay of the
stream takes the same decision at the same point.
"""

from __future__ import annotations

import logging
from typing import Any

from agents.checkpoints import CheckpointedStates, Record
from agents.outputs import Outputs
from app.core.engine import ResourcePredictor
from app.core.events import ContributorsDeparted, OutputEvent, ResourcePolicy, ResourceShare
from app.wire.records import ResourceRecord, decode_resource_record, encode

log = logging.getLogger("pso.predict")


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


def replay_resource(predictor: ResourcePredictor, partition: int, record: Record) -> None:
    """A rebuild, on a record since the checkpoint: what the agent did with it, minus
    publishing (records it dead-lettered fail the same way again and are passed over)."""
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


class Liveness:
    """When to stop waiting for a silent contributor: the wall-clock decision of stage 2,
    taken at the edge (``now`` is passed in: `decide` reads no clock)."""

    def __init__(self, join_timeout_s: float, step_ms: int) -> None:
        self.join_timeout_s = join_timeout_s
        self.step_ms = step_ms
        self._since: dict[str, tuple[int, float]] = {}  # resource -> (oldest window, since)

    def decide(
        self, predictors: list[tuple[str, ResourcePredictor]], now: float
    ) -> list[ContributorsDeparted]:
        """Departures due at ``now`` (monotonic seconds): contributors that have kept the
        same oldest window of a resource waiting for ``join_timeout_s``."""
        due: list[ContributorsDeparted] = []
        for name, predictor in predictors:
            waiting = predictor.join.blocking()
            if not waiting:
                self._since.pop(name, None)
                continue
            oldest = min(predictor.join.pending)
            since = self._since.setdefault(name, (oldest, now))
            if since[0] != oldest:
                self._since[name] = (oldest, now)
                continue
            if now - since[1] < self.join_timeout_s:
                continue
            start_ms = oldest * self.step_ms
            due.append(
                ContributorsDeparted(
                    event_id=f"departed:{name}:{start_ms}:{','.join(waiting)}",
                    resource=name,
                    subsystems=waiting,
                    waiting_window_start_ms=start_ms,
                )
            )
            log.warning("%s: not waiting any longer for %s", name, ", ".join(waiting))
            self._since[name] = (oldest, now + self.join_timeout_s)
        return due


class ResourceStage:
    """Stage 2 of one worker: its resources' predictors (`states`), where their events go
    (`outputs`), and the departures `Liveness` decided, to write into the shares topic from
    inside the next record's transaction (a transactional producer only sends within one)."""

    def __init__(self, outputs: Outputs, states: CheckpointedStates, shares_topic: Any) -> None:
        self.outputs = outputs
        self.states = states
        self.shares_topic = shares_topic
        self.due: dict[str, ContributorsDeparted] = {}

    async def take(self, event: Any) -> None:
        """One record of the shares topic."""
        message = event.message
        for name in sorted(self.due):
            await self.shares_topic.send(key=name.encode(), value=encode(self.due.pop(name)))
        try:
            records = decode_resource_record(event.value)
        except ValueError as exc:
            log.warning("resource-shares record %d is not PSO's", message.offset)
            await self.outputs.reject(message, event.value, "invalid_record", f"not a share: {exc}")
            return
        resource = records[0].resource
        predictor = await self.states.get(resource, message.partition, message.offset)
        rejected: list[str] = []
        for i, record in enumerate(records):
            try:
                events, timestamp_ms = apply_resource_record(predictor, record, message.offset)
            except Exception as exc:  # the others in the record still count
                what = getattr(record, "event_id", resource)
                log.exception("stage 2 failed on %s", what)
                rejected.append(f"#{i} ({what}): {type(exc).__name__}: {exc}")
                continue
            await self.outputs.publish(events, timestamp_ms)
        if rejected:
            await self.outputs.reject(message, event.value, "internal_error", "; ".join(rejected))
        await self.states.updated(resource, predictor, message.offset)
