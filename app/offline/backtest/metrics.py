"""``metrics.json``: forecast accuracy per horizon, conflict recall/precision/lead, anomaly
scores against labels, computed from arrays at the end of a run."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from app.core.accuracy import ConflictScorer, FloatArray
from app.core.conflicts.calibration import Reliability, reliability_dict
from app.offline.backtest.common import MIN_BASELINE_TARGETS

# --------------------------------------------------------------------------- metrics


def _levels_key(level: float) -> str:
    return f"{level:g}"


def _nullable(values: list[float]) -> list[float | None]:
    return [None if v != v else v for v in values]  # NaN marks "no target"


def _horizon_blocks(sums: FloatArray, levels: tuple[float, ...]) -> list[dict[str, Any]]:
    """MAE, MASE and coverage per horizon of each ``sums[s]`` (`ForecastAccuracy.sums`
    layout), as `HorizonTotals` defines them; None where a horizon has no target."""
    import numpy as np  # not at import: the CLI starts without it

    n, n_naive, naive_err, abs_err, vs_naive = (sums[:, row] for row in range(5))
    nan = math.nan
    with np.errstate(all="ignore"):
        mae = np.where(n > 0, abs_err / n, nan).tolist()
        mase = np.where((n_naive > 0) & (naive_err > 0.0), vs_naive / naive_err, nan).tolist()
        cover = np.where(n[:, None, :] > 0, sums[:, 5:] / n[:, None, :], nan).tolist()
    counts = n[:, 0].tolist() if sums.shape[2] else [0.0] * len(sums)
    keys = [_levels_key(lv) for lv in levels]
    return [
        {
            "n": int(counts[s]),
            "mae_by_horizon": _nullable(mae[s]),
            "mase_by_horizon": _nullable(mase[s]),
            "coverage": {key: _nullable(cover[s][k]) for k, key in enumerate(keys)},
        }
        for s in range(len(sums))
    ]


def forecast_metrics(accuracy: dict[str, FloatArray], levels: tuple[float, ...]) -> dict[str, Any]:
    """Per series and overall MAE / MASE / coverage per horizon (`HorizonTotals` definitions),
    from each series' `ForecastAccuracy.sums`.

    Overall MAE and coverage pool every target; overall MASE is the mean of per-series MASE
    over series with at least 30 baseline targets at that horizon (pooling MASE across series
    of different units would let the largest series dominate).
    """
    import numpy as np  # not at import: the CLI starts without it

    keys = sorted(accuracy)
    if not keys:
        empty: dict[str, Any] = {"mae_by_horizon": [], "mase_by_horizon": []}
        empty["coverage"] = {_levels_key(lv): [] for lv in levels}
        return {"overall": empty, "series": {}}
    stack = np.stack([accuracy[key] for key in keys])  # (series, rows, horizon)
    series = dict(zip(keys, _horizon_blocks(stack, levels), strict=True))
    pooled = np.add.reduce(stack, axis=0)  # series after series, in key order
    overall = _horizon_blocks(pooled[None], levels)[0]
    del overall["n"]
    n_naive, naive_err = stack[:, 1], stack[:, 2]
    with np.errstate(all="ignore"):
        ratio = stack[:, 4] / naive_err
    usable = (n_naive >= MIN_BASELINE_TARGETS) & (naive_err > 0.0)
    mase: list[float | None] = []
    for h in range(stack.shape[2]):
        values = ratio[usable[:, h], h].tolist()
        mase.append(math.fsum(values) / len(values) if values else None)
    overall["mase_by_horizon"] = mase
    return {"overall": overall, "series": series}


def _quantiles(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)

    def q(p: float) -> float | None:
        if not ordered:
            return None
        pos = p * (len(ordered) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return {"median": q(0.5), "p10": q(0.1), "p90": q(0.9), "values": ordered}


def conflict_summary(scorers: Sequence[ConflictScorer]) -> dict[str, Any]:
    """Episodes, recall, decided warnings, precision and lead times pooled over ``scorers``:
    the ``metrics.json`` block, and what `bench/conflict_quality.py` scores its baselines by."""
    episodes = sum(len(s.episodes) for s in scorers)
    predicted = sum(1 for s in scorers for e in s.episodes if e.predicted_by is not None)
    decided = [p for s in scorers for p in s.decided]
    hits = sum(1 for p in decided if p.hit)
    return {
        "episodes": episodes,
        "predicted_episodes": predicted,
        "recall": predicted / episodes if episodes else None,
        "predictions": sum(len(s.predictions) for s in scorers),
        "decided": len(decided),  # hit, or past their window without a breach
        "hits": hits,
        "precision": hits / len(decided) if decided else None,
        "lead_time_s": _quantiles([v for s in scorers for v in s.lead_times_s]),
    }


def conflict_metrics(
    scorers: dict[str, ConflictScorer], reliability: dict[str, Reliability] | None = None
) -> dict[str, Any]:
    """Episodes, recall, precision and lead times per resource and overall (`ConflictScorer`),
    and with ``reliability`` how calibrated the probabilities were (`Reliability`: per bin of
    the judged P(breach within the horizon), the mean prediction, the observed frequency and
    the count; the Brier score).

    Overall precision pools the decided predictions of every resource (not a mean of ratios);
    overall calibration pools every resource's scored windows.
    """
    names = sorted(scorers)
    overall = conflict_summary([scorers[k] for k in names])
    resources = {k: conflict_summary([scorers[k]]) for k in names}
    if reliability is not None:
        overall["calibration"] = reliability_dict(
            [reliability[k] for k in names if k in reliability]
        )
        for k in names:
            if k in reliability:
                resources[k]["calibration"] = reliability_dict([reliability[k]])
    return {"overall": overall, "resources": resources}


def anomaly_metrics(
    labelled: bool,
    anomalous_windows: Sequence[tuple[str, int]],
    events: Sequence[tuple[str, int]],
    step_ms: int,
) -> dict[str, Any]:
    """Window-based anomaly precision, recall and detection delay against input labels.

    A window is labelled anomalous if any of its samples says ``labels.anomaly: true``; an
    episode is a maximal run of such windows of one subsystem. A *detected window* is a
    (subsystem, window) with at least one `AnomalyDetected` event on any series. Precision =
    detected windows inside a labelled episode / detected windows. Recall = episodes with a
    detection inside them / episodes. Delay = first detection − episode start.
    """
    detected = sorted(set(events))
    block: dict[str, Any] = {
        "events": len(events),
        "labelled": labelled,
        "precision": None,
        "recall": None,
        "detection_delay_s": {"median": None, "values": []},
    }
    if not labelled:
        return block
    truth = set(anomalous_windows)
    episodes: list[tuple[str, int, int]] = []  # subsystem, first start, last start
    for sub, start in sorted(truth):
        if episodes and episodes[-1][0] == sub and episodes[-1][2] + step_ms == start:
            episodes[-1] = (sub, episodes[-1][1], start)
        else:
            episodes.append((sub, start, start))
    if detected:
        block["precision"] = sum(1 for d in detected if d in truth) / len(detected)
    delays: list[float] = []
    for sub, first, last in episodes:
        hits = [start for s, start in detected if s == sub and first <= start <= last]
        if hits:
            delays.append((min(hits) - first) / 1000)
    if episodes:
        block["recall"] = len(delays) / len(episodes)
    quant = _quantiles(delays)
    block["detection_delay_s"] = {"median": quant["median"], "values": quant["values"]}
    return block
