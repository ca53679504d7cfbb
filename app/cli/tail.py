"""`pso tail`: print a topic's messages as they arrive."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import orjson
import typer
from rich.console import Console

from app.cli.args import check_topic, finite_between
from app.cli.common import bootstrap_for, settings
from app.settings import Settings


def tail(
    topic: Annotated[
        str, typer.Argument(help="topic to read, e.g. pso.load", callback=check_topic)
    ],
    as_json: Annotated[bool, typer.Option("--json", help="one raw JSON value per line")] = False,
    from_beginning: Annotated[bool, typer.Option(help="start at the earliest offset")] = True,
    max_messages: Annotated[int | None, typer.Option("--max", min=1, help="stop after N")] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            help="stop after N idle seconds", callback=finite_between(0, 1e9, low_open=True)
        ),
    ] = None,
) -> None:
    """Print messages of a topic as they arrive."""
    s = settings()
    asyncio.run(
        _tail(s, bootstrap_for(s), topic, as_json, from_beginning, max_messages, idle_timeout)
    )


async def _tail(
    s: Settings,
    bootstrap: str,
    topic: str,
    as_json: bool,
    from_beginning: bool,
    max_messages: int | None,
    idle_timeout: float | None,
) -> None:
    from app.kafka.connection import start_consumer

    console = Console()
    consumer = await start_consumer(
        s, bootstrap, topic, auto_offset_reset="earliest" if from_beginning else "latest"
    )
    seen = 0
    idle = 0.0
    try:
        while max_messages is None or seen < max_messages:
            batches = await consumer.getmany(timeout_ms=500)
            if not batches:
                idle += 0.5
                if idle_timeout is not None and idle >= idle_timeout:
                    return
                continue
            idle = 0.0
            for _tp, records in sorted(batches.items(), key=lambda kv: kv[0].partition):
                for rec in records:
                    seen += 1
                    value = rec.value or b""
                    if as_json:
                        sys.stdout.write(value.decode("utf-8", "replace") + "\n")
                    else:
                        key = rec.key.decode("utf-8", "replace") if rec.key else "-"
                        console.print(
                            f"[dim]{rec.partition}:{rec.offset}[/] [bold]{key}[/] ", end=""
                        )
                        console.print_json(value.decode("utf-8", "replace")) if _is_json(
                            value
                        ) else console.print(repr(value))
                    if max_messages is not None and seen >= max_messages:
                        return
            sys.stdout.flush()
    finally:
        await consumer.stop()


def _is_json(value: bytes) -> bool:
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return True
