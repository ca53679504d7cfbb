"""Finding a Java that can run the Kafka broker: the executable (explicit, ``JAVA_HOME``, or
PATH) and its major version (Kafka 4 needs 17+).

``JAVA_HOME`` reaches this module as an argument (`app.settings.Settings.java_home`); nothing
here reads the environment. Whether a missing Java means the Tansu fallback is decided by
`app.dev.broker.embedded.choose_kind`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Final

from app.dev.broker.errors import BrokerError

#: The oldest Java the Kafka broker runs on.
MIN_JAVA: Final = 17


def find_java(java: str | None = None, java_home: Path | None = None) -> str | None:
    """Return the java executable: explicit, then ``java_home/bin/java``, then PATH."""
    if java is not None:
        return shutil.which(java)
    if java_home is not None:
        candidate = java_home / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("java")


def parse_java_version(text: str) -> int:
    """Return the major version from ``java -version`` output (``1.8.0`` -> 8, ``17.0.2`` -> 17).

    Raises `BrokerError` when no version string is found.
    """
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if match is None:
        raise BrokerError(f"cannot read the Java version from {text.strip()[:80]!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        return int(match.group(2))
    return major


def java_major_version(java: str) -> int:
    """Run ``java -version`` and return the major version."""
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"cannot run '{java} -version': {exc}") from exc
    return parse_java_version(done.stderr + done.stdout)
