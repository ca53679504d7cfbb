"""NAB scoring as the anomaly bench uses it (`bench/nab_scoring.py`): every anomaly figure in
the README and the decisions comes from these few functions, so their rules are pinned here
on files small enough to score by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.nab_scoring import PROFILES, bootstrap, layout, paired_bootstrap, scaled_sigmoid, sweep

STANDARD = PROFILES["standard"]


def _file(n: int = 1000, windows: list[tuple[int, int]] | None = None) -> tuple[int, list]:
    return n, windows if windows is not None else [(400, 449), (700, 749)]


def test_a_detector_that_never_fires_scores_zero_and_a_perfect_one_100() -> None:
    n, wins = _file()
    lay = layout(n, wins)
    never = np.zeros(n)
    perfect = np.zeros(n)
    for start, _ in wins:
        perfect[start] = 1.0
    assert sweep([(never, lay)], STANDARD)[0].score == 0.0
    best = sweep([(perfect, lay)], STANDARD)[0]
    assert best.score == pytest.approx(100.0)
    assert (best.tp, best.fp, best.fn) == (2, 0, 0)


def test_only_the_earliest_detection_in_a_window_counts_and_later_ones_earn_less() -> None:
    n, wins = _file()
    lay = layout(n, wins)
    early, late = np.zeros(n), np.zeros(n)
    early[[400, 401, 402, 700]] = 1.0  # extra rows inside a window are free
    late[[440, 740]] = 1.0
    e = sweep([(early, lay)], STANDARD)[0]
    assert e.score == pytest.approx(100.0)
    assert e.fp == 0
    tp_late = scaled_sigmoid(-(449 - 440 + 1) / 50) / scaled_sigmoid(-1.0)
    raw = 2 * tp_late
    assert sweep([(late, lay)], STANDARD)[0].raw == pytest.approx(raw)


def test_a_false_alarm_far_from_windows_costs_a_fp_and_one_right_after_a_window_little() -> None:
    n, wins = _file()
    lay = layout(n, wins)
    far = np.zeros(n)
    far[[400, 700, 200]] = 1.0  # row 200: after probation, before any window
    res = sweep([(far, lay)], STANDARD)[0]
    assert (res.tp, res.fp) == (2, 1)
    assert res.raw == pytest.approx(2.0 - 0.11)
    near = np.zeros(n)
    near[[400, 700, 450]] = 1.0  # the row just after the first window
    assert sweep([(near, lay)], STANDARD)[0].raw > 2.0 - 0.01


def test_probation_rows_are_ignored_and_a_window_inside_it_is_not_scored() -> None:
    lay = layout(1000, [(10, 20), (400, 449)])
    assert lay.scored_windows == 1
    fires_early = np.zeros(1000)
    fires_early[[5, 15, 100]] = 1.0  # all inside the first 150 rows
    assert sweep([(fires_early, lay)], STANDARD)[0].fp == 0


def test_one_threshold_serves_the_whole_corpus() -> None:
    """A file whose anomalies score 0.4 and another with 60 false alarms at 0.5: no single
    threshold takes the first file's hits (worth 2 x 2) without those false alarms (60 x 0.11),
    so the best one gives the first file up."""
    n, wins = _file()
    lay = layout(n, wins)
    a, b = np.zeros(n), np.zeros(n)
    a[[400, 700]] = 0.4
    b[[400, 700]] = 0.9
    b[160:220] = 0.5  # after probation, before the first window: each costs A_FP in full
    best, at = sweep([(a, lay), (b, lay)], STANDARD)
    assert best.threshold == pytest.approx(0.9)
    assert at(0.4).score < best.score
    assert at(math.inf).score == 0.0


def test_bootstrap_of_identical_files_has_no_spread_and_of_different_files_brackets_the_score() -> (
    None
):
    n, wins = _file()
    lay = layout(n, wins)
    good, bad = np.zeros(n), np.zeros(n)
    good[[400, 700]] = 1.0
    bad[[200, 300]] = 1.0
    same = bootstrap([(good, lay)] * 4, STANDARD, 30)
    assert same["p2_5"] == same["p97_5"] == pytest.approx(100.0)
    mixed = [(good, lay), (bad, lay), (good, lay), (bad, lay)]
    full = sweep(mixed, STANDARD)[0].score
    spread = bootstrap(mixed, STANDARD, 200, seed=1)
    assert spread["p2_5"] < full < spread["p97_5"]
    assert bootstrap(mixed, STANDARD, 50, seed=3) == bootstrap(mixed, STANDARD, 50, seed=3)


def test_paired_bootstrap_sees_a_change_on_one_file_that_the_unpaired_spread_hides() -> None:
    n, wins = _file()
    lay = layout(n, wins)
    files = []
    for k in range(8):  # files of very different difficulty
        s = np.zeros(n)
        if k % 2:
            s[[400, 700]] = 1.0
        files.append(s)
    better = [s.copy() for s in files]
    better[0][400] = 1.0  # one more window found on one file
    old = [(s, lay) for s in files]
    new = [(s, lay) for s in better]
    diff = paired_bootstrap(new, old, STANDARD, 200)
    assert diff["p2_5"] >= 0.0 < diff["median"]
    assert paired_bootstrap(old, old, STANDARD, 50)["p97_5"] == 0.0
    unpaired = bootstrap(old, STANDARD, 200)
    assert unpaired["p97_5"] - unpaired["p2_5"] > diff["median"]
    with pytest.raises(ValueError):
        paired_bootstrap(new, old[:-1], STANDARD, 5)
