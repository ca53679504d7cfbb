"""`pso broker`: the embedded Apache Kafka in the foreground; `pso broker fetch`: its jars."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import err_console, settings

broker_cli = typer.Typer(help="The embedded Apache Kafka broker.", invoke_without_command=True)


@broker_cli.callback()
def broker_main(
    ctx: typer.Context,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="listen port (default: a free one)")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(file_okay=False, help="log dir (default: a temp dir)")
    ] = None,
) -> None:
    """Run the embedded single-node Kafka (KRaft) in the foreground until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    from app.dev.broker import run_foreground

    run_foreground(settings(), port=port, data_dir=data_dir)


@broker_cli.command("fetch")
def broker_fetch() -> None:
    """Download the broker jars from Maven Central into the cache (idempotent)."""
    from app.dev.broker import fetch_jars

    path = fetch_jars(settings().cache_dir)
    err_console.print(f"kafka jars ready in {path}")
