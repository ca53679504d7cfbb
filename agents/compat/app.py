"""The Faust app PSO runs: the aiokafka transport with PSO's transaction manager and
consumer, and the table manager with seek-first recovery (see `agents.compat`)."""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers.aiokafka import Transport

from agents.compat.consumer import PsoConsumer
from agents.compat.recovery import PsoTableManager
from agents.compat.transactions import SourceTransactionManager


class PsoTransport(Transport):
    """The aiokafka transport with `SourceTransactionManager` and `PsoConsumer`."""

    TransactionManager = SourceTransactionManager
    Consumer = PsoConsumer


class PsoApp(faust.App):
    """A Faust app on `PsoTransport` with `PsoTableManager`.

    ``fetch_max_wait_ms``: Faust hard-codes 1500 ms. aiokafka keeps one fetch in flight per
    broker, made of the partitions with nothing buffered; when only quiet ones are in it (the
    changelogs a worker holds, standbys), every busy partition waits for it to come back.
    ``commit_pause_ratio``: see `PsoConsumer._commit_handler` (1.0: a pause as long as the
    commit; `agents.app.build_app` passes 3.0).
    """

    def __init__(
        self,
        id: str,
        fetch_max_wait_ms: int = 1500,
        commit_pause_ratio: float = 1.0,
        **options: Any,
    ) -> None:
        options.setdefault("TableManager", PsoTableManager)
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.commit_pause_ratio = commit_pause_ratio
        super().__init__(id, **options)

    def _new_transport(self) -> Any:
        return PsoTransport(self.conf.broker_consumer, self)
