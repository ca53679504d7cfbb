"""NAB-style quality and cost of the per-series anomaly detector. Prints ONE JSON object.

Corpus: the NAB files shipped under tests/data/anomaly/ (labelled windows from NAB's
combined_windows.json) plus a seeded synthetic suite of realistic telemetry shapes with
NAB-style windows (width 10 % of the file / number of anomalies, centred on each onset).

Scoring follows NAB's "standard" profile: inside a window only the first detection
counts, worth ``A_TP * scaled_sigmoid(position)`` (early is better); a detection outside
every window costs ``0.11 * scaled_sigmoid(distance past the previous window)`` (up to
0.11); every missed window costs 1; detections in the probationary period (first 15 %,
at most 750 rows) are ignored. Scores are normalised to 0 (null detector) .. 100
(perfect), per dataset and over the corpus (sums of raw, null and perfect scores).

Detectors: (a) ``SeriesAnomalyDetector`` at its default threshold, plus the same scores
at the corpus-best threshold (for information: NAB itself tunes thresholds per detector);
(b) a rolling z-score over the previous 100 values, with the same once-per-episode
suppression and a threshold tuned on the corpus (generous to the baseline).

Run: ``.venv/bin/python bench/anomaly_quality.py``
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import pickle
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.anomaly import SeriesAnomalyDetector  # noqa: E402

DATA = ROOT / "tests" / "data" / "anomaly"
A_TP, A_FP, A_FN = 1.0, -0.11, -1.0
MIN5 = 300_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % 86_400_000)  # a UTC midnight



@dataclass
class Series:
    """One labelled series: event times (ms), values, NAB windows as row-index ranges."""

    name: str
    ts: list[int]
    x: list[float]
    windows: list[tuple[int, int]]
    kind: str


# --------------------------------------------------------------------------- NAB scoring
def scaled_sigmoid(pos: float) -> float:
    """NAB's scaled sigmoid: ~+1 at a window's start, 0 at its end, -> -1 long after."""
    if pos > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * pos)) - 1.0


def probation(n: int) -> int:
    return int(min(math.floor(0.15 * n), 0.15 * 5000))


def nab_raw(det: Sequence[bool], windows: list[tuple[int, int]]) -> tuple[float, int, int]:
    """Raw NAB score of a detection vector; also (true positives, false positives)."""
    n = len(det)
    start = probation(n)
    hit = [False] * len(windows)
    score = 0.0
    fps = 0
    for i in range(start, n):
        if not det[i]:
            continue
        inside = -1
        prev = -1
        for k, (s, e) in enumerate(windows):
            if s <= i <= e:
                inside = k
                break
            if e < i:
                prev = k
        if inside >= 0:
            if not hit[inside]:
                s, e = windows[inside]
                hit[inside] = True
                score += A_TP * scaled_sigmoid(-(e - i + 1) / (e - s + 1))
            continue
        fps += 1
        if prev >= 0:
            s, e = windows[prev]
            val = scaled_sigmoid((i - e) / (e - s + 1))
        else:
            val = -1.0
        score += -A_FP * val
    score += A_FN * sum(1 for h in hit if not h)
    return score, sum(hit), fps


def null_perfect(windows: list[tuple[int, int]]) -> tuple[float, float]:
    return A_FN * len(windows), A_TP * scaled_sigmoid(-1.0) * len(windows)


def normalised(raw: float, null: float, perfect: float) -> float | None:
    if perfect == null:
        return None
    return 100.0 * (raw - null) / (perfect - null)


def episodes(scores: Sequence[float], thr: float, calm: int, release: float) -> list[bool]:
    """Once-per-episode alarms, the same rule as ``SeriesAnomalyDetector``."""
    out = []
    armed, quiet = True, 0
    for s in scores:
        fire = s >= thr
        out.append(fire and armed)
        if fire:
            armed, quiet = False, 0
        elif not armed:
            if s < release * thr:
                quiet += 1
                if quiet >= calm:
                    armed = True
            else:
                quiet = 0
    return out


# --------------------------------------------------------------------------- corpus
def nab_windows(n: int, onsets: list[int]) -> list[tuple[int, int]]:
    """NAB window construction: width 10 % of the file / #anomalies, centred on the onset."""
    if not onsets:
        return []
    width = int(0.1 * n / len(onsets))
    return [(max(0, o - width // 2), min(n - 1, o + width // 2)) for o in onsets]


def _ts(n: int, step: int = MIN5) -> list[int]:
    return [T0 + i * step for i in range(n)]


def _ar(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    e = rng.normal(0.0, sigma, n)
    out = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = phi * acc + e[i]
        out[i] = acc
    return out


def _daily(n: int, step: int, amp: float, phase: float = 0.0) -> np.ndarray:
    t = np.arange(n) * step / 86_400_000
    return amp * np.sin(2 * np.pi * (t + phase))


def _traffic_shape(n: int, step: int) -> np.ndarray:
    h = (np.arange(n) * step / 3_600_000) % 24
    return 0.15 + np.exp(-((h - 9.0) ** 2) / 6.0) + 0.8 * np.exp(-((h - 18.0) ** 2) / 8.0)


def synthetic(seed: int = 7) -> list[Series]:
    rng = np.random.default_rng(seed)
    n = 4032  # two weeks of 5-minute data, like most NAB files
    out: list[Series] = []

    def add(name: str, values: np.ndarray, onsets: list[int], ts: list[int] | None = None,
            kind: str = "") -> None:
        out.append(Series(name, ts or _ts(len(values)), [float(v) for v in values],
                          nab_windows(len(values), onsets), kind))

    x = 50 + _ar(rng, n, 0.5, 2.0)
    x[2600] += 22
    x[3400] -= 20
    add("syn_spikes", x, [2600, 3400], kind="spike")

    add("syn_spikes_1e12", x * 1e12, [2600, 3400], kind="spike, huge values")

    x = 30 + _ar(rng, n, 0.6, 1.5)
    x[2800:] += 7.0
    add("syn_level_shift_up", x, [2800], kind="level shift")

    x = 40 + _daily(n, MIN5, 10) + _ar(rng, n, 0.7, 1.2)
    x[3000:] -= 6.0
    add("syn_seasonal_shift_down", x, [3000], kind="level shift on seasonal")

    x = 20 + _ar(rng, n, 0.3, 1.0)
    x[2500:3300] += np.linspace(0, 12, 800)
    x[3300:] += 12
    add("syn_slow_drift", x, [2500], kind="gradual drift")

    x = 25 + _daily(n, MIN5, 6, 0.3) + _ar(rng, n, 0.9, 0.3)
    x = np.round(x, 2)
    x[3000:3288] = x[2999]
    add("syn_stuck_sensor", x, [3000], kind="flatline")

    x = 60 + _ar(rng, n, 0.2, 1.0)
    x[2900:3050] = 60 + rng.normal(0, 4.5, 150)
    add("syn_variance_burst", x, [2900], kind="variance change")

    shape = _traffic_shape(n, MIN5)
    x = 1000 * shape * np.exp(rng.normal(0, 0.06, n))
    day11 = 11 * 288
    x[day11 + 120:day11 + 156] *= 0.3  # 10:00-13:00 outage
    add("syn_traffic_outage", x, [day11 + 120], kind="seasonal, wrong level at the wrong time")

    x = 18 + rng.gamma(2.0, 2.0, n)
    t = 0
    while t < n:
        t += int(rng.exponential(60))
        d = int(rng.integers(2, 8))
        x[t:t + d] += rng.uniform(30, 55)
    x[3100:3300] = 96 + rng.normal(0, 1.0, 200)
    x = np.clip(x, 0, 100)
    add("syn_cpu_bursts_runaway", x, [3100], kind="bursty cpu, sustained saturation")

    x = rng.poisson(0.3, n).astype(float)
    x[3300:3330] = rng.poisson(6.0, 30)
    add("syn_sparse_counter", x, [3300], kind="sparse counter burst")

    x = 70 + _ar(rng, n, 0.5, 1.5)
    add("syn_noise_no_anomaly", x, [], kind="no anomaly")

    x = 500 * _traffic_shape(n, MIN5) * np.exp(rng.normal(0, 0.05, n))
    add("syn_seasonal_no_anomaly", x, [], kind="no anomaly, seasonal")

    add("syn_flat_no_anomaly", np.full(n, 42.0), [], kind="no anomaly, flat line")

    x = 15 + np.cumsum(rng.normal(0, 0.05, n))
    x[3000:] += 1.5
    add("syn_random_walk_jump", x, [3000], kind="smooth random walk with a jump")

    # gaps: 8 % of windows missing at random plus two multi-hour outages of the exporter
    x = 35 + _ar(rng, n, 0.5, 1.2)
    x[3000:] += 6
    keep = rng.random(n) > 0.08
    keep[1500:1560] = False
    keep[2300:2340] = False
    idx = np.nonzero(keep)[0]
    ts_all = _ts(n)
    onset = int(np.searchsorted(idx, 3000))
    add("syn_gappy_shift", x[idx], [onset], ts=[ts_all[i] for i in idx], kind="gaps + shift")

    # one-minute windows (the engine's default), four days, seasonal, one spike
    m = 4 * 1440
    x = 300 * _traffic_shape(m, 60_000) * np.exp(rng.normal(0, 0.05, m)) + 20
    x[5000] *= 2.2
    add("syn_1m_traffic_spike", x, [5000], ts=_ts(m, 60_000), kind="60 s steps, spike")
    return out


def _parse_ts(s: str) -> int:
    d = dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC)
    return int(d.timestamp() * 1000)


def real() -> list[Series]:
    meta = json.loads((DATA / "nab_windows.json").read_text())
    out: list[Series] = []
    for fname, info in sorted(meta.items()):
        with (DATA / fname).open() as f:
            rows = list(csv.DictReader(f))
        ts = [_parse_ts(r["timestamp"]) for r in rows]
        xs = [float(r["value"]) for r in rows]
        wins = []
        for a, b in info["windows"]:
            ta, tb = _parse_ts(a), _parse_ts(b)
            idx = [i for i, t in enumerate(ts) if ta <= t <= tb]
            wins.append((idx[0], idx[-1]))
        out.append(Series("nab_" + fname.removeprefix("nab_").removesuffix(".csv"), ts, xs, wins,
                          "real (NAB)"))
    return out


# --------------------------------------------------------------------------- detectors
def run_ours(s: Series, **kw: float) -> tuple[list[float], list[bool], SeriesAnomalyDetector]:
    det = SeriesAnomalyDetector(**kw)  # type: ignore[arg-type]
    scores, alarms = [], []
    for t, x in zip(s.ts, s.x, strict=True):
        r = det.score_one(t, x)
        det.learn_one(t, x)
        scores.append(r.score)
        alarms.append(r.is_anomaly)
    return scores, alarms, det


def run_zscore(s: Series, window: int = 100) -> list[float]:
    xs = np.asarray(s.x, dtype=float)
    out = []
    for i in range(len(xs)):
        if i < 10:
            out.append(0.0)
            continue
        w = xs[max(0, i - window):i]
        sd = float(w.std())
        z = abs(xs[i] - float(w.mean())) / sd if sd > 0 else (0.0 if xs[i] == w[-1] else 1e9)
        out.append(z)
    return out


def corpus_score(per: Sequence[tuple[list[bool], list[tuple[int, int]]]]) -> float:
    raw = null = perf = 0.0
    for det, wins in per:
        r, _, _ = nab_raw(det, wins)
        a, b = null_perfect(wins)
        raw, null, perf = raw + r, null + a, perf + b
    v = normalised(raw, null, perf)
    return round(v if v is not None else 0.0, 2)


def sweep(scores: dict[str, list[float]], corpus: list[Series], grid: Sequence[float],
          calm: int, release: float) -> tuple[float, float]:
    best = (-1e9, 0.0)
    for thr in grid:
        v = corpus_score([(episodes(scores[s.name], thr, calm, release), s.windows)
                          for s in corpus])
        if v > best[0]:
            best = (v, thr)
    return best


def timing(s: Series) -> dict[str, float]:
    """Median and p99 wall time per value (perf_counter_ns around each call).

    ``pair``: score_one + learn_one, the river-style contract; ``fused``: process_one,
    which computes the surprises once.
    """
    pc = time.perf_counter_ns
    det = SeriesAnomalyDetector()
    pair = []
    for t, x in zip(s.ts, s.x, strict=True):
        t0 = pc()
        det.score_one(t, x)
        det.learn_one(t, x)
        pair.append(pc() - t0)
    det = SeriesAnomalyDetector()
    fused = []
    for t, x in zip(s.ts, s.x, strict=True):
        t0 = pc()
        det.process_one(t, x)
        fused.append(pc() - t0)
    return {"median_us": statistics.median(pair) / 1000,
            "p99_us": sorted(pair)[int(0.99 * len(pair))] / 1000,
            "fused_median_us": statistics.median(fused) / 1000}


def main() -> None:
    t_start = time.perf_counter()
    corpus = real() + synthetic()
    reals = [s for s in corpus if s.name.startswith("nab_")]
    default = SeriesAnomalyDetector()
    thr, calm, release = default.threshold, default.calm_steps, default.release
    ours: dict[str, list[float]] = {}
    zsc: dict[str, list[float]] = {}
    max_bytes = 0
    for s in corpus:
        sc, alarms, det = run_ours(s)
        max_bytes = max(max_bytes, len(pickle.dumps(det, protocol=pickle.HIGHEST_PROTOCOL)))
        # the offline episode rule must reproduce the detector's own alarms exactly
        assert alarms == episodes(sc, thr, calm, release), s.name
        ours[s.name] = sc
        zsc[s.name] = run_zscore(s)

    z_grid = [2.0 + 0.25 * i for i in range(41)]
    z_best, z_thr = sweep(zsc, corpus, z_grid, calm, release)
    z_real_best, z_real_thr = sweep(zsc, reals, z_grid, calm, release)
    o_best, o_thr = sweep(ours, corpus, [0.3 + 0.025 * i for i in range(17)], calm, release)

    def score_of(scores: dict[str, list[float]], t: float, part: list[Series]) -> float:
        return corpus_score([(episodes(scores[s.name], t, calm, release), s.windows)
                             for s in part])

    results: dict[str, dict[str, object]] = {}
    for s in corpus:
        null, perf = null_perfect(s.windows)
        row: dict[str, object] = {"n": len(s.x), "windows": len(s.windows), "kind": s.kind}
        for label, alarms in (("ours", episodes(ours[s.name], thr, calm, release)),
                              ("zscore", episodes(zsc[s.name], z_thr, calm, release))):
            raw, tp, fp = nab_raw(alarms, s.windows)
            v = normalised(raw, null, perf)
            row[label] = round(v, 1) if v is not None else None
            row[label + "_tp_fp"] = [tp, fp]
        results[s.name] = row

    tm = timing(max(corpus, key=lambda s: len(s.x)))
    out = {
        "overall": {
            "ours": score_of(ours, thr, corpus),
            "ours_threshold": thr,
            "ours_best_threshold_score": o_best,
            "ours_best_threshold": o_thr,
            "zscore_tuned": z_best,
            "zscore_threshold": z_thr,
        },
        "real_nab_only": {
            "files": len(reals),
            "windows": sum(len(s.windows) for s in reals),
            "ours": score_of(ours, thr, reals),
            "zscore_tuned_on_corpus": score_of(zsc, z_thr, reals),
            "zscore_tuned_on_real": z_real_best,
            "zscore_real_threshold": z_real_thr,
        },
        "synthetic_only": {
            "ours": score_of(ours, thr, [s for s in corpus if s not in reals]),
            "zscore": score_of(zsc, z_thr, [s for s in corpus if s not in reals]),
        },
        "datasets": results,
        "us_per_point": round(tm["median_us"], 2),
        "us_per_point_p99": round(tm["p99_us"], 2),
        "us_per_point_process_one": round(tm["fused_median_us"], 2),
        "timing_series": max(corpus, key=lambda s: len(s.x)).name,
        "bytes_per_series": max_bytes,
        "python": sys.version.split()[0],
        "runtime_s": round(time.perf_counter() - t_start, 1),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
