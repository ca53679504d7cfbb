"""Which broker a process uses: the external one ``PSO_BROKER`` names, else a new embedded one.

The one decision between `ExternalBroker` and `EmbeddedKafka`, from `app.settings.Settings`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.dev.broker.embedded import EmbeddedKafka
from app.dev.broker.external import ExternalBroker

if TYPE_CHECKING:
    from app.settings import Settings


def resolve_broker(settings: Settings) -> ExternalBroker | EmbeddedKafka:
    """Return the broker to use: an external one if configured, else an embedded one.

    ``settings.broker`` (``PSO_BROKER``) names the external broker; unset, or the value
    ``embedded`` (or ``auto`` / empty), asks for the embedded broker the settings describe
    (`EmbeddedKafka.from_settings`). The embedded broker is returned *not started*: use it
    as a context manager or call ``start()``.
    """
    value = settings.broker
    if value is None or value.strip().lower() in ("", "embedded", "auto"):
        return EmbeddedKafka.from_settings(settings)
    return ExternalBroker(value)
