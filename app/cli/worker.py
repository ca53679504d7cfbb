"""`pso worker`: a PSO worker (Faust) against ``PSO_BROKER`` or the running embedded broker."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.args import check_loglevel
from app.cli.common import bootstrap_for, settings
from app.errors import UsageError


def worker(
    loglevel: Annotated[
        str, typer.Option(help="debug, info, warning", callback=check_loglevel)
    ] = "info",
) -> None:
    """Run a PSO worker (Faust) against PSO_BROKER or the running embedded broker."""
    s = settings()
    s.policy()  # validate pso.yaml before starting anything
    if s.broker and s.uses_builtin_snapshot_key and not s.dev_mode:
        # Anyone who can write a changelog could seal a pickle with the public key.
        raise UsageError(
            "the built-in snapshot key is public, a worker on PSO_BROKER must not use it: set "
            "PSO_SNAPSHOT_KEY to a secret of 32+ bytes (and keep the built-in key out of "
            "PSO_SNAPSHOT_KEYS_PREVIOUS), or PSO_DEV_MODE=true on a development setup"
        )
    bootstrap = bootstrap_for(s)
    from agents.worker import run_worker

    run_worker(s, bootstrap, loglevel=loglevel)
