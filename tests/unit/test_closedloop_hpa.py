"""The ``hpa`` policy against the Kubernetes HPA rule on hand-made cases:
desired = ceil(current × utilisation / target), tolerance 0.1, scale-down stabilisation 300 s
(highest recommendation in the window), scale-up at most max(+4, +100 %) per 15 s."""

from __future__ import annotations

import math

import pytest

from app.core.closedloop.hpa import HpaController, replicas_for
from app.core.config import ElasticSpec

SPEC = ElasticSpec(min=10.0, max=2000.0, step=10.0, target_utilisation=0.8)


@pytest.mark.parametrize(
    ("current", "load", "expected"),
    [
        (10, 85.0, 10),  # utilisation 0.85: ratio 1.0625, within the tolerance
        (10, 120.0, 15),  # 1.2 / 0.8 = 1.5 -> ceil(15)
        (10, 40.0, 5),  # 0.4 / 0.8 = 0.5 -> 5
        (10, 88.4, 12),  # ratio 1.105 -> ceil(11.05) = 12
        (10, 70.0, 9),  # ratio 0.875 -> ceil(8.75) = 9
        (3, 25.0, 3),  # 0.833 / 0.8 = 1.04: within the tolerance
        (7, 100.0, 13),  # 100/70/0.8 = 1.786 -> ceil(12.5) = 13
    ],
)
def test_replica_calculator_is_the_kubernetes_formula(
    current: int, load: float, expected: int
) -> None:
    utilisation = load / (current * SPEC.step)
    ratio = utilisation / SPEC.target_utilisation
    by_formula = current if abs(ratio - 1.0) <= 0.1 else math.ceil(current * ratio)
    assert by_formula == expected  # the table is the formula
    assert replicas_for(current, current, load / SPEC.step, SPEC.target_utilisation) == expected


def test_scale_up_is_limited_to_max_four_or_double_per_period() -> None:
    hpa = HpaController(SPEC)
    assert hpa.tick(0, current=10, ready=10, load=1000.0) == 20  # wants 125: +100 %
    small = HpaController(ElasticSpec(min=10.0, max=2000.0, step=10.0))
    assert small.tick(0, current=2, ready=2, load=1000.0) == 6  # wants 125: +4 pods


def test_scale_down_keeps_the_highest_recommendation_of_the_last_300_s() -> None:
    hpa = HpaController(SPEC)
    assert hpa.tick(0, current=20, ready=20, load=200.0) == 25  # 200/200/0.8 -> 25
    replicas = 25.0
    seen = []
    for t in range(15_000, 330_000, 15_000):  # the load falls to 80: 10 recommended
        replicas = hpa.tick(t, current=replicas, ready=replicas, load=80.0)
        seen.append((t, replicas))
    assert all(r == 25 for t, r in seen if t < 300_000)
    assert [r for t, r in seen if t >= 300_000] == [10.0, 10.0]


def test_replicas_stay_within_min_and_max() -> None:
    hpa = HpaController(ElasticSpec(min=50.0, max=80.0, step=10.0))
    assert hpa.tick(0, current=6, ready=6, load=10.0) == 5
    assert hpa.tick(15_000, current=5, ready=5, load=1000.0) == 8
