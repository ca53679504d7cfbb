"""``pso broker``: an embedded broker in the foreground until Ctrl-C or SIGTERM, announced in
the running-broker registry while it runs.

The one long-lived use of `EmbeddedKafka`; prints the bootstrap address alone on stdout (so a
script can read it) and everything else on stderr.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from app.dev.broker.embedded import EmbeddedKafka
from app.dev.broker.errors import BrokerError, with_tail
from app.dev.broker.registry import register, unregister

if TYPE_CHECKING:
    from app.settings import Settings


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_foreground(
    settings: Settings, port: int | None = None, data_dir: Path | None = None
) -> None:
    """Run an embedded broker until Ctrl-C or SIGTERM (``pso broker``).

    The broker is the one ``settings`` ask for (`EmbeddedKafka.from_settings`); the registry
    entry goes to its cache root. Prints the bootstrap address alone on stdout (scriptable)
    and details on stderr. Raises `BrokerError` if the broker dies on its own.
    """
    broker = EmbeddedKafka.from_settings(settings, port=port, data_dir=data_dir)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
    try:
        broker.start()
        register(broker.bootstrap, broker.pid, settings.cache_dir)
        print(broker.bootstrap, flush=True)
        print(
            f"pso broker: {broker.kind} ready in {broker.ready_seconds or 0:.1f} s, "
            f"pid {broker.pid}, log {broker.log_path}; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        code = broker.wait()
        raise BrokerError(
            with_tail(f"{broker.kind} broker exited on its own (code {code})", broker.log_path)
        )
    except KeyboardInterrupt:
        print("pso broker: stopping", file=sys.stderr, flush=True)
    finally:
        broker.stop()
        unregister(settings.cache_dir)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
