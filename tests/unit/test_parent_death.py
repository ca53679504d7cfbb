"""`die_with_parent`: a child started through it ends when its parent is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import app.dev.parent_death
from app.dev.parent_death import EXIT_PARENT_GONE, die_with_parent
from tests.procs import read_proc, survivors

REPO = Path(__file__).resolve().parents[2]

# A parent that starts `sleep` through die_with_parent, says its pid, and waits to be killed.
PARENT = """
import subprocess, sys, time
from app.dev.parent_death import die_with_parent
child = subprocess.Popen(die_with_parent(["sleep", "300"]), start_new_session=True)
print(child.pid, flush=True)
time.sleep(300)
"""


def test_child_ends_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    child = None
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        deadline = time.monotonic() + 30  # the prefix execs into `sleep`, keeping the pid
        while time.monotonic() < deadline:
            child = read_proc(pid)
            if child is None or child.cmdline == "sleep 300":
                break
            time.sleep(0.01)
        assert child is not None and child.cmdline == "sleep 300", child
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        assert survivors([child], timeout_s=30) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
        if child is not None and survivors([child], timeout_s=0):
            os.kill(child.pid, signal.SIGKILL)


def test_command_never_runs_when_the_parent_died_before_prctl(tmp_path: Path) -> None:
    """The race between fork and prctl: the parent named on the command line is gone."""
    marker = tmp_path / "ran"
    gone = 1 if os.getpid() != 1 else 2  # not our pid: as if our parent had died meanwhile
    cmd = die_with_parent([sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    assert cmd[4] == str(os.getpid())  # PARENT_PID is where the prefix puts it
    cmd[4] = str(gone)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == EXIT_PARENT_GONE, done
    assert not marker.exists()


def test_command_runs_when_the_parent_is_alive(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    cmd = die_with_parent([sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done
    assert marker.exists()


def test_no_prefix_off_the_main_thread() -> None:
    """The kernel signals when the forking *thread* ends: only the main thread lives as long."""
    result: list[list[str]] = []
    thread = threading.Thread(target=lambda: result.append(die_with_parent(["true"])))
    thread.start()
    thread.join()
    assert result == [["true"]]
    assert die_with_parent(["true"])[2:4] == ["-S", app.dev.parent_death.__file__]
