"""The consumer thread: changelog highwaters asked of the broker, and short fetch waits.

Written against faust-streaming 0.15.3 and aiokafka 0.14.0. Upstream code it replaces or wraps:

- ``AIOKafkaConsumerThread._create_worker_consumer`` and ``_highwaters``:
  https://github.com/faust-streaming/faust/blob/v0.15.3/faust/transport/drivers/aiokafka.py
- aiokafka's subscription state, read for `fetch_positions`:
  https://github.com/aio-libs/aiokafka/blob/v0.14.0/aiokafka/consumer/subscription_state.py

* **State not restored at all.** Under exactly-once, Faust takes a changelog partition's
  highwater from the consumer's *cached* last stable offset, which is None until that
  partition has been fetched once; None counts as an empty changelog. A worker started right
  after a crash could thus skip restoring every table and run on fresh state (seen as
  "highwater -1" for every changelog, then wrong or missing events). `LsoConsumerThread` asks
  the broker (ListOffsets, read_committed: the last stable offset) for partitions not cached
  (``tests/integration/test_recovery.py``).
* **Busy partitions stalled by quiet ones.** Faust fetches with ``fetch_max_wait_ms=1500``,
  and aiokafka keeps one fetch in flight per broker, for the partitions with nothing
  buffered. A fetch of only quiet partitions (the changelogs a worker holds, a standby) sat
  at the broker for up to 1.5 s while the telemetry partitions, drained meanwhile, waited
  behind it: the live bench's ingest stopped for ~1 s at a time. The app's
  ``fetch_max_wait_ms`` (``PSO_FETCH_MAX_WAIT_MS``, 100 ms) is used instead
  (``bench/live_throughput.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

log = logging.getLogger("pso.compat")


class LsoConsumerThread(AIOKafkaConsumerThread):
    """Highwaters for recovery from the broker when the consumer has not cached them yet;
    fetches held for at most the app's ``fetch_max_wait_ms``."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_max_wait_ms", 1500)
        return consumer

    def fetch_positions(self) -> dict[TP, int]:
        """The next offset the fetcher hands out, per assigned partition with one (it steps
        over transaction markers and aborted records): read from the consumer's own state,
        without a round trip, as ``highwater`` is (for the stall watch, `agents.health`)."""
        consumer: Any = self._consumer
        out: dict[TP, int] = {}
        try:
            assignment = consumer._subscription.subscription.assignment
            for tp in assignment.tps:
                state = assignment.state_value(tp)
                if state is not None and state.has_valid_position:
                    out[TP(tp.topic, tp.partition)] = int(state.position)
        except Exception:  # not started, restarting, or between assignments
            return {}
        return out

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        consumer: Any = self._ensure_consumer()
        if not self.consumer.in_transaction:
            return await super()._highwaters(partitions)
        offsets: dict[TP, int] = {}
        unknown = []
        for tp in partitions:
            lso = consumer.last_stable_offset(tp)
            if lso is None:
                unknown.append(tp)
            else:
                offsets[tp] = lso
        if unknown:  # a read_committed consumer's ListOffsets answers the last stable offset
            offsets.update(await consumer.end_offsets(unknown))
            log.info(
                "highwaters of %d changelog partitions not fetched yet: asked the broker",
                len(unknown),
            )
        return offsets
