"""Prediction-engine benchmark on the simulator's seasonal scenarios. Prints one JSON object.

Scenario: ``--subsystems`` simulated services (daily + weekly cycles, hourly ripple, noise,
slow trends, incidents) sharing ``db-main`` and ``gpu-pool`` with capacities below their
combined weekday peaks, ``--days`` of event time, one sample every 20 s, 60 s windows. The
telemetry goes through the same ingest (`TelemetryIngest`) and engine (`PredictionEngine`)
that the live worker runs.

Figures:
- ``mase_by_horizon``: per horizon, the mean over series of MASE (MAE of the engine's point
  forecast / MAE of seasonal naive ``y(t - 1 day)`` on the same targets), scored after the
  first ``--warmup-days`` (the engine learns from the start; only scoring waits, so that weekly
  shapes have been seen once). ``mase_pooled_by_horizon`` pools errors over series instead.
- ``coverage_80`` / ``coverage_95``: share of actual values inside the 80 % / 95 % intervals,
  over all horizons (``coverage_by_horizon`` per horizon), same scoring period.
- ``conflict_recall`` / ``conflict_precision`` / ``median_lead_windows``: `ConflictScorer`
  definitions (see ``app/core/accuracy.py``), over the whole run after the first day.
- ``us_per_series_update``: median over windows of (stage-1 time for the window / series in
  it): anomaly detector, forecaster, accuracy tracking and event construction, per series.
  Wall time; ``us_per_series_update_cpu`` is the same from the thread's CPU time, which other
  processes on a busy machine inflate less (compare before/after in the same conditions).
- ``bytes_per_series``: pickled size of one series' state (forecaster + detector + accuracy),
  median and max.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import statistics
import time
from typing import Any

import orjson

from app.core.accuracy import ConflictScorer
from app.core.engine import PredictionEngine
from app.core.events import ConflictObserved, ConflictPredicted
from app.dev.simulator import DAY_MS, FleetSimulator
from app.wire.codec import SourceRef
from app.wire.telemetry import TelemetryIngest


def reset_accuracy(engine: PredictionEngine) -> None:
    for sub in engine.subsystems.values():
        for model in sub.series.values():
            model.accuracy.reset()


def run(
    subsystems: int, days: float, warmup_days: float, seed: int, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    sim = FleetSimulator(subsystems=subsystems, seed=seed, interval_ms=20_000)
    policy = sim.policy()
    if extra:  # river forecasters as extra candidates, as pso.yaml's prediction.extra_candidates
        prediction = policy.prediction.model_copy(update={"extra_candidates": list(extra)})
        policy = policy.model_copy(update={"prediction": prediction})
    ingest = TelemetryIngest(policy.window)
    engine = PredictionEngine(policy.spec())
    step = policy.window.size_ms
    horizon = policy.prediction.horizon
    scorers: dict[str, ConflictScorer] = {}
    per_series_us: list[float] = []
    per_series_cpu_us: list[float] = []
    warm_until = sim.start_ms + int(warmup_days * DAY_MS)
    conflict_from = sim.start_ms + DAY_MS
    reset_done = False
    windows = 0
    started = time.perf_counter()
    for i, sample in enumerate(sim.samples(int(days * DAY_MS))):
        result = ingest.process(orjson.dumps(sample), SourceRef("bench", 0, i))
        for window in result.windows:
            if not reset_done and window.window_start_ms >= warm_until:
                reset_accuracy(engine)
                reset_done = True
            windows += 1
            c0 = time.thread_time_ns()
            t0 = time.perf_counter()
            out = engine.subsystem(window.subsystem).process(window)
            t1 = time.perf_counter()
            c1 = time.thread_time_ns()
            n_series = len(window.metrics) + len(window.resources)
            per_series_us.append((t1 - t0) / n_series * 1e6)
            per_series_cpu_us.append((c1 - c0) / n_series / 1e3)
            for share in out.shares:
                for event in engine.resource(share.resource).add(share):
                    if isinstance(event, ConflictPredicted | ConflictObserved):
                        ts = (
                            event.emitted_at_ms
                            if isinstance(event, ConflictPredicted)
                            else event.window_start_ms
                        )
                        if ts >= conflict_from:
                            scorer = scorers.setdefault(
                                event.resource, ConflictScorer(step, horizon)
                            )
                            scorer.observe(event)
    elapsed = time.perf_counter() - started

    levels = policy.prediction.levels
    mase_h: list[list[float]] = [[] for _ in range(horizon)]
    pooled = [[0.0, 0.0] for _ in range(horizon)]
    covered = {lvl: [0, 0] for lvl in levels}
    cover_h = {lvl: [[0, 0] for _ in range(horizon)] for lvl in levels}
    sizes = []
    for sub in engine.subsystems.values():
        for model in sub.series.values():
            sizes.append(len(pickle.dumps((model.forecaster, model.detector, model.accuracy))))
            for h, t in enumerate(model.accuracy.totals):
                if t.n_naive >= 100 and (m := t.mase) is not None:
                    mase_h[h].append(m)
                    pooled[h][0] += t.abs_err_model_vs_naive
                    pooled[h][1] += t.abs_err_naive
                for lvl in levels:
                    c = t.covered.get(lvl, 0)
                    covered[lvl][0] += c
                    covered[lvl][1] += t.n
                    cover_h[lvl][h][0] += c
                    cover_h[lvl][h][1] += t.n
    episodes = sum(len(s.episodes) for s in scorers.values())
    predicted = sum(1 for s in scorers.values() for e in s.episodes if e.predicted_by)
    hits = sum(1 for s in scorers.values() for p in s.predictions.values() if p.hit)
    decided = sum(
        1 for s in scorers.values() for p in s.predictions.values() if p.hit or s._expired(p)
    )
    leads = [lead / (step / 1000) for s in scorers.values() for lead in s.lead_times_s]
    return {
        "scenario": {
            "subsystems": subsystems,
            "days": days,
            "warmup_days": warmup_days,
            "seed": seed,
            "extra_candidates": list(extra),
            "windows": windows,
            "series": len(sizes),
            "capacities": {k: v.capacity for k, v in policy.resources.items()},
        },
        "mase_by_horizon": [round(statistics.fmean(v), 4) if v else None for v in mase_h],
        "mase_pooled_by_horizon": [round(a / b, 4) if b else None for a, b in pooled],
        "coverage_80": round(covered[0.8][0] / max(1, covered[0.8][1]), 4),
        "coverage_95": round(covered[0.95][0] / max(1, covered[0.95][1]), 4),
        "coverage_by_horizon": {
            f"{lvl:g}": [round(c / n, 4) if n else None for c, n in cover_h[lvl]] for lvl in levels
        },
        "conflict_episodes": episodes,
        "conflict_recall": round(predicted / episodes, 4) if episodes else None,
        "conflict_precision": round(hits / decided, 4) if decided else None,
        "conflicts_predicted": sum(len(s.predictions) for s in scorers.values()),
        "median_lead_windows": statistics.median(leads) if leads else None,
        "us_per_series_update": round(statistics.median(per_series_us), 1),
        "us_per_series_update_p90": round(statistics.quantiles(per_series_us, n=10)[-1], 1),
        "us_per_series_update_cpu": round(statistics.median(per_series_cpu_us), 1),
        "bytes_per_series": int(statistics.median(sizes)) if sizes else 0,
        "bytes_per_series_max": max(sizes) if sizes else 0,
        "elapsed_s": round(elapsed, 1),
        "nan_free": all(not (isinstance(x, float) and math.isnan(x)) for v in mase_h for x in v),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subsystems", type=int, default=8)
    parser.add_argument("--days", type=float, default=14.0)
    parser.add_argument("--warmup-days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--extra-candidate",
        action="append",
        default=[],
        help="a river forecaster to add to every series' blend (repeatable), e.g. "
        "'river.time_series.SNARIMAX(p=2, d=0, q=1)': what it costs per series update",
    )
    args = parser.parse_args()
    extra = tuple(args.extra_candidate)
    print(json.dumps(run(args.subsystems, args.days, args.warmup_days, args.seed, extra)))


if __name__ == "__main__":
    main()
