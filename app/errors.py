"""PSO's error base for everyone outside the core, the CLI's usage error, and how an `OSError`
about a path reads as one line.

`PsoError` (with `ExitCode`) lives in `app.core.errors`, plain Python, so that the pure core's
errors derive from it too; it is re-exported here. Every exception class of ``app`` and
``agents`` derives from it (a test walks them); the CLI shows one as one line on stderr and
exits with its ``exit_code``. In a module of their own so that ``python -m app.cli`` (where
the CLI module is ``__main__``) and the modules that raise them share one class.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import ValidationError

from app.core.errors import ExitCode, PsoError

__all__ = [
    "USER_PATH_ERRNOS",
    "ExitCode",
    "PsoError",
    "UsageError",
    "path_error_message",
    "validation_error_line",
    "validation_reason",
]


class UsageError(PsoError):
    """A bad argument or option, worded for the command line."""

    exit_code: ClassVar[int] = ExitCode.USER_ERROR


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


def validation_error_line(err: Mapping[str, Any], root: str = "(root)") -> str:
    """One pydantic error (an item of ``exc.errors()``) as ``where: what``.

    ``where`` is the dotted field path (``root`` when the error is about the whole document);
    pydantic's ``Value error,`` prefix is dropped. Config errors, ``--set`` errors and dead
    letters all read this way.
    """
    where = ".".join(str(p) for p in err["loc"]) or root
    return f"{where}: {str(err['msg']).removeprefix('Value error, ')}"


def validation_reason(exc: ValidationError, root: str = "(root)") -> str:
    """The first error of a pydantic validation as one line (`validation_error_line`)."""
    return validation_error_line(exc.errors()[0], root)
