"""PSO's forecaster through river's own API: river's evaluation, estimator checks, pipelines."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import river.checks
from river import anomaly, compose, evaluate, metrics, time_series

from app.core.forecast import RiverSeriesForecaster, SeriesForecaster

STEP = 60_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
H = 5


def daily_wave(days: int, seed: int = 7) -> list[tuple[dict[str, Any], float]]:
    """A seeded daily cycle with noise, 1-min windows, as river's (x, y) stream."""
    rng = np.random.default_rng(seed)
    n = np.arange(days * 1440)
    y = 100.0 + 30.0 * np.sin(2 * np.pi * n / 1440) + rng.normal(0.0, 1.0, n.size)
    return [({"ts_ms": T0 + int(i) * STEP}, float(v)) for i, v in zip(n, y, strict=True)]


def test_river_evaluate_scores_the_pso_forecaster_as_it_is() -> None:
    """`river.evaluate.evaluate` runs PSO's forecaster with no adapter, and what it scores is
    exactly the forecasts PSO's own event-time API gives for those windows."""
    stream = daily_wave(days=3)
    model = RiverSeriesForecaster(horizon=H)
    assert isinstance(model, time_series.base.Forecaster)
    scored = evaluate.evaluate(stream, model, metrics.MAE(), horizon=H)
    by_river = [m.get() for m in scored.metrics]

    # The same protocol by hand on the PSO API: at step t (after t windows were learned),
    # river asks for windows t+1..t+H, then teaches window t.
    pso = SeriesForecaster(horizon=H)
    errors: list[list[float]] = [[] for _ in range(H)]
    for t, (x, y) in enumerate(stream):
        if t >= H and t + H < len(stream):
            for h in range(H):
                target_x, target_y = stream[t + 1 + h]
                errors[h].append(abs(target_y - pso.expected(target_x["ts_ms"])))
        pso.learn_one(x["ts_ms"], y)
    by_hand = [math.fsum(e) / len(e) for e in errors]
    assert by_river == pytest.approx(by_hand, rel=1e-12)
    # And it is a forecaster worth the name: at one step ahead (river's 2 windows), within a
    # few noise standard deviations (the cycle's amplitude is 30).
    assert by_river[0] < 2.0


def test_river_forecast_without_event_times_assumes_consecutive_windows() -> None:
    """Plain river streams (no ``ts_ms``): each value is the window after the last one."""
    stream = daily_wave(days=2)
    plain = RiverSeriesForecaster(horizon=H)
    timed = SeriesForecaster(horizon=H)
    for x, y in stream:
        plain.learn_one(y)
        timed.learn_one(x["ts_ms"] - T0, y)  # windows 0, 1, 2...: what `plain` assumes
    assert plain.forecast(H) == list(timed.forecast().point)
    assert plain.series.forecast_rows() == timed.forecast_rows()
    longer = plain.forecast(H + 3)  # beyond the horizon: the seasonal expectation
    assert longer[:H] == list(timed.forecast().point) and len(longer) == H + 3


def _forecaster_stream(model: Any, scale: int = 1) -> Iterator[Any]:
    """river's own dataset for forecaster checks (`river.checks._yield_datasets` opens with
    ``import sklearn``, which PSO does not install: the forecaster branch never uses it)."""
    yield river.checks._DummyDataset(  # type: ignore[no-untyped-call]
        *(({"time": float(t), "period": float(t % 4)}, 10.0 + 2.0 * t) for t in range(1, 9))
    )


@pytest.mark.parametrize(
    "model",
    [
        RiverSeriesForecaster(horizon=3),
        RiverSeriesForecaster(
            horizon=3,
            extra_candidates=("river.time_series.SNARIMAX(p=1, d=0, q=0)",),
            blend_power=2.0,
        ),
    ],
    ids=["default", "extra-candidate"],
)
def test_river_estimator_checks_pass(model: RiverSeriesForecaster, monkeypatch: Any) -> None:
    """river's `check_estimator`: repr, clone, pickling, parameters, learn_one, forecast."""
    monkeypatch.setattr(river.checks, "_yield_datasets", _forecaster_stream)
    ran = [check.__name__ for check in river.checks.yield_checks(model)]
    assert {"check_clone_is_idempotent", "check_learn_one", "check_forecast"} <= set(ran)
    river.checks.check_estimator(model)


def test_in_a_river_pipeline_and_under_a_river_anomaly_detector() -> None:
    """A river pipeline picks the event time out of richer features; river's
    `PredictiveAnomalyDetection` scores surprises against PSO's forecast."""
    stream = [({**x, "host": "db-1", "noise": 0.5}, y) for x, y in daily_wave(days=2)]
    pipeline = compose.Select("ts_ms") | RiverSeriesForecaster(horizon=H)
    assert isinstance(pipeline, time_series.base.Forecaster)
    scored = evaluate.evaluate(stream, pipeline, metrics.MAE(), horizon=H)
    assert scored.metrics[0].get() < 2.0

    detector = anomaly.PredictiveAnomalyDetection(
        RiverSeriesForecaster(horizon=1), horizon=1, n_std=3.0, warmup_period=60
    )
    scores = []
    for i, (_, y) in enumerate(daily_wave(days=1)):
        y = y + 40.0 if i == 1000 else y  # one spike
        scores.append(detector.score_one(None, y))
        detector.learn_one(None, y)
    assert scores[1000] == 1.0
    # The spike stands out, the cycle does not (river's rule is 3 std of squared errors: noise
    # alone crosses it now and then).
    assert sum(s == 1.0 for s in scores) < 0.03 * len(scores)
