"""Parse-time checks of CLI arguments (typer callbacks).

A bad value fails while the command line is parsed, before the command opens a file or a
connection; `app.cli.main.main` shows it as one line, exit code 2.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import typer

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def check_topic(name: str | None) -> str | None:
    """A legal Kafka topic name (letters, digits, ``._-``; at most 249), before any network."""
    if name is not None and (not _TOPIC.match(name) or name in (".", "..")):
        raise typer.BadParameter(f"{name!r} is not a Kafka topic name (letters, digits, . _ -)")
    return name


def check_loglevel(level: str) -> str:
    """One of `LOG_LEVELS` (any case), lower-cased."""
    if level.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"{level!r} is not one of {', '.join(LOG_LEVELS)}")
    return level.lower()


def check_delimiter(text: str | None) -> str | None:
    """One character that splits cells (``tab`` names the tab), or None: the header tells.

    >>> check_delimiter(";"), check_delimiter("tab"), check_delimiter(None)
    (';', '\\t', None)
    """
    if text is None:
        return None
    delimiter = "\t" if text.lower() in ("tab", "\\t") else text
    if len(delimiter) != 1 or delimiter in '"\r\n' or delimiter.isalnum():
        raise typer.BadParameter(f"{text!r} is not a delimiter (one character, or 'tab')")
    return delimiter


def finite_between(
    low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> Callable[[float | None], float | None]:
    """A callback accepting finite numbers in ``low..high`` (``*_open``: that bound excluded).

    Click parses ``nan`` and ``inf`` as floats; a range check alone lets ``nan`` through.
    """
    left, right = "(" if low_open else "[", ")" if high_open else "]"

    def check(value: float | None) -> float | None:
        if value is None:
            return None
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (math.isfinite(value) and above and below):
            raise typer.BadParameter(f"{value!r} is not in {left}{low:g}, {high:g}{right}")
        return value

    return check
