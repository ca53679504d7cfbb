"""Checkpoint seals: timing each one inside the worker, and grouping them into bursts.

Owns `SealLog` (installed in the worker subprocess only: wraps
`agents.checkpoints.CheckpointedStates._checkpoint` and the ``seal`` it calls, one JSON line per
call) and what the bench makes of those lines: `Burst` (a run of one table's seals each starting
within `SEAL_BURST_GAP_S` of the previous one's end), `seal_bursts`, and `checkpoint_summary`,
the ``checkpoints`` block every worker phase reports (keys sealed per table, failures, bursts).
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .figures import pct


class SealLog:
    """Times every checkpoint a PSO worker writes, in the bench's worker subprocess only.

    Wraps `agents.checkpoints.CheckpointedStates._checkpoint` (seal, then the table write that
    hands the bytes to the changelog producer) and the ``seal`` it calls (pickle + HMAC). Each
    call is one JSON line in ``path``: table, key, ``state`` (false for a birth record: no
    object yet), wall-clock entry and return (``time.time()``, comparable with the bench's
    stamps), seconds in pickle + HMAC, sealed bytes, and ``error`` if the call raised. Lines
    are written by the stats thread, not on the event loop.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        self._written = 0
        self._lock = threading.Lock()

    def install(self) -> None:
        import contextvars

        import agents.checkpoints as checkpoints
        from app.core.snapshot import seal  # what agents.checkpoints calls

        checkpoint = checkpoints.CheckpointedStates._checkpoint
        # The seal's seconds and bytes, per task: agents seal concurrently, each in its task.
        last: contextvars.ContextVar[tuple[float, int]] = contextvars.ContextVar("last_seal")
        records = self.records

        def timed_seal(obj: Any, key: str | bytes, **kwargs: Any) -> bytes:
            started = time.perf_counter()
            blob = seal(obj, key, **kwargs)
            last.set((time.perf_counter() - started, len(blob)))
            return blob

        async def timed_checkpoint(
            self: checkpoints.CheckpointedStates, name: str, obj: Any, good_to: int
        ) -> Any:
            entered = time.time()
            last.set((0.0, 0))
            error: str | None = None
            try:
                return await checkpoint(self, name, obj, good_to)
            except BaseException as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
                raise
            finally:
                seal_s, size = last.get()
                records.append(
                    {
                        "table": str(getattr(self.table, "name", self.label)),
                        "key": name,
                        "state": obj is not None,
                        "t0": entered,
                        "t1": time.time(),
                        "seal_s": seal_s,
                        "bytes": size,
                        "error": error,
                    }
                )

        checkpoints.seal = timed_seal  # type: ignore[attr-defined]
        checkpoints.CheckpointedStates._checkpoint = timed_checkpoint  # type: ignore[method-assign]

    def flush(self) -> None:
        with self._lock:
            end = len(self.records)
            if end == self._written:
                return
            with self.path.open("ab") as out:
                for record in self.records[self._written : end]:
                    out.write(orjson.dumps(record) + b"\n")
            self._written = end


#: one table's seals closer than this (one's start after the previous one's end) are a burst
SEAL_BURST_GAP_S = 0.25


@dataclass(slots=True)
class Burst:
    """A run of one table's checkpoint seals (`SealLog` records), each starting within
    `SEAL_BURST_GAP_S` of the previous one's end. One agent writes each table and seals one
    key after another, so the seals of a burst never overlap."""

    table: str
    start: float
    end: float
    seals: int = 0
    bytes: int = 0
    seal_s: float = 0.0  # pickle + HMAC
    inside_s: float = 0.0  # inside `_checkpoint`: seal + handing the bytes to the producer

    @property
    def span_s(self) -> float:
        return self.end - self.start


def table_group(name: str) -> str:
    """``subsystem-models-v3-60s-h15`` -> ``subsystem-models``: the table without its version."""
    return name.rsplit("-v", 1)[0]


def is_seal(r: dict[str, Any], since: float, until: float) -> bool:
    """A checkpoint of state (not a birth record) that succeeded and began in the range."""
    return bool(r["state"]) and not r.get("error") and since <= r["t0"] < until


def seal_bursts(records: list[dict[str, Any]], since: float, until: float) -> list[Burst]:
    """Bursts of state seals that started in ``[since, until)``, per table, by start."""
    bursts: list[Burst] = []
    current: dict[str, Burst] = {}
    for r in sorted((r for r in records if is_seal(r, since, until)), key=lambda r: r["t0"]):
        group = table_group(r["table"])
        b = current.get(group)
        if b is None or r["t0"] - b.end > SEAL_BURST_GAP_S:
            b = current[group] = Burst(group, r["t0"], r["t1"])
            bursts.append(b)
        b.end = max(b.end, r["t1"])
        b.seals += 1
        b.bytes += r["bytes"]
        b.seal_s += r["seal_s"]
        b.inside_s += r["t1"] - r["t0"]
    return bursts


def checkpoint_summary(
    records: list[dict[str, Any]],
    since: float,
    until: float,
    keys: dict[str, int] | None = None,
) -> dict[str, Any]:
    """What a phase sealed: keys per table, failures, and every burst (seconds from ``since``).

    ``keys``: how many keys each table group has in the scenario, to say whether every one
    of them was sealed inside the phase. A burst's ``ms`` is the time its agent spent inside
    `_checkpoint` (sealing, and waiting to hand the bytes to the producer); ``span_ms`` is
    first entry -> last return, which also counts the agent's other work between seals."""
    inside = [r for r in records if is_seal(r, since, until)]
    failed = [r for r in records if r.get("error") and since <= r["t0"] < until]
    sealed: dict[str, set[str]] = {}
    for r in inside:
        sealed.setdefault(table_group(r["table"]), set()).add(r["key"])
    bursts = seal_bursts(records, since, until)

    def ms(values: list[float], q: float) -> float | None:
        value = pct(values, q)
        return None if value is None else round(value * 1000, 1)

    out: dict[str, Any] = {
        "keys_sealed": {k: len(v) for k, v in sorted(sealed.items())},
        "births": sum(1 for r in records if not r["state"] and since <= r["t0"] < until),
        "seals": len(inside),
        "failed": [
            {
                "table": table_group(r["table"]),
                "key": r["key"],
                "bytes": r["bytes"],
                "error": r["error"],
            }
            for r in failed
        ],
        "sealed_mb": round(sum(r["bytes"] for r in inside) / 2**20, 1),
        "seal_kb_p50": {
            k: round(
                statistics.median(r["bytes"] for r in inside if table_group(r["table"]) == k)
                / 1024,
                1,
            )
            for k in sorted(sealed)
        },
        "burst_ms": {
            "n": len(bursts),
            "p50": ms([b.inside_s for b in bursts], 0.5),
            "max": ms([b.inside_s for b in bursts], 1.0),
        },
        "burst_span_ms": {
            "p50": ms([b.span_s for b in bursts], 0.5),
            "max": ms([b.span_s for b in bursts], 1.0),
        },
        # [table, at_s, ms, span_ms, seals, MB, pickle + HMAC ms]
        "bursts": [
            [
                b.table,
                round(b.start - since, 2),
                round(b.inside_s * 1000, 1),
                round(b.span_s * 1000, 1),
                b.seals,
                round(b.bytes / 2**20, 1),
                round(b.seal_s * 1000, 1),
            ]
            for b in bursts
        ],
    }
    if keys is not None:
        out["every_key_sealed"] = not failed and all(
            len(sealed.get(k, ())) >= n for k, n in keys.items()
        )
    return out
