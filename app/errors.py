"""Errors a user can cause, shown by the CLI as one line with their exit code (2).

In a module of their own so that ``python -m app.cli`` (where the CLI module is ``__main__``)
and the modules that raise them share one class.
"""

from __future__ import annotations

import errno
from typing import ClassVar


class PsoError(Exception):
    """Base of the errors a user causes (bad argument, file, config): one line, `exit_code`.

    Anything else that escapes a command is a bug and keeps its traceback.
    """

    exit_code: ClassVar[int] = 2


class UsageError(PsoError):
    """A bad argument or option, worded for the command line."""


#: errno values that name a problem with a path the user gave (or the environment named),
#: not a bug: missing, not allowed, wrong kind of file, no room.
USER_PATH_ERRNOS: frozenset[int] = frozenset(
    {
        errno.ENOENT,
        errno.EACCES,
        errno.EPERM,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.EEXIST,
        errno.EROFS,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.ENAMETOOLONG,
        errno.ELOOP,
        errno.ETXTBSY,
    }
)


def path_error_message(exc: OSError) -> str | None:
    """``permission denied: /x`` for an `OSError` about a path; None for any other OSError."""
    if exc.filename is None or exc.errno not in USER_PATH_ERRNOS:
        return None
    what = (exc.strerror or "cannot use").lower()
    paths = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{what}: {paths}"
