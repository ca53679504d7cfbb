"""Conflict warnings on real traces: ``pso backtest`` against two simple baselines. One JSON object.

Input: the cases ``bench/conflict_traces.py`` builds outside the repository (``--traces DIR``:
per case a ``telemetry.jsonl`` and a ``pso.yaml``; ``manifest.json`` says which are for
development and which are held out). Every case goes through `run_backtest` exactly as
``pso backtest CASE/telemetry.jsonl --config CASE/pso.yaml`` runs it (one worker, no HTML
report), and its ``metrics.json`` is pooled per role:

- ``recall``, ``precision``, ``median_lead_windows``: the `ConflictScorer` definitions
  (``app/core/accuracy.py``), pooled over the cases' episodes and decided predictions (not a
  mean of per-case ratios); lead in windows.
- ``pso_interval_over_cases``: the pooled recall and precision over 1000 sets of cases
  drawn with replacement (2.5th percentile, median, 97.5th): with a dozen pools, which pools
  were drawn moves these figures more than most changes to the predictor do.
- ``brier``, ``reliability``: the backtest's calibration block pooled (per bin of the judged
  P(breach within the horizon): count, mean predicted, observed frequency).

Baselines, on the pool's summed demand only, through the same lifecycle rules (open at the
threshold, track at threshold − 0.15, clear after 10 quiet windows) and the same scorer:

- ``ewma_residual``: an EWMA of the total (alpha 0.3) and, over the origins seen so far, the
  share whose path ``max_h≤H(total(t+h) − level(t))`` would have crossed today's headroom:
  an empirical P(breach within H), warned at ``--baseline-threshold``.
- ``predict_linear``: Prometheus' ``predict_linear`` (least squares over the last 12
  windows) extrapolated H windows ahead; warns while it crosses capacity at some h <= H.

Run::

    .venv/bin/python bench/conflict_quality.py --traces /work/cache/conflict-traces
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.core.accuracy import ConflictScorer
from app.core.events import ConflictObserved, ConflictPredicted, ms_to_iso
from app.offline.backtest import conflict_summary, run_backtest
from app.settings import load_policy

FloatArray = npt.NDArray[np.float64]


# --------------------------------------------------------------------------- baselines


def _totals(path: Path) -> tuple[list[int], FloatArray]:
    """Window starts (ms) and the pool's summed demand per window, from a case's telemetry."""
    sums: dict[int, float] = defaultdict(float)
    with path.open() as fh:
        for line in fh:
            sample = json.loads(line)
            sums[int(sample["ts"])] += sum(sample["resources"].values())
    stamps = sorted(sums)
    return stamps, np.asarray([sums[t] for t in stamps], dtype=np.float64)


def _ewma_probabilities(total: FloatArray, capacity: float, horizon: int) -> FloatArray:
    """Per origin t: empirical P(max over the next H windows of the total > capacity)."""
    n = len(total)
    level = np.empty(n)
    level[0] = total[0]
    for t in range(1, n):
        level[t] = 0.3 * total[t] + 0.7 * level[t - 1]
    # The forecast made at origin t (first target t) uses level[t - 1]; its path's peak error:
    peak = np.full(n, np.nan)
    for t in range(1, n - horizon + 1):
        peak[t] = float(np.max(total[t : t + horizon])) - level[t - 1]
    probs = np.zeros(n)
    for t in range(1, n):
        known = peak[1 : max(1, t - horizon + 1)]  # paths fully observed by origin t
        if len(known) >= 50:
            probs[t] = float(np.mean(known > capacity - level[t - 1]))
    return probs


def _linear_alerts(total: FloatArray, capacity: float, horizon: int) -> FloatArray:
    """Per origin t: 1.0 when predict_linear over the last 12 windows crosses capacity."""
    n, span = len(total), 12
    x = np.arange(span, dtype=np.float64)
    out = np.zeros(n)
    for t in range(span, n):
        slope, intercept = np.polyfit(x, total[t - span : t], 1)
        ahead = intercept + slope * (span - 1 + np.arange(1, horizon + 1))
        out[t] = 1.0 if float(ahead.max()) > capacity else 0.0
    return out


def _score_alerts(
    stamps: list[int],
    total: FloatArray,
    probs: FloatArray,
    capacity: float,
    threshold: float,
    step_ms: int,
    horizon: int,
) -> ConflictScorer:
    """Run ``probs`` through PSO's lifecycle rules and score them like ``pso backtest``."""
    scorer = ConflictScorer(step_ms, horizon)
    open_id: str | None = None
    quiet = 0
    for t in range(1, len(stamps)):
        origin = stamps[t] - step_ms // 2  # window start of t: the first forecast window
        closed = origin - step_ms
        if total[t - 1] > capacity:
            scorer.observe(
                ConflictObserved(
                    event_id=f"observed:pool@{closed}",
                    resource="pool",
                    window_start_ms=closed,
                    window_end_ms=origin,
                    window_start=ms_to_iso(closed),
                    demand=float(total[t - 1]),
                    capacity=capacity,
                    contributors=[],
                )
            )
        status: str | None = None
        if open_id is None and probs[t] >= threshold:
            open_id, status = f"pool@{origin}", "predicted"
        elif open_id is not None:
            quiet = 0 if probs[t] >= threshold - 0.15 or total[t - 1] > capacity else quiet + 1
            if quiet >= 10:
                status = "cleared"
        if open_id is not None and status is not None:
            scorer.observe(
                ConflictPredicted(
                    event_id=f"{open_id}:{status}:{origin}",
                    status=status,  # type: ignore[arg-type]
                    conflict_id=open_id,
                    resource="pool",
                    emitted_at_ms=origin,
                    emitted_at=ms_to_iso(origin),
                    expected_start_ms=origin,
                    expected_end_ms=origin + horizon * step_ms,
                    expected_start=ms_to_iso(origin),
                    lead_time_s=0,
                    probability=float(probs[t]),
                    predicted_peak=0.0,
                    capacity=capacity,
                    contributors=[],
                )
            )
            if status == "cleared":
                open_id, quiet = None, 0
    return scorer


# --------------------------------------------------------------------------- pooling


def _block(scorer: ConflictScorer) -> dict[str, Any]:
    """A baseline's warnings scored as the backtest scores PSO's (`conflict_summary`)."""
    return _counts(conflict_summary([scorer]))


def _counts(summary: dict[str, Any]) -> dict[str, Any]:
    """What `_pool` adds up, from a `conflict_summary` (or ``metrics.json``'s same block)."""
    return {
        "episodes": summary["episodes"],
        "predicted_episodes": summary["predicted_episodes"],
        "decided": summary["decided"],
        "hits": summary["hits"],
        "leads_s": summary["lead_time_s"]["values"],
    }


def _ratios(blocks: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """Pooled recall (episodes foreseen / episodes) and precision (hits / warnings)."""
    episodes = sum(b["episodes"] for b in blocks)
    decided = sum(b["decided"] for b in blocks)
    recall = sum(b["predicted_episodes"] for b in blocks) / episodes if episodes else None
    precision = sum(b["hits"] for b in blocks) / decided if decided else None
    return recall, precision


def _pool(blocks: list[dict[str, Any]], step_s: int) -> dict[str, Any]:
    recall, precision = _ratios(blocks)
    leads = [v / step_s for b in blocks for v in b["leads_s"]]
    return {
        "cases": len(blocks),
        "episodes": sum(b["episodes"] for b in blocks),
        "recall": None if recall is None else round(recall, 3),
        "warnings": sum(b["decided"] for b in blocks),
        "precision": None if precision is None else round(precision, 3),
        "median_lead_windows": statistics.median(leads) if leads else None,
    }


def _case_interval(
    blocks: list[dict[str, Any]], resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """How much the pooled recall and precision owe to which cases were drawn: both pooled
    over ``resamples`` sets of cases drawn with replacement; median and 95 % interval.

    >>> one = {"episodes": 4, "predicted_episodes": 2, "decided": 4, "hits": 2, "leads_s": []}
    >>> _case_interval([one, one], 50)["recall"]  # identical cases: no spread
    [0.5, 0.5, 0.5]
    """
    rng = np.random.default_rng(seed)
    recall: list[float] = []
    precision: list[float] = []
    for _ in range(resamples):
        r, p = _ratios([blocks[i] for i in rng.integers(0, len(blocks), len(blocks))])
        if r is not None:
            recall.append(r)
        if p is not None:
            precision.append(p)

    def band(values: list[float]) -> list[float] | None:
        if not values:
            return None
        return [round(float(v), 3) for v in np.percentile(values, [2.5, 50.0, 97.5])]

    return {"recall": band(recall), "precision": band(precision), "resamples": resamples}


def _pool_calibration(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    scored = sum(b["scored"] for b in blocks)
    rows = []
    for k, row in enumerate(blocks[0]["bins"] if blocks else []):
        count = sum(b["bins"][k]["count"] for b in blocks)
        pred = math.fsum(
            (b["bins"][k]["mean_predicted"] or 0.0) * b["bins"][k]["count"] for b in blocks
        )
        seen = math.fsum(
            (b["bins"][k]["observed_frequency"] or 0.0) * b["bins"][k]["count"] for b in blocks
        )
        rows.append(
            {
                "from": row["from"],
                "to": row["to"],
                "count": count,
                "mean_predicted": round(pred / count, 3) if count else None,
                "observed_frequency": round(seen / count, 3) if count else None,
            }
        )
    brier = math.fsum((b["brier"] or 0.0) * b["scored"] for b in blocks)
    return {"scored": scored, "brier": round(brier / scored, 4) if scored else None, "bins": rows}


def run(traces: Path, baseline_threshold: float) -> dict[str, Any]:
    manifest = json.loads((traces / "manifest.json").read_text())
    per_role: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    cases: dict[str, Any] = {}
    started = time.perf_counter()
    step_s = int(manifest["rules"]["slot_s"])
    for name in sorted(manifest["cases"]):
        role = manifest["cases"][name]["role"]
        case = traces / name
        policy = load_policy(case / "pso.yaml")
        horizon, step_ms = policy.prediction.horizon, policy.window.size_ms
        capacity = next(iter(policy.resources.values())).capacity
        with tempfile.TemporaryDirectory(prefix="pso-conflict-quality-") as out:
            metrics = run_backtest(case / "telemetry.jsonl", policy, out, workers=1, render=False)
        block = metrics["conflicts"]["overall"]
        pso = _counts(block)
        stamps, total = _totals(case / "telemetry.jsonl")
        ewma = _score_alerts(
            stamps,
            total,
            _ewma_probabilities(total, capacity, horizon),
            capacity,
            baseline_threshold,
            step_ms,
            horizon,
        )
        linear = _score_alerts(
            stamps, total, _linear_alerts(total, capacity, horizon), capacity, 0.5, step_ms, horizon
        )
        per_role[role]["pso"].append(pso)
        per_role[role]["calibration"].append(block["calibration"])
        per_role[role]["ewma_residual"].append(_block(ewma))
        per_role[role]["predict_linear"].append(_block(linear))
        cases[name] = {
            "role": role,
            "pso": _pool([pso], step_s),
            "brier": block["calibration"]["brier"],
            "ewma_residual": _pool([_block(ewma)], step_s),
            "predict_linear": _pool([_block(linear)], step_s),
        }
    result: dict[str, Any] = {"traces": str(traces), "source": manifest["source"]}
    for role in sorted(per_role):
        got = per_role[role]
        result[role] = {
            "pso": _pool(got["pso"], step_s),
            "pso_interval_over_cases": _case_interval(got["pso"]),
            "calibration": _pool_calibration(got["calibration"]),
            "ewma_residual": _pool(got["ewma_residual"], step_s),
            "predict_linear": _pool(got["predict_linear"], step_s),
        }
    result["cases"] = cases
    result["baseline_threshold"] = baseline_threshold
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, required=True, help="bench/conflict_traces.py --out")
    parser.add_argument("--baseline-threshold", type=float, default=0.5)
    args = parser.parse_args()
    print(json.dumps(run(args.traces, args.baseline_threshold), indent=1))


if __name__ == "__main__":
    main()
