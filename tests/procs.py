"""Processes as /proc shows them, for tests that check nothing is left running (Linux)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Proc:
    """A process, identified by pid *and* start time: a recycled pid is another process."""

    pid: int
    ppid: int
    start: int  # clock ticks after boot (field 22 of /proc/PID/stat)
    state: str
    cmdline: str


def read_proc(pid: int) -> Proc | None:
    """The process ``pid`` now, or None when there is none."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
    fields = stat[stat.rindex(")") + 2 :].split()
    return Proc(
        pid=pid,
        ppid=int(fields[1]),
        start=int(fields[19]),
        state=fields[0],
        cmdline=raw.replace(b"\0", b" ").decode(errors="replace").strip(),
    )


def all_procs() -> list[Proc]:
    found = (read_proc(int(p.name)) for p in PROC.iterdir() if p.name.isdigit())
    return [p for p in found if p is not None]


def descendants(pid: int) -> list[Proc]:
    """Children of ``pid``, their children, and so on (a snapshot)."""
    procs = all_procs()
    found: list[Proc] = []
    parents = {pid}
    while True:
        new = [p for p in procs if p.ppid in parents and p not in found]
        if not new:
            return found
        found += new
        parents = {p.pid for p in new}


def running(proc: Proc) -> bool:
    """True while that very process exists and is not a zombie (dead, waiting to be reaped)."""
    now = read_proc(proc.pid)
    return now is not None and now.start == proc.start and now.state != "Z"


def survivors(procs: list[Proc], timeout_s: float) -> list[Proc]:
    """Wait up to ``timeout_s`` for ``procs`` to end; return those still running."""
    deadline = time.monotonic() + timeout_s
    alive = [p for p in procs if running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if running(p)]
    return alive
