"""What a process has used so far, read from ``/proc``: CPU seconds and resident memory.

Owns the two readings the bench takes of its worker subprocesses, of the broker and of itself:
user + system CPU seconds (`cpu_seconds`, so a rate can be told apart from a CPU share) and
VmRSS / VmHWM (`proc_memory`). Nothing here measures; it only reads counters.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (None if unknown)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MiB."""
    out: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) / 1024
    return out
