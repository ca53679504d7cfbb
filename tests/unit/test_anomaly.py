"""Behaviour of the per-series online anomaly detector (app/core/anomaly)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import pickle
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.anomaly import (
    AnomalyLikelihood,
    AnomalyScore,
    SeriesAnomalyDetector,
    log_tail_score,
    score_series,
)
from app.core.snapshot import SnapshotRejected, seal, unseal

MIN = 60_000
MIN5 = 300_000
T0 = 1_700_006_400_000  # a UTC midnight
DATA = Path(__file__).resolve().parents[1] / "data" / "anomaly"
KEY = "unit-test-snapshot-key-0123456789"


def noise(n: int, seed: int, level: float = 50.0, sigma: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0.0, sigma) for _ in range(n)]


def run(
    det: SeriesAnomalyDetector, xs: list[float], step: int = MIN, t0: int = T0
) -> list[AnomalyScore]:
    out = []
    for i, x in enumerate(xs):
        ts = t0 + i * step
        out.append(det.score_one(ts, x))
        det.learn_one(ts, x)
    return out


def alarms(scores: list[AnomalyScore], lo: int = 0, hi: int | None = None) -> list[int]:
    hi = len(scores) if hi is None else hi
    return [i for i, s in enumerate(scores) if s.is_anomaly and lo <= i < hi]


# On white noise the detector false-alarms a few times per 10 000 values at the default
# threshold (most of them in its first thousand values, while the tail model is still
# learning). Tests on noise therefore check the episode itself exactly and allow a few stray
# alarms elsewhere (measured: 4 to 8 per 20 000 values on three seeds).


def state(det: SeriesAnomalyDetector) -> bytes:
    return pickle.dumps(det, protocol=pickle.HIGHEST_PROTOCOL)


# --------------------------------------------------------------------------- contract
@settings(max_examples=60, deadline=None)
@given(
    xs=st.lists(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=True),
            st.floats(min_value=-1e12, max_value=1e12),
            st.sampled_from([0.0, 1e12, -1e12, 5e-324, 1e308, 42.0]),
        ),
        min_size=1,
        max_size=250,
    ),
    gaps=st.lists(st.integers(min_value=-5 * MIN, max_value=50 * MIN), min_size=1, max_size=250),
    forecast=st.one_of(st.none(), st.tuples(st.floats(), st.floats(), st.floats())),
)
def test_scores_bounded_and_finite_on_adversarial_input(
    xs: list[float], gaps: list[int], forecast: tuple[float, float, float] | None
) -> None:
    det = SeriesAnomalyDetector(warmup=5, spatial_warmup=10)
    ts = T0
    for i, x in enumerate(xs):
        ts += gaps[i % len(gaps)]  # includes repeated and out-of-order event times
        fc = forecast if i % 3 == 0 else None
        s = det.score_one(ts, x, forecast=fc)
        assert 0.0 <= s.score <= s.likelihood <= 1.0
        assert all(math.isfinite(v) for v in (s.score, s.likelihood, s.expected, s.lower, s.upper))
        assert s.lower <= s.upper
        assert s.is_anomaly <= s.in_anomaly
        det.learn_one(ts, x, forecast=fc)


def test_nan_is_a_missing_value_not_an_anomaly() -> None:
    det = SeriesAnomalyDetector()
    run(det, noise(200, 1))
    before = state(det)
    s = det.score_one(T0 + 200 * MIN, float("nan"))
    det.learn_one(T0 + 200 * MIN, float("nan"))
    assert (s.score, s.in_anomaly, s.reason) == (0.0, False, "missing")
    assert state(det) == before


def test_score_one_does_not_mutate_state() -> None:
    det = SeriesAnomalyDetector()
    run(det, noise(300, 2))
    before = state(det)
    first = det.score_one(T0 + 300 * MIN, 58.0)
    second = det.score_one(T0 + 300 * MIN, 58.0)
    assert first == second
    assert state(det) == before
    # and the value scored is not part of its own score: learning it changes the next one
    det.learn_one(T0 + 300 * MIN, 58.0)
    assert det.score_one(T0 + 301 * MIN, 58.0) != first


def test_warmup_scores_are_held_at_zero() -> None:
    xs = noise(100, 3)
    xs[10] = 500.0  # a huge spike while warming up must not alarm
    scores = run(SeriesAnomalyDetector(warmup=60), xs)
    assert all(s.score == 0.0 and s.warming_up and not s.in_anomaly for s in scores[:60])
    assert not scores[60].warming_up


# --------------------------------------------------------------------------- detection
def test_spike_alarms_once() -> None:
    xs = noise(1500, 4)
    xs[1000] += 15.0
    scores = run(SeriesAnomalyDetector(), xs)
    assert alarms(scores, 990, 1500) == [1000]
    assert len(alarms(scores)) <= 6
    assert scores[1000].score > 0.9
    assert scores[1001].score <= 0.1  # the pair (spike, normal) is novel too: damped
    assert not (scores[1000].lower <= xs[1000] <= scores[1000].upper)


def test_level_shift_alarms_once_per_episode() -> None:
    xs = noise(2000, 5)
    for i in range(1200, 2000):
        xs[i] += 6.0
    scores = run(SeriesAnomalyDetector(), xs)
    assert alarms(scores, 1190, 2000) == [1200]
    assert len(alarms(scores)) <= 6
    # the episode is flagged beyond its first value (kept out of forecaster training) ...
    assert sum(s.in_anomaly for s in scores[1200:1230]) > 1
    # ... and the new level becomes normal again
    assert not any(s.in_anomaly for s in scores[1700:])


def test_two_separate_episodes_alarm_twice() -> None:
    xs = noise(2500, 6)
    xs[1000] += 15.0
    xs[2000] -= 15.0
    scores = run(SeriesAnomalyDetector(), xs)
    assert alarms(scores, 990, 1100) == [1000]
    assert alarms(scores, 1990, 2100) == [2000]


def test_long_flat_series_never_alarms() -> None:
    scores = run(SeriesAnomalyDetector(), [42.0] * 5000)
    assert not any(s.in_anomaly for s in scores)
    assert all(s.expected == 42.0 for s in scores[100:])


def test_flat_zero_and_huge_constant_series_never_alarm() -> None:
    for value in (0.0, 1e12, -3.5e-9):
        scores = run(SeriesAnomalyDetector(), [value] * 800)
        assert not any(s.in_anomaly for s in scores), value


def test_stuck_sensor_is_a_flatline_anomaly() -> None:
    xs = [round(v, 2) for v in noise(1500, 7)]
    for i in range(1100, 1300):
        xs[i] = xs[1099]
    scores = run(SeriesAnomalyDetector(), xs)
    found = alarms(scores, 1000)
    assert len(found) == 1 and 1100 <= found[0] <= 1115
    assert scores[found[0]].reason == "flatline"
    assert len(alarms(scores)) <= 6


def test_a_sensor_stuck_twice_is_two_anomalies() -> None:
    """The first stuck episode used to set the longest run for good: a second one, half as
    long, went unseen. The rule now compares a run with the second-longest."""
    xs = [round(v, 2) for v in noise(4000, 7)]
    for i in range(1100, 1300):
        xs[i] = xs[1099]
    for i in range(3000, 3100):
        xs[i] = xs[2999]
    scores = run(SeriesAnomalyDetector(), xs)
    second = alarms(scores, 2900)
    assert len(second) == 1 and 3000 <= second[0] <= 3015
    assert scores[second[0]].reason == "flatline"


def test_routine_bursts_stop_alarming() -> None:
    rng = random.Random(8)
    xs = [20.0 + rng.gauss(0, 1.5) for _ in range(6000)]
    for start in range(100, 6000, 60):  # a 3-point burst every 5 hours
        for i in range(start, min(start + 3, 6000)):
            xs[i] += 40.0
    scores = run(SeriesAnomalyDetector(), xs, step=MIN5)
    assert len(alarms(scores, 0, 1000)) >= 3  # the first bursts are news ...
    assert alarms(scores, 3000) == []  # ... then learnt: bursts are what this series does


def test_gaps_do_not_alarm_on_a_random_walk() -> None:
    rng = random.Random(11)
    x, ts = 10.0, T0
    det = SeriesAnomalyDetector()
    found = []
    for i in range(3000):
        gap = 60 if i % 500 == 499 else 1  # an hour-long outage now and then
        for _ in range(gap):
            x += rng.gauss(0, 0.05)
        ts += gap * MIN
        if det.score_one(ts, x).is_anomaly:
            found.append(i)
        det.learn_one(ts, x)
    assert found == []


# --------------------------------------------------------------------------- state
def test_deterministic_bit_for_bit() -> None:
    xs = noise(2000, 12)
    xs[1500] += 20
    a = run(SeriesAnomalyDetector(), xs)
    b = run(SeriesAnomalyDetector(), list(xs))
    assert a == b


def test_snapshot_round_trip_continues_identically() -> None:
    xs = noise(3000, 13)
    xs[2500] += 12.0
    live = SeriesAnomalyDetector()
    run(live, xs[:1500])
    blob = seal(live, KEY, context=("t",))
    restored = unseal(blob, KEY, context=("t",))
    assert isinstance(restored, SeriesAnomalyDetector)
    rest_live = run(live, xs[1500:], t0=T0 + 1500 * MIN)
    rest_restored = run(restored, xs[1500:], t0=T0 + 1500 * MIN)
    assert rest_live == rest_restored
    assert alarms(rest_restored, 990, 1100) == [1000]
    with pytest.raises(SnapshotRejected):
        unseal(blob[:-1] + bytes([blob[-1] ^ 1]), KEY, context=("t",))


def test_state_is_bounded() -> None:
    det = SeriesAnomalyDetector()
    run(det, noise(3000, 14), step=MIN)
    size = len(state(det))
    run(det, noise(3000, 15), step=MIN, t0=T0 + 3000 * MIN)
    assert len(state(det)) == size  # the memory is a fixed ring: no growth with time
    assert size <= 28 * 1024  # 2880 remembered values at one a minute (two days)


def test_the_pattern_memory_spans_two_days_of_the_series() -> None:
    minute, hourly, fixed = (
        SeriesAnomalyDetector(),
        SeriesAnomalyDetector(),
        SeriesAnomalyDetector(memory=500),
    )
    gap = [T0] + [T0 + (180 + i) * MIN for i in range(39)]
    for i, ts in enumerate(gap):  # the first spacing is a three-hour silence
        minute.process_one(ts, 50.0 + i % 3)
        fixed.process_one(ts, 50.0 + i % 3)
    run(hourly, noise(40, 2), step=60 * MIN)
    told = SeriesAnomalyDetector(step_ms=MIN)  # the engine passes its window
    sizes = [d._novelty.ring.shape[0] for d in (minute, hourly, told, fixed)]
    assert sizes == [2880, 1000, 2880, 500]


def test_a_one_minute_series_remembers_yesterdays_ramps() -> None:
    """At one value a minute, 1000 values are 17 hours: the evening ramp was gone from the
    pattern memory by the next evening, and its pairs were judged as new. With two days kept
    they lie about half as far from what is remembered (0.51-0.53 of the distance on six
    seeds; an earlier form of this test counted alarms near the ramps, which differ by a
    few borderline rows and depended on the seed)."""

    def level(minute: int) -> float:  # 30 at night, 80 by day, ramps of an hour
        for edge, a, b in ((480, 30.0, 80.0), (1320, 80.0, 30.0)):
            if edge - 30 <= minute < edge + 30:
                return a + (b - a) * (minute - edge + 30) / 60
        return 80.0 if 480 <= minute < 1320 else 30.0

    def evening_distance(**params: int) -> float:
        rng = random.Random(4)
        det = SeriesAnomalyDetector(**params)
        distances = []
        for i in range(5 * 1440):
            x = level(i % 1440) + rng.gauss(0.0, 0.5)
            if i >= 2 * 1440 and abs(i % 1440 - 1320) <= 30:
                distances.append(det._novelty.distance(x))
            det.process_one(T0 + i * MIN, x)
        return sum(distances) / len(distances)

    assert evening_distance() < 0.7 * evening_distance(memory=1000)


# --------------------------------------------------------------------------- extras
def test_external_forecast_sets_expected_range_and_joins_the_score() -> None:
    det = SeriesAnomalyDetector()
    xs = noise(400, 15)
    for i, x in enumerate(xs):
        fc = (50.0, 47.0, 53.0)
        s = det.score_one(T0 + i * MIN, x, forecast=fc)
        assert (s.expected, s.lower, s.upper) == pytest.approx((50.0, 47.0, 53.0))
        det.learn_one(T0 + i * MIN, x, forecast=fc)
    assert det._lik_forecast.n > det.warmup
    s = det.score_one(T0 + 400 * MIN, 80.0, forecast=(50.0, 47.0, 53.0))
    assert s.in_anomaly


def test_process_one_equals_score_then_learn() -> None:
    xs = noise(1500, 18)
    xs[1200] += 20.0
    a, b = SeriesAnomalyDetector(), SeriesAnomalyDetector()
    pair = run(a, xs, step=MIN5)
    fused = [b.process_one(T0 + i * MIN5, x) for i, x in enumerate(xs)]
    assert fused == pair
    assert state(a) == state(b)


def test_score_series_matches_the_detector_loop() -> None:
    xs = noise(700, 16)
    xs[600] -= 25.0
    res = score_series((T0 + i * MIN5, x) for i, x in enumerate(xs))
    assert res == run(SeriesAnomalyDetector(), xs, step=MIN5)
    assert alarms(res, 500, 700) == [600]


def test_real_nab_cpu_incident_is_caught_inside_its_window() -> None:
    meta = json.loads((DATA / "nab_windows.json").read_text())
    name = "nab_ec2_cpu_utilization_825cc2.csv"
    with (DATA / name).open() as f:
        rows = list(csv.DictReader(f))

    def ms(s: str) -> int:
        return int(dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC).timestamp() * 1000)

    ((start, end),) = meta[name]["windows"]
    res = score_series((ms(r["timestamp"]), float(r["value"])) for r in rows)
    hits = [ms(rows[i]["timestamp"]) for i, s in enumerate(res) if s.is_anomaly]
    probation = int(0.15 * len(rows))
    after = [t for t in hits if t >= ms(rows[probation]["timestamp"])]
    inside = [t for t in after if ms(start) <= t <= ms(end)]
    assert inside and len(after) - len(inside) <= 2
    assert inside[0] <= ms(start) + (ms(end) - ms(start)) // 2  # early in the window


# --------------------------------------------------------------------------- likelihood
def test_log_tail_score_is_monotone_and_bounded() -> None:
    zs = [-50.0, -2.0, 0.0, 2.0, 4.0, 6.0, 50.0, math.inf]
    scores = [log_tail_score(z) for z in zs]
    assert scores == sorted(scores)
    assert scores[0] == 0.0 and scores[-1] == 1.0
    assert log_tail_score(4.2649) == pytest.approx(0.5, abs=0.01)  # tail 1e-5


def test_likelihood_score_is_pure_and_adapts_to_heavy_tails() -> None:
    lik = AnomalyLikelihood(short_window=4)
    rng = random.Random(17)
    for i in range(3000):
        lik.learn_one(abs(rng.gauss(0, 1)) + (30.0 if i % 50 == 0 else 0.0))
    before = pickle.dumps(lik)
    assert lik.score_one(30.0) == lik.score_one(30.0)
    assert pickle.dumps(lik) == before
    assert lik.score_one(30.0) < 0.45  # a routine burst
    assert lik.score_one(1000.0) == pytest.approx(1.0)
    restored = pickle.loads(pickle.dumps(lik))
    assert restored.score_one(12.0) == lik.score_one(12.0)


def test_an_endless_run_of_exceedances_recalibrates_the_likelihood() -> None:
    """A run of exceedances is one extreme event and teaches the tail little (runs
    declustering), but one of hundreds of points means the model learnt the wrong scale
    (surprises near 0 while it bootstrapped): it must come back, not score 1.0 for good."""
    lik = AnomalyLikelihood(short_window=1)
    rng = random.Random(5)
    for _ in range(100):
        lik.learn_one(abs(rng.gauss(0, 0.001)))  # a scale learnt too small
    scores = []
    for _ in range(2000):
        x = rng.uniform(1.0, 2.0)  # the series' real surprises from now on: all above it
        scores.append(lik.score_one(x))
        lik.learn_one(x)
    assert min(scores[:50]) > 0.9  # the start of the run: each value looks extreme
    late = scores[-500:]
    assert sum(s >= 0.6 for s in late) < 10, sorted(late)[-10:]


def test_one_early_glitch_does_not_switch_the_detector_off() -> None:
    """A glitch among the first values (10^3, 10^9 or 10^308 on a series at 10 +- 0.2)
    once set the distance floor while fewer than 128 values were stored (the spread was
    interpolated into it): the likelihood learnt from surprises near 0, then about 2,300 rows
    in a row scored >= 0.6 and a jump of 50 sigma at row 2500 was a tenth of an episode.
    Now the series is judged as it would be without the glitch (same noise, seeds 1-3)."""

    def run(seed: int, at: int, glitch: float | None) -> list[AnomalyScore]:
        rng = random.Random(seed)
        det = SeriesAnomalyDetector()
        out = []
        for i in range(3000):
            x = 10.0 + rng.gauss(0, 0.2) + (10.0 if i == 2500 else 0.0)
            x = glitch if i == at and glitch is not None else x
            out.append(det.process_one(1_767_225_600_000 + i * 60_000, x))
        return out

    for seed in (1, 2, 3):
        clean = run(seed, 0, None)
        high = sum(r.likelihood >= 0.6 for r in clean)
        later = [i for i, r in enumerate(clean) if r.is_anomaly and i > 300]
        for at, glitch in ((0, 1000.0), (30, 1000.0), (10, 1e9), (50, 1e308), (5, -1000.0)):
            out = run(seed, at, glitch)
            assert out[2500].score > 0.9, (seed, at, glitch)
            assert sum(r.likelihood >= 0.6 for r in out) <= high + 5, (seed, at, glitch)
            alarms = [i for i, r in enumerate(out) if r.is_anomaly and i > 300]
            assert len(alarms) <= len(later) + 2 and 2500 in alarms, (seed, at, glitch)
