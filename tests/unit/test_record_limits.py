"""What a worker writes must fit in a Kafka record, and a write that fails must change nothing.

The live bench once stalled stage 2 for good: a resource checkpoint over the 1 MB a Kafka
record may be failed to send, but the local store already held its token; Faust restarted
the agent, which took that token for a forged snapshot and started the resource afresh.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from agents.compat import processing, put
from agents.stage1 import share_records
from app.core.engine import EngineConfig, SubsystemPredictor
from app.wire.records import decode_resource_record, encode_shares
from tests.unit.test_checkpoints import scenario


class _Message:
    topic = "pso-resource-shares"
    partition = 1


class _Event:
    message = _Message()


class _Changelog:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.sent: list[Any] = []

    async def send(self, **kwargs: Any) -> None:
        if self.fail:
            raise MessageSizeTooLargeError("The message is 1080228 bytes when serialized")
        self.sent.append(kwargs["value"])


class _Table:
    key_serializer = value_serializer = None

    def __init__(self, fail: bool) -> None:
        self.data: dict[str, Any] = {"db-main": b"checkpoint@10"}
        self.changelog_topic = _Changelog(fail)

    def _verify_source_topic_partitions(self, topic: str) -> None:
        return None

    def _on_changelog_sent(self, fut: Any) -> None:
        return None


def test_a_table_write_whose_record_is_not_sent_leaves_the_local_store_as_it_was() -> None:
    event = _Event()
    table = _Table(fail=True)
    with processing(event), pytest.raises(MessageSizeTooLargeError):
        asyncio.run(put(table, "db-main", b"PSO1" + b"x" * 100, keep=b"checkpoint@20"))
    assert table.data == {"db-main": b"checkpoint@10"}  # still what the live state matches
    table = _Table(fail=False)
    with processing(event):
        asyncio.run(put(table, "db-main", b"PSO1blob", keep=b"checkpoint@20"))
    assert table.data == {"db-main": b"checkpoint@20"}
    assert table.changelog_topic.sent == [b"PSO1blob"]


def test_a_batch_of_shares_goes_out_in_records_under_the_limit_in_order() -> None:
    policy, windows = scenario()
    config = EngineConfig.from_policy(policy.spec())
    predictors: dict[str, SubsystemPredictor] = {}
    shares = []
    for w in windows[:600]:
        predictor = predictors.setdefault(w.subsystem, SubsystemPredictor(w.subsystem, config, {}))
        shares += [s for s in predictor.process(w).shares if s.resource == "db-main"]
    whole = encode_shares("db-main", shares)
    limit = len(whole) // 5
    parts = share_records("db-main", shares, limit)
    assert len(parts) >= 5
    assert all(len(value) <= limit for _part, value in parts)
    assert [s for part, _value in parts for s in part] == shares
    assert [s for _part, value in parts for s in decode_resource_record(value)] == shares
    assert len(whole) > 512 * 1024  # the default limit splits it too
    default = share_records("db-main", shares)
    assert len(default) >= 2 and all(len(value) <= 512 * 1024 for _p, value in default)
    few = shares[:50]
    assert share_records("db-main", few) == [(few, encode_shares("db-main", few))]
