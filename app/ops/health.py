"""Worker health: what an operator asks of a running worker, counted without I/O.

`WorkerHealth` is fed by the Faust sensor in `agents/health.py` (records read per topic,
records sent per topic, the last offset read and the high-water mark per partition, the latest
accuracy report) and turns the counts into one `HealthSnapshot` per interval: events/s in and
out, dead letters/s, consumer lag and model error. The worker logs a snapshot once a minute;
the ops surface will export the same numbers to Prometheus, so the arithmetic lives here and
is unit-tested.

`StallWatch` decides when a stage has stopped: records wait for it on an input partition and
it has finished none there, nor had any committed, for ``after_s`` (``PSO_STALL_AFTER_S``).
The worker logs one error line when that starts and keeps the stalls in
``WorkerHealth.stalls`` for a readiness check.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class ModelError:
    """The headline of the latest accuracy report of one scope ('all' or a subsystem)."""

    scope: str
    windows_scored: int
    mase_h1: float | None
    mase_hmax: float | None
    coverage: dict[str, float]
    conflict_precision: float | None
    conflict_recall: float | None


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """Rates over the last interval and totals since start."""

    interval_s: float
    in_per_s: dict[str, float]
    out_per_s: dict[str, float]
    dead_letters_per_s: float
    lag: dict[str, int]
    totals_in: dict[str, int]
    totals_out: dict[str, int]
    model_error: dict[str, ModelError]
    #: "stage topic[partition]" of every stalled input (`StallWatch`)
    stalled: list[str] = field(default_factory=list)

    @property
    def total_lag(self) -> int:
        return sum(self.lag.values())

    def log_line(self) -> str:
        """One line for the worker log."""
        parts = [
            f"in/s={_rates(self.in_per_s)}",
            f"out/s={_rates(self.out_per_s)}",
            f"dlq/s={self.dead_letters_per_s:.1f}",
            f"lag={self.total_lag} {_counts({k: v for k, v in self.lag.items() if v})}",
        ]
        if self.stalled:
            parts.append(f"STALLED={','.join(self.stalled)}")
        series = [m for k, m in self.model_error.items() if not k.startswith("resource:")]
        resources = [m for k, m in self.model_error.items() if k.startswith("resource:")]
        if series:
            levels = sorted({lvl for m in series for lvl in m.coverage})
            coverage = {
                lvl: _median([m.coverage[lvl] for m in series if lvl in m.coverage])
                for lvl in levels
            }
            parts.append(
                f"model(median of {len(series)}): "
                f"mase_h1={_num(_median([m.mase_h1 for m in series]))} "
                f"mase_hmax={_num(_median([m.mase_hmax for m in series]))} "
                f"coverage={_counts({k: _num(v) for k, v in coverage.items()})}"
            )
        if resources:
            parts.append(
                f"conflicts(worst of {len(resources)}): "
                f"precision={_num(_least([m.conflict_precision for m in resources]))} "
                f"recall={_num(_least([m.conflict_recall for m in resources]))}"
            )
        return "health: " + " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "in_per_s": self.in_per_s,
            "out_per_s": self.out_per_s,
            "dead_letters_per_s": self.dead_letters_per_s,
            "lag": self.lag,
            "total_lag": self.total_lag,
            "stalled": self.stalled,
            "model_error": {
                k: {
                    "windows_scored": m.windows_scored,
                    "mase_h1": m.mase_h1,
                    "mase_hmax": m.mase_hmax,
                    "coverage": m.coverage,
                    "conflict_precision": m.conflict_precision,
                    "conflict_recall": m.conflict_recall,
                }
                for k, m in sorted(self.model_error.items())
            },
        }


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _rates(values: dict[str, float]) -> str:
    return ",".join(f"{k}:{v:.1f}" for k, v in sorted(values.items()) if v) or "0"


def _median(values: list[float | None]) -> float | None:
    known = sorted(v for v in values if v is not None)
    if not known:
        return None
    mid = len(known) // 2
    return known[mid] if len(known) % 2 else (known[mid - 1] + known[mid]) / 2


def _least(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def _counts(values: dict[str, Any]) -> str:
    return ",".join(f"{k}:{v}" for k, v in sorted(values.items())) or "-"


@dataclass(frozen=True, slots=True)
class InputProgress:
    """Where one stage stands on one of its input partitions at one moment. Offsets are
    "next" offsets (one past a record); None: not known yet.

    Under exactly-once a partition ends in transaction markers, which no stage ever takes:
    the consumer's ``position`` steps over them, so "records wait" is judged by it, and by
    the stage's own offsets, never by the high-water mark against what the stage took."""

    stage: str
    topic: str
    partition: int
    position: int | None  # the consumer's: next offset it hands out (steps over markers)
    highwater: int | None  # what the stage may read (the last stable offset under EOS)
    taken: int | None  # one past the last record the stage took from its stream
    done: int | None  # one past the last record the stage finished (acknowledged)
    committed: int | None  # the offset this worker last committed for the group

    def waiting(self) -> bool:
        """Records wait for the stage: readable but not handed out, taken but not finished,
        or finished but not committed (its outputs not visible yet)."""
        end, position = self.highwater, self.position
        if end is not None and position is not None and end > position:
            return True
        if self.taken is not None and (self.done is None or self.taken > self.done):
            return True
        return self.done is not None and (self.committed is None or self.done > self.committed)

    def offsets(self) -> tuple[int | None, ...]:
        """What moves when the stage makes progress: the records it finishes and the offsets
        committed for it. The consumer fetching ahead into the stage's buffer, or the stage
        taking records it does not finish, is no progress."""
        return (self.done, self.committed)

    def describe(self) -> str:
        return (
            f"{self.topic}[{self.partition}] position={self.position} "
            f"high-water={self.highwater} committed={self.committed} "
            f"taken={self.taken} done={self.done}"
        )


@dataclass(frozen=True, slots=True)
class Stall:
    """An input partition on which a stage has not moved, records waiting, since ``since_s``."""

    progress: InputProgress
    since_s: float


@dataclass(frozen=True, slots=True)
class StallChanges:
    """What one observation changed: stalls that began, partitions moving again."""

    started: list[Stall]
    ended: list[InputProgress]


@dataclass(slots=True)
class StallWatch:
    """Which stages have stopped: an input partition stalls once records have waited on it
    for ``after_s`` while the stage finished none and nothing was committed for it
    (`InputProgress.offsets`). Time is passed in, never read here."""

    after_s: float
    #: (topic, partition) -> (its offsets, since when they have not moved with records waiting)
    _still: dict[tuple[str, int], tuple[tuple[int | None, ...], float]] = field(
        default_factory=dict
    )
    #: (topic, partition) -> the stall reported for it, until it moves again
    stalled: dict[tuple[str, int], Stall] = field(default_factory=dict)

    def observe(self, now_s: float, inputs: Iterable[InputProgress]) -> StallChanges:
        """Take one look at every input partition of the worker's stages."""
        started: list[Stall] = []
        ended: list[InputProgress] = []
        seen: set[tuple[str, int]] = set()
        for p in inputs:
            key = (p.topic, p.partition)
            seen.add(key)
            offsets = p.offsets()
            still = self._still.get(key)
            if not p.waiting() or still is None or still[0] != offsets:
                if key in self.stalled:
                    del self.stalled[key]
                    ended.append(p)
                if p.waiting():
                    self._still[key] = (offsets, now_s)
                else:
                    self._still.pop(key, None)
                continue
            if key not in self.stalled and now_s - still[1] >= self.after_s:
                self.stalled[key] = Stall(p, still[1])
                started.append(self.stalled[key])
        for key in set(self._still) - seen:  # revoked: another worker's now
            del self._still[key]
        for key in set(self.stalled) - seen:
            del self.stalled[key]
        return StallChanges(started, ended)

    def hold(self, now_s: float) -> None:
        """The worker is not consuming on purpose (a rebalance, tables recovering): every
        clock starts again from ``now_s``."""
        for key, (offsets, _since) in self._still.items():
            self._still[key] = (offsets, now_s)


def stall_lines(stalls: Iterable[Stall], now_s: float) -> list[str]:
    """One log line per stage: its stalled partitions and their offsets."""
    by_stage: dict[str, list[Stall]] = {}
    for stall in stalls:
        by_stage.setdefault(stall.progress.stage, []).append(stall)
    lines = []
    for stage, group in sorted(by_stage.items()):
        group.sort(key=lambda s: (s.progress.topic, s.progress.partition))
        longest = max(now_s - s.since_s for s in group)
        parts = "; ".join(s.progress.describe() for s in group)
        lines.append(
            f"stage {stage} stalled: records wait and nothing moved for {longest:.0f} s on "
            f"{len(group)} input partition(s): {parts}"
        )
    return lines


@dataclass(slots=True)
class WorkerHealth:
    """Counters one worker keeps about itself. Time is passed in, never read here."""

    deadletter_topic: str
    accuracy_topic: str
    started_s: float
    records_in: dict[str, int] = field(default_factory=dict)
    records_out: dict[str, int] = field(default_factory=dict)
    #: (topic, partition) -> offset of the next record to read
    position: dict[tuple[str, int], int] = field(default_factory=dict)
    #: (topic, partition) -> log end offset, as last reported by the consumer
    highwater: dict[tuple[str, int], int] = field(default_factory=dict)
    #: (topic, partition) -> one past the last record a stage finished (acknowledged)
    done: dict[tuple[str, int], int] = field(default_factory=dict)
    stalls: StallWatch = field(default_factory=lambda: StallWatch(after_s=120.0))
    model_error: dict[str, ModelError] = field(default_factory=dict)
    latest: HealthSnapshot | None = None
    _last_s: float = 0.0
    _last_in: dict[str, int] = field(default_factory=dict)
    _last_out: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._last_s = self.started_s

    def record_in(self, topic: str, partition: int, offset: int) -> None:
        self.records_in[topic] = self.records_in.get(topic, 0) + 1
        self.position[(topic, partition)] = offset + 1

    def record_done(self, topic: str, partition: int, offset: int) -> None:
        self.done[(topic, partition)] = offset + 1

    def record_out(self, topic: str, value: bytes | None = None) -> None:
        self.records_out[topic] = self.records_out.get(topic, 0) + 1
        if topic == self.accuracy_topic and value:
            self.observe_accuracy(value)

    def set_highwater(self, topic: str, partition: int, end_offset: int) -> None:
        self.highwater[(topic, partition)] = end_offset

    def forget_partition(self, topic: str, partition: int) -> None:
        """A revoked partition is another worker's lag now."""
        self.position.pop((topic, partition), None)
        self.highwater.pop((topic, partition), None)
        self.done.pop((topic, partition), None)

    def observe_accuracy(self, value: bytes) -> None:
        """Keep the headline of an `AccuracyReport` this worker published."""
        try:
            doc = orjson.loads(value)
            horizons = sorted(doc["horizons"], key=lambda h: h["horizon"])
            first = horizons[0] if horizons else {}
            last = horizons[-1] if horizons else {}
            self.model_error[str(doc["scope"])] = ModelError(
                scope=str(doc["scope"]),
                windows_scored=int(doc["windows_scored"]),
                mase_h1=first.get("mase"),
                mase_hmax=last.get("mase"),
                coverage=dict(last.get("coverage", {})),
                conflict_precision=doc.get("conflict_precision"),
                conflict_recall=doc.get("conflict_recall"),
            )
        except (ValueError, KeyError, TypeError, IndexError):
            return  # health reporting must never break the worker

    def lag(self) -> dict[str, int]:
        """Records behind the log end, per topic (partitions read at least once)."""
        out: dict[str, int] = {}
        for (topic, partition), end in self.highwater.items():
            pos = self.position.get((topic, partition))
            if pos is None:
                continue
            out[topic] = out.get(topic, 0) + max(0, end - pos)
        return out

    def snapshot(self, now_s: float) -> HealthSnapshot:
        """Rates since the previous snapshot; resets the interval."""
        interval = max(now_s - self._last_s, 1e-9)

        def rates(now: dict[str, int], before: dict[str, int]) -> dict[str, float]:
            return {k: round((v - before.get(k, 0)) / interval, 3) for k, v in now.items()}

        in_rates = rates(self.records_in, self._last_in)
        out_rates = rates(self.records_out, self._last_out)
        snap = HealthSnapshot(
            interval_s=round(interval, 3),
            in_per_s=in_rates,
            out_per_s=out_rates,
            dead_letters_per_s=out_rates.get(self.deadletter_topic, 0.0),
            lag=self.lag(),
            totals_in=dict(self.records_in),
            totals_out=dict(self.records_out),
            model_error=dict(self.model_error),
            stalled=sorted(
                f"{st.progress.stage} {topic}[{partition}]"
                for (topic, partition), st in self.stalls.stalled.items()
            ),
        )
        self.latest = snap
        self._last_s = now_s
        self._last_in = dict(self.records_in)
        self._last_out = dict(self.records_out)
        return snap
