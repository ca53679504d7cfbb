"""Run the Faust app as a worker process (what `pso worker` does)."""

from __future__ import annotations

import faust

from agents.app import build_app
from app.settings import Settings


def run_worker(settings: Settings, bootstrap: str, loglevel: str = "info") -> None:
    """Start a worker and block until it is stopped (SIGTERM / Ctrl-C)."""
    (settings.data_dir / settings.app_id).mkdir(parents=True, exist_ok=True)
    app = build_app(settings, bootstrap)
    worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False)
    # Faust's terminal spinner, on at --loglevel warning, sets the root logger to DEBUG, so
    # every aiokafka debug call builds a record: a measurable slowdown for nothing.
    worker.spinner = None
    worker.execute_from_commandline()
