"""Calibrated conflict probabilities: the reliability table, the online calibrator, the learnt
error paths of the total, and the per-resource threshold from the costs of a miss and a false
alarm (with its validation in ``pso.yaml``)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from app.core.config import AlertCosts, FleetSpec, PredictionSpec, ResourceSpec, WindowSpec
from app.core.conflicts import ConflictPredictor, level_z
from app.core.conflicts.calibration import Calibrator, ErrorPaths, Reliability, reliability_dict
from app.core.engine import EngineConfig, ResourcePredictor
from app.core.events import ConflictPredicted
from app.core.scaling import upper_path
from app.core.snapshot import seal, unseal
from app.core.types import SeriesForecast
from app.settings import ConfigError, load_policy

STEP = 60_000
T0 = 1_767_225_600_000
KEY = "unit-test-snapshot-key-0123456789"


def fc(origin: int, points: list[float], sigma: float = 1.0) -> SeriesForecast:
    z80, z95 = level_z(0.8), level_z(0.95)
    return SeriesForecast(
        origin_ms=origin,
        step_ms=STEP,
        point=tuple(points),
        lower={
            0.8: tuple(p - z80 * sigma for p in points),
            0.95: tuple(p - z95 * sigma for p in points),
        },
        upper={
            0.8: tuple(p + z80 * sigma for p in points),
            0.95: tuple(p + z95 * sigma for p in points),
        },
        model="test",
        recent_error=sigma,
        warming_up=False,
    )


# --------------------------------------------------------------------------- reliability


def test_reliability_table_and_brier_on_a_hand_made_case() -> None:
    """Horizon 3, four bins. Breaches in windows 4 and 9 only; each prediction at origin t
    covers windows t..t+2, so the outcomes are known by hand."""
    rel = Reliability(horizon=3, bins=4)
    predicted = {0: 0.1, 1: 0.2, 2: 0.6, 3: 0.7, 4: 0.9, 5: 0.1, 6: 0.3, 7: 0.8, 8: 0.55, 9: 0.95}
    breaches = {4, 9}
    for window in range(12):
        if window in predicted:
            rel.predict(window, predicted[window])
        rel.observe(window, window in breaches)
    # Outcomes: origin t is a hit iff a breach falls in t..t+2.
    outcome = {t: any(b in breaches for b in range(t, t + 3)) for t in predicted}
    assert outcome == {
        0: False, 1: False, 2: True, 3: True, 4: True, 5: False,
        6: False, 7: True, 8: True, 9: True,
    }  # fmt: skip
    table = rel.as_dict()
    assert table["scored"] == 10  # origin 9's last window (11) was seen
    bins = table["bins"]
    assert [b["count"] for b in bins] == [3, 1, 3, 3]  # [0,.25) [.25,.5) [.5,.75) [.75,1]
    assert bins[0]["observed_frequency"] == 0.0
    assert bins[1]["observed_frequency"] == 0.0
    assert bins[2]["observed_frequency"] == 1.0  # 0.6, 0.7, 0.55: all hits
    assert bins[3]["observed_frequency"] == 1.0  # 0.9, 0.8, 0.95
    assert bins[2]["mean_predicted"] == pytest.approx((0.6 + 0.7 + 0.55) / 3)
    expected_brier = sum((p - outcome[t]) ** 2 for t, p in predicted.items()) / 10
    assert table["brier"] == pytest.approx(expected_brier)
    assert table["base_rate"] == pytest.approx(0.6)


def test_reliability_does_not_score_a_prediction_whose_windows_were_not_all_seen() -> None:
    rel = Reliability(horizon=3, bins=2)
    rel.predict(0, 0.9)
    rel.observe(0, False)
    rel.observe(1, False)
    rel.observe(3, True)  # window 2 never came: origin 0 is not scored
    assert rel.as_dict()["scored"] == 0
    rel.predict(5, 0.2)
    for window in range(5, 8):
        rel.observe(window, False)
    assert rel.as_dict()["scored"] == 1
    assert rel.as_dict()["bins"][0]["count"] == 1


def test_pooled_reliability_adds_counts_and_weights_brier_by_scored() -> None:
    a, b = Reliability(horizon=1, bins=2), Reliability(horizon=1, bins=2)
    a.predict(0, 0.9)
    a.observe(0, True)  # brier 0.01
    for t in range(3):
        b.predict(t, 0.2)
        b.observe(t, t == 0)  # (0.8^2 + 0.2^2 + 0.2^2)
    pooled = reliability_dict([a, b])
    assert pooled["scored"] == 4
    assert pooled["brier"] == pytest.approx((0.01 + 0.64 + 0.04 + 0.04) / 4)
    assert [r["count"] for r in pooled["bins"]] == [3, 1]
    assert pooled["bins"][0]["observed_frequency"] == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- calibrator


def test_untrained_calibrator_is_the_identity() -> None:
    cal = Calibrator(horizon=2)
    for raw in (0.0, 0.013, 0.25, 0.5, 0.77, 0.99, 1.0):
        assert cal.apply(raw) == pytest.approx(raw, abs=1e-12)


def test_calibrator_learns_that_overconfident_probabilities_come_true_less_often() -> None:
    """Raw 0.8 comes true one time in five, raw 0.1 one time in ten: the calibrated values
    move to those frequencies, and the map stays monotone."""
    cal = Calibrator(horizon=1, bins=10, prior=2.0, half_life=1e9)
    for t in range(1000):
        raw, hit = (0.85, t % 5 == 0) if t % 2 else (0.15, t % 20 == 0)
        cal.predict(t, raw)
        cal.observe(t, hit)
    assert cal.apply(0.85) == pytest.approx(0.2, abs=0.02)
    assert cal.apply(0.15) == pytest.approx(0.1, abs=0.02)
    grid = [cal.apply(i / 200) for i in range(201)]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(grid))


# --------------------------------------------------------------------------- error paths


def test_error_paths_learn_a_heavier_tail_than_the_intervals_claim() -> None:
    """Every forecast says mean 10, sigma 1; the truth is 10 or 14 (four sigmas) in turn.
    The split normal gives P(total > 12.5) ~ 0; the learnt paths give about one half."""
    paths = ErrorPaths(horizon=1, prior_paths=1.0)
    for t in range(400):
        paths.expect(t, [10.0], [1.0])
        paths.observe(t, 14.0 if t % 2 else 10.0)
    p = paths.breach_by(400, [10.0], [1.0], 12.5, [0.0062])
    assert 0.4 < p[0] < 0.6
    fresh = ErrorPaths(horizon=1)
    assert fresh.breach_by(0, [10.0], [1.0], 12.5, [0.0062]) == [0.0062]


def test_error_paths_follow_a_regime_change() -> None:
    """Quiet for a long time, then every window four sigmas high: recent paths dominate."""
    paths = ErrorPaths(horizon=1, prior_paths=1.0, half_life=50.0)
    for t in range(1000):
        paths.expect(t, [10.0], [1.0])
        paths.observe(t, 10.0 if t < 800 else 14.0)
    assert paths.breach_by(1000, [10.0], [1.0], 12.5, [0.0])[0] > 0.9


def test_error_quantiles_are_the_totals_own_not_the_intervals() -> None:
    """The forecasts claim sigma 1 but the total misses by uniform -1..+1 (a tighter truth):
    the learnt 90th percentile is about 0.8 sigmas, not the split normal's 1.28; with no
    paths it is the split normal's."""
    paths = ErrorPaths(horizon=2, prior_paths=1.0)
    assert paths.quantiles(0, 0.9, 1.28) == [1.28, 1.28]
    for t in range(500):
        paths.expect(t, [10.0, 10.0], [1.0, 1.0])
        paths.observe(t, 10.0 + ((t * 37) % 101) / 50.0 - 1.0)
    z = paths.quantiles(500, 0.9, 1.28)
    assert all(0.7 < zh < 0.9 for zh in z)


def test_error_quantile_is_the_weighted_quantile_of_the_paths() -> None:
    """Equal weights, errors 0..9 ten times each, no prior: the 0.85 quantile is 8 (the least
    value with 85 % of the weight at or below it), the 0.45 quantile 4, and paths too old to weigh
    (their weights underflow) give the parametric answer instead of a division by zero."""
    paths = ErrorPaths(horizon=1, prior_paths=0.0, half_life=1e12)
    for t in range(100):
        paths.expect(t, [0.0], [1.0])
        paths.observe(t, float(t % 10))
    assert paths.quantiles(100, 0.85, 1.28) == [8.0]
    assert paths.quantiles(100, 0.45, 1.28) == [4.0]
    stale = ErrorPaths(horizon=1, half_life=1.0)
    stale.expect(0, [0.0], [1.0])
    stale.observe(0, 1.0)
    assert stale.quantiles(10**6, 0.9, 1.28) == [1.28]
    assert stale.breach_by(10**6, [0.0], [1.0], 0.5, [0.3]) == [0.3]


def test_elastic_upper_bound_covers_its_level_on_the_total() -> None:
    """Two contributors whose intervals are far too wide (sigma 4, true error uniform ±1):
    the upper bound that sizes an elastic pool comes from the total's own errors, so about
    80 % of totals stay under it at level 0.6 (its upper 80th percentile; a little more while
    the split normal's answer is still blended in), where the split normal's bound holds all."""
    pred = ConflictPredictor("pool", horizon=3, step_ms=STEP)
    rng = np.random.default_rng(3)
    learnt = parametric = seen = 0
    bounds: tuple[float, float] | None = None
    for t in range(1000):
        origin = T0 + t * STEP
        noise = rng.uniform(-1.0, 1.0, size=2)
        actual = {"a": 10.0 + float(noise[0]), "b": 20.0 + float(noise[1])}
        if bounds is not None and t > 500:
            seen += 1
            learnt += sum(actual.values()) <= bounds[0]
            parametric += sum(actual.values()) <= bounds[1]
        forecasts = {"a": fc(origin, [10.0] * 3, 4.0), "b": fc(origin, [20.0] * 3, 4.0)}
        z = pred.upper_z(origin, 0.6)
        assert z is not None
        total = pred.distribution(forecasts)
        bounds = (
            upper_path(total, 0.6, z)[0],
            upper_path(total, 0.6)[0],
        )
        pred.update(origin, forecasts, actual, capacity=100.0)
    assert 0.75 < learnt / seen < 0.9
    assert parametric == seen


def test_predictor_with_learnt_errors_pickles_and_replays_the_same() -> None:
    def run(cp: ConflictPredictor, start: int, stop: int) -> list[ConflictPredicted]:
        out = []
        for j in range(start, stop):
            level = 80.0 + 30.0 * math.sin(j / 7.0)
            f = {"a": fc(T0 + j * STEP, [level / 2] * 5), "b": fc(T0 + j * STEP, [level / 2] * 5)}
            actual = {"a": level / 2 + (j % 3), "b": level / 2}
            out += [
                e
                for e in cp.update(T0 + j * STEP, f, actual, 100.0)
                if isinstance(e, ConflictPredicted)
            ]
        return out

    whole = ConflictPredictor("db", horizon=5)
    first = run(whole, 0, 200) + run(whole, 200, 400)
    half = ConflictPredictor("db", horizon=5)
    head = run(half, 0, 200)
    restored = unseal(seal(half, KEY, context=("t",)), KEY, context=("t",))
    assert head + run(restored, 200, 400) == first
    assert first  # the case does predict conflicts
    # ...and what was learnt shapes them (the same case without learning differs).
    assert first != run(ConflictPredictor("db", horizon=5, learn_errors=False), 0, 400)


# --------------------------------------------------------------------------- costs


def test_threshold_from_costs() -> None:
    assert AlertCosts(miss=10.0, false_alarm=1.0).threshold == pytest.approx(1 / 11)
    assert AlertCosts(miss=1.0, false_alarm=3.0).threshold == pytest.approx(0.75)
    spec = ResourceSpec(10.0, costs=AlertCosts(miss=4.0, false_alarm=1.0))
    assert spec.conflict_threshold(0.5) == pytest.approx(0.2)
    assert ResourceSpec(10.0).conflict_threshold(0.5) == 0.5


def _resource(costs: AlertCosts | None) -> ResourcePredictor:
    policy = FleetSpec(
        window=WindowSpec(size_s=60),
        resources={"db": ResourceSpec(100.0, costs=costs)},
        prediction=PredictionSpec(horizon=5, conflict_threshold=0.5),
    )
    return ResourcePredictor("db", EngineConfig.from_policy(policy), policy)


def test_resource_threshold_comes_from_its_costs() -> None:
    """A breach about 20 % likely within the horizon: silent at the default threshold (0.5)
    and when false alarms are dear, warned when misses are dear."""
    forecasts = {"a": fc(T0, [80.0] * 5, sigma=12.0)}
    cheap_miss, dear_miss, default = (
        _resource(AlertCosts(miss=1.0, false_alarm=9.0)),
        _resource(AlertCosts(miss=9.0, false_alarm=1.0)),
        _resource(None),
    )
    assert dear_miss.predictor.threshold == pytest.approx(0.1)
    assert cheap_miss.predictor.threshold == pytest.approx(0.9)
    assert default.predictor.threshold == 0.5
    p = dear_miss.predictor.judged_probabilities(dear_miss.predictor.distribution(forecasts), 100.0)
    assert 0.1 < p[-1] < 0.5
    for rp, warns in ((cheap_miss, False), (dear_miss, True), (default, False)):
        events = rp.predictor.update(T0, forecasts, {"a": 80.0}, 100.0)
        assert any(isinstance(e, ConflictPredicted) for e in events) is warns


def _yaml(tmp_path: Path, costs: str) -> Path:
    path = tmp_path / "pso.yaml"
    path.write_text(f"resources:\n  db:\n    capacity: 10\n    costs: {costs}\n")
    return path


def test_costs_load_into_the_resource_spec(tmp_path: Path) -> None:
    spec = load_policy(_yaml(tmp_path, "{miss: 10, false_alarm: 1}")).spec()
    assert spec.resources["db"].costs == AlertCosts(miss=10.0, false_alarm=1.0)


@pytest.mark.parametrize(
    ("costs", "fragment"),
    [
        ("{miss: 1000, false_alarm: 1}", "resources.db.costs: miss:false_alarm is 1000:1"),
        ("{miss: 1, false_alarm: 200}", "resources.db.costs: miss:false_alarm is 1:200"),
        ("{miss: 0, false_alarm: 1}", "resources.db.costs.miss: Input should be greater than 0"),
        ("{miss: 10}", "resources.db.costs.false_alarm: Field required"),
        ("{miss: 10, false_alarms: 1}", "resources.db.costs.false_alarm"),
        ("{miss: .nan, false_alarm: 1}", "resources.db.costs.miss"),
    ],
)
def test_bad_costs_are_one_config_error_line(tmp_path: Path, costs: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_policy(_yaml(tmp_path, costs))
    message = str(info.value)
    assert "\n" not in message
    assert fragment in message
