"""Offsets no longer stuck behind an aborted transaction.

Written against faust-streaming 0.15.3. Upstream code it replaces or wraps:

- the consumer's ``_read_offset`` mapping, read by ``Consumer._new_offset``:
  https://github.com/faust-streaming/faust/blob/v0.15.3/faust/transport/consumer.py

* **Offsets stuck behind an aborted transaction.** Faust records a gap in the offsets it is
  delivered (aborted records, transaction markers) only when the last offset it read tests
  true, so never after offset 0; and it will not commit past a gap it did not record. A
  partition whose first committed record sat at offset 0, followed by an aborted transaction
  (a SIGKILLed worker's), was never committed again, and the transaction it shared with
  other partitions stayed open, once those went quiet, until the broker aborted it with the
  outputs in it. `ReadOffsets` keeps offset 0 true (``tests/integration/test_offsets.py``).
"""

from __future__ import annotations

from collections import defaultdict

from faust.types import TP


class _ReadOffset(int):
    """An offset that is true even when it is 0."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return True


class ReadOffsets(defaultdict[TP, int | None]):
    """Faust's last-read offset per partition, stored so that offset 0 tests true.

    Faust records a gap in the offsets it is delivered (records of aborted transactions,
    transaction markers) only ``if gap > 1 and r_offset``: after reading offset 0 it never
    does, and since it will not commit past an unrecorded gap, the partition's offsets were
    never committed again. The transaction they share with other partitions then stays open
    once those go quiet, until the broker aborts it with every output in it.
    """

    def __init__(self) -> None:
        super().__init__(lambda: None)

    def __setitem__(self, tp: TP, offset: int | None) -> None:
        super().__setitem__(tp, None if offset is None else _ReadOffset(offset))
