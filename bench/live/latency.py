"""Paced-phase latency: produce -> readable per event, by stage and around seal bursts.

Owns ``latency_ms`` and the ``latency`` block: for every forecast and conflict-topic event of
the paced phase, the time from its causing message handed to the producer (the cause comes
from the pure core, `Expected.cause`) to the event readable on a read_committed `Tail`; the
split at the window (produce -> window appended, window appended -> event readable); and the
split by whether an event's interval overlaps a checkpoint seal `Burst`.
"""

from __future__ import annotations

from typing import Any

from app.settings import TopicNames

from .figures import summary_ms
from .scenario import Expected
from .seals import Burst
from .tail import Tail


def latencies(
    load_u: Tail, events: Tail, topics: set[str], ids: set[str], users: dict[str, list[str]]
) -> dict[str, list[float]]:
    """Per event: arrival of the event − arrival (uncommitted) of the last window it needs."""
    closed: dict[tuple[str, int], float] = {}
    for _topic, key, ts, _eid, arrival in load_u.records:
        closed.setdefault((key, ts), arrival)
    out: dict[str, list[float]] = {"forecasts": [], "conflicts": []}
    done: set[str] = set()
    for topic, key, ts, eid, arrival in events.records:
        if topic not in topics or eid not in ids or eid in done:
            continue
        done.add(eid)
        needs = users.get(key, [key])
        times = [closed.get((name, ts)) for name in needs]
        if any(t is None for t in times):
            continue
        kind = "forecasts" if topic.endswith(".forecasts") else "conflicts"
        out[kind].append(arrival - max(t for t in times if t is not None))
    return out


def produce_to_readable(
    ids: set[str], cause: dict[str, int], produced: list[float], seen: dict[str, float]
) -> dict[str, tuple[float, float]]:
    """id -> (its causing message produced, it seen) for every id of ``ids`` seen."""
    return {i: (produced[cause[i]], seen[i]) for i in ids if i in seen and i in cause}


def latency_report(
    expected: Expected,
    produced: list[float],
    committed: Tail,
    appended: Tail,
    topics: TopicNames,
    users: dict[str, list[str]],
    bursts: list[Burst],
) -> dict[str, Any]:
    """Paced-phase latencies, produce -> readable, overall, by stage and around seal bursts."""
    by_kind = {
        "forecasts": expected.events.get(topics.forecasts, set()),
        "conflicts": expected.events.get(topics.conflicts, set()),
    }
    pairs = {
        kind: produce_to_readable(ids, expected.cause, produced, committed.seen)
        for kind, ids in by_kind.items()
    }
    every = {**pairs["forecasts"], **pairs["conflicts"]}
    spans = [(b.start, b.end) for b in bursts]

    def overlaps(p: float, r: float) -> bool:
        return any(start < r and end > p for start, end in spans)

    during = [r - p for p, r in every.values() if overlaps(p, r)]
    outside = [r - p for p, r in every.values() if not overlaps(p, r)]

    def nearest_burst_s(p: float) -> float | None:
        return min((p - start for start, _ in spans), key=abs) if spans else None

    worst = sorted(every.items(), key=lambda kv: kv[1][0] - kv[1][1])[:10]
    windows_appended = produce_to_readable(
        expected.windows, expected.cause, produced, appended.seen
    )
    windows_readable = produce_to_readable(
        expected.windows, expected.cause, produced, committed.seen
    )
    window_to_event = latencies(
        appended, committed, {topics.forecasts, topics.conflicts}, set(every), users
    )
    return {
        "all": summary_ms([r - p for p, r in every.values()]),
        "forecasts": summary_ms([r - p for p, r in pairs["forecasts"].values()]),
        "conflicts": summary_ms([r - p for p, r in pairs["conflicts"].values()]),
        "missing": sum(len(ids) for ids in by_kind.values()) - len(every),
        "negative": sum(1 for p, r in every.values() if r < p),
        "stages": {
            "produce_to_window_appended": summary_ms([r - p for p, r in windows_appended.values()]),
            "produce_to_window_readable": summary_ms([r - p for p, r in windows_readable.values()]),
            "window_appended_to_event_readable": summary_ms(
                window_to_event["forecasts"] + window_to_event["conflicts"]
            ),
        },
        "overlapping_a_seal_burst": summary_ms(during),
        "not_overlapping_a_seal_burst": summary_ms(outside),
        # [latency ms, which, produced - start of the nearest seal burst (s; < 0: before)]
        "worst": [
            [
                round((r - p) * 1000, 1),
                "forecast" if eid in pairs["forecasts"] else "conflict",
                None if (near := nearest_burst_s(p)) is None else round(near, 2),
            ]
            for eid, (p, r) in worst
        ],
    }
