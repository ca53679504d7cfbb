"""Child processes that die with their parent, even when the parent is SIGKILLed.

Linux's ``PR_SET_PDEATHSIG`` makes the kernel signal a process when its parent dies; it is
kept across ``exec``. `die_with_parent` prefixes a command with this very file, run by a bare
interpreter (``-I -S``: standard library only, no site, a few ms): it sets the signal, then
checks that the parent it was forked from is still its parent, and execs the command, which
keeps the pid (pid files and process groups stay valid).

The check closes the race between fork and ``prctl``: a parent that died in between would
never send the signal, so the child exits instead of running orphaned.

The kernel signals on the death of the *thread* that forked the child, so the prefix is only
added on the main thread (whose end is the process's end); elsewhere, and on other systems,
the command is returned unchanged.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
EXIT_PARENT_GONE = 125  # the parent died before the child could run the command


def die_with_parent(cmd: Sequence[str], sig: int = signal.SIGTERM) -> list[str]:
    """``cmd`` prefixed so that the child gets ``sig`` when this process dies, however it dies."""
    if (
        not sys.platform.startswith("linux")
        or not sys.executable
        or threading.current_thread() is not threading.main_thread()
    ):
        return list(cmd)
    here = os.path.abspath(__file__)
    return [sys.executable, "-I", "-S", here, str(os.getpid()), str(int(sig)), "--", *cmd]


def _exec_with_parent_death(argv: Sequence[str]) -> None:
    """``PARENT_PID SIG -- CMD...``: set the parent-death signal, check the parent, exec CMD."""
    parent, sig, dashes, *cmd = argv
    if dashes != "--" or not cmd:
        sys.exit(f"usage: {__file__} PARENT_PID SIGNAL -- COMMAND [ARG...]")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        sys.exit(f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")
    if os.getppid() != int(parent):
        os._exit(EXIT_PARENT_GONE)  # the parent died before prctl: nobody would signal us
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    _exec_with_parent_death(sys.argv[1:])
