"""Authenticated snapshots of model state.

Model state is pickled (river models are plain Python objects), and pickle is code
execution for whoever controls the bytes. So every snapshot is sealed with
HMAC-SHA256 under a configured key, and `unseal` verifies the MAC *before* unpickling.
A topic or file anyone can write therefore cannot become code execution.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any

MAGIC = b"PSO1"
_MAC_LEN = 32


class SnapshotRejected(ValueError):
    """The snapshot bytes are not authentic (wrong key, tampered, or not a snapshot)."""


def _key_bytes(key: str | bytes) -> bytes:
    raw = key.encode() if isinstance(key, str) else key
    if len(raw) < 16:
        raise ValueError("snapshot key must be at least 16 bytes")
    return raw


def seal(obj: Any, key: str | bytes) -> bytes:
    """Pickle `obj` and prefix it with a magic and an HMAC-SHA256 over the payload."""
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    mac = hmac.new(_key_bytes(key), MAGIC + payload, hashlib.sha256).digest()
    return MAGIC + mac + payload


def unseal(blob: bytes, key: str | bytes) -> Any:
    """Verify and unpickle a sealed snapshot; raise `SnapshotRejected` if the MAC fails."""
    if len(blob) < len(MAGIC) + _MAC_LEN or not blob.startswith(MAGIC):
        raise SnapshotRejected("not a PSO snapshot (bad magic or too short)")
    mac = blob[len(MAGIC) : len(MAGIC) + _MAC_LEN]
    payload = blob[len(MAGIC) + _MAC_LEN :]
    expected = hmac.new(_key_bytes(key), MAGIC + payload, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise SnapshotRejected("snapshot MAC does not verify: refusing to unpickle")
    return pickle.loads(payload)
