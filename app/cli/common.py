"""What every command shares: settings, the broker to talk to, stderr, progress bars, and
the duration and time arguments."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app.errors import UsageError
from app.settings import Settings, load_settings

err_console = Console(stderr=True)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(text: str, option: str = "duration") -> int:
    """``90s``, ``5m``, ``2h``, ``1d``, ``1w`` (bare numbers are seconds) -> milliseconds (>= 1)."""
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f"{option}: bad duration {text!r} (use e.g. 30s, 5m, 2h, 1d, 1w)")
    number, unit = match.groups()
    ms = int(float(number) * _UNIT_MS[unit or "s"])
    if ms < 1:
        raise UsageError(f"{option}: {text!r} is not a duration (at least 1 ms)")
    return ms


_LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def parse_time_ms(text: str) -> int:
    """RFC 3339 (``2026-11-25T06:00:00Z``; naive = UTC) or epoch s/ms -> epoch ms.

    Kafka record timestamps are non-negative int64, and RFC 3339 ends with year 9999.
    """
    from app.offline.series_file import TimestampOutOfRange, parse_timestamp

    try:
        ms = parse_timestamp(text)
    except TimestampOutOfRange:
        ms = _LAST_MS + 1  # refused below, with the range
    except ValueError:
        raise UsageError(f"bad time {text!r} (use RFC 3339, e.g. 2026-11-25T06:00:00Z)") from None
    if not 0 <= ms <= _LAST_MS:
        raise UsageError(f"time {text!r} is outside 1970-01-01 .. 9999-12-31")
    return ms


def settings() -> Settings:
    return load_settings()


def bootstrap_for(s: Settings) -> str:
    """The broker to talk to: ``PSO_BROKER``, else a running embedded broker."""
    if s.broker:
        return s.broker
    from app.dev.broker import running_embedded

    found = running_embedded(s.cache_dir)
    if found is None:
        raise UsageError(
            "no Kafka broker: set PSO_BROKER=host:port, or start one with `pso broker`"
        )
    return found


@contextlib.contextmanager
def progress() -> Iterator[Progress]:
    """A progress bar on stderr that is wiped when the work fails: the error is the one line."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )
    with bar:
        try:
            yield bar
        except BaseException:
            bar.live.transient = True  # stop without drawing the bar (or its trailing newline)
            bar.live.stop()
            bar.disable = True
            raise
