"""Stage 1 on Faust: closed windows of ``pso.load`` -> forecasts, anomalies, saturation
warnings and accuracy reports, and each window's shares of the resources it uses.

`SubsystemStage` takes windows in batches (Faust's ``take_events``): each window through its
subsystem's `SubsystemPredictor`, then the batch's shares as one `ResourceShares` record per
resource and input partition (capped in size), then the predictors' checkpoints — last, so
that none is committed ahead of the shares it covers (`agents.checkpoints`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from agents.checkpoints import CheckpointedStates
from agents.compat import processing
from agents.outputs import Outputs
from app.core.engine import SubsystemPredictor
from app.core.events import ResourceShare
from app.wire.records import decode_window, encode_shares

log = logging.getLogger("pso.predict")

#: Stage 1 takes up to this many windows at once, waiting at most this long for more: its
#: shares then go out as one record per resource and partition. Catching up on the live bench,
#: uncapped batches held 136-320 windows; the cap bounds what a batch adds to the latency of
#: conflicts under load (~0.4 ms of stage 1 per window), the wait what it adds when quiet.
STAGE1_BATCH = 250
STAGE1_WAIT_S = 0.02

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


@dataclass
class Stage1Batch:
    """What a batch of windows leaves to send once all are processed: the shares per
    (partition, resource), and per subsystem its predictor and last event."""

    shares: dict[tuple[int, str], list[ResourceShare]] = field(default_factory=dict)
    last: dict[str, tuple[Any, SubsystemPredictor]] = field(default_factory=dict)
    partition_event: dict[int, Any] = field(default_factory=dict)


class SubsystemStage:
    """Stage 1 of one worker: its subsystems' predictors (`states`), where their events go
    (`outputs`) and the internal topic their shares go to (`shares_topic`)."""

    def __init__(self, outputs: Outputs, states: CheckpointedStates, shares_topic: Any) -> None:
        self.outputs = outputs
        self.states = states
        self.shares_topic = shares_topic

    async def take(self, events: list[Any]) -> None:
        """One batch of ``pso.load`` events. Its events are acked once it is done; a
        rebalance waits for that before it revokes (Faust's ``stream_wait_empty``), so a
        batch ends in the transactions it started in."""
        batch = Stage1Batch()
        for event in events:
            with processing(event):
                await self._window(event, batch)
        for (partition, resource), shares in sorted(batch.shares.items()):
            with processing(batch.partition_event[partition]):
                for part, value in share_records(resource, shares):
                    await self.shares_topic.send(
                        key=resource.encode(),
                        value=value,
                        timestamp=max(s.window_start_ms + s.step_s * 1000 for s in part) / 1000,
                    )
        for name, (event, predictor) in batch.last.items():
            with processing(event):
                await self.states.updated(name, predictor, event.message.offset)

    async def _window(self, event: Any, batch: Stage1Batch) -> None:
        message = event.message
        try:
            window = decode_window(event.value)
        except ValueError as exc:  # PSO writes this topic; anything else is dead-lettered
            log.warning("pso.load record %d is not a LoadWindow", message.offset)
            await self.outputs.reject(
                message, event.value, "invalid_record", f"not a LoadWindow: {exc}"
            )
            return
        predictor = await self.states.get(window.subsystem, message.partition, message.offset)
        try:
            out = predictor.process(window)
        except Exception as exc:
            log.exception("stage 1 failed on window %s", window.event_id)
            await self.outputs.reject(
                message, event.value, "internal_error", f"{type(exc).__name__}: {exc}"
            )
            return
        await self.outputs.publish(out.events, window.window_end_ms)
        for share in out.shares:
            batch.shares.setdefault((message.partition, share.resource), []).append(share)
        batch.partition_event[message.partition] = event
        batch.last[window.subsystem] = (event, predictor)
