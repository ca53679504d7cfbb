"""Worker health arithmetic: rates, lag and model error from what the sensor counted."""

from __future__ import annotations

from app.core.events import AccuracyReport, HorizonAccuracy
from app.ops.health import WorkerHealth
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
            event_id=f"accuracy:{scope}:1", emitted_at_ms=1, scope=scope, windows_scored=5,
            horizons=[HorizonAccuracy(horizon=1, n=5, mae=1.0, mase=mase, coverage={})],
            conflict_precision=None, conflict_recall=None, conflict_median_lead_s=None,
        )
        health.record_out("pso.accuracy", encode(report))
    for scope, precision in (("resource:db-main", 0.8), ("resource:gpu", 0.95)):
        report = AccuracyReport(
            event_id=f"accuracy:{scope}:1", emitted_at_ms=1, scope=scope, windows_scored=5,
            horizons=[], conflict_precision=precision, conflict_recall=1.0,
            conflict_median_lead_s=None,
        )
        health.record_out("pso.accuracy", encode(report))
    line = health.snapshot(101.0).log_line()
    assert "model(median of 3): mase_h1=0.400" in line
    assert "conflicts(worst of 2): precision=0.800 recall=1.000" in line
