"""`pso topics create`: PSO's topics, idempotently, with the configured policy."""

from __future__ import annotations

import asyncio

import typer

from app.cli.common import bootstrap_for, err_console, settings

topics_cli = typer.Typer(help="PSO's Kafka topics.", no_args_is_help=True)


@topics_cli.command("create")
def topics_create() -> None:
    """Create PSO's topics (idempotent) with partitions, retention and compaction from settings."""
    s = settings()
    from app.kafka.topics import create_topics

    result = asyncio.run(create_topics(s, bootstrap_for(s)))
    for name, status in result.items():
        err_console.print(f"{status:8} {name}")
