"""The base of every error PSO raises on purpose, and the exit codes they carry.

Plain Python, in the core so that the core's own errors (`SnapshotRejected`) share the base
with the rest of PSO; `app.errors` re-exports it for everyone outside the core. The CLI shows
a `PsoError` as one line on stderr and exits with its `exit_code`; anything else that escapes
a command is a bug and keeps its traceback.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    """What a failed run tells the shell."""

    #: The user's input, configuration or argument is wrong, or the broker they named does
    #: not answer: running the same command again fails the same way until they fix it.
    USER_ERROR = 2
    #: The run failed on its way (a replay that stalled...): nothing the user gave is wrong,
    #: and a restart may succeed.
    RUNTIME_FAILURE = 3


class PsoError(Exception):
    """Base of the errors PSO raises on purpose: the message is one readable line.

    Subclasses keep their builtin base too (``class ConfigError(PsoError, ValueError)``) and
    say with `exit_code` what the failure means (`ExitCode`).
    """

    exit_code: ClassVar[int] = ExitCode.USER_ERROR
