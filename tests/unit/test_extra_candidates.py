"""``pso.yaml`` knobs that shape each series' models. River forecasters as extra candidates
of the online model selection (``prediction.extra_candidates``): parsed safely, one instance
per series, weighted when good, benched (never fatal) when they raise or return NaN. And the
anomaly detector's memory (``prediction.anomaly_memory``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from river import time_series

from app.core.engine import PredictionEngine
from app.core.events import Forecast, LoadWindow, SeriesStats, ms_to_iso
from app.core.forecast import SeriesForecaster
from app.settings import ConfigError, load_policy

STEP = 60_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
HOLT_WINTERS_12 = "river.time_series.HoltWinters(alpha=0.3, beta=0.01, gamma=0.3, seasonality=12)"


def write_policy(tmp_path: Path, candidates: list[str]) -> Path:
    lines = ["prediction:", "  horizon: 5", "  extra_candidates:" + ("" if candidates else " []")]
    lines += [f"    - {c!r}" if "'" not in c else f'    - "{c}"' for c in candidates]
    path = tmp_path / "pso.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def cycle12(n: int, seed: int) -> list[float]:
    """A 12-window cycle (no daily or weekly shape: PSO's profile cannot know it) + noise."""
    rng = np.random.default_rng(seed)
    return [50.0 + 20.0 * math.sin(2 * math.pi * i / 12) + rng.normal(0.0, 1.0) for i in range(n)]


def window(subsystem: str, i: int, values: dict[str, float]) -> LoadWindow:
    start = T0 + i * STEP
    return LoadWindow(
        event_id=f"w:{subsystem}:{start}",
        subsystem=subsystem,
        window_start_ms=start,
        window_end_ms=start + STEP,
        window_start=ms_to_iso(start),
        window_end=ms_to_iso(start + STEP),
        samples=3,
        metrics={k: SeriesStats(count=3, mean=v, min=v, max=v, last=v) for k, v in values.items()},
        resources={},
    )


# ------------------------------------------------------------------ from pso.yaml


def test_a_river_candidate_from_pso_yaml_runs_per_series_and_wins_where_it_is_best(
    tmp_path: Path,
) -> None:
    policy = load_policy(write_policy(tmp_path, [HOLT_WINTERS_12]))
    assert policy.prediction.spec().extra_candidates == (HOLT_WINTERS_12,)
    engine = PredictionEngine(policy.spec())
    plain = PredictionEngine(load_policy(write_policy(tmp_path, [])).spec())
    n = 1500
    series = {"api": cycle12(n, seed=1), "db": cycle12(n, seed=2)}
    errors: dict[str, list[float]] = {"with": [], "without": []}
    last: dict[str, Forecast] = {}
    for i in range(n):
        for name, ys in series.items():
            w = window(name, i, {"cycle": ys[i], "noise": 10.0 + ys[i] % 1.0})
            for key, eng in (("with", engine), ("without", plain)):
                fc = next(e for e in eng.process(w) if isinstance(e, Forecast))
                if name == "api" and i >= 1000 and i + 1 < n:
                    errors[key].append(abs(fc.metrics["cycle"].point[0] - ys[i + 1]))
                if key == "with":
                    last[name] = fc

    # One river model per series, each taught its own series.
    models = [
        (model.forecaster._extras, model.forecaster.extra_candidates)
        for sub in engine.subsystems.values()
        for model in sub.series.values()
    ]
    assert len(models) == 4
    instances = [extras[0].model for extras, _ in models]
    assert all(isinstance(m, time_series.HoltWinters) for m in instances)
    assert len({id(m) for m in instances}) == 4
    assert all(m._initialized for m in instances)  # type: ignore[attr-defined]
    levels = {round(m.level[-1], 3) for m in instances}  # type: ignore[attr-defined]
    assert len(levels) == 4  # different series, different states

    # Where the 12-window cycle is the truth, the candidate that knows it takes the blend...
    for name in series:
        weights = engine.subsystems[name].series[("metric", "cycle")].forecaster.weights()
        assert min(weights["holtwinters"]) > 0.9, weights
        assert last[name].metrics["cycle"].model.startswith(("holtwinters", "blend(holtwinters"))
    # ...and the forecasts are better for it.
    assert np.mean(errors["with"]) < 0.6 * np.mean(errors["without"])


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("river.time_series.Prophet(p=1)", "unknown class river.time_series.Prophet"),
        ("river.linear_model.LinearRegression()", "is not a river forecaster"),
        ("river.time_series.SNARIMAX(p=2)", "bad argument for river.time_series.SNARIMAX"),
        ("river.time_series.HoltWinters(alpha=0.3, seasonality=12)", "gamma must be set"),
        ("river.time_series.SNARIMAX(p=exit(3), d=0, q=0)", "only literal values"),
        ("river.time_series.SNARIMAX(**{'p': 1})", "**kwargs is not allowed"),
        ("os.system('echo owned')", "not a river class"),
        ("river.time_series._private()", "private names are not allowed"),
        ("river.time_series.SNARIMAX(p=1,", "not a Python expression"),
    ],
)
def test_a_bad_entry_is_one_readable_config_error_naming_it(
    tmp_path: Path, entry: str, why: str
) -> None:
    path = write_policy(tmp_path, ["river.time_series.SNARIMAX(p=1, d=0, q=0)", entry])
    with pytest.raises(ConfigError) as caught:  # never SystemExit: nothing is evaluated
        load_policy(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: prediction.extra_candidates: {entry!r}: ")
    assert why in message


# ------------------------------------------------------------------ benched, never fatal


class Misbehaving(time_series.base.Forecaster):
    """A river forecaster that raises or returns NaN/inf on a schedule (``mode``)."""

    def __init__(self, mode: str = "raise", every: int = 1) -> None:
        self.mode = mode
        self.every = every
        self.n = 0
        self.last = 0.0

    def learn_one(self, y: float, x: dict[str, Any] | None = None) -> None:
        self.n += 1
        self.last = y
        if self.mode == "raise-learning" and self.n % self.every == 0:
            raise RuntimeError("diverged while learning")

    def forecast(self, horizon: int, xs: list[dict[str, Any]] | None = None) -> list[float]:
        if self.n % self.every == 0:
            if self.mode == "raise":
                raise ZeroDivisionError("float division by zero")
            if self.mode == "nan":
                return [math.nan] * horizon
            if self.mode == "inf":
                return [self.last] * (horizon - 1) + [math.inf]
            if self.mode == "short":
                return [self.last]
            if self.mode == "biased":
                return [self.last + 25.0] * horizon
        return [self.last] * horizon  # naive: a decent candidate when it works


@pytest.fixture
def misbehaving(monkeypatch: pytest.MonkeyPatch) -> str:
    """Make `Misbehaving` reachable as ``river.time_series.Misbehaving`` (entries must name a
    river class); returns that path."""
    monkeypatch.setattr(time_series, "Misbehaving", Misbehaving, raising=False)
    return "river.time_series.Misbehaving"


def rows_of(f: SeriesForecaster) -> tuple[tuple[float, ...], ...]:
    fc = f.forecast()
    return (fc.point, *fc.lower.values(), *fc.upper.values())


REASONS = {
    "raise": "ZeroDivisionError: float division by zero",
    "nan": "non-finite forecast",
    "inf": "non-finite forecast",
    "short": "returned 1 values for a horizon of 5",
    "raise-learning": "RuntimeError: diverged while learning",
}


@pytest.mark.parametrize("mode", sorted(REASONS))
def test_a_candidate_that_always_fails_changes_nothing_but_the_model_note(
    misbehaving: str, mode: str
) -> None:
    """Benched every window: the forecasts are exactly those without it, and say why."""
    ys = cycle12(400, seed=3)
    plain = SeriesForecaster(horizon=5)
    flawed = SeriesForecaster(horizon=5, extra_candidates=[f"{misbehaving}(mode={mode!r})"])
    for i, y in enumerate(ys):
        plain.learn_one(T0 + i * STEP, y)
        flawed.learn_one(T0 + i * STEP, y)
        assert rows_of(flawed) == rows_of(plain)
        assert flawed.forecast().model.startswith(plain.forecast().model + " benched[misbehaving: ")
    benched, reason = flawed.extra_status()["misbehaving"]
    assert benched == len(ys)
    assert reason == REASONS[mode]
    assert flawed.weights()["misbehaving"] == (0.0,) * 5


def test_a_flaky_candidate_weighs_only_when_it_works(misbehaving: str) -> None:
    """Returns NaN one window in three: weight 0 exactly then, a share the other windows."""
    rng = np.random.default_rng(4)
    ys = (100.0 + np.cumsum(rng.normal(0.0, 1.0, 600))).tolist()  # naive is the best here
    f = SeriesForecaster(horizon=5, extra_candidates=[f"{misbehaving}(mode='nan', every=3)"])
    shares: dict[bool, list[float]] = {True: [], False: []}
    for i, y in enumerate(ys):
        f.learn_one(T0 + i * STEP, y)
        fc = f.forecast()
        assert all(math.isfinite(v) for v in fc.point)
        benched_now = "benched[" in fc.model
        model = f._extras[0].model
        assert isinstance(model, Misbehaving)
        assert benched_now == (model.n % 3 == 0)
        if i > 50:
            shares[benched_now].append(min(f.weights()["misbehaving"]))
    assert max(shares[True]) == 0.0
    assert min(shares[False]) > 0.1  # naive is good on a random walk: a real share
    assert f.extra_status()["misbehaving"][0] == len(ys) // 3


def test_a_poor_candidate_gets_no_weight(misbehaving: str) -> None:
    """Judged by its own errors: always 25 too high, it never weighs in the blend."""
    rng = np.random.default_rng(5)
    ys = (100.0 + np.cumsum(rng.normal(0.0, 1.0, 300))).tolist()
    f = SeriesForecaster(horizon=5, extra_candidates=[f"{misbehaving}(mode='biased')"])
    for i, y in enumerate(ys):
        f.learn_one(T0 + i * STEP, y)
        if i > 20:
            assert max(f.weights()["misbehaving"]) < 1e-3
    assert "misbehaving" not in f.forecast().model
    assert f.extra_status()["misbehaving"] == (0, "")


# ------------------------------------------------------------------ the detector's memory


@pytest.mark.parametrize(
    ("window_s", "memory", "ring"), [(60, None, 2880), (300, None, 1000), (60, 500, 500)]
)
def test_prediction_anomaly_memory_sizes_each_series_detector(
    tmp_path: Path, window_s: int, memory: int | None, ring: int
) -> None:
    """``prediction.anomaly_memory`` caps what a large fleet spends per series; by default
    each series' detector remembers two days of windows."""
    path = tmp_path / "pso.yaml"
    lines = ["window:", f"  size_s: {window_s}", "prediction:"]
    lines += [f"  anomaly_memory: {memory}" if memory else "  horizon: 5"]
    path.write_text("\n".join(lines) + "\n")
    engine = PredictionEngine(load_policy(path).spec())
    engine.process(window("api", 0, {"cpu": 0.5}))
    models = [m for sub in engine.subsystems.values() for m in sub.series.values()]
    assert [m.detector._novelty.ring.shape[0] for m in models] == [ring]
    path.write_text("prediction:\n  anomaly_memory: 5\n")
    with pytest.raises(ConfigError, match="anomaly_memory"):
        load_policy(path)
