"""The closed loop against a running PSO worker: a simulated fleet that talks to it over Kafka.

Offline, the ``pso`` policy feeds each window straight into the prediction engine
(`app.core.closedloop.policies.PsoPolicy`). Here the fleet does what a real one does instead:
it sends each window's resource use as telemetry, writes its capacity to ``pso.capacity``
when it changes, and obeys every plan it reads from ``pso.rebalance`` (through the same
`app.core.closedloop.orders.orders_from_plan`). The plant, its metrics and every event time
are the offline loop's (`app.core.closedloop.ClosedLoop`), so the same trace must give the
same figures: that is what the integration test checks.

Lock-step: after window ``k`` the fleet waits until the worker is *idle* — its consumer
group has committed every record of every input topic — before it reads the plans.
Under exactly-once a stage's outputs commit in the same transaction as its input offsets,
so once every input record is committed, every event they cause is readable. Each window is
sent as its sample plus a heartbeat (a sample with no series) stamped at the next window's
start: with ``allowed_lateness_windows: 0`` that closes the window at once, as the offline
loop does, instead of when the next window's demand arrives.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from app.core.closedloop import ClosedLoop, DemandTrace, LoopSpec, orders_from_plan
from app.core.closedloop.metrics import LoopMetrics
from app.core.config import FleetSpec
from app.errors import ExitCode, PsoError
from app.kafka.connection import start_consumer, start_producer
from app.kafka.idle import WorkerNotIdle, WorkerProbe
from app.settings import Settings
from app.wire.events import RebalanceRecommended
from app.wire.records import to_core


class LiveLoopError(PsoError):
    """The live loop cannot run against this worker (one line, exit 2)."""

    exit_code = ExitCode.USER_ERROR


@dataclass(frozen=True, slots=True)
class LiveRun:
    """What the live loop measured, and what it exchanged with the worker."""

    metrics: LoopMetrics
    plans: int  # rebalance plans read and obeyed
    capacity_updates: int  # records written to ``pso.capacity``
    seconds: float
    #: (window after which it was obeyed, event id) of each plan, as `PsoPolicy.plan_log`
    plan_log: tuple[tuple[int, str], ...] = ()


class LiveFleet:
    """The fleet of `ClosedLoop` driven by a live PSO worker (see the module docstring).

    The worker must run with the same ``pso.yaml`` (``policy``), ``allowed_lateness_windows:
    0`` and a join timeout longer than the run, and its topics must hold nothing else.
    """

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        trace: DemandTrace,
        policy: FleetSpec,
        loop: LoopSpec,
        idle_timeout_s: float = 120.0,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.trace = trace
        self.loop = ClosedLoop(trace, policy, loop, controller=None)
        self.delay_ms = loop.actuation_delay_s * 1000
        self.told = [policy.resources[name].capacity for name in trace.resources]
        self.idle_timeout_s = idle_timeout_s
        topics = settings.topics
        self.inputs = [
            topics.telemetry,
            topics.load,
            topics.capacity,
            topics.labels,
            settings.shares_topic,
        ]

    async def run(self, progress: Callable[[int], None] | None = None) -> LiveRun:
        if self.settings.processing_guarantee != "exactly_once":
            # The lock-step reads "every input committed" as "every output readable".
            raise LiveLoopError("the live loop needs PSO_PROCESSING_GUARANTEE=exactly_once")
        started = time.monotonic()
        topics = self.settings.topics
        async with contextlib.AsyncExitStack() as stack:
            # acks=all: what the fleet sent is below the high-water mark when it waits.
            producer = await start_producer(self.settings, self.bootstrap, acks="all")
            stack.push_async_callback(producer.stop)
            plans = await start_consumer(
                self.settings, self.bootstrap, topics.rebalance, fetch_max_wait_ms=10
            )
            stack.push_async_callback(plans.stop)
            probe = WorkerProbe(self.settings, self.bootstrap, self.inputs, [topics.rebalance])
            stack.push_async_callback(probe.stop)
            await probe.start()
            log: list[tuple[int, str]] = []
            updates = 0
            while not self.loop.done:
                outcome = self.loop.step()
                told = updates
                for r, name in enumerate(self.trace.resources):
                    landed = float(outcome.capacity_end[r])
                    if landed != self.told[r]:
                        value = orjson.dumps({"capacity": landed})
                        await producer.send_and_wait(topics.capacity, value, key=name.encode())
                        self.told[r] = landed
                        updates += 1
                if updates > told:  # stage 2 takes the capacity before the window, as offline
                    await probe.wait_idle(self.idle_timeout_s)
                for key, value in self.telemetry(outcome.k, outcome.offered):
                    await producer.send(topics.telemetry, value, key=key)
                await producer.flush()
                await probe.wait_idle(self.idle_timeout_s)
                for plan in await self._new_plans(plans):
                    self.loop.receive(orders_from_plan(plan, plan.emitted_at_ms + self.delay_ms))
                    log.append((outcome.k, plan.event_id))
                if progress is not None:
                    progress(self.loop.k)
        return LiveRun(self.loop.metrics, len(log), updates, time.monotonic() - started, tuple(log))

    def telemetry(self, k: int, demand: Any) -> list[tuple[bytes, bytes]]:
        """Window ``k`` as one message per subsystem: its use of each resource (one sample at
        the window's start) and a heartbeat at the next window's start that closes it."""
        start, end = self.trace.window_ms(k), self.trace.window_ms(k + 1)
        out = []
        for s, sub in enumerate(self.trace.subsystems):
            use = {
                res: float(demand[s, r])
                for r, res in enumerate(self.trace.resources)
                if self.trace.uses[s, r]
            }
            batch = [
                {"subsystem": sub, "ts": start, "resources": use},
                {"subsystem": sub, "ts": end},
            ]
            out.append((sub.encode(), orjson.dumps(batch)))
        return out

    async def _new_plans(self, consumer: Any) -> list[Any]:
        """Every plan published since the last call (the worker is idle: all are readable)."""
        found: list[Any] = []
        deadline = time.monotonic() + self.idle_timeout_s
        assigned = consumer.assignment()
        while not assigned:
            found += self._decode(await consumer.getmany(timeout_ms=100))
            assigned = consumer.assignment()
            if time.monotonic() > deadline:
                raise WorkerNotIdle("pso.rebalance was never assigned")
        end = await consumer.end_offsets(list(assigned))
        while [tp for tp in assigned if await consumer.position(tp) < end[tp]]:
            found += self._decode(await consumer.getmany(timeout_ms=100))
            if time.monotonic() > deadline:
                raise WorkerNotIdle("pso.rebalance could not be read to its end")
        found.sort(key=lambda p: (p.emitted_at_ms, p.resources))
        return found

    @staticmethod
    def _decode(batches: dict[Any, list[Any]]) -> list[Any]:
        return [
            to_core(RebalanceRecommended.model_validate(orjson.loads(record.value)))
            for records in batches.values()
            for record in records
        ]
