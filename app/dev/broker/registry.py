"""The running-broker registry: ``CACHE/embedded-broker.json`` names the `pso broker` that runs
in the foreground on this machine (bootstrap and pid), so ``pso produce``/``tail``/``worker``
find it without ``PSO_BROKER``.

`app.dev.broker.foreground.run_foreground` writes and removes the entry; `running_embedded`
reads it and believes it only while the pid lives and the port accepts connections. The
cache root is ``PSO_CACHE_DIR`` (`Settings.cache_dir`), passed in by the callers.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Final

from app.dev.broker.config import port_accepts
from app.dev.broker.jars import cache_root

REGISTRY_FILE: Final = "embedded-broker.json"


def registry_path(cache_dir: Path | None = None) -> Path:
    """Where the entry lives: ``cache_dir`` (default `cache_root`) / ``embedded-broker.json``."""
    return cache_root(cache_dir) / REGISTRY_FILE


def register(bootstrap: str, pid: int | None, cache_dir: Path | None = None) -> None:
    """Record the foreground broker (replacing any earlier entry)."""
    path = registry_path(cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"bootstrap": bootstrap, "pid": pid}))


def unregister(cache_dir: Path | None = None) -> None:
    """Remove the entry if there is one."""
    with contextlib.suppress(OSError):
        registry_path(cache_dir).unlink()


def running_embedded(cache_dir: Path | None = None) -> str | None:
    """Bootstrap address of a `pso broker` running on this machine, if its pid is alive.

    Lets ``pso produce``/``pso tail``/``pso worker`` find the foreground broker without
    ``PSO_BROKER``.
    """
    try:
        info = json.loads(registry_path(cache_dir).read_text())
        pid, bootstrap = int(info["pid"]), str(info["bootstrap"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    host, port = _host_port(bootstrap)
    return bootstrap if port_accepts(port, host) else None


def _host_port(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.rpartition(":")
    return host, int(port)
