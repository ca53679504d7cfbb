"""NAB-scored quality of ``anomaly_score`` with ONE threshold for a whole corpus. Prints JSON.

What is scored: the ``anomaly_score`` column that ``pso score-anomalies`` writes (the
detector's ``score``), exactly as a held-out judge scores it: one threshold is swept over the
scores of every row of every file of the corpus at once; each row at or above it is a
detection. The threshold reported is the one that maximises the corpus total (the
corpus-wide optimum; NAB's optimiser searches for the same thing). The detector's own
once-per-episode decision (``is_anomaly``) is scored too, for reference.

NAB scoring (Lavin & Ahmad 2015; the profiles of NAB's ``config/profiles.json``), per file:

* the first 15 % of the rows (at most 750) are probationary: detections there are ignored,
  and a window lying wholly inside them is not scored;
* inside a window only the earliest detection counts, worth
  ``A_TP * sigmoid(-(right - i + 1) / width) / sigmoid(-1)`` — 1 at the window's first row,
  near 0 at its last — where ``sigmoid(x) = 2 / (1 + exp(5 x)) - 1``;
* every detection outside every window costs ``A_FP * sigmoid((i - right') / (width' - 1))``
  after a window ending at ``right'`` (about 0 just after it, up to ``A_FP`` far from it), and
  ``A_FP`` before the first window;
* every window with no detection costs ``A_FN``;
* normalised per corpus: ``100 * (raw - null) / (perfect - null)``, with ``null = -A_FN`` and
  ``perfect = A_TP`` per scored window (a detector that never fires scores 0).

Profiles ``(A_TP, A_FP, A_FN)``: standard (1, 0.11, 1), low-FP (1, 0.22, 1), low-FN
(1, 0.11, 2). Each profile has its own corpus-wide best threshold.

Corpora:

* default (no ``--corpus``): the built-in suite — a seeded synthetic set of realistic
  telemetry shapes (``synthetic``; NAB-style windows, 10 % of the file / number of anomalies,
  centred on each onset) and the four NAB files shipped in ``tests/data/anomaly/`` (``nab4``;
  windows from NAB's combined_windows.json). Runs anywhere.
* ``--corpus DIR``: a directory of ``<source>/<name>.csv`` files (``timestamp,value``) and a
  ``labels.json`` in NAB's window format, as written by ``bench/anomaly_corpus.py`` (kept
  outside the repository, e.g. ``/work/cache/anomaly-corpus``). None of it is NAB data:

  - ``msft``: github.com/microsoft/cloud-monitoring-dataset (MIT), commit
    6a07a53c2fac495fb6831811df4c980d6c04bd10, every ``data/<domain>/<name>.csv``: 60 real
    production series from 8 domains (crash rates, purchase counts, ingress rates, API
    requests/s, dependency latency, MongoDB requests/s, service-unavailable rate), hourly or
    per minute, 225,403 rows, expert labels per timestamp; rows with an empty value dropped.
  - ``smd``: the Server Machine Dataset (OmniAnomaly), as stored in github.com/zhhlee/
    InterFusion (MIT), commit 8c85d511c1f070669ba8c5cf097b8fa4a202d15b,
    ``data/processed/machine-{1-6,1-7,2-1,2-2,2-7,2-8,3-3,3-4}_{train,test,test_label}.pkl``
    and ``data/interpretation_label/machine-*.txt``: 8 machines, 1-minute samples,
    212,609 rows.
  - ``asd``: the Application Server Dataset, same repository and commit,
    ``data/processed/omi-{1..12}_*.pkl`` and ``data/interpretation_label/omi-*.txt``: 12
    servers, 5-minute samples, 58,752 rows.

  From a multivariate server to one series (smd, asd): the metric named in the most labelled
  segments of the interpretation file (1-based numbers; ties to the lower; constant metrics
  skipped), the last two days of the training part followed by the whole test part (NAB's
  probation is learning time), synthetic event times at the dataset's spacing; its
  anomalies are the labelled runs whose interpretation names that metric. Labels to
  windows (all sources): each run of labelled rows is one anomaly; as in NAB, a window is
  centred on its first row, ``floor(0.1 * rows / anomalies)`` rows wide, extended to the
  run's last row when the run is longer; overlapping windows merge. The pickles are read
  opcode by opcode, never unpickled. ``bench/anomaly_corpus.py`` holds the exact rules.

  Add ``--builtin`` to score the built-in suite alongside (still one threshold for all).

Per source, the JSON reports the score at the corpus-wide threshold (not re-tuned) and, for
information only, at that source's own best threshold. ``files`` lists every file used, its
score at the corpus-wide threshold and at its own best one (``per_file_oracle`` sums the
latter: what a perfect per-file calibration would reach). ``sparse_label_subset`` scores,
for information, only the files with at most one window per 100 rows (NAB's own density
range; the denser files are expert-labelled spike lists whose windows are a few rows wide).

How far to trust a score: ``bootstrap_over_files`` re-scores 200 corpora drawn from the
corpus' files with replacement (each at its own best threshold) and reports the median and
the 95 % interval; on the real corpus it is about ten points wide, so one file more or less
moves the score by more than most detector changes do. To judge a change, save one run's
scores (``--scores-out before.npz``), change the detector, and run again with
``--compare before.npz``: the same resampled corpora score both, and ``compared_with``
gives the difference's median, its 95 % interval and the share of resamples where the new
run is better.

Run: ``.venv/bin/python bench/anomaly_quality.py [--corpus /work/cache/anomaly-corpus]``
"""

from __future__ import annotations

import argparse
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
from typing import NoReturn

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.anomaly import SeriesAnomalyDetector  # noqa: E402
from bench.nab_scoring import (  # noqa: E402
    PROFILES,
    Layout,
    bootstrap,
    layout,
    nab_windows,
    paired_bootstrap,
    sweep,
)

DATA = ROOT / "tests" / "data" / "anomaly"
MIN5 = 300_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % 86_400_000)  # a UTC midnight


@dataclass
class Series:
    """One labelled series: event times (ms), values, NAB windows as row-index ranges."""

    name: str
    source: str
    ts: list[int]
    x: list[float]
    windows: list[tuple[int, int]]
    kind: str = ""


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

    def add(
        name: str,
        values: np.ndarray,
        onsets: list[int],
        ts: list[int] | None = None,
        kind: str = "",
    ) -> None:
        out.append(
            Series(
                name,
                "synthetic",
                ts or _ts(len(values)),
                [float(v) for v in values],
                nab_windows(len(values), onsets),
                kind,
            )
        )

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
    x[day11 + 120 : day11 + 156] *= 0.3  # 10:00-13:00 outage
    add("syn_traffic_outage", x, [day11 + 120], kind="seasonal, wrong level at the wrong time")

    x = 18 + rng.gamma(2.0, 2.0, n)
    t = 0
    while t < n:
        t += int(rng.exponential(60))
        d = int(rng.integers(2, 8))
        x[t : t + d] += rng.uniform(30, 55)
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
    d = dt.datetime.fromisoformat(s.strip().replace("Z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.UTC)
    return int(d.timestamp() * 1000)


def _read(path: Path, name: str, source: str, wins: Sequence[Sequence[str]], kind: str) -> Series:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    ts = [_parse_ts(r["timestamp"]) for r in rows]
    xs = [float(r["value"]) for r in rows]
    windows = []
    for a, b in wins:
        ta, tb = _parse_ts(a), _parse_ts(b)
        lo = int(np.searchsorted(ts, ta, side="left"))
        hi = int(np.searchsorted(ts, tb, side="right")) - 1
        if lo <= hi:
            windows.append((lo, hi))
    return Series(name, source, ts, xs, windows, kind)


def nab4() -> list[Series]:
    meta = json.loads((DATA / "nab_windows.json").read_text())
    return [
        _read(DATA / fname, fname.removesuffix(".csv"), "nab4", info["windows"], "real (NAB)")
        for fname, info in sorted(meta.items())
    ]


def load_corpus(root: Path) -> list[Series]:
    labels = json.loads((root / "labels.json").read_text())
    out = []
    for key in sorted(labels):
        source = key.split("/")[0] if "/" in key else root.name
        out.append(_read(root / key, key.removesuffix(".csv"), source, labels[key], "real"))
    return out


# --------------------------------------------------------------------------- detectors
def run_ours(s: Series) -> tuple[list[float], list[bool], SeriesAnomalyDetector]:
    det = SeriesAnomalyDetector()
    scores, alarms = [], []
    for t, x in zip(s.ts, s.x, strict=True):
        r = det.process_one(t, x)
        scores.append(r.score)
        alarms.append(r.is_anomaly)
    return scores, alarms, det


def run_zscore(s: Series, window: int = 100) -> list[float]:
    """|x - mean| / std over the previous ``window`` values: the textbook baseline."""
    xs = np.asarray(s.x, dtype=float)
    out = []
    for i in range(len(xs)):
        if i < 10:
            out.append(0.0)
            continue
        w = xs[max(0, i - window) : i]
        sd = float(w.std())
        z = abs(xs[i] - float(w.mean())) / sd if sd > 0 else (0.0 if xs[i] == w[-1] else 1e9)
        out.append(z)
    return out


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
    return {
        "median_us": statistics.median(pair) / 1000,
        "p99_us": sorted(pair)[int(0.99 * len(pair))] / 1000,
        "fused_median_us": statistics.median(fused) / 1000,
    }


def evaluate(
    corpus: Sequence[Series], scores: dict[str, list[float]], layouts: dict[str, Layout]
) -> dict[str, dict[str, object]]:
    """Per profile: corpus-wide best threshold and score, and per source at that threshold."""
    out: dict[str, dict[str, object]] = {}
    sources = sorted({s.source for s in corpus})
    for prof, weights in PROFILES.items():
        best, _ = sweep([(scores[s.name], layouts[s.name]) for s in corpus], weights)
        per: dict[str, object] = {}
        for src in sources:
            part = [s for s in corpus if s.source == src]
            own, at = sweep([(scores[s.name], layouts[s.name]) for s in part], weights)
            here = at(best.threshold)
            per[src] = {
                "score": round(here.score, 1),
                "tp_fp_fn": [here.tp, here.fp, here.fn],
                "own_best": round(own.score, 1),
            }
        out[prof] = {
            "score": round(best.score, 2),
            "threshold": round(best.threshold, 6),
            "tp_fp_fn": [best.tp, best.fp, best.fn],
            "per_source": per,
        }
    return out


def _die(message: str) -> NoReturn:
    print(f"anomaly_quality: {message}", file=sys.stderr)
    raise SystemExit(2)


def _load_scores(path: Path) -> dict[str, np.ndarray]:
    """A ``--scores-out`` file, read without unpickling anything."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            return {k: saved[k] for k in saved.files}
    except (OSError, ValueError, EOFError) as exc:
        _die(f"cannot read {path}: {exc}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, help="directory from bench/anomaly_corpus.py")
    parser.add_argument(
        "--builtin",
        action="store_true",
        help="with --corpus: also score the built-in synthetic + nab4 suite",
    )
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=200,
        metavar="N",
        help="resample the corpus' files N times for a 95%% interval of the score (0: off)",
    )
    parser.add_argument(
        "--scores-out",
        type=Path,
        metavar="FILE.npz",
        help="save every file's anomaly_score column, for a later --compare",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="FILE.npz",
        help="paired bootstrap of this run's score minus the run saved in FILE.npz",
    )
    args = parser.parse_args()
    if args.bootstrap < 0:
        parser.error("--bootstrap must be 0 or more")
    before: dict[str, np.ndarray] | None = None
    if args.compare is not None:
        before = _load_scores(args.compare)
    t_start = time.perf_counter()
    corpus: list[Series] = []
    if args.corpus is not None:
        corpus += load_corpus(args.corpus)
    if args.corpus is None or args.builtin:
        corpus += nab4() + synthetic()
    layouts = {s.name: layout(len(s.x), s.windows) for s in corpus}
    ours: dict[str, list[float]] = {}
    flags: dict[str, list[float]] = {}
    zsc: dict[str, list[float]] = {}
    max_bytes = 0
    for s in corpus:
        sc, alarms, det = run_ours(s)
        max_bytes = max(max_bytes, len(pickle.dumps(det, protocol=pickle.HIGHEST_PROTOCOL)))
        ours[s.name] = sc
        flags[s.name] = [float(a) for a in alarms]
        zsc[s.name] = run_zscore(s)

    quality = evaluate(corpus, ours, layouts)
    thr = float(quality["standard"]["threshold"])  # type: ignore[arg-type]
    files = []
    oracle_raw = oracle_null = 0.0
    for s in corpus:
        own, at = sweep([(ours[s.name], layouts[s.name])], PROFILES["standard"])
        here = at(thr)
        w = layouts[s.name].scored_windows
        oracle_raw += own.raw if own.threshold != math.inf else -w
        oracle_null -= w
        files.append(
            {
                "file": s.name,
                "source": s.source,
                "rows": len(s.x),
                "windows": w,
                "standard_at_corpus_threshold": round(here.score, 1) if w else None,
                "tp_fp_fn": [here.tp, here.fp, here.fn],
                "standard_at_own_threshold": round(own.score, 1) if w else None,
            }
        )
    sparse = [s for s in corpus if layouts[s.name].scored_windows <= 0.01 * len(s.x)]
    sources = {}
    for src in sorted({s.source for s in corpus}):
        part = [s for s in corpus if s.source == src]
        sources[src] = {
            "files": len(part),
            "rows": sum(len(s.x) for s in part),
            "windows": sum(layouts[s.name].scored_windows for s in part),
        }
    out: dict[str, object] = {
        "corpus": str(args.corpus) if args.corpus else "builtin (synthetic + nab4)",
        "sources": sources,
        "anomaly_score": quality,
        "is_anomaly": {
            p: round(sweep([(flags[s.name], layouts[s.name]) for s in corpus], w)[0].score, 2)
            for p, w in PROFILES.items()
        },
        "is_anomaly_threshold": SeriesAnomalyDetector().threshold,
        "zscore_baseline": {
            p: round(sweep([(zsc[s.name], layouts[s.name]) for s in corpus], w)[0].score, 2)
            for p, w in PROFILES.items()
        },
        "per_file_oracle_standard": round(
            100.0 * (oracle_raw - oracle_null) / (-2.0 * oracle_null), 2
        )
        if oracle_null
        else None,
        "sparse_label_subset": {
            "files": len(sparse),
            "windows": sum(layouts[s.name].scored_windows for s in sparse),
            **{
                p: round(sweep([(ours[s.name], layouts[s.name]) for s in sparse], w)[0].score, 2)
                for p, w in PROFILES.items()
            },
        },
        "files": files,
        "bytes_per_series": max_bytes,
        "python": sys.version.split()[0],
    }
    parts = [(np.asarray(ours[s.name]), layouts[s.name]) for s in corpus]
    if args.bootstrap:
        out["bootstrap_over_files"] = {
            p: bootstrap(parts, w, args.bootstrap) for p, w in PROFILES.items()
        }
    if before is not None:
        missing = sorted(s.name for s in corpus if s.name not in before)
        if missing or any(len(before[s.name]) != len(s.x) for s in corpus):
            _die(f"{args.compare} scored other files than this corpus (missing: {missing[:3]})")
        old = [(before[s.name], layouts[s.name]) for s in corpus]
        out["compared_with"] = {
            "file": str(args.compare),
            **{
                p: paired_bootstrap(parts, old, w, args.bootstrap or 200)
                for p, w in PROFILES.items()
            },
        }
    if args.scores_out is not None:
        np.savez_compressed(args.scores_out, **{s.name: np.asarray(ours[s.name]) for s in corpus})
    if not args.no_timing:
        longest = max(corpus, key=lambda s: len(s.x))
        tm = timing(longest)
        out["us_per_point"] = round(tm["median_us"], 2)
        out["us_per_point_p99"] = round(tm["p99_us"], 2)
        out["us_per_point_process_one"] = round(tm["fused_median_us"], 2)
        out["timing_series"] = longest.name
    out["runtime_s"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
