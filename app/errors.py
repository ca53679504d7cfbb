"""Errors a user can cause, shown by the CLI as one line (exit code 2).

In a module of their own so that ``python -m app.cli`` (where the CLI module is ``__main__``)
and the modules that raise them share one class.
"""


class UsageError(Exception):
    """A user-facing error: printed as one line, exit code 2."""
