"""Kafka connection plumbing shared by the CLI, the producer client and the demo.

Security settings (TLS, SASL) pass straight through from `Settings` to aiokafka. Connecting
retries a bounded number of times, then raises `BrokerUnreachable` with one readable line.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.helpers import create_ssl_context

from app.errors import ExitCode, PsoError
from app.settings import Settings


class BrokerUnreachable(PsoError, ConnectionError):
    """No Kafka broker answered at the configured address."""

    exit_code = ExitCode.USER_ERROR


def client_kwargs(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """aiokafka keyword arguments for ``bootstrap`` with the configured security."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": 15_000,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = create_ssl_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
            certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        )
    if settings.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism or "PLAIN"
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return kwargs


async def _start_with_retry(client: Any, bootstrap: str, attempts: int, delay_s: float) -> None:
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            await client.start()
            return
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            last = exc
            with contextlib.suppress(Exception):
                await client.stop()
            if attempt + 1 < attempts:
                await asyncio.sleep(delay_s)
    raise BrokerUnreachable(
        f"cannot reach Kafka at {bootstrap} after {attempts} attempts ({type(last).__name__})"
    )


async def start_producer(
    settings: Settings, bootstrap: str, attempts: int = 3, delay_s: float = 1.0, **extra: Any
) -> AIOKafkaProducer:
    """A started producer (linger 5 ms, lz4-free defaults that every broker accepts)."""
    producer = AIOKafkaProducer(
        **client_kwargs(settings, bootstrap), linger_ms=5, max_batch_size=512 * 1024, **extra
    )
    await _start_with_retry(producer, bootstrap, attempts, delay_s)
    return producer


async def start_consumer(
    settings: Settings,
    bootstrap: str,
    *topics: str,
    attempts: int = 3,
    delay_s: float = 1.0,
    **extra: Any,
) -> AIOKafkaConsumer:
    """A started consumer; without ``group_id`` it reads from the earliest offset.

    Reads committed records only: PSO's workers write inside Kafka transactions
    (exactly-once), and a consumer must not see what an aborted transaction wrote.
    """
    extra.setdefault("auto_offset_reset", "earliest")
    extra.setdefault("isolation_level", "read_committed")
    extra.setdefault("enable_auto_commit", False)
    consumer = AIOKafkaConsumer(*topics, **client_kwargs(settings, bootstrap), **extra)
    await _start_with_retry(consumer, bootstrap, attempts, delay_s)
    return consumer
