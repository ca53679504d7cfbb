"""Output written whole or not at all, as ``sed -i`` does: the CSV tools' ``-o FILE``.

Rows go to a temporary file next to the target, which replaces it once every row was written
and synced, so a bad input row half-way leaves no partial output and an earlier file intact,
and ``-o`` may name the input itself. A shell's redirection (``/dev/stdout``, ``/dev/fd/3``)
is written as the rows come.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["names_a_descriptor", "written_whole"]


def names_a_descriptor(target: Path) -> bool:
    """Whether ``target`` leads to a process's descriptor (``/dev/stdout``, ``/dev/fd/3``,
    a link to them): its file is a shell's redirection, which must be written, not replaced."""
    path = os.path.abspath(target)
    for _ in range(40):  # the kernel's own limit on a chain of links
        path = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        if path.startswith("/proc/"):
            return True
        if not os.path.islink(path):
            return False
        path = os.path.normpath(os.path.join(os.path.dirname(path), os.readlink(path)))
    return False


@contextlib.contextmanager
def written_whole(target: Path) -> Iterator[TextIO]:
    """``target`` opened for writing, whole or not at all.

    Rows go to a temporary file next to ``target``, which replaces it once every row was
    written and synced: a bad row half-way leaves no partial output and an earlier ``target``
    intact, and ``-o`` may name the input itself. A symlink's file is replaced, not the link;
    a hard link to the old file keeps the old rows (as with ``sed -i``). Written as the rows
    come instead: a device, a pipe or a descriptor (``/dev/stdout``, ``/dev/fd/3``), appended
    so a ``>> log`` redirection keeps what the log held; and a writable file in a directory
    this process may not create files in.
    """
    if names_a_descriptor(target) or (target.exists() and not target.is_file()):
        with target.open("a", newline="") as fh:
            yield fh
        return
    real = Path(os.path.realpath(target))
    if real.is_symlink():  # a loop of links
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(target))
    if real.exists() and not os.access(real, os.W_OK):  # what open(target, "w") would say
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target))
    try:
        fd, tmp = tempfile.mkstemp(dir=real.parent, prefix=".pso-", suffix=".part")
    except PermissionError:
        if not real.exists():
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target)) from None
        with target.open("w", newline="") as fh:  # the file is writable, its directory not
            yield fh
        return
    except OSError as exc:  # reported on the path the user named, not on the temporary one
        raise type(exc)(exc.errno, exc.strerror, str(target)) from None
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _new_file_mode(real))
        os.replace(tmp, real)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _new_file_mode(target: Path) -> int:
    """The mode ``open(target, "w")`` would leave: the old file's, else 0o666 less the umask."""
    with contextlib.suppress(OSError):
        return target.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
