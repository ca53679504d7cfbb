"""`pso replay`: re-publish a recorded time range of a topic to another topic."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from app.cli.args import check_topic
from app.cli.common import bootstrap_for, err_console, parse_time_ms, progress, settings
from app.errors import UsageError
from app.kafka.range import SEEK_MODES, SeekMode
from app.kafka.replay import parse_speed, replay


def replay_cmd(
    from_topic: Annotated[
        str, typer.Option("--from-topic", help="topic to read", callback=check_topic)
    ],
    to_topic: Annotated[
        str, typer.Option("--to-topic", help="topic to publish to", callback=check_topic)
    ],
    start: Annotated[
        str | None,
        typer.Option("--from", help="first record time, RFC 3339 or epoch ms (inclusive)"),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--to", help="end record time, RFC 3339 or epoch ms (exclusive)"),
    ] = None,
    speed: Annotated[
        str, typer.Option(help="10x: timestamp gaps / 10 of wall time; max: no pacing")
    ] = "max",
    seek: Annotated[
        str,
        typer.Option(help="offsets: broker timestamp lookup; scan: read from the beginning"),
    ] = "offsets",
) -> None:
    """Re-publish a recorded time range: same keys, values, headers and record timestamps."""
    try:
        factor = parse_speed(speed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if seek not in SEEK_MODES:
        raise UsageError(f"bad seek {seek!r} (use {' or '.join(SEEK_MODES)})")
    start_ms = parse_time_ms(start) if start is not None else None
    end_ms = parse_time_ms(end) if end is not None else None
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        raise UsageError(f"empty range: --from {start} is not before --to {end}")
    if from_topic == to_topic:
        raise UsageError("--from-topic and --to-topic must differ")
    s = settings()
    bootstrap = bootstrap_for(s)
    mode: SeekMode = "scan" if seek == "scan" else "offsets"
    with progress() as bar:
        task = bar.add_task(f"replay {from_topic} -> {to_topic}", total=None)

        def advance(sent: int, scanned: int, planned: int) -> None:
            bar.update(task, completed=scanned, total=planned)

        result = asyncio.run(  # TopicNotFound is a PsoError: one line, exit 2
            replay(s, bootstrap, from_topic, to_topic, start_ms, end_ms, factor, mode, advance)
        )
    err_console.print(
        f"replayed {result.sent} of {result.scanned} records scanned "
        f"({result.partitioning} partitions) {from_topic} -> {to_topic}"
    )
    if result.abandoned:
        err_console.print(
            f"[yellow]partitions {list(result.abandoned)} stopped short of their end offset"
        )
