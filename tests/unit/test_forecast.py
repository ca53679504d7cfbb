"""Behaviour of the online multi-horizon forecaster (app.core.forecast.SeriesForecaster)."""

from __future__ import annotations

import itertools
import math
import pickle
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.accuracy import ForecastAccuracy
from app.core.forecast import CANDIDATES, SeriesForecaster
from app.core.forecasters.phase import grid_for
from app.core.forecasters.profile import SeasonalProfile
from app.core.snapshot import seal, unseal
from app.core.types import SeriesForecast

STEP = 60_000
DAY = 1440
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a Monday
KEY = b"0123456789abcdef-forecast-test-key"


def seasonal(n: int, seed: int = 0, noise: float = 2.0, start: int = 0) -> list[float]:
    """Daily sinusoid (trough at midnight) plus gaussian noise, 1-min windows."""
    rng = np.random.default_rng(seed)
    t = np.arange(start, start + n)
    y = 100.0 + 30.0 * np.sin(2 * np.pi * t / DAY - np.pi / 2) + rng.normal(0.0, noise, n)
    return [float(v) for v in y]


def feed(f: SeriesForecaster, ys: list[float], start: int = 0) -> list[SeriesForecast]:
    out = []
    for i, y in enumerate(ys):
        f.learn_one(T0 + (start + i) * STEP, y)
        out.append(f.forecast())
    return out


def assert_well_formed(fc: SeriesForecast, levels: tuple[float, ...] = (0.8, 0.95)) -> None:
    values = list(fc.point)
    for lvl in levels:
        values += list(fc.lower[lvl]) + list(fc.upper[lvl])
    assert all(math.isfinite(v) for v in values), fc
    assert math.isfinite(fc.recent_error) and fc.recent_error >= 0.0
    lo = sorted(levels)
    for h in range(fc.horizon):
        for lvl in lo:
            assert fc.lower[lvl][h] <= fc.point[h] <= fc.upper[lvl][h]
        for narrow, wide in itertools.pairwise(lo):  # nested: the wider level contains
            assert fc.lower[wide][h] <= fc.lower[narrow][h]
            assert fc.upper[narrow][h] <= fc.upper[wide][h]


# ----------------------------------------------------------------- robustness


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e-300, max_value=1e-300),
    st.sampled_from([0.0, 1.0, -1.0, 1e9, -1e9, 1e308, 5e-324]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=40), values), min_size=1, max_size=80))
def test_adversarial_series_never_give_nan_or_raise(steps: list[tuple[int, float]]) -> None:
    """Any values (huge, tiny, NaN, inf), any gaps, duplicates: forecasts stay finite/ordered."""
    f = SeriesForecaster(horizon=5)
    n = 0
    for gap, y in steps:
        n += gap  # gap 0 repeats the window: must be ignored
        f.learn_one(T0 + n * STEP, y)
        assert_well_formed(f.forecast())
        assert math.isfinite(f.predict_one())
        assert math.isfinite(f.expected(T0 + (n + 3) * STEP))
        assert math.isfinite(f.expected(T0 + (n + 500) * STEP))


@pytest.mark.parametrize(
    "name, ys",
    [
        ("constant", [7.0] * 400),
        ("zeros", [0.0] * 400),
        ("jump_1e9", [1.0] * 200 + [1e9 + 1.0] * 200),
        ("alternating_1e9", [0.0 if i % 2 else 1e9 for i in range(400)]),
        ("tiny", [1e-300 * (1 + (i % 7)) for i in range(400)]),
        ("huge", [1e300 * (1 + (i % 7)) for i in range(400)]),
        ("sparse", [5.0 if i % 37 == 0 else 0.0 for i in range(400)]),
    ],
)
def test_pathological_series_stay_finite(name: str, ys: list[float]) -> None:
    f = SeriesForecaster()
    for fc in feed(f, ys):
        assert_well_formed(fc)


def test_constant_series_forecasts_the_constant() -> None:
    f = SeriesForecaster()
    fc = feed(f, [7.0] * 300)[-1]
    assert fc.point == pytest.approx((7.0,) * 15, abs=1e-9)
    assert fc.upper[0.95][0] - fc.lower[0.95][0] == pytest.approx(0.0, abs=1e-6)


def test_jump_by_1e9_is_followed() -> None:
    f = SeriesForecaster()
    fc = feed(f, [1.0] * 300 + [1e9] * 300)[-1]
    assert fc.point[0] == pytest.approx(1e9, rel=1e-3)
    assert fc.lower[0.95][0] <= 1e9 <= fc.upper[0.95][0]


def test_other_window_sizes() -> None:
    for step in (7_000, 3_600_000, 86_400_000):
        f = SeriesForecaster(step_ms=step, horizon=4)
        for i in range(300):
            f.learn_one(T0 + i * step, 10.0 + (i % 24))
            assert_well_formed(f.forecast())


def test_invalid_parameters_are_rejected() -> None:
    with pytest.raises(ValueError):
        SeriesForecaster(horizon=0)
    with pytest.raises(ValueError):
        SeriesForecaster(levels=(0.8, 1.0))
    with pytest.raises(ValueError):
        SeriesForecaster(step_ms=0)
    with pytest.raises(ValueError):
        SeriesForecaster(untrusted="drop")


# ----------------------------------------------------------------- semantics


def test_forecast_before_any_window() -> None:
    f = SeriesForecaster(horizon=4)
    fc = f.forecast()
    assert fc.warming_up and fc.model == "none" and fc.point == (0.0,) * 4
    assert f.predict_one() == 0.0 and f.expected(T0) == 0.0


def test_origin_and_targets() -> None:
    f = SeriesForecaster(horizon=15)
    fc = feed(f, seasonal(30))[-1]
    assert fc.origin_ms == T0 + 30 * STEP  # end of the last learned window
    assert fc.step_ms == STEP and fc.horizon == 15
    assert fc.target_ms(15) == T0 + 44 * STEP
    assert f.predict_one() == fc.point[0]
    for h in (1, 7, 15):
        assert f.expected(fc.target_ms(h)) == fc.point[h - 1]


def test_warming_up_until_every_horizon_is_calibrated() -> None:
    horizon, warmup = 5, 20
    f = SeriesForecaster(horizon=horizon, warmup_residuals=warmup)
    ys = seasonal(100, seed=1)
    # The 2nd window already gives a forecast, flagged as warming up.
    f.learn_one(T0, ys[0])
    assert f.forecast().warming_up
    f.learn_one(T0 + STEP, ys[1])
    fc = f.forecast()
    assert fc.warming_up and len(fc.point) == horizon
    assert_well_formed(fc)
    # Horizon h is first scored at window h (0-based), so after window h + warmup - 1 it has
    # `warmup` scores; the last horizon gets there after horizon + warmup windows in all.
    for i in range(2, horizon + warmup - 1):
        f.learn_one(T0 + i * STEP, ys[i])
        assert f.forecast().warming_up
    f.learn_one(T0 + (horizon + warmup - 1) * STEP, ys[horizon + warmup - 1])
    assert not f.forecast().warming_up


def test_warm_up_intervals_are_honest() -> None:
    """Before calibration the intervals are wide: they cover what actually comes next."""
    ys = seasonal(200, seed=2, noise=5.0)
    f = SeriesForecaster(warmup_residuals=60)
    hits = total = 0
    for i, y in enumerate(ys):
        if i >= 1:
            fc = f.forecast()
            if fc.warming_up:
                total += 1
                hits += fc.lower[0.8][0] <= y <= fc.upper[0.8][0]
        f.learn_one(T0 + i * STEP, y)
    assert total > 50
    assert hits / total >= 0.8


def test_gaps_and_stale_windows() -> None:
    f = SeriesForecaster()
    ys = seasonal(3 * DAY, seed=3)
    feed(f, ys)
    before = f.forecast()
    mae = f.mae_by_horizon()
    # A window at or before the last one is ignored, as is a non-finite value.
    f.learn_one(T0 + (3 * DAY - 1) * STEP, 1e6)
    f.learn_one(T0 + 5 * STEP, 1e6)
    f.learn_one(T0 + 3 * DAY * STEP, float("nan"))
    assert f.n_ignored == 3 and f.forecast() == before
    # After a gap longer than the horizon no past forecast targets the new window: no score.
    gap_to = 3 * DAY + 6 * 60  # six hours later
    truth = seasonal(1, seed=9, noise=0.0, start=gap_to)[0]
    f.learn_one(T0 + gap_to * STEP, truth)
    assert f.mae_by_horizon() == mae
    fc = f.forecast()
    assert fc.origin_ms == T0 + (gap_to + 1) * STEP
    # The seasonal phase comes from the timestamp: the forecast after the gap is on the cycle.
    future = seasonal(15, seed=9, noise=0.0, start=gap_to + 1)
    err = np.abs(np.array(fc.point) - np.array(future))
    assert float(err.max()) < 5.0  # cycle amplitude 30, noise 2


def test_short_gap_scores_only_surviving_origins() -> None:
    f = SeriesForecaster(horizon=5, warmup_residuals=1)
    ys = seasonal(400, seed=4)
    feed(f, ys[:300])
    mae = np.array(f.mae_by_horizon())
    # Skip 2 windows: the new window was forecast at horizons 3..5 only.
    f.learn_one(T0 + 302 * STEP, ys[302])
    changed = np.array(f.mae_by_horizon()) != mae
    assert changed.tolist() == [False, False, True, True, True]


# ----------------------------------------------------------------- state


def test_determinism() -> None:
    ys = seasonal(2 * DAY, seed=5)
    a = feed(SeriesForecaster(), ys)
    b = feed(SeriesForecaster(), ys)
    assert a == b


def test_pickle_and_sealed_snapshot_round_trip() -> None:
    ys = seasonal(2 * DAY + 200, seed=6)
    f = SeriesForecaster()
    feed(f, ys[: 2 * DAY])
    blob = pickle.dumps(f)
    assert len(blob) <= 64 * 1024
    g = pickle.loads(blob)
    h = unseal(seal(f, KEY, context=("t",)), KEY, context=("t",))
    assert g.forecast() == f.forecast() == h.forecast()
    rest = ys[2 * DAY :]
    a = feed(f, rest, start=2 * DAY)
    assert feed(g, rest, start=2 * DAY) == a
    assert feed(h, rest, start=2 * DAY) == a


def test_snapshot_size_after_a_week_with_gaps() -> None:
    f = SeriesForecaster()
    ys = seasonal(7 * DAY, seed=7)
    for i, y in enumerate(ys):
        if i % 11:
            f.learn_one(T0 + i * STEP, y)
    assert len(pickle.dumps(f)) <= 64 * 1024


# ----------------------------------------------------------------- learning


def test_seasonal_learning_beats_seasonal_naive() -> None:
    """With iid noise sigma, daily seasonal naive errs by sqrt(2) sigma, a model that knows the
    shape by sigma: MAE ratio ~0.71. Assert a clear margin (0.85) at horizons 1 and 15."""
    days = 4
    ys = np.array(seasonal(days * DAY, seed=8, noise=3.0))
    f = SeriesForecaster()
    model: dict[int, list[float]] = {1: [], 15: []}
    naive: dict[int, list[float]] = {1: [], 15: []}
    forecasts = feed(f, ys.tolist())
    for t in range((days - 1) * DAY + 15, days * DAY):
        for h in (1, 15):
            fc = forecasts[t - h]
            model[h].append(abs(ys[t] - fc.point[h - 1]))
            naive[h].append(abs(ys[t] - ys[t - DAY]))
    for h in (1, 15):
        assert np.mean(model[h]) < 0.85 * np.mean(naive[h])


def test_weekly_pattern_is_learned() -> None:
    """A daily peak on weekdays only: after one full week the profile expects a flat Saturday
    and a peaked Monday, from the timestamps alone (no recent Saturday data to adapt from)."""
    t = np.arange(12 * DAY)  # Monday of week 1 .. Friday of week 2 (day 11)
    weekend = ((t // DAY) % 7) >= 5
    ys = 100.0 + np.where(weekend, 0.0, 40.0 * np.sin(2 * np.pi * t / DAY))
    f = SeriesForecaster()
    feed(f, ys.tolist())
    saturday_6am = T0 + (12 * DAY + 360) * STEP
    monday_6am = T0 + (14 * DAY + 360) * STEP
    assert abs(f.expected(saturday_6am) - 100.0) < 8.0  # a weekday profile would say 140
    assert abs(f.expected(monday_6am) - 140.0) < 8.0


def test_combination_favours_what_works() -> None:
    rng = np.random.default_rng(10)
    walk = (1000.0 + np.cumsum(rng.normal(0.0, 5.0, 3 * DAY))).tolist()
    f = SeriesForecaster()
    fc = feed(f, walk)[-1]
    w = f.weights()
    assert set(w) == set(CANDIDATES)
    # On a random walk the pure seasonal profile is useless at short horizons.
    assert w["profile"][0] < 0.1
    assert fc.model.startswith("blend(") or fc.model in CANDIDATES
    assert "profile:" not in fc.model or w["profile"][0] < 0.1
    # On a clean seasonal series, a profile-based candidate carries the long horizon.
    g = SeriesForecaster()
    feed(g, seasonal(3 * DAY, seed=11, noise=1.0))
    wg = g.weights()
    assert wg["profile"][14] + wg["profile_ar"][14] > 0.6


def test_untrusted_windows_do_not_teach_the_incident() -> None:
    ys = seasonal(3 * DAY, seed=12)
    start, end = 2 * DAY + 600, 2 * DAY + 660  # an hour-long incident at 10:00 on day 3
    spiked = [y * 5.0 if start <= i < end else y for i, y in enumerate(ys)]
    clean = SeriesForecaster()
    trusted = SeriesForecaster()
    guarded = SeriesForecaster()
    clipped = SeriesForecaster(untrusted="clip")
    for i in range(3 * DAY):
        ts = T0 + i * STEP
        incident = start <= i < end
        clean.learn_one(ts, ys[i])
        trusted.learn_one(ts, spiked[i])
        guarded.learn_one(ts, spiked[i], trusted=not incident)
        clipped.learn_one(ts, spiked[i], trusted=not incident)
        if i == end + 5:
            ref = np.array(clean.forecast().point)
            d_trusted = np.abs(np.array(trusted.forecast().point) - ref).max()
            d_guarded = np.abs(np.array(guarded.forecast().point) - ref).max()
            d_clipped = np.abs(np.array(clipped.forecast().point) - ref).max()
    assert d_guarded < 0.2 * d_trusted
    assert d_clipped < 0.5 * d_trusted
    # A day later the profile itself still does not expect the incident at 10:00.
    tomorrow = T0 + (3 * DAY + 630) * STEP
    assert abs(guarded.expected(tomorrow) - clean.expected(tomorrow)) < 5.0


def _profile_after(
    days: int, value: Callable[[int, int], float], recur_days: int, step_min: int = 1
) -> SeasonalProfile:
    """A profile taught ``value(day, minute of the day)`` for ``days`` days."""
    per_day = 1440 // step_min
    grid = grid_for(step_min * 60_000, 600_000, 1_800_000)
    profile = SeasonalProfile(grid, recur_days=recur_days)
    for n in range(days * per_day):
        profile.learn_window(n, value(n // per_day, (n % per_day) * step_min))
    return profile


def test_a_daily_job_is_learned_though_its_steps_are_clipped() -> None:
    """Two quiet days, then a job that steps from 1 to 50 at 09:00 for an hour every day:
    after its second day the profile expects most of it. Clipped every day (no recurrence),
    it would expect a fifth of it: the learning clip is for spikes, not for the daily shape."""

    def job(day: int, minute: int) -> float:
        return 50.0 if day >= 2 and 540 <= minute < 600 else 1.0

    learnt = _profile_after(4, job, recur_days=7).predict_window(4 * 1440 + 570)
    clipped = _profile_after(4, job, recur_days=0).predict_window(4 * 1440 + 570)
    assert learnt > 30.0 > 15.0 > clipped


def test_a_one_off_spike_is_clipped_as_before() -> None:
    """A spike on one day only is no daily shape: the recurrence rule learns it exactly as
    the plain clip does, so the next day expects little of it."""

    def spike(day: int, minute: int) -> float:
        return 50.0 if day == 3 and 900 <= minute < 960 else 1.0

    rule = _profile_after(4, spike, recur_days=7)
    plain = _profile_after(4, spike, recur_days=0)
    assert list(rule.knots) == list(plain.knots)
    assert rule.predict_window(4 * 1440 + 930) < 5.0


def test_a_profile_pickled_before_recurring_surprises_still_loads_and_learns() -> None:
    """Snapshots taken before the surprise marks existed restore with empty marks."""
    profile = _profile_after(1, lambda day, minute: 1.0 + minute / 1440.0, recur_days=7)
    state = profile.__getstate__()
    for key in ("surprise", "earlier", "surprise_run", "_last_n", "recur_days"):
        del state[key]
    old = SeasonalProfile.__new__(SeasonalProfile)
    old.__setstate__(state)
    assert list(old.surprise) == [0.0] * old.grid.n_daily
    old.learn_window(1440, 1.0)
    assert old.predict_window(1441) == pytest.approx(profile.predict_window(1441), abs=0.1)


@pytest.mark.parametrize("step_min", [1, 5])
def test_lone_outliers_at_the_same_hour_are_not_a_daily_shape(step_min: int) -> None:
    """A heavy tail puts a lone outlier near the same minute on many days: that is no step,
    so it stays clipped (a step is a run of values beyond the clip), and the profile is
    exactly what the plain clip makes of it."""

    def outliers(day: int, minute: int) -> float:
        return 50.0 if minute == 900 + (day % 3) * step_min else 1.0

    rule = _profile_after(6, outliers, recur_days=7, step_min=step_min)
    plain = _profile_after(6, outliers, recur_days=0, step_min=step_min)
    assert list(rule.knots) == list(plain.knots)


def test_an_incident_across_midnight_does_not_recur_after_it() -> None:
    """The knots after midnight neighbour the last one before it: a first incident from 23:50
    to 00:30 must not count as having happened "the day before" its own second half."""

    def incident(day: int, minute: int) -> float:
        late, early = day == 2 and minute >= 1430, day == 3 and minute < 30
        return 50.0 if late or early else 1.0

    rule = _profile_after(4, incident, recur_days=7)
    plain = _profile_after(4, incident, recur_days=0)
    assert list(rule.knots) == list(plain.knots)


def test_intervals_are_calibrated_online() -> None:
    ys = seasonal(3 * DAY, seed=13, noise=4.0)
    f = SeriesForecaster()
    forecasts = feed(f, ys)
    hits = {0.8: 0, 0.95: 0}
    total = 0
    for t in range(DAY, 3 * DAY):
        for h in (1, 8, 15):
            fc = forecasts[t - h]
            total += 1
            for lvl in hits:
                hits[lvl] += fc.lower[lvl][h - 1] <= ys[t] <= fc.upper[lvl][h - 1]
        assert_well_formed(forecasts[t])
    assert abs(hits[0.8] / total - 0.8) < 0.05
    assert abs(hits[0.95] / total - 0.95) < 0.03
    assert 0.0 < forecasts[-1].recent_error < 10.0


def test_accuracy_fed_by_the_forecaster_equals_standalone_scoring() -> None:
    """`learn_one(..., accuracy=)` scores exactly what `ForecastAccuracy.observe` + `record`
    would, including untrusted (scored against the actual value), clipped and gappy windows."""
    ys = seasonal(3 * DAY, seed=11, noise=3.0)
    ys = [float(round(y)) if i % 7 == 0 else y for i, y in enumerate(ys)]
    ys[1500] = 5e101  # clipped for learning, scored as is
    fed, shadow = ForecastAccuracy(STEP, 15, (0.8, 0.95)), ForecastAccuracy(STEP, 15, (0.8, 0.95))
    f = SeriesForecaster()
    for i, y in enumerate(ys):
        if i % 97 in (5, 6) or 2000 <= i < 2040:  # short gaps and one longer than the horizon
            continue
        if i == DAY + 100:
            fed.reset()
            shadow.reset()
        ts = T0 + i * STEP
        shadow.observe(ts, y)
        f.learn_one(ts, y, trusted=i % 13 != 0, accuracy=fed)
        shadow.record(f.forecast())
    assert fed.totals == shadow.totals
    assert fed.totals[0].n > DAY and 0 < fed.totals[14].covered[0.8] < fed.totals[14].n


def test_forecast_rows_are_the_forecast() -> None:
    f = SeriesForecaster()
    assert f.forecast_rows() == []
    feed(f, seasonal(300, seed=12))
    fc, rows = f.forecast(), f.forecast_rows()
    assert rows == [
        list(fc.point),
        list(fc.lower[0.8]),
        list(fc.lower[0.95]),
        list(fc.upper[0.8]),
        list(fc.upper[0.95]),
    ]
    assert (f.model_name, f.recent_error, f.warming_up) == (
        fc.model,
        fc.recent_error,
        fc.warming_up,
    )
