"""Sealed snapshots: refused unless MAC, key and context all match, and never unpickled then."""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any

import pytest

from app.core.snapshot import SnapshotRejected, seal, unseal

KEY = b"snapshot-test-key-0123456789abcdef"
WHERE = ("pso/subsystem-models-v3-60s-h15", "billing-api")

#: What a forged payload did when unpickled: the code execution a forger is after.
UNPICKLED: list[str] = []


def _trip(tag: str) -> str:
    UNPICKLED.append(tag)
    return tag


class Tripwire:
    """Unpickling it runs `_trip`, as a forged pickle would run the forger's code."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _trip, ("tripped",)


def test_round_trip_where_it_was_sealed() -> None:
    assert unseal(seal({"a": [1, 2]}, KEY, context=WHERE), KEY, context=WHERE) == {"a": [1, 2]}


def test_forged_blob_is_never_unpickled() -> None:
    UNPICKLED.clear()
    forged = seal(Tripwire(), b"f" * 32, context=WHERE)  # sealed by someone without the key
    with pytest.raises(SnapshotRejected):
        unseal(forged, KEY, context=WHERE)
    assert UNPICKLED == []
    # Control: the tripwire does fire when its blob is authentic.
    assert unseal(seal(Tripwire(), KEY, context=WHERE), KEY, context=WHERE) == "tripped"
    assert UNPICKLED == ["tripped"]


@pytest.mark.parametrize(
    "elsewhere",
    [
        (WHERE[0], "reporting"),  # another entry of the same table
        ("pso/resource-models-v3-60s-h15", WHERE[1]),  # the same name in another table
        ("pso/subsystem-models-v3-60s-h15billing-", "api"),  # the same bytes, split elsewhere
        (WHERE[0],),
        (),
    ],
)
def test_blob_moved_elsewhere_is_refused(elsewhere: tuple[str, ...]) -> None:
    blob = seal("state", KEY, context=WHERE)
    with pytest.raises(SnapshotRejected, match="does not verify"):
        unseal(blob, KEY, context=elsewhere)


def test_rotation_first_key_seals_every_key_verifies() -> None:
    old, new, unknown = b"o" * 32, b"n" * 32, b"u" * 32
    assert unseal(seal("by old", old, context=WHERE), [new, old], context=WHERE) == "by old"
    assert unseal(seal("by new", new, context=WHERE), [new, old], context=WHERE) == "by new"
    with pytest.raises(SnapshotRejected):
        unseal(seal("by another", unknown, context=WHERE), [new, old], context=WHERE)


def test_previous_format_is_refused() -> None:
    payload = pickle.dumps("state")
    pso1 = b"PSO1" + hmac.new(KEY, b"PSO1" + payload, hashlib.sha256).digest() + payload
    with pytest.raises(SnapshotRejected, match="no longer read"):
        unseal(pso1, KEY, context=WHERE)
    with pytest.raises(SnapshotRejected, match="bad magic"):
        unseal(payload, KEY, context=WHERE)


def test_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        seal("state", b"k" * 31, context=WHERE)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        unseal(seal("state", KEY, context=WHERE), [KEY, b"short"], context=WHERE)
