"""``pso worker`` with one fault injected into stage 2, for integration tests only.

PSO itself has no fault hooks: this module patches one method of `CheckpointedStates` for
stage 2 (its reader reads the shares topic) and then runs the ordinary CLI worker. Chosen by
``PSO_TEST_FAULT``:

* ``block``: stage 2 blocks for ever on the first record of a resource (a stage that stops
  while records wait for it: the stall watch must say so).
* ``fail-plan``: the first rebalance plan stage 2 publishes fails to send, the conflict it
  belongs to already sent in the same record (a send failing half-way through a record: the
  worker must stop and commit nothing more, so that a restart publishes both).
* ``fail-window``: the third load window ingest publishes fails to send, two already sent
  for the same telemetry message — the same, in ingest.

Run as ``python -m tests.integration.fault_worker``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from agents.checkpoints import CheckpointedStates


def _is_stage2(states: CheckpointedStates) -> bool:
    return states.reader.topic.endswith("-resource-shares")


def install(fault: str) -> None:
    if fault == "block":
        get = CheckpointedStates.get

        async def blocking_get(self: CheckpointedStates, name: str, *args: Any) -> Any:
            if _is_stage2(self):
                await asyncio.Event().wait()
            return await get(self, name, *args)

        CheckpointedStates.get = blocking_get  # type: ignore[method-assign]
    elif fault == "fail-plan":
        from faust.topics import Topic

        send = Topic.send

        async def failing_send(self: Topic, *args: Any, **kwargs: Any) -> Any:
            if self.get_topic_name().endswith(".rebalance"):
                Topic.send = send  # type: ignore[method-assign]
                raise RuntimeError("injected: a rebalance plan not sent")
            return await send(self, *args, **kwargs)

        Topic.send = failing_send  # type: ignore[method-assign]
    elif fault == "fail-window":
        from faust.topics import Topic

        send = Topic.send
        sent = [0]

        async def failing_window(self: Topic, *args: Any, **kwargs: Any) -> Any:
            if self.get_topic_name().endswith(".load"):
                sent[0] += 1
                if sent[0] == 3:
                    Topic.send = send  # type: ignore[method-assign]
                    raise RuntimeError("injected: a load window not sent")
            return await send(self, *args, **kwargs)

        Topic.send = failing_window  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown PSO_TEST_FAULT {fault!r}")


if __name__ == "__main__":
    install(os.environ["PSO_TEST_FAULT"])
    from app.cli.main import main

    sys.argv = ["pso", "worker", "--loglevel", "info"]
    main()
