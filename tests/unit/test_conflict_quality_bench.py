"""The case-resampling interval `bench/conflict_quality.py` puts around pooled conflict recall
and precision: with a dozen pools, the README's figures are only as firm as this says."""

from __future__ import annotations

from bench.conflict_quality import _case_interval, _pool


def _case(episodes: int, found: int, warnings: int, hits: int) -> dict[str, object]:
    return {
        "episodes": episodes,
        "predicted_episodes": found,
        "decided": warnings,
        "hits": hits,
        "leads_s": [],
    }


def test_identical_cases_leave_no_doubt() -> None:
    same = [_case(10, 7, 8, 6)] * 6
    got = _case_interval(same, 200)
    assert got["recall"] == [0.7, 0.7, 0.7]
    assert got["precision"] == [0.75, 0.75, 0.75]


def test_unlike_cases_give_an_interval_around_the_pooled_figure() -> None:
    cases = [_case(10, 9, 10, 9), _case(10, 2, 10, 2), _case(10, 6, 10, 5), _case(10, 4, 10, 7)]
    pooled = _pool(cases, 300)
    got = _case_interval(cases, 500)
    lo, _, hi = got["recall"]
    assert lo < pooled["recall"] < hi
    lo, _, hi = got["precision"]
    assert lo < pooled["precision"] < hi
    assert got == _case_interval(cases, 500)  # seeded: the same figures every run


def test_a_role_without_warnings_has_no_precision_interval() -> None:
    got = _case_interval([_case(5, 0, 0, 0)] * 3, 20)
    assert got["precision"] is None
    assert got["recall"] == [0.0, 0.0, 0.0]
