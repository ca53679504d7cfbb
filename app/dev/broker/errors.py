"""`BrokerError`, the one error of the broker package, and the log tail its message carries.

Every failure of fetching, starting, reaching or stopping a broker is a `BrokerError`: a
`PsoError` whose first line says what failed and what to do (the CLI shows it as one line,
exit code 2); a broker that died or never became ready adds the last lines of its log below
(`with_tail`). Imports nothing of the package, so every module of it may raise it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from app.errors import ExitCode, PsoError


class BrokerError(PsoError):
    """The broker could not be fetched, started, reached or stopped.

    The first line of the message says what failed and what to do; a broker that died or
    never became ready adds the last lines of its log below. Exit code 2: what fixes it is on
    the user's side (install java or Maven, free a port, point PSO_BROKER elsewhere).
    """

    exit_code: ClassVar[int] = ExitCode.USER_ERROR


def tail_lines(path: Path, n: int = 25) -> list[str]:
    """Return the last ``n`` lines of a text file (empty when it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-n:]


def with_tail(message: str, path: Path, n: int = 25) -> str:
    """``message`` followed by the last ``n`` lines of the log at ``path`` (if any)."""
    lines = tail_lines(path, n)
    if not lines:
        return message
    return message + f"\nlast {len(lines)} lines of {path}:\n" + "\n".join(lines)
