"""Table writes inside the transaction of the record that made them.

Written against faust-streaming 0.15.3. Upstream code it replaces or wraps:

- ``Table.__setitem__``'s buffered changelog write:
  https://github.com/faust-streaming/faust/blob/v0.15.3/faust/tables/base.py

* **Table writes outside the transaction.** ``table[key] = value`` queues its changelog
  record in a buffer that a background task sends later, and an exactly-once commit does not
  flush it: a commit could carry a message's offset without the state it produced (models
  and windows silently behind their input after a restart). `put` produces the changelog
  record right away, inside the current transaction, before the message is acknowledged,
  and only then stores the value locally: a send that raises leaves the store as it was
  (``tests/integration/test_recovery.py``, ``tests/unit/test_record_limits.py``).
"""

from __future__ import annotations

from typing import Any

from faust.streams import current_event


async def put(table: Any, key: Any, value: Any, keep: Any = None) -> None:
    """``table[key] = value`` with the changelog record produced now, in this event's
    transaction (Faust's ``__setitem__`` defers it to a buffer an exactly-once commit does
    not flush). Call it from an agent, for the partition of the event being processed.

    ``keep``: what the local store holds instead of ``value`` (the changelog still gets
    ``value``, and recovery restores ``value``): a memory-store caller that keeps the live
    object itself need not hold its serialised copy too."""
    event = current_event()
    if event is None:
        raise RuntimeError("table writes belong to an agent processing an event")
    table._verify_source_topic_partitions(event.message.topic)  # as __setitem__ does
    # The record first: a send that fails (a record over the producer's max_request_size, a
    # producer gone) leaves the local store as it was, still agreeing with the caller's
    # state. Written locally first, a failed checkpoint left a token that the stage, restarted
    # by Faust, took for a forged snapshot: it started a resource afresh and stalled for good.
    await table.changelog_topic.send(
        key=key,
        value=value,
        partition=event.message.partition,
        key_serializer=table.key_serializer,
        value_serializer=table.value_serializer,
        callback=table._on_changelog_sent,
    )
    table.data[key] = value if keep is None else keep
    owners = getattr(table.data, "_key_partition", None)
    if owners is not None:
        # The memory store drops keys of partitions no longer assigned after a rebalance, but
        # only those it restored: record live writes too, or a key first written in a
        # transaction aborted by the rebalance would outlive it here.
        owners[key] = event.message.partition
