"""Where a subsystem's samples are windowed: its home partition of the telemetry topic.

A subsystem's windows must live in one place, or two workers would each close half of them.
Producers do not all partition alike, though: Java clients and aiokafka hash the key with
murmur2, librdkafka (kcat, collectd) with CRC32 by default, Go clients with FNV; unkeyed
producers (Telegraf's and OpenTelemetry's Kafka exporters by default) spread messages over
every partition, and one message may carry many subsystems. So a subsystem's *home* is fixed
by its name alone — murmur2, Kafka's default partitioner, so that the common producers need
nothing — and the worker that reads a sample elsewhere forwards it home: it produces a *copy*
(the samples, as parsed, in a JSON array) to the home partition of the telemetry topic
itself, inside the transaction that commits the original's offset. The telemetry partition
then stays the one ordered input of its subsystems' windows, so a rebuild replays the same
order, and a copy is windowed exactly once (its origin is recorded per subsystem: a copy made
twice, after a crash under at-least-once, is recognised).

A copy carries the header ``pso-copy-of: APP_ID TOPIC:PARTITION:OFFSET:CHUNK MAC``, the MAC an
HMAC-SHA256 under the snapshot key over that and the value (the first key makes it, any of
``PSO_SNAPSHOT_KEYS_PREVIOUS`` still verifies it, as for checkpoints), so nobody without the
key can pass a message off as a copy (a forged one is taken as an ordinary message). Copies of
another deployment sharing the topic are left to it. Other consumers of the topic can tell
copies by the header; `pso replay` leaves them out (a replay's worker makes its own).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from app.wire.codec import COPY_HEADER

_MAC_HEX = 32  # 128 bits of the HMAC: forging one takes the key
_HOMES_MAX = 1_000_000


@dataclass(frozen=True, slots=True)
class Origin:
    """The position of the message a copy was made from, and which chunk of it."""

    partition: int
    offset: int
    chunk: int = 0

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}:{self.chunk}"


#: Outcome of reading a record's headers: an authentic copy of ours, a copy of another
#: deployment's (to leave alone), or an ordinary message.
FOREIGN = "foreign"


def is_home(name: str, partition: int, partitions: int) -> bool:
    """Whether ``partition`` is the home of subsystem ``name`` (Kafka's default partitioner)."""
    return home_partition(name, partitions) == partition


def home_partition(name: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives the key ``name``."""
    return int(murmur2(name.encode()) & 0x7FFFFFFF) % partitions


class HomeRouter:
    """Home partitions of subsystems, and the copies that take samples home.

    ``partitions`` says how many partitions the telemetry topic has (asked once, when first
    needed: the consumer knows it by then).
    """

    def __init__(
        self, app_id: str, topic: str, keys: Sequence[bytes], partitions: Callable[[], int]
    ) -> None:
        self.app_id = app_id
        self.topic = topic
        self.keys = tuple(keys)
        self._partitions = partitions
        self._count = 0
        self._homes: dict[str, int] = {}

    @property
    def partitions(self) -> int:
        if not self._count:
            self._count = self._partitions()
        return self._count

    def home(self, name: str) -> int:
        home = self._homes.get(name)
        if home is None:
            if len(self._homes) >= _HOMES_MAX:
                self._homes.clear()
            home = self._homes[name] = home_partition(name, self.partitions)
        return home

    def _mac(self, label: bytes, value: bytes, key: bytes | None = None) -> str:
        key = self.keys[0] if key is None else key
        return hmac.new(key, label + b"\n" + value, hashlib.sha256).hexdigest()[:_MAC_HEX]

    def origin_of(self, headers: Sequence[tuple[str, bytes]] | None, value: bytes) -> Any:
        """The `Origin` of an authentic copy of ours, `FOREIGN` for another deployment's copy,
        None for an ordinary message (a forged copy header included)."""
        if not headers:
            return None
        for name, raw in headers:
            if name != COPY_HEADER:
                continue
            try:
                app_id, where, mac = raw.decode().split(" ")
                topic, partition, offset, chunk = where.split(":")
                origin = Origin(int(partition), int(offset), int(chunk))
            except (UnicodeDecodeError, ValueError):
                return None
            if app_id != self.app_id:
                return FOREIGN
            label = f"{app_id} {where}".encode()
            if topic != self.topic or not any(
                hmac.compare_digest(mac, self._mac(label, value, key)) for key in self.keys
            ):
                return None
            return origin
        return None

    def copies(
        self, partition: int, offset: int, forward: Sequence[tuple[str, Any]], max_bytes: int
    ) -> list[tuple[int, bytes | None, bytes, list[tuple[str, bytes]]]]:
        """The copies that take ``forward`` ((subsystem, element) in batch order, read at
        ``partition``:``offset``) home: (home partition, key, value, headers) each, one per
        home partition in partition order, split into chunks of at most ``max_bytes``."""
        by_home: dict[int, list[tuple[str, Any]]] = {}
        for item in forward:
            by_home.setdefault(self.home(item[0]), []).append(item)
        out: list[tuple[int, bytes | None, bytes, list[tuple[str, bytes]]]] = []
        for home in sorted(by_home):
            names = {name for name, _ in by_home[home]}
            key = next(iter(names)).encode() if len(names) == 1 else None
            parts = _chunks([element for _, element in by_home[home]], max_bytes)
            for chunk, part in enumerate(parts):
                label = f"{self.app_id} {self.topic}:{partition}:{offset}:{chunk}"
                header = f"{label} {self._mac(label.encode(), part)}".encode()
                out.append((home, key, part, [(COPY_HEADER, header)]))
        return out


def _chunks(elements: list[Any], max_bytes: int) -> list[bytes]:
    """``elements`` as JSON arrays of at most ``max_bytes`` each (a lone element that is
    larger still goes alone: it came in a message within the cap, and the copy's topic
    allows a margin above it)."""
    value = orjson.dumps(elements)
    if len(value) <= max_bytes or len(elements) == 1:
        return [value]
    half = len(elements) // 2
    return _chunks(elements[:half], max_bytes) + _chunks(elements[half:], max_bytes)
