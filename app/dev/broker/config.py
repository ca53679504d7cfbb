"""What the embedded Kafka is told: ``server.properties``, its log4j2 config, a KRaft cluster
id, and the local ports its listeners bind.

Pure rendering (strings in, strings out) plus the port probes, so all of it is testable
without a JVM. The data-dir file names the broker reads its config from live here too;
`app.dev.broker.embedded` writes the files and starts the process.
"""

from __future__ import annotations

import base64
import socket
import uuid
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Final

from app.dev.broker.errors import BrokerError

#: The embedded broker listens on loopback only.
HOST: Final = "127.0.0.1"

SERVER_PROPERTIES: Final = "server.properties"
LOG4J2_PROPERTIES: Final = "log4j2.properties"
KRAFT_DIR: Final = "kraft-logs"


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
    lines = ["# Rendered by app/dev/broker for PSO's embedded single-node Kafka (KRaft)."]
    lines += [f"{key}={value}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def render_log4j2(level: str = "INFO") -> str:
    """Render a log4j2 config that prints to stdout, which the broker's launcher sends to a file.

    One stream (stdout + stderr of the JVM into ``server.log``) keeps crash output and broker
    log lines in order in a single place, and keeps the caller's terminal quiet.
    """
    return (
        "# Rendered by app/dev/broker: stdout of the JVM is redirected to server.log.\n"
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
