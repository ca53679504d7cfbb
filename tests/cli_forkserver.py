"""Run many ``python -m app.cli ...`` commands for tests without paying the import each time.

Importing the CLI takes seconds (numba, scipy, aiokafka); a table of sixty error cases would
spend minutes on it. This server imports everything once, then runs each command in a forked
child exactly as ``python -m app.cli`` would: the module runs as ``__main__`` with that
command line, in its own process, with its own environment, working directory, stdout and
stderr (files), and its real exit status. An exception that escapes is printed as the
interpreter prints it (a traceback) with exit status 1.

A case may ask for ``drop_privileges``: the child then gives up every capability before it
runs, so that a root test run gets the same ``PermissionError`` on a mode-000 file as any
user would (root is otherwise exempt from file permissions).

Protocol: one JSON request per line on stdin (``args``, ``env``, ``cwd``, ``drop_privileges``,
``timeout_s``), one JSON reply per line on stdout (``code``, ``stdout``, ``stderr``); a child
still running after ``timeout_s`` is killed with its process group (``code`` -9).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import runpy
import signal
import sys
import tempfile
import time
import traceback
from typing import Any

_CAP_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def drop_capabilities() -> None:
    """Clear this process's effective, permitted and inheritable capabilities (irreversible)."""
    if os.geteuid() != 0:
        return  # an unprivileged user has none that bypass file permissions
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()  # all zero: no capability at all
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def _child(request: dict[str, Any], out_fd: int, err_fd: int) -> int:
    """In the forked child: set up like a fresh ``python -m app.cli`` process and run it."""
    os.setpgid(0, 0)  # its own process group, which a timeout kills as a whole
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    for key in [k for k in os.environ if k.startswith("PSO_")]:
        del os.environ[key]
    os.environ.update(request.get("env", {}))
    os.chdir(request["cwd"])
    if request.get("drop_privileges"):
        drop_capabilities()
    sys.argv = ["app.cli", *request["args"]]
    # As in a fresh process, the CLI module is not imported yet: it runs as __main__, and the
    # commands that import ``app.cli`` get a second copy (only its dependencies are cached).
    sys.modules.pop("app.cli", None)
    code: int
    try:
        runpy.run_module("app.cli", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:  # as the interpreter treats it
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _wait(pid: int, timeout_s: float) -> int:
    """Wait for the child; past ``timeout_s`` kill its process group (a command that should
    have failed at once and runs on instead, e.g. a broker) and report that as -SIGKILL."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def run_one(request: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(request, out.fileno(), err.fileno())
            finally:
                os._exit(code)
        with contextlib.suppress(OSError):  # also here: no race with the child's own call
            os.setpgid(pid, pid)
        status = _wait(pid, float(request.get("timeout_s", 60.0)))
        out.seek(0)
        err.seek(0)
        return {
            "code": os.waitstatus_to_exitcode(status),
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace"),
        }


def serve() -> None:
    import app.cli.main  # noqa: F401  (the slow imports, once)

    for line in sys.stdin:
        reply = run_one(json.loads(line))
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
