"""Lines of a JSONL file of records, each held only if it is no longer than a bound.

Why: a file that is one endless line (a truncated dump, a binary file passed by mistake)
would otherwise be read whole into memory before any check could refuse it. Both readers of
record files, ``pso produce`` (`app.kafka.client`) and ``pso backtest --labels``
(`app.offline.backtest.labels`), read through this.

>>> import io
>>> list(bounded_lines(io.BytesIO(b"ab\\n" + b"x" * 50 + b"\\ncd"), longest=10))
[b'ab\\n', None, b'cd']
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["bounded_lines"]


def bounded_lines(fh: BinaryIO, longest: int) -> Iterator[bytes | None]:
    """The file's lines, None for one longer than ``longest`` bytes (its end of line aside):
    such a line is skipped in pieces, never held whole."""
    limit = longest + 2  # room for "\r\n"
    while line := fh.readline(limit):
        if len(line) < limit or line.endswith(b"\n"):
            yield line
            continue
        while (more := fh.readline(limit)) and not more.endswith(b"\n"):
            pass
        yield None
