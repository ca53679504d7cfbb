"""Operators teach PSO (`app.core.labels`): false-positive labels on one series cut its false
alarms in a replay and change nothing else; the same windows and labels give the same events;
the raise is bounded (a flood of labels cannot silence a series or a resource) and decays;
labels that cannot be applied are refused with a precise reason, never a crash."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import threading
from functools import cache
from pathlib import Path

import orjson
import pytest

from app.core.bodies import share_from_values
from app.core.config import FleetSpec, PredictionSpec, ResourceSpec, SubsystemSpec
from app.core.conflicts import ConflictPredictor
from app.core.engine import (
    EngineConfig,
    PredictionEngine,
    ResourcePredictor,
    SubsystemPredictor,
)
from app.core.events import (
    AnomalyDetected,
    ConflictPredicted,
    Forecast,
    LoadWindow,
    OperatorLabel,
    SeriesStats,
    ms_to_iso,
)
from app.core.labels import LabelBook, LabelRejected, LabelSpec, anomaly_event_id
from app.dev.simulator import FleetSimulator
from app.settings import FleetPolicy
from app.wire.codec import SourceRef
from app.wire.records import InvalidLabel, decode_label_record, encode
from app.wire.schemas import SCHEMA_DIR
from app.wire.telemetry import TelemetryIngest

STEP = 60_000
T0 = 1_795_392_000_000
DAY = 86_400_000


def false_label(id: str, ts: int, target: str = "anomaly") -> OperatorLabel:
    return OperatorLabel(target=target, id=id, verdict="false", ts=ts)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the book


def test_one_false_label_raises_by_its_share_and_a_flood_by_at_most_the_bound() -> None:
    spec = LabelSpec(max_raise=0.3, prior=0.5)
    book = LabelBook(spec)
    book.add("a", T0, True)
    assert book.raise_at(T0) == pytest.approx(0.3 / 1.5)
    for k in range(10_000):
        book.add(f"x{k}", T0 + k, True)
    assert len(book) == spec.max_labels  # the newest kept, memory bounded
    assert 0.29 < book.raise_at(T0 + 10_000) <= 0.3


def test_true_labels_bring_the_raise_back_and_it_decays_in_event_time() -> None:
    spec = LabelSpec(max_raise=0.3, half_life_ms=DAY)
    book = LabelBook(spec)
    book.add("f", T0, True)
    first = book.raise_at(T0)
    assert book.raise_at(T0 + DAY) < first  # a day later: half the weight
    book.add("t1", T0, False)
    book.add("t2", T0, False)
    assert book.raise_at(T0) < first / 2
    only_true = LabelBook(spec)
    only_true.add("t", T0, False)
    assert only_true.raise_at(T0) == 0.0  # never below the detector's own threshold
    assert book.raise_at(T0 + 13 * DAY) == 0.0 and len(book) == 0  # forgotten


def test_a_label_counts_from_its_own_time_and_the_newest_verdict_stands() -> None:
    book = LabelBook(LabelSpec(max_raise=0.3))
    book.add("a", T0 + STEP, True)
    assert book.raise_at(T0) == 0.0
    assert book.raise_at(T0 + STEP) > 0.0
    book.add("a", T0 + 2 * STEP, False)  # the operator changed their mind
    assert book.raise_at(T0 + 2 * STEP) == 0.0
    book.add("a", T0, True)  # an older verdict does not undo the newer
    assert book.raise_at(T0 + 2 * STEP) == 0.0


def test_opposite_verdicts_at_the_same_ts_give_true_whichever_came_first() -> None:
    raises = set()
    for order in ((True, False), (False, True)):
        book = LabelBook(LabelSpec(max_raise=0.3))
        book.add("other", T0, True)  # a false verdict elsewhere, so a raise would show
        for false in order:
            book.add("a", T0 + STEP, false)
        raises.add(book.raise_at(T0 + STEP))
    assert len(raises) == 1
    alone = LabelBook(LabelSpec(max_raise=0.3))
    alone.add("other", T0, True)
    alone.add("a", T0 + STEP, False)
    assert raises == {alone.raise_at(T0 + STEP)}


def test_the_raise_does_not_depend_on_the_order_labels_arrived_in() -> None:
    rng = random.Random(4)
    labels = [(f"k{i}", T0 + rng.randrange(0, DAY), rng.random() < 0.7) for i in range(50)]
    raises = set()
    for _ in range(5):
        rng.shuffle(labels)
        book = LabelBook(LabelSpec(max_raise=0.3, max_labels=30))
        for key, ts, false in labels:
            book.add(key, ts, false)
        raises.add(tuple(book.raise_at(T0 + h * 3_600_000) for h in range(30)))
    assert len(raises) == 1


# --------------------------------------------------------------------------- stage 1


def window(i: int, y: float, subsystem: str = "api") -> LoadWindow:
    start = T0 + i * STEP
    stats = SeriesStats(count=1, mean=y, min=y, max=y, last=y)
    return LoadWindow(
        event_id=f"w{i}",
        subsystem=subsystem,
        window_start_ms=start,
        window_end_ms=start + STEP,
        window_start=ms_to_iso(start),
        window_end=ms_to_iso(start + STEP),
        samples=1,
        metrics={"cpu": stats},
        resources={},
    )


def noisy_series(n: int = 900, spike: int = 800) -> list[float]:
    """A steady series with occasional jumps (false alarms) and one spike at ``spike``."""
    rng = random.Random(1)
    out = []
    for i in range(n):
        y = 10 + rng.gauss(0, 0.3)
        if rng.random() < 0.02:
            y += rng.choice([-1, 1]) * rng.uniform(1.5, 3)
        out.append(40.0 if i == spike else y)
    return out


def alarms_of(flood: int, at: int = 300) -> list[int]:
    predictor = SubsystemPredictor("api", EngineConfig.from_policy(FleetSpec()), {})
    alarms = []
    for i, y in enumerate(noisy_series()):
        if i == at:
            for k in range(flood):
                ts = T0 + (k % at) * STEP
                predictor.label(
                    false_label(anomaly_event_id("api", "metric", "cpu", ts), T0 + at * STEP)
                )
        for event in predictor.process(window(i, y)).events:
            if isinstance(event, AnomalyDetected):
                alarms.append(i)
    return alarms


def test_a_flood_of_false_labels_cannot_silence_a_series() -> None:
    """Thousands of false verdicts quiet the jumps after them, but the spike still alarms."""
    without, flooded = alarms_of(0), alarms_of(2_000)
    assert 800 in without and 800 in flooded
    assert len([i for i in flooded if 300 <= i < 800]) < len([i for i in without if 300 <= i < 800])


def test_a_label_on_a_series_the_predictor_does_not_know_is_refused() -> None:
    predictor = SubsystemPredictor("api", EngineConfig.from_policy(FleetSpec()), {})
    predictor.process(window(0, 1.0))
    with pytest.raises(LabelRejected) as caught:
        predictor.label(false_label(anomaly_event_id("api", "metric", "mem", T0), T0 + STEP))
    assert caught.value.code == "unknown_series"
    with pytest.raises(LabelRejected) as caught:
        predictor.label(false_label(anomaly_event_id("api", "metric", "cpu", T0), T0 - 1))
    assert caught.value.code == "before_event"
    predictor.label(false_label(anomaly_event_id("api", "metric", "cpu", T0), T0 + STEP))


# --------------------------------------------------------------------------- a replay


HOURS = 16
TARGET = ("billing-api", "metric", "latency_ms")


@cache
def fleet() -> tuple[FleetPolicy, tuple[LoadWindow, ...]]:
    sim = FleetSimulator(subsystems=4, seed=2, interval_ms=30_000)
    policy = sim.policy(headroom=0.7)
    ingest = TelemetryIngest(policy.window)
    windows: list[LoadWindow] = []
    for i, sample in enumerate(sim.samples(HOURS * 3_600_000)):
        windows.extend(ingest.process(orjson.dumps(sample), SourceRef("t", 0, i)).windows)
    return policy, tuple(windows)


def replay(
    labels: list[OperatorLabel],
    engine: PredictionEngine | None = None,
    windows: slice = slice(None),
) -> list[object]:
    """The windows with the labels merged in event time: each before the first window
    starting at or after its ts."""
    policy, all_windows = fleet()
    engine = engine or PredictionEngine(policy.spec())
    due = sorted(labels, key=lambda label: label.ts)
    events: list[object] = []
    for w in all_windows[windows]:
        while due and due[0].ts <= w.window_start_ms:
            engine.label(due.pop(0))
        events += engine.process(w)
    return events


@cache
def unlabelled() -> tuple[object, ...]:
    return tuple(replay([]))


def series_of(event: AnomalyDetected) -> tuple[str, str, str]:
    return (event.subsystem, event.series_kind, event.series)


@cache
def target_labels() -> tuple[OperatorLabel, ...]:
    """The operator calls the first two alarms of one series false, as they come."""
    alarms = [e for e in unlabelled() if isinstance(e, AnomalyDetected) and series_of(e) == TARGET]
    assert len(alarms) >= 4, "the scenario must have false alarms to cut"
    return tuple(false_label(a.event_id, a.window_end_ms) for a in alarms[:2])


def without_target(events: tuple[object, ...] | list[object]) -> list[bytes]:
    """Every event with the labelled series taken out of it."""
    out = []
    for event in events:
        if isinstance(event, AnomalyDetected) and series_of(event) == TARGET:
            continue
        if isinstance(event, Forecast) and event.subsystem == TARGET[0]:
            doc = orjson.loads(encode(event))
            del doc["metrics"][TARGET[2]]
            out.append(orjson.dumps(doc))
            continue
        if type(event).__name__ == "AccuracyReport":
            continue  # pools the subsystem's series, the labelled one too
        out.append(encode(event))
    return out


def test_false_labels_on_one_series_cut_its_false_alarms_and_change_nothing_else() -> None:
    before = unlabelled()
    after = replay(list(target_labels()))

    def alarms(events: tuple[object, ...] | list[object]) -> list[int]:
        return [
            e.window_start_ms
            for e in events
            if isinstance(e, AnomalyDetected) and series_of(e) == TARGET
        ]

    labelled_until = max(label.ts for label in target_labels())
    later_before = [t for t in alarms(before) if t >= labelled_until]
    later_after = [t for t in alarms(after) if t >= labelled_until]
    assert len(later_after) < len(later_before)
    assert without_target(after) == without_target(before)
    assert any(isinstance(e, ConflictPredicted) for e in after)  # the rest did run


def test_same_windows_and_labels_give_identical_events_and_a_restart_keeps_the_labels() -> None:
    policy, windows = fleet()
    labels = list(target_labels())
    first = [encode(e) for e in replay(labels)]  # type: ignore[arg-type]
    assert [encode(e) for e in replay(labels)] == first  # type: ignore[arg-type]
    # Checkpoint after the labels, restore, go on: the labels are in the sealed state.
    half = next(i for i, w in enumerate(windows) if w.window_start_ms > labels[-1].ts) + 5
    engine = PredictionEngine(policy.spec())
    head = replay(labels, engine, slice(0, half))
    restored = PredictionEngine.restore(policy.spec(), engine.snapshot("k" * 32), "k" * 32)
    tail = replay([], restored, slice(half, None))
    assert [encode(e) for e in head + tail] == first  # type: ignore[arg-type]


# --------------------------------------------------------------------------- stage 2

H = 15
# A threshold of 0.5 (the bound lets labels raise it to 0.8), and the split-normal model alone
# (`learn_errors=False`): here only labels move the alerts, not the calibration learning that
# peaks never breach.
CONFLICT_SPEC = FleetSpec(
    resources={"db": ResourceSpec(10.0)},
    subsystems={name: SubsystemSpec(min={"db": 1.0}) for name in "ab"},
    prediction=PredictionSpec(conflict_threshold=0.5),
)


def resource_predictor() -> ResourcePredictor:
    predictor = ResourcePredictor("db", EngineConfig.from_policy(CONFLICT_SPEC), CONFLICT_SPEC)
    core = predictor.predictor
    predictor.predictor = ConflictPredictor(
        "db",
        horizon=core.horizon,
        threshold=core.threshold,
        hysteresis=core.hysteresis,
        step_ms=core.step_ms,
        learn_errors=False,
    )
    return predictor


def conflicts_of(high: float, labels: list[OperatorLabel], n: int = 200) -> list[ConflictPredicted]:
    """Two contributors whose forecast peaks for 3 windows in every 40 (never a breach): a
    peak of ``high`` each puts P(total > capacity) at ~0.68 (3.8) or ~0.99 (4.5)."""
    predictor = resource_predictor()
    events = []
    for i in range(n):
        start = T0 + i * STEP
        for label in labels:
            if label.ts == start:
                predictor.label(label)
        p = high if i % 40 < 3 else 3.0
        rows = [[p] * H, [p - 1] * H, [p - 2] * H, [p + 1] * H, [p + 2] * H]
        for name in "ab":
            values = (name, "db", start, 60, 3.0, rows, (0.8, 0.95), "m", 0.1, False)
            events += predictor.add(share_from_values(values))
    return [e for e in events if isinstance(e, ConflictPredicted) and e.status == "predicted"]


def test_a_false_conflict_label_raises_that_resources_threshold_within_its_bound() -> None:
    before = conflicts_of(3.8, [])
    assert len(before) == 5 and all(0.6 < c.probability < 0.7 for c in before)
    first = before[0]
    label = false_label(first.event_id, first.emitted_at_ms + 20 * STEP, "conflict")
    after = conflicts_of(3.8, [label])
    assert [c.event_id for c in after] == [first.event_id]  # the later ones are not raised
    flood = [false_label(f"db@{T0 + k * STEP}", T0 + 20 * STEP, "conflict") for k in range(1_000)]
    assert len(conflicts_of(4.5, flood)) == 5  # a near-certain conflict is always raised


def test_a_conflict_label_for_another_resource_is_refused() -> None:
    predictor = ResourcePredictor("db", EngineConfig.from_policy(CONFLICT_SPEC), CONFLICT_SPEC)
    with pytest.raises(LabelRejected) as caught:
        predictor.label(false_label(f"pool@{T0}", T0, "conflict"))
    assert caught.value.code == "unknown_resource"
    engine = PredictionEngine(CONFLICT_SPEC)
    with pytest.raises(LabelRejected) as caught:
        engine.label(false_label(f"db@{T0}", T0, "conflict"))
    assert caught.value.code == "unknown_resource"  # no share of it seen yet


# --------------------------------------------------------------------------- the wire


GOOD = {"target": "anomaly", "id": anomaly_event_id("api", "metric", "cpu", T0), "ts": T0 + STEP}


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, None, "a tombstone"),
        (None, b"{nope", "not JSON"),
        (None, b"[1]", "a label is a JSON object"),
        (None, orjson.dumps({**GOOD, "verdict": "maybe"}), "verdict: Input should be 'true'"),
        (None, orjson.dumps({**GOOD, "verdict": "true", "ts": 12}), "ts: ts 12 is"),
        (None, orjson.dumps({**GOOD, "verdict": "true", "extra": 1}), "extra: Extra inputs"),
        (None, orjson.dumps({**GOOD, "verdict": "true", "target": "x"}), "target: Input should"),
        (None, orjson.dumps({**GOOD, "verdict": "true", "id": "cpu"}), "invalid_id: id 'cpu'"),
        (
            None,
            orjson.dumps({**GOOD, "verdict": "true", "target": "conflict"}),
            "invalid_id: id 'anomaly:api:metric:cpu:1795392000000' is not a ConflictPredicted",
        ),
        (None, orjson.dumps({**GOOD, "verdict": "true", "ts": T0 - 1}), "before_event: label ts"),
        (b"other", orjson.dumps({**GOOD, "verdict": "true"}), "key 'other' and id"),
    ],
)
def test_bad_label_records_are_refused_with_a_precise_reason(
    key: bytes | None, value: bytes | None, reason: str
) -> None:
    with pytest.raises(InvalidLabel) as caught:
        decode_label_record(key, value)
    assert str(caught.value).startswith(reason), str(caught.value)


def test_good_label_records_decode_and_match_their_schema() -> None:
    import jsonschema

    schema = orjson.loads((SCHEMA_DIR / "operator_label.v1.json").read_bytes())
    for verdict, expected in (("false", "false"), (True, "true")):
        doc = {**GOOD, "verdict": verdict, "ts": "2026-11-23T00:01:00Z"}
        label, target = decode_label_record(str(GOOD["id"]).encode(), orjson.dumps(doc))
        assert (label.verdict, label.ts, target.key) == (expected, T0 + STEP, GOOD["id"])
        jsonschema.validate(orjson.loads(encode(label)), schema)
    conflict = {"target": "conflict", "id": f"db:x@{T0}:updated:{T0}", "verdict": "true", "ts": T0}
    _, target = decode_label_record(None, orjson.dumps(conflict))
    assert target.key == f"db:x@{T0}"  # every event of one conflict: one verdict


# --------------------------------------------------------------------------- the live stages


def test_the_stages_apply_routed_labels_and_dead_letter_bad_ones() -> None:
    """What the labels agent forwards: an anomaly label on ``pso.load`` (stage 1), a conflict
    label on the shares topic (stage 2). A label that cannot be applied there is
    dead-lettered ``invalid_label``; the stage goes on."""
    import asyncio
    from typing import Any

    from agents.stage1 import SubsystemStage
    from agents.stage2 import ResourceStage, refill_resource, replay_resource
    from tests.unit.test_checkpoints import Table
    from tests.unit.test_stages import Event, Message, Sink, states

    policy, windows = fleet()
    spec = policy.spec()
    config = EngineConfig.from_policy(spec)
    log: list[tuple[str, Any]] = []
    sink = Sink(log)
    stage1 = SubsystemStage(
        sink,  # type: ignore[arg-type]
        states(Table(), lambda n: SubsystemPredictor(n, config, {}), None),
        sink,
    )
    stage2 = ResourceStage(
        sink,  # type: ignore[arg-type]
        states(
            Table(),
            lambda n: ResourcePredictor(n, config, spec),
            replay_resource,
            lean=lambda p: p.lean(),
            refill=refill_resource,
        ),
        sink,
    )
    first = windows[0]
    good = false_label(
        anomaly_event_id(first.subsystem, "metric", "cpu", first.window_start_ms),
        first.window_end_ms,
    )
    unknown = false_label(
        anomaly_event_id(first.subsystem, "metric", "nope", first.window_start_ms),
        first.window_end_ms,
    )
    n = len(windows[:40])
    load = [Event(Message("pso.load", 0, i), encode(w)) for i, w in enumerate(windows[:40])]
    stranger = false_label(anomaly_event_id("stranger", "metric", "cpu", T0), T0 + STEP)
    load += [
        Event(Message("pso.load", 0, n), encode(good)),
        Event(Message("pso.load", 0, n + 1), encode(unknown)),
        Event(Message("pso.load", 0, n + 2), encode(stranger)),
    ]
    conflict = false_label(f"db-main@{T0}", T0, "conflict")
    not_a_conflict = false_label(anomaly_event_id("a", "metric", "cpu", T0), T0, "conflict")
    wrong_kind = encode(good)

    async def run() -> None:
        await stage1.take(load)
        shares = [value for kind, value in log if kind == "shares"]
        for offset, value in enumerate(shares):  # db-main's state exists once it has shares
            await stage2.take(Event(Message("shares", 0, 10 + offset), value))
        await stage2.take(Event(Message("shares", 0, 0), encode(conflict)))
        await stage2.take(Event(Message("shares", 0, 1), orjson.dumps(not_a_conflict)))
        await stage2.take(Event(Message("shares", 0, 2), wrong_kind))
        pool = false_label(f"no-such-pool@{T0}", T0, "conflict")
        await stage2.take(Event(Message("shares", 0, 3), encode(pool)))

    asyncio.run(run())
    dead = [entry for kind, entry in log if kind == "dead"]
    assert dead == [
        (n + 1, "invalid_label"),
        (n + 2, "invalid_label"),
        (1, "invalid_label"),
        (2, "invalid_label"),
        (3, "invalid_label"),
    ]
    # Labels naming nothing this worker holds make no state (anyone may write pso.labels).
    assert "stranger" not in stage1.states.table.data
    assert "no-such-pool" not in stage2.states.table.data
    predictor = stage1.states._live[first.subsystem].obj
    assert predictor.series[("metric", "cpu")].labels is not None
    assert stage2.states._live["db-main"].obj.labels is not None


# --------------------------------------------------------------------------- pso backtest


@pytest.fixture(scope="module")
def fleet_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[FleetPolicy, Path]:
    """The replay's fleet as a telemetry file, with its unlabelled backtest next to it."""
    from app.offline.backtest import run_backtest

    sim = FleetSimulator(subsystems=4, seed=2, interval_ms=30_000)
    policy = sim.policy(headroom=0.7)
    d = tmp_path_factory.mktemp("labels-backtest")
    with (d / "input.jsonl").open("wb") as fh:
        for sample in sim.samples(HOURS * 3_600_000):
            fh.write(orjson.dumps(sample) + b"\n")
    run_backtest(d / "input.jsonl", policy, d / "plain", workers=2, render=False)
    return policy, d


def test_backtest_replays_labels_in_event_time_and_reports_before_and_after(
    fleet_file: tuple[FleetPolicy, Path],
) -> None:
    from app.offline.backtest import run_backtest

    policy, d = fleet_file
    alarms = [orjson.loads(x) for x in (d / "plain" / "anomalies.jsonl").read_bytes().splitlines()]
    mine = [a for a in alarms if (a["subsystem"], a["series_kind"], a["series"]) == TARGET]
    labels = [
        {"target": "anomaly", "id": a["event_id"], "verdict": "false", "ts": a["window_end_ms"]}
        for a in mine[:2]
    ]
    bogus = anomaly_event_id("no-such-subsystem", "metric", "cpu", T0)
    labels.append({"target": "anomaly", "id": bogus, "verdict": "false", "ts": T0 + STEP})
    # a mistyped window: the one after an alarm, which cannot raise another (one per episode)
    phantom = anomaly_event_id(*TARGET, mine[0]["window_end_ms"])
    late = mine[0]["window_end_ms"] + 3_600_000
    labels.append({"target": "anomaly", "id": phantom, "verdict": "false", "ts": late})
    (d / "labels.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in labels))
    outputs = {}
    for workers in (1, 2):
        out = d / f"labelled-{workers}"
        metrics = run_backtest(
            d / "input.jsonl", policy, out, workers=workers, render=False, labels=d / "labels.jsonl"
        )
        outputs[workers] = [
            (out / f"{name}.jsonl").read_bytes() for name in ("anomalies", "conflicts")
        ]
        taught = metrics["labels"]
        assert (taught["labels"], taught["applied"], taught["rejected"]) == (4, 3, 1)
        assert taught["rejects"][0]["reason"].startswith("unknown_series")
        assert (taught["names_no_alarm"], taught["names_no_alarm_ids"]) == (1, [phantom])
        before, after = taught["before"], taught["after"]
        assert before["anomaly_events"] == len(alarms)
        assert after["anomaly_events"] < before["anomaly_events"]
        assert before["labelled_alarms"]["anomalies"]["false"] == 2
        assert before["conflict_precision"] == after["conflict_precision"]  # nothing to teach
        assert (out / "baseline" / "metrics.json").is_file()
    assert outputs[1] == outputs[2]  # the same whichever worker owns the subsystem
    from app.offline.report.tables import label_rows

    rows = {row[0]: row[1:] for row in label_rows(metrics["labels"])}
    assert rows["anomaly alarms labelled false"][0] == "2"
    assert rows["anomaly alarms"][:2] == (str(len(alarms)), str(after["anomaly_events"]))


def test_backtest_refuses_a_labels_file_with_a_bad_line_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(b'{"subsystem": "a", "ts": 1795392000000}\n')
    good = {**GOOD, "verdict": "false"}
    (tmp_path / "labels.jsonl").write_bytes(
        orjson.dumps(good) + b"\n\n" + orjson.dumps({**good, "verdict": "perhaps"}) + b"\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "backtest",
            str(tmp_path / "in.jsonl"),
            "-o",
            str(tmp_path / "out"),
            "--labels",
            str(tmp_path / "labels.jsonl"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "labels.jsonl:3: not a label: verdict:" in lines[0], lines


def _backtest_cli(tmp_path: Path, labels: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "in.jsonl").write_bytes(b'{"subsystem": "a", "ts": 1795392000000}\n')
    argv = [sys.executable, "-m", "app.cli", "backtest", str(tmp_path / "in.jsonl")]
    argv += ["-o", str(tmp_path / "out"), "--labels", str(labels)]
    return subprocess.run(argv, capture_output=True, text=True)


@pytest.mark.parametrize("content", [b"", b"\n\n  \r\n"])
def test_backtest_with_an_empty_labels_file_runs_with_no_labels(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / "labels.jsonl").write_bytes(content)
    done = _backtest_cli(tmp_path, tmp_path / "labels.jsonl")
    assert done.returncode == 0, done.stderr
    assert "labels: 0 applied, 0 rejected" in done.stderr
    metrics = orjson.loads((tmp_path / "out" / "metrics.json").read_bytes())
    assert metrics["labels"]["labels"] == 0


def test_backtest_reads_labels_with_a_bom_and_from_a_pipe(tmp_path: Path) -> None:
    from app.offline.backtest.labels import read_labels

    good = orjson.dumps({**GOOD, "verdict": "false"}) + b"\r\n"
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + good + good)
    assert [x.verdict for x in read_labels(tmp_path / "bom.jsonl")] == ["false", "false"]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(good,), daemon=True)
    writer.start()
    try:
        assert len(read_labels(fifo)) == 1  # a pipe is not "not found"
    finally:
        if writer.is_alive():  # refused unread: let the blocked writer go
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(timeout=10)


def test_backtest_refuses_an_endless_labels_line_without_holding_it(tmp_path: Path) -> None:
    from app.offline.backtest.labels import MAX_LABEL_LINE_BYTES

    (tmp_path / "labels.jsonl").write_bytes(b'{"id": "' + b"x" * 5_000_000 + b'"}\n')
    done = _backtest_cli(tmp_path, tmp_path / "labels.jsonl")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"longer than {MAX_LABEL_LINE_BYTES} bytes" in lines[0], lines
    done = _backtest_cli(tmp_path, tmp_path)
    assert done.returncode == 2 and "is a directory" in done.stderr, done.stderr
    import tracemalloc

    from app.offline.backtest.common import BacktestError
    from app.offline.backtest.labels import read_labels

    (tmp_path / "labels.jsonl").write_bytes(b'{"id": "' + b"x" * 50_000_000 + b'"}\n')
    tracemalloc.start()
    try:
        with pytest.raises(BacktestError, match="longer than"):
            read_labels(tmp_path / "labels.jsonl")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # read in pieces of the bound, never held whole (50 MB)


def test_the_labels_report_takes_the_same_verdict_as_the_book_on_a_tie(tmp_path: Path) -> None:
    """Two opposite verdicts on one alarm at the same ts: "true" stands in `LabelBook` and in
    the report's count of labelled alarms, whichever the file lists first."""
    from app.offline.backtest.labels import label_metrics

    alarm = anomaly_event_id("api", "metric", "cpu", T0)
    (tmp_path / "anomalies.jsonl").write_bytes(orjson.dumps({"event_id": alarm}) + b"\n")
    (tmp_path / "conflicts.jsonl").write_bytes(b"")
    metrics = {
        "conflicts": {"overall": {"precision": None, "recall": None, "predictions": 0}},
        "anomalies": {"events": 1, "precision": None, "recall": None},
    }
    for first, second in (("true", "false"), ("false", "true")):
        labels = [
            OperatorLabel(target="anomaly", id=alarm, verdict=v, ts=T0 + STEP)  # type: ignore[arg-type]
            for v in (first, second)
        ]
        block = label_metrics("f", labels, [], metrics, metrics, tmp_path, tmp_path)
        counted = block["before"]["labelled_alarms"]["anomalies"]
        assert (counted["true"], counted["false"]) == (1, 0), (first, second)


def test_topics_create_makes_the_labels_topic_compacted() -> None:
    from app.kafka.topics import topic_specs
    from app.settings import Settings

    settings = Settings()
    specs = {spec.name: spec for spec in topic_specs(settings)}
    assert specs[settings.topics.labels].config["cleanup.policy"] == "compact"
    assert specs[settings.topics.load].config["cleanup.policy"] == "delete"
