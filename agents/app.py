"""The Faust application: configuration only. Agents live in their own modules.

`build_app` makes one `faust.App` from `Settings`; `pso worker` runs it. Output topics carry
raw bytes that the core already serialised (``to_json``), so no Faust framing (``__faust``)
ever reaches a consumer.
"""

from __future__ import annotations

from typing import Any

import faust

from agents.compat import PsoApp, check_versions
from app.kafka.topics import size_limits
from app.settings import Settings


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials for the configured TLS/SASL settings (None for PLAINTEXT)."""
    ssl_context = None
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        ssl_context = create_ssl_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
            certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        )
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value() if settings.sasl_password else None,
            mechanism=settings.sasl_mechanism or "PLAIN",
            ssl_context=ssl_context,
        )
    if ssl_context is not None:
        return faust.SSLCredentials(ssl_context)
    return None


def producer_linger_ms(settings: Settings) -> int:
    """How long records wait to be batched. Under exactly-once a commit sends whatever waits
    (aiokafka flushes a transaction's batches when it commits), so records may wait the
    whole commit interval at no cost in latency: one produce request per partition per commit
    instead of one every 5 ms. Under at-least-once a commit only waits for them: keep 5 ms."""
    if settings.processing_guarantee == "exactly_once":
        return max(5, int(settings.commit_interval_s * 1000))
    return 5


def build_app(settings: Settings, bootstrap: str, **overrides: Any) -> faust.App:
    """A configured Faust app with PSO's agents registered on it."""
    check_versions()  # the fixes in agents/compat hold for the versions they were tested on
    brokers = ";".join(f"kafka://{b.strip()}" for b in bootstrap.split(","))
    options: dict[str, Any] = {
        "broker": brokers,
        "broker_credentials": broker_credentials(settings),
        "store": settings.store,
        "processing_guarantee": settings.processing_guarantee,
        "topic_partitions": settings.topic_policy.partitions,
        "topic_replication_factor": settings.topic_policy.replication,
        "topic_allow_declare": True,
        "consumer_auto_offset_reset": "earliest",
        "datadir": str(settings.data_dir / settings.app_id),
        "web_enabled": False,
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": min(
            settings.heartbeat_interval_s, settings.session_timeout_s / 3
        ),
        "producer_linger_ms": producer_linger_ms(settings),
        "producer_max_batch_size": 256 * 1024,  # Faust's 16 KB is two forecasts
        # Room for a dead letter of a message at the input cap (Faust's 1 MB would refuse it).
        "producer_max_request_size": size_limits(settings)["request"],
        # Up to 4 MB per partition per fetch, not Faust's 1 MB: fewer round trips through the
        # consumer thread (live bench, two pairs: ingest +15 %, end to end +6 %).
        "consumer_max_fetch_size": 4 * 1024 * 1024,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "broker_commit_interval": settings.commit_interval_s,
        # Catching up, a worker pauses after a commit up to 3x as long as it took (agents wait
        # while a transaction commits); the live bench measured 1x slower, 6x no better.
        "commit_pause_ratio": 3.0,
    }
    options.update(overrides)
    app = PsoApp(settings.app_id, **options)  # exactly-once fixes: agents/compat
    from agents.health import register_health
    from agents.ingest import register_ingest
    from agents.predict import register_predict

    register_health(app, settings)
    register_ingest(app, settings)
    register_predict(app, settings)
    return app
