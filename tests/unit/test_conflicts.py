"""ConflictPredictor and SaturationWatch: probability, lifecycle, observed breaches, state."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from statistics import NormalDist

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.conflicts import (
    ConflictPredictor,
    SaturationWatch,
    combine_sigmas,
    exceedance_probability,
    level_z,
)
from app.core.events import ConflictObserved, ConflictPredicted
from app.core.snapshot import seal, unseal
from app.core.types import SeriesForecast

STEP = 60_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
CAP = 100.0
KEY = "unit-test-snapshot-key-0123456789"
Z80 = level_z(0.8)
Z95 = level_z(0.95)


def fc(origin: int, points: Sequence[float], sigma: float = 1.0) -> SeriesForecast:
    """A forecast whose intervals are exactly those of a normal with this sigma."""
    return SeriesForecast(
        origin_ms=origin,
        step_ms=STEP,
        point=tuple(float(p) for p in points),
        lower={lv: tuple(p - z * sigma for p in points) for lv, z in ((0.8, Z80), (0.95, Z95))},
        upper={lv: tuple(p + z * sigma for p in points) for lv, z in ((0.8, Z80), (0.95, Z95))},
        model="test",
        recent_error=sigma,
        warming_up=False,
    )


def at(j: int) -> int:
    """Origin of the j-th update (start of absolute window j)."""
    return T0 + j * STEP


def trajectory(
    origin_j: int, paths: dict[str, Callable[[int], float]], horizon: int = 15
) -> dict[str, SeriesForecast]:
    """Forecasts at origin ``j`` of fixed absolute-time paths (window index -> demand)."""
    return {
        name: fc(at(origin_j), [path(origin_j + h - 1) for h in range(1, horizon + 1)])
        for name, path in paths.items()
    }


def rising_a(k: int) -> float:
    return min(38.0 + 6.0 * k, 80.0)  # total crosses 100 at absolute window 6, plateaus at 7


def flat(value: float) -> Callable[[int], float]:
    def path(k: int) -> float:
        return value

    return path


PATHS: dict[str, Callable[[int], float]] = {"a": rising_a, "b": flat(25.0), "c": flat(5.0)}


def actual_of(k: int, paths: dict[str, Callable[[int], float]] = PATHS) -> dict[str, float]:
    return {name: path(k) for name, path in paths.items()}


def predicted(events: Sequence[ConflictPredicted | ConflictObserved]) -> list[ConflictPredicted]:
    return [e for e in events if isinstance(e, ConflictPredicted)]


def observed(events: Sequence[ConflictPredicted | ConflictObserved]) -> list[ConflictObserved]:
    return [e for e in events if isinstance(e, ConflictObserved)]


def step(
    cp: ConflictPredictor, j: int, paths: dict[str, Callable[[int], float]] = PATHS
) -> list[ConflictPredicted | ConflictObserved]:
    return cp.update(at(j), trajectory(j, paths, cp.horizon), actual_of(j - 1, paths), CAP)


# --------------------------------------------------------------------------- the maths


def test_sigma_from_interval_gives_textbook_tail() -> None:
    cp = ConflictPredictor("db", horizon=1, correlation=0.0)
    probs = cp.probabilities({"a": fc(T0, [50.0], sigma=2.0)}, capacity=52.0)
    assert probs[0] == pytest.approx(1 - NormalDist().cdf(1.0), abs=1e-9)


def test_correlation_interpolates_between_independent_and_comonotonic() -> None:
    assert combine_sigmas([1.0, 1.0], 0.0) == pytest.approx(math.sqrt(2))
    assert combine_sigmas([1.0, 1.0], 1.0) == pytest.approx(2.0)
    assert math.sqrt(2) < combine_sigmas([1.0, 1.0], 0.3) < 2.0


def test_asymmetric_interval_uses_the_upper_side_above_the_mean() -> None:
    skewed = SeriesForecast(
        origin_ms=T0, step_ms=STEP, point=(50.0,), lower={0.8: (49.0,)}, upper={0.8: (60.0,)}
    )
    cp = ConflictPredictor("db", horizon=1)
    above = cp.probabilities({"a": skewed}, capacity=55.0)[0]
    below = cp.probabilities({"a": skewed}, capacity=49.5)[0]
    assert above == pytest.approx(1 - NormalDist(50.0, 10.0 / Z80).cdf(55.0), abs=1e-9)
    assert below == pytest.approx(1 - NormalDist(50.0, 1.0 / Z80).cdf(49.5), abs=1e-9)


def test_forecast_without_intervals_falls_back_to_recent_error() -> None:
    bare = SeriesForecast(origin_ms=T0, step_ms=STEP, point=(50.0,), recent_error=4.0)
    p = ConflictPredictor("db", horizon=1).probabilities({"a": bare}, capacity=55.0)[0]
    assert p == pytest.approx(1 - NormalDist(50.0, 4.0 * math.sqrt(math.pi / 2)).cdf(55.0))


_points = st.lists(st.floats(0.0, 200.0), min_size=3, max_size=3)
_widths = st.floats(0.0, 30.0)


@settings(max_examples=150, deadline=None)
@given(
    contributors=st.lists(st.tuples(_points, _widths, _widths), min_size=1, max_size=4),
    cap_low=st.floats(0.01, 500.0),
    delta=st.floats(0.0, 500.0),
    rho=st.floats(0.0, 1.0),
)
def test_probability_is_monotone_in_capacity(
    contributors: list[tuple[list[float], float, float]],
    cap_low: float,
    delta: float,
    rho: float,
) -> None:
    forecasts = {
        f"s{i}": SeriesForecast(
            origin_ms=T0,
            step_ms=STEP,
            point=tuple(points),
            lower={0.8: tuple(p - down for p in points)},
            upper={0.8: tuple(p + up for p in points)},
        )
        for i, (points, up, down) in enumerate(contributors)
    }
    cp = ConflictPredictor("db", horizon=3, correlation=rho)
    low = cp.probabilities(forecasts, cap_low)
    high = cp.probabilities(forecasts, cap_low + delta)
    for p_low, p_high in zip(low, high, strict=True):
        assert 0.0 <= p_high <= p_low <= 1.0
        assert math.isfinite(p_low) and math.isfinite(p_high)


@settings(max_examples=200, deadline=None)
@given(
    mean=st.floats(-1e6, 1e6),
    up=st.floats(0.0, 1e4),
    down=st.floats(0.0, 1e4),
    c1=st.floats(-1e6, 1e6),
    c2=st.floats(-1e6, 1e6),
)
def test_exceedance_probability_is_a_tail(
    mean: float, up: float, down: float, c1: float, c2: float
) -> None:
    lo, hi = sorted((c1, c2))
    assert (
        0.0
        <= exceedance_probability(mean, up, down, hi)
        <= (exceedance_probability(mean, up, down, lo))
        <= 1.0
    )


# --------------------------------------------------------------------------- the lifecycle


def test_rising_total_predicted_once_six_windows_ahead_with_ranked_contributors() -> None:
    cp = ConflictPredictor("db")
    events = step(cp, 0)
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, ConflictPredicted)
    assert event.status == "predicted"
    assert event.emitted_at_ms == at(0)
    assert event.expected_start_ms == at(6)
    assert event.lead_time_s == 6 * STEP // 1000
    assert event.conflict_id == f"db@{at(6)}"
    assert event.event_id == f"db@{at(6)}:predicted:{at(0)}"
    assert event.expected_end_ms == at(15)  # the run lasts to the horizon's edge
    assert event.predicted_peak == pytest.approx(110.0)
    assert event.probability > 0.99
    assert [c.subsystem for c in event.contributors] == ["a", "b", "c"]
    assert [c.share for c in event.contributors] == pytest.approx([80 / 110, 25 / 110, 5 / 110])
    top = event.contributors[0]
    assert (top.forecast, top.lower, top.upper) == pytest.approx((80.0, 80 - Z80, 80 + Z80))
    assert event.capacity == CAP


def test_stable_inputs_emit_nothing_further() -> None:
    cp = ConflictPredictor("db")
    assert len(step(cp, 0)) == 1
    for j in range(1, 6):
        assert step(cp, j) == []


def test_material_change_emits_one_update_then_nothing() -> None:
    cp = ConflictPredictor("db")
    step(cp, 0)
    step(cp, 1)
    heavier = {**PATHS, "b": flat(40.0)}  # peak 110 -> 125, start pulled earlier
    events = step(cp, 2, heavier)
    assert [(e.status, e.conflict_id) for e in predicted(events)] == [("updated", f"db@{at(6)}")]
    assert events[0].predicted_peak == pytest.approx(125.0)  # type: ignore[union-attr]
    assert step(cp, 3, heavier) == []


def test_top_contributor_change_is_material() -> None:
    cp = ConflictPredictor("db")
    base = {"a": flat(60.0), "b": flat(50.0)}
    assert [e.status for e in predicted(step(cp, 0, base))] == ["predicted"]
    swapped = {"a": flat(50.0), "b": flat(60.0)}
    events = predicted(step(cp, 1, swapped))
    assert [e.status for e in events] == ["updated"]
    assert events[0].contributors[0].subsystem == "b"


def _mean_for(p: float, sigma: float = 1.0) -> float:
    """Flat demand whose single-contributor P(> CAP) is ``p``."""
    return CAP + sigma * NormalDist().inv_cdf(p)


def test_small_probability_noise_emits_nothing() -> None:
    cp = ConflictPredictor("db", horizon=5)
    assert [e.status for e in predicted(step(cp, 0, {"a": flat(_mean_for(0.6))}))] == ["predicted"]
    for j in range(1, 12):
        wobble = _mean_for(0.65 if j % 2 else 0.55)
        assert predicted(step(cp, j, {"a": flat(wobble)})) == []


def test_falling_back_clears_once_without_flapping() -> None:
    cp = ConflictPredictor("db", horizon=5, clear_after=1, probability="per_horizon")
    statuses: list[str] = []
    statuses += [e.status for e in predicted(step(cp, 0, {"a": flat(_mean_for(0.9))}))]
    # Noise around the threshold (above threshold - hysteresis) keeps it open, silently.
    for j, p in enumerate([0.45, 0.53, 0.44, 0.52, 0.46, 0.54], start=1):
        statuses += [e.status for e in predicted(step(cp, j, {"a": flat(_mean_for(p))}))]
    assert statuses == ["predicted", "updated"]  # 0.9 -> 0.45 is a material change, once
    cleared = predicted(step(cp, 7, {"a": flat(_mean_for(0.2))}))
    assert [e.status for e in cleared] == ["cleared"]
    assert cleared[0].conflict_id == f"db@{at(0)}"
    assert cleared[0].probability == pytest.approx(0.2, abs=1e-9)
    # Below the threshold afterwards: nothing at all, and no re-opening.
    for j, p in enumerate([0.3, 0.45, 0.2, 0.49, 0.1], start=8):
        assert step(cp, j, {"a": flat(_mean_for(p))}) == []


def test_clear_waits_while_actual_demand_is_in_breach() -> None:
    cp = ConflictPredictor("db", horizon=3, clear_after=1)
    cp.update(at(0), {"a": fc(at(0), [120.0] * 3)}, {"a": 90.0}, CAP)
    calm = {"a": fc(at(1), [50.0] * 3)}
    events = cp.update(at(1), calm, {"a": 130.0}, CAP)
    assert [type(e).__name__ for e in events] == ["ConflictObserved"]
    calm = {"a": fc(at(2), [50.0] * 3)}
    events = cp.update(at(2), calm, {"a": 60.0}, CAP)
    assert [e.status for e in predicted(events)] == ["cleared"]


def test_reopened_conflict_for_the_same_window_gets_a_fresh_id() -> None:
    cp = ConflictPredictor("db", horizon=10, clear_after=1)
    first = predicted(cp.update(at(0), {"a": fc(at(0), [50.0] * 5 + [120.0] * 5)}, {}, CAP))
    cp.update(at(1), {"a": fc(at(1), [50.0] * 10)}, {}, CAP)
    again = predicted(cp.update(at(2), {"a": fc(at(2), [50.0] * 3 + [120.0] * 7)}, {}, CAP))
    assert first[0].expected_start_ms == again[0].expected_start_ms == at(5)
    assert first[0].conflict_id != again[0].conflict_id
    assert again[0].status == "predicted"


# --------------------------------------------------------------------------- observed breaches


def test_actual_breach_is_observed_and_linked_to_its_prediction() -> None:
    cp = ConflictPredictor("db")
    conflict_id = predicted(step(cp, 0))[0].conflict_id
    for j in range(1, 7):
        assert observed(step(cp, j)) == []
    events = step(cp, 7)  # closes absolute window 6: 74 + 25 + 5 = 104 > 100
    seen = observed(events)
    assert len(seen) == 1
    breach = seen[0]
    assert breach.window_start_ms == at(6) and breach.window_end_ms == at(7)
    assert breach.demand == pytest.approx(104.0)
    assert breach.predicted_by == conflict_id
    assert breach.lead_time_s == 6 * STEP // 1000
    assert breach.event_id == f"observed:db@{at(6)}"
    assert [c.subsystem for c in breach.contributors] == ["a", "b", "c"]
    # What had been expected of that window (the previous h=1 forecast) is shown.
    assert breach.contributors[0].forecast == pytest.approx(74.0)
    assert breach.contributors[0].upper == pytest.approx(74.0 + Z80)


def test_unforeseen_breach_has_no_predicted_by() -> None:
    cp = ConflictPredictor("db", horizon=3)
    events = cp.update(at(1), {"a": fc(at(1), [10.0] * 3)}, {"a": 70.0, "b": 40.0}, CAP)
    assert len(events) == 1
    breach = events[0]
    assert isinstance(breach, ConflictObserved)
    assert breach.predicted_by is None and breach.lead_time_s is None
    assert [c.subsystem for c in breach.contributors] == ["a", "b"]
    assert breach.contributors[1].forecast == 40.0  # no forecast kept for b: shows actual


def test_breach_without_any_forecast_is_still_observed() -> None:
    cp = ConflictPredictor("db", probability="per_horizon")
    events = cp.update(at(3), {}, {"x": 150.0}, CAP)
    assert [type(e).__name__ for e in events] == ["ConflictObserved"]


# --------------------------------------------------------------------------- state and edges


def _scenario(cp: ConflictPredictor, reverse: bool = False) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for j in range(0, 12):
        paths = dict(reversed(PATHS.items())) if reverse else PATHS
        if j >= 9:
            paths = {"a": flat(10.0), "b": flat(10.0), "c": flat(10.0)}
        out += [asdict(e) for e in step(cp, j, paths)]
    return out


def test_same_inputs_give_identical_events() -> None:
    first = _scenario(ConflictPredictor("db"))
    assert first == _scenario(ConflictPredictor("db"))
    assert first == _scenario(ConflictPredictor("db"), reverse=True)
    assert {e["type"] for e in first} == {"conflict_predicted", "conflict_observed"}


def test_sealed_snapshot_continues_the_lifecycle() -> None:
    original = ConflictPredictor("db", clear_after=1)
    for j in range(0, 5):
        step(original, j)
    restored = unseal(seal(original, KEY, context=("t",)), KEY, context=("t",))
    assert isinstance(restored, ConflictPredictor)
    calm = {"a": flat(10.0), "b": flat(10.0), "c": flat(10.0)}
    after: list[ConflictPredicted | ConflictObserved] = []
    for j in range(5, 10):
        paths = PATHS if j < 8 else calm
        events = step(restored, j, paths)
        assert events == step(original, j, paths)
        after += events
    # The restored copy continues the open conflict: breach linked, then cleared, same id.
    assert [type(e).__name__ for e in after] == ["ConflictObserved", "ConflictPredicted"]
    assert observed(after)[0].predicted_by == f"db@{at(6)}"
    assert [(e.status, e.conflict_id) for e in predicted(after)] == [("cleared", f"db@{at(6)}")]


def test_zero_width_intervals_and_zero_demand_stay_finite() -> None:
    cp = ConflictPredictor("db", horizon=4)
    zero = {"a": fc(at(0), [0.0] * 4, sigma=0.0), "b": fc(at(0), [0.0] * 4, sigma=0.0)}
    assert cp.probabilities(zero, CAP) == [0.0] * 4
    assert cp.update(at(0), zero, {"a": 0.0, "b": 0.0}, CAP) == []
    sharp = {"a": fc(at(1), [0.0, 0.0, 101.0, 0.0], sigma=0.0), "b": fc(at(1), [0.0] * 4, 0.0)}
    events = cp.update(at(1), sharp, {}, CAP)
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, ConflictPredicted)
    assert event.probability == 1.0 and event.expected_start_ms == at(3)
    assert [c.share for c in event.contributors] == [1.0, 0.0]
    dumped = asdict(event)
    assert all(
        math.isfinite(v) for c in dumped["contributors"] for v in c.values() if isinstance(v, float)
    )


def test_misaligned_forecasts_are_refused() -> None:
    cp = ConflictPredictor("db")
    with pytest.raises(ValueError, match="origin"):
        cp.update(at(1), {"a": fc(at(0), [1.0])}, {}, CAP)
    with pytest.raises(ValueError, match="capacity"):
        cp.update(at(1), {}, {}, 0.0)


def test_negative_point_forecasts_do_not_mask_other_contributors() -> None:
    cp = ConflictPredictor("db", horizon=1)
    probs = cp.probabilities({"a": fc(at(0), [110.0]), "b": fc(at(0), [-50.0])}, CAP)
    assert probs[0] > 0.99


# --------------------------------------------------------------------------- saturation


def test_saturation_warns_once_per_episode() -> None:
    watch = SaturationWatch(horizon=5)
    rising = fc(at(0), [70.0, 80.0, 90.0, 95.0, 99.0], sigma=1.0)
    event = watch.update("api", "latency_ms", rising, limit=85.0)
    assert event is not None
    assert event.expected_start_ms == at(2) and event.lead_time_s == 120
    assert event.predicted_peak == 99.0 and event.probability > 0.99
    assert event.event_id == f"saturation:api:latency_ms@{at(2)}:{at(0)}"
    assert watch.update("api", "latency_ms", fc(at(1), [90.0] * 5), limit=85.0) is None
    # Near the threshold: still the same episode, no new warning.
    near = fc(at(2), [85.0 + NormalDist().inv_cdf(0.45)] * 5)
    assert watch.update("api", "latency_ms", near, limit=85.0) is None
    assert watch.update("api", "latency_ms", fc(at(3), [50.0] * 5), limit=85.0) is None
    again = watch.update("api", "latency_ms", fc(at(4), [90.0] * 5), limit=85.0)
    assert again is not None and again.expected_start_ms == at(4)
    assert unseal(seal(watch, KEY, context=("t",)), KEY, context=("t",)).active == watch.active


def test_saturation_keys_are_independent_and_forgettable() -> None:
    watch = SaturationWatch(horizon=3)
    hot = fc(at(0), [100.0] * 3)
    assert watch.update("api", "cpu", hot, limit=90.0) is not None
    assert watch.update("api", "mem", hot, limit=90.0) is not None
    assert watch.update("web", "cpu", hot, limit=90.0) is not None
    watch.forget("api")
    assert sorted(watch.active) == [("web", "cpu")]
    assert watch.update("api", "cpu", hot, limit=90.0) is not None
    negative = fc(at(0), [-5.0] * 3)  # metrics are not clamped at zero
    assert watch.update("x", "temp", negative, limit=-10.0) is not None


def test_clear_waits_for_quiet_windows() -> None:
    """The tail of a peak stays one conflict: it clears only after clear_after quiet windows."""
    cp = ConflictPredictor("db", horizon=5, clear_after=3, probability="per_horizon")
    assert [e.status for e in predicted(step(cp, 0, {"a": flat(_mean_for(0.9))}))] == ["predicted"]
    assert step(cp, 1, {"a": flat(_mean_for(0.1))}) == []
    assert step(cp, 2, {"a": flat(_mean_for(0.1))}) == []
    assert [e.status for e in predicted(step(cp, 3, {"a": flat(_mean_for(0.1))}))] == ["cleared"]


def test_breach_anywhere_probability_is_cumulative_and_above_marginals() -> None:
    """'any' judges P(a breach in at least one window by horizon h): monotone in h, at least
    every marginal, and it sees a run of near-capacity windows that no single window crosses."""
    cp = ConflictPredictor("db", horizon=10)
    near = {"a": flat(_mean_for(0.3))}  # every window alone: P = 0.3
    total = cp.distribution(trajectory(0, near, cp.horizon))
    marginal = total.probabilities(100.0)
    cumulative = total.breach_by(100.0)
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(cumulative))
    assert all(c >= m - 1e-12 for c, m in zip(cumulative, marginal, strict=False))
    assert max(marginal) < 0.5 <= cumulative[-1]
    events = predicted(step(cp, 0, near))
    assert [e.status for e in events] == ["predicted"]
    assert events[0].probability == pytest.approx(cumulative[-1])
