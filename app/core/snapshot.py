"""Authenticated snapshots of model state.

Model state is pickled (river models are plain Python objects), and pickle is code
execution for whoever controls the bytes. So every snapshot is sealed with
HMAC-SHA256 under a configured key, and `unseal` verifies the MAC *before* unpickling.
A topic or file anyone can write therefore cannot become code execution.

The MAC also covers the snapshot's *context*: where it was written (a table and the entry's
name, say). A valid blob copied to another entry or another table is refused there, so one
subsystem's state can never be replayed as another's. Several keys may verify (a rotation:
the first one seals, the previous ones still verify what they sealed).
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from collections.abc import Sequence
from typing import Any

from app.core.errors import ExitCode, PsoError

#: Format version: bumped when what the MAC covers changes, so older blobs are refused.
MAGIC = b"PSO2"
#: HMAC-SHA256 keys shorter than this are refused (RFC 2104: at least the hash's length).
MIN_KEY_BYTES = 32
_MAC_LEN = 32

Key = str | bytes


class SnapshotRejected(PsoError, ValueError):
    """The snapshot bytes are not authentic (wrong key or context, tampered, or not a snapshot)."""

    exit_code = ExitCode.USER_ERROR


def key_bytes(key: Key) -> bytes:
    """A key as bytes (UTF-8 for text); refuses keys shorter than `MIN_KEY_BYTES`."""
    raw = key.encode() if isinstance(key, str) else key
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(f"snapshot key must be at least {MIN_KEY_BYTES} bytes")
    return raw


def _mac(key: bytes, context: Sequence[str], payload: bytes) -> bytes:
    """HMAC over magic, context and payload; each context part is length-prefixed, so no two
    different contexts (``("ab", "c")``, ``("a", "bc")``) give the same bytes."""
    mac = hmac.new(key, MAGIC, hashlib.sha256)
    mac.update(len(context).to_bytes(4, "big"))
    for part in context:
        raw = part.encode()
        mac.update(len(raw).to_bytes(4, "big") + raw)
    mac.update(payload)
    return mac.digest()


def seal(obj: Any, key: Key, *, context: Sequence[str]) -> bytes:
    """Pickle `obj` and prefix it with a magic and an HMAC-SHA256 over payload and context."""
    if isinstance(context, str):
        raise TypeError("context is a sequence of strings, not one string")
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return MAGIC + _mac(key_bytes(key), context, payload) + payload


def unseal(blob: bytes, keys: Key | Sequence[Key], *, context: Sequence[str]) -> Any:
    """Verify and unpickle a snapshot sealed under one of ``keys`` for this very ``context``;
    raise `SnapshotRejected` (before unpickling anything) otherwise."""
    if isinstance(context, str):
        raise TypeError("context is a sequence of strings, not one string")
    candidates = [key_bytes(k) for k in ([keys] if isinstance(keys, str | bytes) else keys)]
    if not candidates:
        raise ValueError("no snapshot key to verify with")
    if not blob.startswith(MAGIC):
        if blob[:3] == MAGIC[:3]:
            raise SnapshotRejected(f"snapshot format {blob[:4]!r} is no longer read")
        raise SnapshotRejected("not a PSO snapshot (bad magic)")
    if len(blob) < len(MAGIC) + _MAC_LEN:
        raise SnapshotRejected("not a PSO snapshot (too short)")
    mac = blob[len(MAGIC) : len(MAGIC) + _MAC_LEN]
    payload = blob[len(MAGIC) + _MAC_LEN :]
    if not any(hmac.compare_digest(mac, _mac(key, context, payload)) for key in candidates):
        raise SnapshotRejected(
            "snapshot MAC does not verify (other key, or written elsewhere): refusing to unpickle"
        )
    return pickle.loads(payload)
