"""`pso demo`: broker, topics, a worker and the simulator, with a live view."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.args import finite_between
from app.cli.common import settings


def demo(
    duration: Annotated[
        float,
        typer.Option(
            help="stop after N seconds (0 = until Ctrl-C)", callback=finite_between(0, 1e9)
        ),
    ] = 0,
    subsystems: Annotated[int, typer.Option(min=1, max=10_000, help="simulated subsystems")] = 8,
    speed: Annotated[
        float,
        typer.Option(
            help="event time runs this many times faster",
            callback=finite_between(0, 1e6, low_open=True),
        ),
    ] = 60.0,
) -> None:
    """Embedded broker + topics + one worker + the simulator, with a live view of load windows."""
    from app.dev.demo import run_demo

    code = run_demo(settings(), duration_s=duration, subsystems=subsystems, speed=speed)
    raise typer.Exit(code)
