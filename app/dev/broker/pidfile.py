"""The broker's pid file (``data_dir/broker.pid``) and stopping a broker from any process.

The file records the child's pid with a token from its command line (the server.properties
path or the listener URL); a pid is only taken for our broker, and only ever signalled, when
its live command line still contains that token, so a recycled pid is never killed. Brokers
run in their own session: signals go to the whole process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

PID_FILE: Final = "broker.pid"


def write_pidfile(data_dir: Path, info: Mapping[str, object]) -> None:
    """Record a started broker: ``pid`` (int), ``token`` (str) and whatever else helps."""
    (data_dir / PID_FILE).write_text(json.dumps(info) + "\n")


def remove_pidfile(data_dir: Path) -> None:
    """Delete the pid file if there is one."""
    with contextlib.suppress(OSError):
        (data_dir / PID_FILE).unlink()


def _proc_cmdline(pid: int) -> str | None:
    """Return the command line of ``pid`` or None when it is gone (or a zombie)."""
    proc = Path("/proc") / str(pid)
    if proc.exists():
        try:
            if ") Z" in (proc / "stat").read_text():
                return None
            return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return None
    if Path("/proc/self").exists():
        return None
    done = subprocess.run(
        ["ps", "-p", str(pid), "-o", "command="], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or None


def _read_pidfile(data_dir: Path) -> dict[str, object] | None:
    try:
        info = json.loads((data_dir / PID_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def live_broker_pid(data_dir: Path) -> int | None:
    """Return the pid recorded in ``data_dir`` if that process still is our broker."""
    info = _read_pidfile(data_dir)
    if info is None:
        return None
    pid = info["pid"]
    token = info.get("token")
    cmdline = _settled_cmdline(pid) if isinstance(pid, int) else None
    if cmdline is None or not isinstance(token, str) or token not in cmdline:
        return None  # gone, or the pid was recycled by an unrelated process
    return pid if isinstance(pid, int) else None


def _settled_cmdline(pid: int, wait_s: float = 1.0) -> str | None:
    """The command line of ``pid``, waiting out the empty one a process shows mid-exec.

    ``Popen`` returns once the child's exec has closed its file descriptors, but the kernel
    fills in the new command line a little later: until then /proc reads it as empty (measured:
    35 in 2,000 spawns idle, nearly all under CPU load). A broker stopped right after it was
    started would then look like a recycled pid and be left running.
    """
    deadline = time.monotonic() + wait_s
    cmdline = _proc_cmdline(pid)
    while cmdline == "" and time.monotonic() < deadline:
        time.sleep(0.01)
        cmdline = _proc_cmdline(pid)
    return cmdline


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _proc_cmdline(pid) is None:
            return True
        time.sleep(0.05)
    return _proc_cmdline(pid) is None


def stop_pidfile(data_dir: Path, timeout_s: float = 15.0) -> bool:
    """Stop the broker recorded in ``data_dir/broker.pid``, from any process.

    The pid is only signalled when its command line still contains the token recorded at
    start (server.properties path or listener URL), so a recycled pid is never killed.
    SIGTERM to the process group, then SIGKILL after ``timeout_s``.

    Returns
    -------
    bool
        True when a running broker was stopped; False when there was none.
    """
    pid = live_broker_pid(data_dir)
    if pid is None:
        remove_pidfile(data_dir)
        return False
    signal_group(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout_s):
        signal_group(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)
    remove_pidfile(data_dir)
    return True


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group led by ``pid`` (our brokers run in their own session)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
