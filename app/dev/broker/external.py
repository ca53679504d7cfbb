"""A broker someone else runs (``PSO_BROKER``): `ExternalBroker`, with the same surface as
`app.dev.broker.embedded.EmbeddedKafka` but nothing to start or stop, and the validation of
its ``host:port[,host:port]`` address.
"""

from __future__ import annotations

from types import TracebackType
from typing import Final, Self

from app.dev.broker.errors import BrokerError


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
