"""The Kafka broker's jars: fetched once from Maven Central (``mvn dependency:copy-dependencies``
on ``deploy/kafka/pom.xml``) into a per-version folder of the cache, crash-safely.

Owns `KAFKA_VERSION`, the cache layout (``CACHE/kafka-VERSION/libs`` plus a completeness
marker) and `fetch_jars` (``pso broker fetch``, ``make setup``). The cache root is
``PSO_CACHE_DIR`` (`app.settings.Settings.cache_dir`), which the callers pass in; nothing
here reads the environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from app.dev.broker.errors import BrokerError

log = logging.getLogger(__name__)

KAFKA_VERSION: Final = "4.1.1"

#: The pom that lists the broker's jars (kafka_2.13 + a log4j2 backend).
DEFAULT_POM: Final = Path(__file__).resolve().parents[3] / "deploy" / "kafka" / "pom.xml"

#: The cache root when none is given: the default of `Settings.cache_dir`.
DEFAULT_CACHE_DIR: Final = Path("~/.cache/pso")

MARKER_FILE: Final = ".pso-complete.json"


def cache_root(cache_dir: Path | None = None) -> Path:
    """Return the cache root: ``cache_dir`` (``~`` expanded), or ``~/.cache/pso``."""
    return (cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()


class KafkaDistribution:
    """The Kafka broker jars, fetched once from Maven Central into a per-version cache folder.

    ``mvn dependency:copy-dependencies`` copies into a temporary sibling folder, a marker
    listing every jar and its size is written last, and only then is the folder renamed to
    ``libs``. An interrupted fetch therefore never leaves a folder that looks complete, and a
    ``libs`` folder without a valid marker (or with a missing/truncated jar) is fetched again.
    A file lock serialises concurrent fetches (two test sessions, CLI and tests).

    Parameters
    ----------
    version
        Kafka version (``-Dkafka.version`` for the pom); 3.9.x is the documented fallback.
    cache_dir
        Cache root (``Settings.cache_dir``); default `cache_root`. Jars land in
        ``cache_dir/kafka-VERSION/libs``.
    pom
        The fetch-only pom (default ``deploy/kafka/pom.xml``).
    mvn
        Maven executable name or path.
    timeout_s
        Upper bound for one Maven run.
    """

    def __init__(
        self,
        version: str = KAFKA_VERSION,
        cache_dir: Path | None = None,
        pom: Path = DEFAULT_POM,
        mvn: str = "mvn",
        timeout_s: float = 900.0,
    ) -> None:
        self.version = version
        self.cache_dir = cache_dir
        self.pom = pom
        self.mvn = mvn
        self.timeout_s = timeout_s

    @property
    def home(self) -> Path:
        """Folder for this Kafka version inside the cache root."""
        return cache_root(self.cache_dir) / f"kafka-{self.version}"

    @property
    def libs(self) -> Path:
        """Folder holding the jars (the broker's classpath is ``libs/*``)."""
        return self.home / "libs"

    @property
    def classpath(self) -> str:
        """Java classpath wildcard for the jars."""
        return str(self.libs / "*")

    def _pom_digest(self) -> str:
        try:
            return hashlib.sha256(self.pom.read_bytes()).hexdigest()
        except OSError as exc:
            raise BrokerError(f"Kafka pom not found at {self.pom}: {exc.strerror}") from exc

    def is_complete(self) -> bool:
        """Return True when ``libs`` holds every jar its marker lists, for the current pom."""
        try:
            marker = json.loads((self.libs / MARKER_FILE).read_text())
            jars: dict[str, int] = marker["jars"]
            if marker.get("kafka_version") != self.version or not jars:
                return False
            if marker.get("pom_sha256") != self._pom_digest():
                return False
            return all((self.libs / name).stat().st_size == size for name, size in jars.items())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False

    def ensure(self) -> Path:
        """Return the ``libs`` folder, fetching the jars first when it is missing or incomplete."""
        if self.is_complete():
            return self.libs
        self.home.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.home / ".fetch.lock"):
            if self.is_complete():  # another process fetched while we waited
                return self.libs
            self._fetch_locked()
        return self.libs

    def _fetch_locked(self) -> None:
        mvn = shutil.which(self.mvn)
        if mvn is None:
            raise BrokerError(
                f"'{self.mvn}' (Maven) not found: install Maven 3.8+ to fetch the Kafka "
                f"{self.version} jars, or set PSO_BROKER to an existing broker"
            )
        digest = self._pom_digest()
        for stale in self.home.glob(".libs-*"):  # left by an interrupted fetch
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".libs-", dir=self.home))
        try:
            self._run_maven(mvn, tmp)
            jars = {p.name: p.stat().st_size for p in sorted(tmp.glob("*.jar"))}
            main_jar = f"kafka_2.13-{self.version}.jar"
            if main_jar not in jars:
                raise BrokerError(f"Maven finished but {main_jar} is missing in {tmp}")
            marker = {"kafka_version": self.version, "pom_sha256": digest, "jars": jars}
            (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=1, sort_keys=True))
            tmp.chmod(0o755)  # mkdtemp makes it 0700; the cache may be shared
            if self.libs.exists():  # incomplete or stale: move aside, then delete
                aside = Path(tempfile.mkdtemp(prefix=".libs-old-", dir=self.home))
                os.replace(self.libs, aside / "libs")
                shutil.rmtree(aside, ignore_errors=True)
            os.replace(tmp, self.libs)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _run_maven(self, mvn: str, out_dir: Path) -> None:
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(self.pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={out_dir}",
            "-DincludeScope=runtime",
            f"-Dkafka.version={self.version}",
        ]
        log.info("fetching Kafka %s jars with Maven into %s", self.version, self.libs)
        try:
            done = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"Maven did not finish within {self.timeout_s:.0f} s") from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip().splitlines()
            errors = [ln for ln in output if "ERROR" in ln] or output or ["(no output)"]
            raise BrokerError(
                f"Maven failed to fetch the Kafka {self.version} jars (exit {done.returncode}): "
                + _strip_ansi(errors[0])[:300]
            )


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text).strip()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fetch_jars(cache_dir: Path | None = None) -> Path:
    """Fetch the Kafka jars into the cache (no-op when complete); return the ``libs`` folder.

    For ``pso broker fetch`` and ``make setup``; ``cache_dir`` is ``Settings.cache_dir``.
    """
    return KafkaDistribution(cache_dir=cache_dir).ensure()
