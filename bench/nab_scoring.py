"""NAB's scoring (Lavin & Ahmad 2015), for `bench/anomaly_quality.py`: one threshold swept
over every row of a corpus, per profile. The rules are spelled out in that script's docstring.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

PROFILES = {
    "standard": (1.0, 0.11, 1.0),
    "low_fp": (1.0, 0.22, 1.0),
    "low_fn": (1.0, 0.11, 2.0),
}


def scaled_sigmoid(pos: float) -> float:
    """NAB's scaled sigmoid: ~+1 at a window's start, 0 at its end, -> -1 long after."""
    if pos > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * pos)) - 1.0


_MAX_TP = scaled_sigmoid(-1.0)


def probation(n: int) -> int:
    return int(min(math.floor(0.15 * n), 0.15 * 5000))


@dataclass
class Layout:
    """Per-row NAB roles of one file, independent of the detector and of the profile.

    ``window[i]`` is the index (in ``windows``) of the scored window holding row ``i``, or
    -1 outside every window, or -2 in the probationary period. ``tp[i]`` is the unweighted
    true-positive value of a detection at ``i`` (in a window); ``fp[i]`` the unweighted
    (negative) false-positive value (outside windows).
    """

    window: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    scored_windows: int


def layout(n: int, windows: Sequence[tuple[int, int]]) -> Layout:
    start = probation(n)
    win = np.full(n, -1, dtype=np.int64)
    tp = np.zeros(n)
    fp = np.full(n, -1.0)
    scored: list[int] = []
    prev: tuple[int, int] | None = None
    k_out = 0
    bounds = sorted(windows)
    for i in range(n):
        while k_out < len(bounds) and bounds[k_out][1] < i:
            prev = bounds[k_out]
            k_out += 1
        inside = k_out < len(bounds) and bounds[k_out][0] <= i <= bounds[k_out][1]
        if inside:
            s, e = bounds[k_out]
            win[i] = k_out
            tp[i] = scaled_sigmoid(-(e - i + 1) / (e - s + 1)) / _MAX_TP
            fp[i] = 0.0
        elif prev is not None:
            s, e = prev
            fp[i] = scaled_sigmoid(abs(i - e) / max(1, e - s))
        if i < start:
            win[i] = -2
            fp[i] = 0.0
    for i in range(start, n):
        if win[i] >= 0 and (not scored or scored[-1] != win[i]):
            scored.append(int(win[i]))
    remap = {k: j for j, k in enumerate(scored)}
    win = np.array([remap.get(int(w), -1 if w == -1 else -2) if w >= 0 else w for w in win])
    return Layout(win, tp, fp, len(scored))


@dataclass
class SweepResult:
    score: float
    threshold: float
    raw: float
    tp: int
    fp: int
    fn: int


def sweep(
    parts: Sequence[tuple[np.ndarray, Layout]], profile: tuple[float, float, float]
) -> tuple[SweepResult, Callable[[float], SweepResult]]:
    """Best corpus-wide threshold over ``(scores, layout)`` files; also a scorer at any one.

    Every distinct score is a candidate threshold (an exact sweep, O(rows log rows)).
    """
    a_tp, a_fp, a_fn = profile
    scores, wins, tps, fps = [], [], [], []
    offset = 0
    n_windows = 0
    for sc, lay in parts:
        keep = lay.window != -2
        scores.append(np.asarray(sc, dtype=float)[keep])
        w = lay.window[keep]
        wins.append(np.where(w >= 0, w + offset, -1))
        tps.append(lay.tp[keep])
        fps.append(lay.fp[keep])
        offset += lay.scored_windows
        n_windows += lay.scored_windows
    s = np.concatenate(scores) if scores else np.zeros(0)
    w = np.concatenate(wins) if wins else np.zeros(0, dtype=np.int64)
    tp = np.concatenate(tps) if tps else np.zeros(0)
    fp = np.concatenate(fps) if fps else np.zeros(0)
    null = -a_fn * n_windows
    perfect = a_tp * n_windows

    def norm(raw: float) -> float:
        if perfect == null:
            return 0.0
        return 100.0 * (raw - null) / (perfect - null)

    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    w_sorted = w[order]
    delta = np.where(w_sorted < 0, a_fp * fp[order], 0.0)
    is_fp = (w_sorted < 0).astype(np.int64)
    first_hit = np.zeros(len(order), dtype=np.int64)
    best = np.full(n_windows, -a_fn)
    hit = np.zeros(n_windows, dtype=bool)
    tp_sorted = a_tp * tp[order]
    for j in np.flatnonzero(w_sorted >= 0):
        k = w_sorted[j]
        v = tp_sorted[j]
        if not hit[k]:
            delta[j] = v + a_fn
            hit[k] = True
            first_hit[j] = 1
        elif v > best[k]:
            delta[j] = v - best[k]
        else:
            continue
        best[k] = max(best[k], v)
    total = null + np.cumsum(delta)
    n_fp = np.cumsum(is_fp)
    n_tp = np.cumsum(first_hit)
    # a threshold admits every row with a score >= it: evaluate at the last row of each tie
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True] if len(s_sorted) else np.zeros(0, bool)
    idx = np.flatnonzero(last)
    none = SweepResult(0.0, math.inf, null, 0, 0, n_windows)
    result = none
    if len(idx):
        j = int(idx[np.argmax(total[idx])])
        if total[j] > null:
            result = SweepResult(
                norm(float(total[j])),
                float(s_sorted[j]),
                float(total[j]),
                int(n_tp[j]),
                int(n_fp[j]),
                n_windows - int(n_tp[j]),
            )

    def at(threshold: float) -> SweepResult:
        k = int(np.searchsorted(-s_sorted, -threshold, side="right")) - 1
        if k < 0:
            return SweepResult(0.0, threshold, null, 0, 0, n_windows)
        return SweepResult(
            norm(float(total[k])),
            threshold,
            float(total[k]),
            int(n_tp[k]),
            int(n_fp[k]),
            n_windows - int(n_tp[k]),
        )

    return result, at


def bootstrap(
    parts: Sequence[tuple[np.ndarray, Layout]],
    profile: tuple[float, float, float],
    resamples: int,
    seed: int = 0,
) -> dict[str, float]:
    """How much the corpus score owes to which files are in the corpus.

    Draws ``resamples`` corpora of the same size from ``parts`` (files with replacement),
    scores each at its own corpus-wide best threshold (as `sweep` does) and returns the
    median and the 2.5th and 97.5th percentiles of those scores: a 95 % interval for what
    another corpus of files like these would give. A file that decides the score moves the
    interval; a detector change smaller than its width is not shown to be one.

    >>> import numpy as np
    >>> lay = layout(100, [(50, 59)])
    >>> hit = np.zeros(100); hit[50] = 1.0
    >>> bootstrap([(hit, lay)] * 3, PROFILES["standard"], 20)  # identical files: no spread
    {'median': 100.0, 'p2_5': 100.0, 'p97_5': 100.0, 'resamples': 20}
    """
    (scores,) = _resampled([parts], profile, resamples, seed)
    return _summary(scores, resamples)


def paired_bootstrap(
    new: Sequence[tuple[np.ndarray, Layout]],
    old: Sequence[tuple[np.ndarray, Layout]],
    profile: tuple[float, float, float],
    resamples: int,
    seed: int = 0,
) -> dict[str, float]:
    """Is a detector change real? Score ``new`` minus score ``old`` on the same resampled
    corpora (``new[i]`` and ``old[i]`` are the same file, scored by two detectors).

    Returns the median difference, its 95 % interval and ``share_better``, the share of
    resamples where ``new`` scores higher. Drawing the same files for both is what makes a
    small difference measurable: the files that are easy or hard for both cancel out.

    >>> import numpy as np
    >>> lay = layout(100, [(50, 59)])
    >>> hit, none = np.zeros(100), np.zeros(100)
    >>> hit[50] = 1.0
    >>> paired_bootstrap([(hit, lay)] * 3, [(none, lay)] * 3, PROFILES["standard"], 20)
    {'median': 100.0, 'p2_5': 100.0, 'p97_5': 100.0, 'resamples': 20, 'share_better': 1.0}
    """
    if len(new) != len(old):
        raise ValueError("new and old must score the same files")
    a, b = _resampled([new, old], profile, resamples, seed)
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    out = _summary(diffs, resamples)
    out["share_better"] = round(float(np.mean(np.asarray(diffs) > 0.0)), 3)
    return out


def _resampled(
    corpora: Sequence[Sequence[tuple[np.ndarray, Layout]]],
    profile: tuple[float, float, float],
    resamples: int,
    seed: int,
) -> list[list[float]]:
    """Each corpus' best score on ``resamples`` sets of its files drawn with replacement, the
    same draws for every corpus (they list the same files, scored by different detectors)."""
    rng = np.random.default_rng(seed)
    scores: list[list[float]] = [[] for _ in corpora]
    for _ in range(resamples):
        pick = rng.integers(0, len(corpora[0]), len(corpora[0]))
        for parts, out in zip(corpora, scores, strict=True):
            out.append(sweep([parts[i] for i in pick], profile)[0].score)
    return scores


def _summary(values: Sequence[float], resamples: int) -> dict[str, float]:
    lo, mid, hi = np.percentile(values, [2.5, 50.0, 97.5])
    return {
        "median": round(float(mid), 2),
        "p2_5": round(float(lo), 2),
        "p97_5": round(float(hi), 2),
        "resamples": resamples,
    }


# --------------------------------------------------------------------------- corpus
def nab_windows(n: int, onsets: list[int]) -> list[tuple[int, int]]:
    """NAB window construction: width 10 % of the file / #anomalies, centred on the onset."""
    if not onsets:
        return []
    width = int(0.1 * n / len(onsets))
    return [(max(0, o - width // 2), min(n - 1, o + width // 2)) for o in onsets]
