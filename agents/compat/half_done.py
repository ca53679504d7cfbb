"""A record that failed half-way stops the worker; Faust would restart the agent on it.

Written against faust-streaming 0.15.3. Upstream code it replaces or wraps:

- the agent supervisor's restart of a crashed agent:
  https://github.com/faust-streaming/faust/blob/v0.15.3/faust/agents/agent.py

* **Agents restarted on half-done records.** Faust's supervisor restarts an agent that
  raised and carries on: the record it failed on, half processed (some outputs sent, state
  in memory moved on), is acknowledged when its stream is finalised and committed with the
  next commit. A stage-2 checkpoint over the 1 MB record limit did that on the live bench
  and stalled stage 2 for good. `stop_worker` refuses every commit from then on
  (`PsoConsumer.stop_committing`) and crashes the app: the open transactions are aborted and
  a restart redoes the record (``tests/integration/test_stalls.py``).
"""

from __future__ import annotations

from typing import Any

from agents.compat.consumer import PsoConsumer


async def stop_worker(app: Any, reason: BaseException) -> None:
    """Stop the worker, committing nothing more, when an agent failed half-way through a
    record (a send or a checkpoint that raised): part of the record's outputs are in the open
    transaction and the agent's state in memory has moved on.

    Faust would restart the agent on that state and carry on: the record, acknowledged when
    its stream is finalised, was then committed half done (how a failed checkpoint once
    stalled stage 2 for good), and its shutdown commits what is acknowledged. Here every
    commit is refused first, then the app crashes: the open transactions are aborted and a
    restarted worker redoes the record from the committed offsets."""
    consumer = app.consumer
    if isinstance(consumer, PsoConsumer):
        consumer.stop_committing(reason)
    await app.crash(reason)
