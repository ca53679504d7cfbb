"""Quality and cost of the per-series online forecaster. Prints ONE JSON object.

A seeded synthetic suite of 60 s telemetry series over ``--weeks`` simulated weeks (default 3),
starting on a Monday 00:00 UTC: daily and weekly sinusoids, business-hours and nightly-batch
profiles with quiet weekends, gaussian and heavy-tailed (Student-t) noise of various sizes,
multiplicative noise with an AR(1) drift (as in `app.dev.simulator`), slow trends, a level shift,
a flat noisy series, a series with gaps (random missing windows + multi-hour outages), small
integer counts (DB connections, GPUs), a random walk, and tiny- and huge-valued copies. A
strictly constant series is run too (it must not break anything) but is left out of the
MASE and coverage aggregates (its MASE is 0/0).

Every window is learnt with ``learn_one`` and then ``forecast()`` is taken (both timed). Each
forecast of horizon ``h`` is scored when its target window arrives, against the daily seasonal
naive ``ŷ(t) = y(t - 1 day)`` over the same targets (a target counts only if both exist).

Metrics (per horizon h = 1..15):
    MASE_h = MAE_h(model) / MAE_h(seasonal naive, daily), per series; the aggregate is the mean
    over series (``mase_by_horizon``) and the worst series (``mase_worst_by_horizon``). Scored
    after the first simulated week (main numbers) and after the first day (``after_day1``).
    Coverage of the 80 % / 95 % intervals, pooled over series: overall, and min/max over h.
    ``us_per_update``: median wall time of one ``learn_one`` + ``forecast()`` (all horizons,
    intervals); ``bytes_per_series``: largest pickled forecaster (all candidates + calibration).

Run: ``.venv/bin/python bench/forecast_quality.py [--weeks 3] [--series NAME ...]``
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.forecast import SeriesForecaster  # noqa: E402

STEP_MS = 60_000
DAY = 1440  # windows per day
WEEK = 7 * DAY
T0_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a Monday
H = 15
LEVELS = (0.8, 0.95)

Array = np.ndarray


# --------------------------------------------------------------------------- generator


def _clock(n: int) -> tuple[Array, Array, Array]:
    """Hour of day, day index (0 = Monday) and days elapsed of windows 0..n-1 (centres)."""
    t = (np.arange(n) + 0.5) / DAY
    hour = (t % 1.0) * 24.0
    dow = np.floor(t).astype(int) % 7
    return hour, dow, t


def _business(hour: Array) -> Array:
    return (
        0.25
        + 0.75 * np.exp(-((hour - 14.0) ** 2) / 18.0)
        - 0.08 * np.exp(-((hour - 12.5) ** 2) / 0.8)
    )


def _nightly(hour: Array) -> Array:
    return 0.25 + 0.75 * np.exp(-((((hour - 2.0 + 12) % 24) - 12) ** 2) / 8.0)


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> Array:
    """Stationary AR(1) with marginal std ``sd`` (slow drifts around the seasonal shape)."""
    e = rng.normal(0.0, sd * math.sqrt(1.0 - phi * phi), n)
    x = np.empty(n)
    acc = rng.normal(0.0, sd)
    for i in range(n):
        acc = phi * acc + e[i]
        x[i] = acc
    return x


def make_suite(weeks: int, seed: int = 7) -> dict[str, Array]:
    """Named series (NaN = missing window), all ``weeks`` weeks of 60 s windows."""
    n = weeks * WEEK
    rng = np.random.default_rng(seed)
    hour, dow, days = _clock(n)
    weekend = dow >= 5
    daily = np.sin(2 * np.pi * hour / 24.0 - np.pi / 2)  # trough at midnight, peak at noon
    suite: dict[str, Array] = {}

    suite["sine_gauss"] = 100 + 40 * daily - 25 * weekend + rng.normal(0, 3.0, n)
    suite["sine_gauss_noisy"] = 100 + 20 * daily - 10 * weekend + rng.normal(0, 10.0, n)
    # Business-hours user traffic: multiplicative noise + AR(1) drift (as app.dev.simulator).
    load = 400 * _business(hour) * np.where(weekend, 0.6, 1.0) * (1 + 0.01 * days)
    drift = _ar1(rng, n, 0.97, 0.06)
    suite["business_rps"] = load * np.exp(drift + rng.normal(0, 0.025, n))
    # Nightly batch, quieter on Sundays, heavy-tailed noise.
    batch = 60 * _nightly(hour) * np.where(dow == 6, 0.8, 1.0)
    suite["batch_heavy_tail"] = batch + 2.0 * rng.standard_t(3, n)
    # Heavy-tailed noise + a slow trend (+2 %/day) on a daily + weekly shape.
    base = (50 + 15 * daily - 8 * weekend) * (1 + 0.02 * days)
    suite["trend_heavy_tail"] = base + 1.5 * rng.standard_t(2.5, n)
    # Level shift (+30 %) at day 10 on business hours with additive noise.
    shifted = 200 * _business(hour) * np.where(weekend, 0.5, 1.0) + 20
    shifted = shifted * np.where(days >= 10.3, 1.3, 1.0)
    suite["level_shift"] = shifted + rng.normal(0, 4.0, n)
    # Flat, noisy, no seasonality.
    suite["flat_noisy"] = 42.0 + rng.normal(0, 0.5, n)
    # Gaps: 10 % random missing windows plus three outages of 2-9 hours.
    gappy = 80 + 30 * daily - 15 * weekend + _ar1(rng, n, 0.9, 3.0) + rng.normal(0, 2.0, n)
    gappy[rng.random(n) < 0.10] = np.nan
    for start_day, hours in ((3.4, 2), (9.7, 9), (16.1, 5)):
        s = int(start_day * DAY)
        gappy[s : s + hours * 60] = np.nan
    suite["gappy"] = gappy
    # Shared-resource use: DB connections (Poisson counts) and sparse GPU use (0-4 GPUs).
    conn_mean = 2 + 10 * _business(hour) * np.where(weekend, 0.5, 1.0)
    suite["db_connections"] = rng.poisson(conn_mean).astype(float)
    gpu_mean = 1.5 * np.clip(_nightly(hour) - 0.3, 0, None) * np.where(dow == 6, 0.3, 1.0)
    suite["gpu_sparse"] = np.minimum(rng.poisson(gpu_mean), 4).astype(float)
    # Random walk + noise (no seasonality: seasonal naive's worst case).
    suite["random_walk"] = 500 + np.cumsum(rng.normal(0, 1.0, n)) + rng.normal(0, 1.0, n)
    # Scale extremes: the same business series at 1e-6 and at 1e9 + 1e7 * shape.
    suite["tiny_values"] = suite["business_rps"] * 1e-9
    suite["huge_values"] = 1e9 + suite["business_rps"] * 2.5e4
    suite["constant"] = np.full(n, 7.0)
    return suite


EXCLUDED = {"constant"}


def fleet_suite(weeks: int, seed: int = 0) -> tuple[int, dict[str, Array]]:
    """60 s window means of every series of `app.dev.simulator.FleetSimulator` (10 s samples,
    8 subsystems, incidents on): the simulator the engine's own benchmarks use."""
    from app.dev.simulator import DAY_MS, FleetSimulator  # optional: owned by the engine side

    sim = FleetSimulator(subsystems=8, seed=seed, interval_ms=10_000, incidents=True)
    start = sim.start_ms - sim.start_ms % STEP_MS
    n = weeks * WEEK
    sums: dict[str, Array] = {}
    counts: dict[str, Array] = {}
    for sample in sim.samples(weeks * 7 * DAY_MS):
        w = (sample["ts"] - start) // STEP_MS
        values = dict(sample["metrics"])
        values.update({f"res:{k}": v for k, v in sample["resources"].items()})
        for key, v in values.items():
            name = f"{sample['subsystem']}/{key}"
            if name not in sums:
                sums[name] = np.zeros(n)
                counts[name] = np.zeros(n)
            sums[name][w] += v
            counts[name][w] += 1
    suite = {k: np.where(counts[k] > 0, sums[k] / np.maximum(counts[k], 1), np.nan) for k in sums}
    return start, suite


# --------------------------------------------------------------------------- evaluation


def run_series(
    y: Array,
    factory: Callable[[], SeriesForecaster],
    starts: tuple[int, ...],
    t0_ms: int = T0_MS,
) -> dict[str, object]:
    """Feed one series, score forecasts; returns per-start sums and the timings."""
    n = len(y)
    f = factory()
    point = np.full((n, H), np.nan)  # point[o, h-1]: forecast made after window o, for o+h
    lo = {lvl: np.full((n, H), np.nan) for lvl in LEVELS}
    hi = {lvl: np.full((n, H), np.nan) for lvl in LEVELS}
    times: list[int] = []
    perf = time.perf_counter_ns
    for i in range(n):
        v = y[i]
        if math.isnan(v):
            continue
        t0 = perf()
        f.learn_one(t0_ms + i * STEP_MS, float(v))
        fc = f.forecast()
        times.append(perf() - t0)
        point[i] = fc.point
        for lvl in LEVELS:
            lo[lvl][i] = fc.lower[lvl]
            hi[lvl][i] = fc.upper[lvl]
        if not all(math.isfinite(p) for p in fc.point):
            raise AssertionError("non-finite forecast")
    out: dict[str, object] = {"times": times, "bytes": len(pickle.dumps(f)), "model": fc.model}
    for start in starts:
        m_abs = np.zeros(H)
        s_abs = np.zeros(H)
        cnt = np.zeros(H)
        cov = {lvl: np.zeros(H) for lvl in LEVELS}
        for h in range(1, H + 1):
            tgt = np.arange(max(start, h, DAY), n)
            org = tgt - h
            yt = y[tgt]
            yp = point[org, h - 1]
            ysn = y[tgt - DAY]
            ok = ~(np.isnan(yt) | np.isnan(yp) | np.isnan(ysn))
            m_abs[h - 1] = np.abs(yt[ok] - yp[ok]).sum()
            s_abs[h - 1] = np.abs(yt[ok] - ysn[ok]).sum()
            cnt[h - 1] = ok.sum()
            for lvl in LEVELS:
                inside = (lo[lvl][org, h - 1][ok] <= yt[ok]) & (yt[ok] <= hi[lvl][org, h - 1][ok])
                cov[lvl][h - 1] = inside.sum()
        out[f"s{start}"] = {"model": m_abs, "naive": s_abs, "count": cnt, "cov": cov}
    return out


def summarise(results: dict[str, dict[str, object]], start: int) -> dict[str, object]:
    mase_rows = []
    per_series = {}
    cov_hits = {lvl: np.zeros(H) for lvl in LEVELS}
    cov_n = np.zeros(H)
    for name, res in results.items():
        if name in EXCLUDED:
            continue
        s = res[f"s{start}"]
        assert isinstance(s, dict)
        with np.errstate(divide="ignore", invalid="ignore"):
            mase = s["model"] / s["naive"]
        mase_rows.append(mase)
        per_series[name] = {
            "mase_h1": round(float(mase[0]), 3),
            "mase_h15": round(float(mase[-1]), 3),
            "cov80": round(float(s["cov"][0.8].sum() / s["count"].sum()), 3),
            "cov95": round(float(s["cov"][0.95].sum() / s["count"].sum()), 3),
            "model": res["model"],
        }
        for lvl in LEVELS:
            cov_hits[lvl] += s["cov"][lvl]
        cov_n += s["count"]
    table = np.vstack(mase_rows)
    out: dict[str, object] = {
        "mase_by_horizon": [round(float(v), 3) for v in table.mean(axis=0)],
        "mase_worst_by_horizon": [round(float(v), 3) for v in table.max(axis=0)],
    }
    for lvl in LEVELS:
        by_h = cov_hits[lvl] / cov_n
        key = f"coverage_{round(lvl * 100)}"
        out[key] = round(float(cov_hits[lvl].sum() / cov_n.sum()), 4)
        out[f"{key}_min_h"] = round(float(by_h.min()), 4)
        out[f"{key}_max_h"] = round(float(by_h.max()), 4)
    out["per_series"] = per_series
    return out


def numpy_op_us() -> float:
    """Median cost of one tiny numpy operation now (``a + a`` on 15 floats): the machine's
    state during the run, to read ``us_per_update`` against (the host is shared)."""
    a = np.ones(H)
    perf = time.perf_counter_ns
    samples = []
    for _ in range(200):
        t0 = perf()
        for _ in range(100):
            a + a
        samples.append((perf() - t0) / 100)
    return round(statistics.median(samples) / 1000.0, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weeks", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--series", nargs="*", default=None, help="only these series")
    ap.add_argument("--param", action="append", default=[], help="forecaster kwarg k=v")
    ap.add_argument(
        "--fleet", action="store_true", help="also score app.dev.simulator's fleet (+~2 min)"
    )
    args = ap.parse_args()
    kwargs: dict[str, Any] = {}
    for kv in args.param:
        k, v = kv.split("=", 1)
        kwargs[k] = float(v) if "." in v or "e" in v else int(v)
    suite = make_suite(args.weeks, args.seed)
    if args.series:
        suite = {k: v for k, v in suite.items() if k in args.series}
    t_start = time.perf_counter()
    results = {
        name: run_series(
            y,
            lambda: SeriesForecaster(step_ms=STEP_MS, horizon=H, levels=LEVELS, **kwargs),
            (WEEK, DAY),
        )
        for name, y in suite.items()
    }
    times = [t for r in results.values() for t in r["times"]]  # type: ignore[attr-defined]
    fleet: dict[str, object] = {}
    if args.fleet:
        start_ms, fleet_series = fleet_suite(args.weeks, args.seed)
        fleet_results = {
            name: run_series(y, lambda: SeriesForecaster(**kwargs), (WEEK, DAY), start_ms)
            for name, y in fleet_series.items()
        }
        fw = summarise(fleet_results, WEEK)
        fd = summarise(fleet_results, DAY)
        fleet = {
            "fleet": {
                "series": len(fleet_series),
                "mase_by_horizon": fw["mase_by_horizon"],
                "mase_worst_by_horizon": fw["mase_worst_by_horizon"],
                **{k: v for k, v in fw.items() if k.startswith("coverage")},
                "after_day1": {
                    "mase_by_horizon": fd["mase_by_horizon"],
                    "mase_worst_by_horizon": fd["mase_worst_by_horizon"],
                },
            }
        }
    week = summarise(results, WEEK)
    day1 = summarise(results, DAY)
    out = {
        "mase_by_horizon": week.pop("mase_by_horizon"),
        **{k: v for k, v in week.items() if k.startswith("coverage")},
        "us_per_update": round(statistics.median(times) / 1000.0, 1),
        "us_per_update_p90": round(float(np.percentile(times, 90)) / 1000.0, 1),
        "us_per_update_mean": round(statistics.fmean(times) / 1000.0, 1),
        "bytes_per_series": max(int(r["bytes"]) for r in results.values()),  # type: ignore[call-overload]
        "mase_worst_by_horizon": week.pop("mase_worst_by_horizon"),
        "after_day1": {
            "mase_by_horizon": day1["mase_by_horizon"],
            "mase_worst_by_horizon": day1["mase_worst_by_horizon"],
            **{k: v for k, v in day1.items() if k.startswith("coverage")},
        },
        "per_series": week["per_series"],
        **fleet,
        "numpy_op_us": numpy_op_us(),
        "config": {
            "weeks": args.weeks,
            "seed": args.seed,
            "series": len(suite),
            "excluded_from_aggregates": sorted(EXCLUDED & set(suite)),
            "step_ms": STEP_MS,
            "horizon": H,
            "updates": len(times),
            "runtime_s": round(time.perf_counter() - t_start, 1),
            **kwargs,
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
