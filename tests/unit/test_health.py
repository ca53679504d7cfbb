"""Worker health arithmetic: rates, lag and model error from what the sensor counted."""

from __future__ import annotations

from app.core.events import AccuracyReport, HorizonAccuracy
from app.ops.health import (
    InputProgress,
    Stall,
    StallChanges,
    StallWatch,
    WorkerHealth,
    stall_lines,
)
from app.wire.records import encode


def _health() -> WorkerHealth:
    return WorkerHealth(
        deadletter_topic="pso.deadletter", accuracy_topic="pso.accuracy", started_s=100.0
    )


def test_rates_are_per_interval_and_reset() -> None:
    health = _health()
    for offset in range(30):
        health.record_in("pso.telemetry", 0, offset)
    for _ in range(6):
        health.record_out("pso.load")
    health.record_out("pso.deadletter")
    health.record_out("pso.deadletter")
    first = health.snapshot(110.0)
    assert first.interval_s == 10.0
    assert first.in_per_s == {"pso.telemetry": 3.0}
    assert first.out_per_s == {"pso.load": 0.6, "pso.deadletter": 0.2}
    assert first.dead_letters_per_s == 0.2
    health.record_in("pso.telemetry", 0, 30)
    second = health.snapshot(115.0)
    assert second.in_per_s == {"pso.telemetry": 0.2}
    assert second.out_per_s == {"pso.load": 0.0, "pso.deadletter": 0.0}
    assert second.totals_in == {"pso.telemetry": 31}
    assert health.latest is second


def test_lag_is_highwater_minus_position_per_topic() -> None:
    health = _health()
    health.record_in("pso.telemetry", 0, 9)  # next to read: 10
    health.record_in("pso.telemetry", 1, 4)  # next to read: 5
    health.set_highwater("pso.telemetry", 0, 25)
    health.set_highwater("pso.telemetry", 1, 5)
    health.set_highwater("pso.load", 0, 7)  # never read: no position, no lag claimed
    assert health.lag() == {"pso.telemetry": 15}
    health.forget_partition("pso.telemetry", 0)
    assert health.lag() == {"pso.telemetry": 0}
    snap = health.snapshot(101.0)
    assert snap.total_lag == 0


def test_model_error_from_a_published_accuracy_report() -> None:
    report = AccuracyReport(
        event_id="accuracy:all:1",
        emitted_at_ms=1_700_000_000_000,
        scope="all",
        windows_scored=120,
        horizons=[
            HorizonAccuracy(horizon=2, n=10, mae=2.0, mase=0.5, coverage={"80": 0.7}),
            HorizonAccuracy(horizon=1, n=10, mae=1.0, mase=0.25, coverage={"80": 0.8}),
        ],
        conflict_precision=0.9,
        conflict_recall=None,
        conflict_median_lead_s=60.0,
    )
    health = _health()
    health.record_out("pso.accuracy", encode(report))
    health.record_out("pso.accuracy", b"{not json")  # never breaks the worker
    health.record_out("pso.accuracy", b'{"scope": "x"}')
    error = health.snapshot(160.0).model_error
    assert list(error) == ["all"]
    assert error["all"].mase_h1 == 0.25
    assert error["all"].mase_hmax == 0.5
    assert error["all"].coverage == {"80": 0.7}
    line = health.latest.log_line() if health.latest else ""
    assert "model(median of 1): mase_h1=0.250 mase_hmax=0.500 coverage=80:0.700" in line
    assert "out/s=pso.accuracy:0.1" in line and "conflicts(" not in line


def test_log_line_summarises_many_scopes() -> None:
    health = _health()
    for scope, mase in (("api", 0.2), ("db", 0.4), ("etl", 0.9)):
        report = AccuracyReport(
            event_id=f"accuracy:{scope}:1",
            emitted_at_ms=1,
            scope=scope,
            windows_scored=5,
            horizons=[HorizonAccuracy(horizon=1, n=5, mae=1.0, mase=mase, coverage={})],
            conflict_precision=None,
            conflict_recall=None,
            conflict_median_lead_s=None,
        )
        health.record_out("pso.accuracy", encode(report))
    for scope, precision in (("resource:db-main", 0.8), ("resource:gpu", 0.95)):
        report = AccuracyReport(
            event_id=f"accuracy:{scope}:1",
            emitted_at_ms=1,
            scope=scope,
            windows_scored=5,
            horizons=[],
            conflict_precision=precision,
            conflict_recall=1.0,
            conflict_median_lead_s=None,
        )
        health.record_out("pso.accuracy", encode(report))
    line = health.snapshot(101.0).log_line()
    assert "model(median of 3): mase_h1=0.400" in line
    assert "conflicts(worst of 2): precision=0.800 recall=1.000" in line


# ------------------------------------------------------------------------------ stall watch


def _input(
    position: int | None = 100,
    highwater: int | None = 100,
    taken: int | None = 99,
    done: int | None = 99,
    committed: int | None = 99,
    partition: int = 0,
) -> InputProgress:
    return InputProgress(
        "pso-predict-resources",
        "pso-resource-shares",
        partition,
        position,
        highwater,
        taken,
        done,
        committed,
    )


def test_an_idle_partition_ending_in_transaction_markers_is_not_waiting() -> None:
    # Last record 98, then a commit marker at 99: the consumer's position stepped over it.
    idle = _input(position=100, highwater=100, taken=99, done=99, committed=99)
    assert not idle.waiting()
    watch = StallWatch(after_s=10)
    for now in range(0, 100, 5):
        assert watch.observe(now, [idle]) == StallChanges([], [])
    assert watch.stalled == {}


def test_records_waiting_with_nothing_finished_or_committed_stall_once_after_the_delay() -> None:
    watch = StallWatch(after_s=10)
    blocked = _input(position=120, highwater=150, taken=101, done=100, committed=100)
    assert blocked.waiting()
    assert watch.observe(0.0, [blocked]).started == []
    assert watch.observe(9.9, [blocked]).started == []
    changes = watch.observe(10.0, [blocked])
    assert changes.started == [Stall(blocked, 0.0)]
    assert watch.observe(30.0, [blocked]).started == []  # said once
    assert list(watch.stalled) == [("pso-resource-shares", 0)]
    # The consumer fetching ahead into the stage's buffer is no progress.
    fetched = _input(position=150, highwater=160, taken=101, done=100, committed=100)
    assert watch.observe(40.0, [fetched]) == StallChanges([], [])
    # A finished record is: the stall ends, and its clock starts again.
    moved = _input(position=150, highwater=160, taken=102, done=101, committed=100)
    assert watch.observe(41.0, [moved]) == StallChanges([], [moved])
    assert watch.stalled == {}
    assert watch.observe(50.0, [moved]).started == []
    assert watch.observe(51.0, [moved]).started == [Stall(moved, 41.0)]


def test_each_kind_of_waiting_record_counts_and_a_commit_is_progress() -> None:
    assert _input(position=100, highwater=101).waiting()  # readable, not handed out
    assert _input(taken=100, done=99).waiting()  # taken, not finished
    assert _input(taken=None, done=None, committed=None).waiting() is False
    uncommitted = _input(done=99, committed=90)  # finished, outputs not visible yet
    assert uncommitted.waiting()
    watch = StallWatch(after_s=5)
    watch.observe(0.0, [uncommitted])
    assert watch.observe(5.0, [uncommitted]).started == [Stall(uncommitted, 0.0)]
    committing = _input(done=99, committed=95)
    assert watch.observe(6.0, [committing]).ended == [committing]


def test_partitions_stall_on_their_own_and_leave_with_their_assignment() -> None:
    watch = StallWatch(after_s=5)
    a, b = _input(highwater=110, partition=0), _input(highwater=110, partition=1)
    watch.observe(0.0, [a, b])
    b_moved = _input(highwater=110, done=100, committed=100, partition=1)
    changes = watch.observe(6.0, [a, b_moved])
    assert changes.started == [Stall(a, 0.0)]
    # Partition 0 revoked (another worker's now): dropped without a word.
    assert watch.observe(7.0, [b_moved]) == StallChanges([], [])
    assert watch.stalled == {}


def test_a_rebalance_or_recovery_restarts_the_clocks() -> None:
    watch = StallWatch(after_s=10)
    waiting = _input(highwater=200)
    watch.observe(0.0, [waiting])
    watch.hold(8.0)  # not consuming on purpose
    assert watch.observe(12.0, [waiting]).started == []
    assert watch.observe(18.0, [waiting]).started == [Stall(waiting, 8.0)]


def test_one_error_line_per_stage_names_its_partitions_and_offsets() -> None:
    stalls = [
        Stall(_input(partition=1, highwater=130, taken=101, done=100, committed=None), 5.0),
        Stall(_input(partition=0, highwater=120), 0.0),
    ]
    (line,) = stall_lines(stalls, now_s=125.0)
    assert line == (
        "stage pso-predict-resources stalled: records wait and nothing moved for 125 s on 2 "
        "input partition(s): pso-resource-shares[0] position=100 high-water=120 committed=99 "
        "taken=99 done=99; pso-resource-shares[1] position=100 high-water=130 committed=None "
        "taken=101 done=100"
    )


def test_worker_health_keeps_the_stalls_for_readiness_and_its_log_line_says_so() -> None:
    health = _health()
    health.stalls = StallWatch(after_s=1)
    waiting = _input(highwater=150)
    health.stalls.observe(0.0, [waiting])
    health.stalls.observe(2.0, [waiting])
    snap = health.snapshot(102.0)
    assert snap.stalled == ["pso-predict-resources pso-resource-shares[0]"]
    assert "STALLED=pso-predict-resources pso-resource-shares[0]" in snap.log_line()
    assert snap.to_dict()["stalled"] == snap.stalled
    health.record_done("pso-resource-shares", 0, 120)
    assert health.done[("pso-resource-shares", 0)] == 121
    health.forget_partition("pso-resource-shares", 0)
    assert health.done == {}
