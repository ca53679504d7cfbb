"""A backtest run read back for the report: its metrics and only what the charts need of
its event files (``forecasts.jsonl`` streamed line by line), and how numbers are printed."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

import app.core.events as core
from app.core.accuracy import ConflictScorer
from app.wire.events import ConflictObserved, ConflictPredicted
from app.wire.records import to_core

RHO = 0.3
MAX_SERIES_CHARTS = 12
MAX_CONFLICT_LABELS = 20
SUMMARY_HORIZONS = (1, 5, 15)
DASH = "—"

_RC: Any = {  # typed Any: matplotlib types rc keys as one big Literal
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.framealpha": 0.9,
    "timezone": "UTC",
    "svg.hashsalt": "pso-report",
    "path.simplify": True,
    "agg.path.chunksize": 10_000,
}


# --------------------------------------------------------------------------- formatting


def fmt_count(value: int | None) -> str:
    """Integers with thousands separators (``12,345``); a dash when unknown."""
    return DASH if value is None else f"{value:,}"


def fmt_ratio(value: float | None) -> str:
    """MASE and other ratios: three decimals, a dash when undefined."""
    return DASH if value is None else f"{value:.3f}"


def fmt_pct(value: float | None) -> str:
    """Shares (recall, precision, coverage) as a percentage with one decimal."""
    return DASH if value is None else f"{100 * value:.1f} %"


def fmt_duration(seconds: float | None) -> str:
    """Lead times and delays in the unit a person thinks in (s, min, h)."""
    if seconds is None:
        return DASH
    if abs(seconds) < 120:
        return f"{seconds:.0f} s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def fmt_float(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{value:,.{digits}f}"


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


# --------------------------------------------------------------------------- reading


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Events of one JSONL file; a missing file is an empty stream (a run may emit none)."""
    if not path.is_file():
        return
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


@dataclass(slots=True)
class SeriesTrace:
    """One series of one subsystem: window means, its h=1 forecasts, its anomalies."""

    subsystem: str
    kind: str  # "metric" or "resource"
    name: str
    ts: list[int] = field(default_factory=list)
    actual: list[float] = field(default_factory=list)
    fc_ts: list[int] = field(default_factory=list)
    point: list[float] = field(default_factory=list)
    lower: dict[float, list[float]] = field(default_factory=dict)
    upper: dict[float, list[float]] = field(default_factory=dict)
    anomalies: list[tuple[int, float, float]] = field(default_factory=list)  # ts, value, score

    @property
    def label(self) -> str:
        return f"{self.subsystem}/{self.kind}:{self.name}"

    def activity(self) -> float:
        """Coefficient of variation of the window means: how much there is to look at."""
        if len(self.actual) < 2:
            return 0.0
        values = np.asarray(self.actual)
        mean = float(np.mean(np.abs(values)))
        return float(np.std(values)) / mean if mean > 0 else 0.0


@dataclass(slots=True)
class ResourceTrace:
    """One shared resource: actual total demand and the combined h=1 forecast of it."""

    name: str
    capacity: float | None
    actual: dict[int, float] = field(default_factory=dict)  # window start -> total mean
    point: dict[int, float] = field(default_factory=dict)  # target window start -> sum of points
    widths: dict[tuple[int, float, str], list[float]] = field(default_factory=dict)
    predicted: list[dict[str, Any]] = field(default_factory=list)  # first emissions
    cleared: list[dict[str, Any]] = field(default_factory=list)
    observed: list[dict[str, Any]] = field(default_factory=list)

    def band(self, level: float) -> tuple[list[int], list[float], list[float], list[float]]:
        """Targets, point, lower, upper of the combined h=1 forecast (see module docstring)."""
        ts = sorted(self.point)
        lo, hi, pt = [], [], []
        for t in ts:
            p = self.point[t]
            pt.append(p)
            lo.append(p - _combine(self.widths.get((t, level, "lo"), [])))
            hi.append(p + _combine(self.widths.get((t, level, "hi"), [])))
        return ts, pt, lo, hi


def _combine(widths: Sequence[float]) -> float:
    if not widths:
        return 0.0
    squares = math.fsum(w * w for w in widths)
    total = math.fsum(widths)
    return math.sqrt((1 - RHO) * squares + RHO * total * total)


@dataclass(slots=True)
class RunData:
    """Everything the report draws, read from one output directory."""

    metrics: dict[str, Any]
    step_ms: int
    horizon: int
    levels: tuple[float, ...]
    series: dict[tuple[str, str, str], SeriesTrace]
    charted: list[tuple[str, str, str]]
    resources: dict[str, ResourceTrace]
    scorer: ConflictScorer
    anomaly_count: int
    plans: list[dict[str, Any]]


def _levels(metrics: Mapping[str, Any]) -> tuple[float, ...]:
    coverage = metrics.get("forecast", {}).get("overall", {}).get("coverage", {})
    return tuple(sorted(float(k) for k in coverage))


def load_run(out_dir: Path, max_series_charts: int = MAX_SERIES_CHARTS) -> RunData:
    """Read a backtest's output directory into what the charts and tables need."""
    metrics: dict[str, Any] = orjson.loads((out_dir / "metrics.json").read_bytes())
    capacities = {
        name: float(cfg["capacity"])
        for name, cfg in metrics.get("config", {}).get("resources", {}).items()
    }
    resources = {n: ResourceTrace(n, c) for n, c in sorted(capacities.items())}
    series: dict[tuple[str, str, str], SeriesTrace] = {}
    step_ms = 0
    for w in _jsonl(out_dir / "windows.jsonl"):
        start = int(w["window_start_ms"])
        step_ms = step_ms or int(w["window_end_ms"]) - start
        sub = w["subsystem"]
        for kind, key in (("metric", "metrics"), ("resource", "resources")):
            for name, stats in w[key].items():
                trace = series.get((sub, kind, name))
                if trace is None:
                    trace = series[(sub, kind, name)] = SeriesTrace(sub, kind, name)
                trace.ts.append(start)
                trace.actual.append(float(stats["mean"]))
        for name, stats in w["resources"].items():
            res = resources.get(name)
            if res is None:
                res = resources[name] = ResourceTrace(name, None)
            res.actual[start] = res.actual.get(start, 0.0) + float(stats["mean"])

    anomaly_count = 0
    for a in _jsonl(out_dir / "anomalies.jsonl"):
        anomaly_count += 1
        trace = series.get((a["subsystem"], a["series_kind"], a["series"]))
        if trace is not None:
            trace.anomalies.append((int(a["window_start_ms"]), float(a["value"]), a["score"]))

    ranked = sorted(series, key=lambda k: (-len(series[k].anomalies), -series[k].activity(), k))
    charted = ranked[:max_series_charts]

    horizon = 0
    levels = _levels(metrics)
    wanted = set(charted)
    for fc in _jsonl(out_dir / "forecasts.jsonl"):
        horizon = horizon or int(fc["horizon"])
        step_ms = step_ms or int(fc["step_s"]) * 1000
        target = int(fc["origin_ms"])
        sub = fc["subsystem"]
        for kind, key in (("metric", "metrics"), ("resource", "resources")):
            for name, body in fc[key].items():
                if (sub, kind, name) in wanted:
                    _add_forecast(series[(sub, kind, name)], target, body)
                if kind == "resource":
                    res = resources.get(name)
                    if res is None:
                        res = resources[name] = ResourceTrace(name, None)
                    _add_share(res, target, body)
    if not levels:
        levels = tuple(sorted({lv for t in series.values() for lv in t.lower}))

    scorer = ConflictScorer(step_ms or 60_000, horizon or 1)
    for c in _jsonl(out_dir / "conflicts.jsonl"):
        if c["type"] == "conflict_predicted":
            event: core.ConflictPredicted | core.ConflictObserved = to_core(
                ConflictPredicted.model_validate(c)
            )
        elif c["type"] == "conflict_observed":
            event = to_core(ConflictObserved.model_validate(c))
        else:
            continue
        scorer.observe(event)
        res = resources.get(c["resource"])
        if res is None:
            res = resources[c["resource"]] = ResourceTrace(c["resource"], None)
        if res.capacity is None:
            res.capacity = float(c["capacity"])
        if c["type"] == "conflict_observed":
            res.observed.append(c)
        elif c["status"] == "predicted":
            res.predicted.append(c)
        elif c["status"] == "cleared":
            res.cleared.append(c)

    plans = list(_jsonl(out_dir / "rebalance.jsonl"))
    return RunData(
        metrics=metrics,
        step_ms=step_ms or 60_000,
        horizon=horizon,
        levels=levels,
        series=series,
        charted=charted,
        resources=dict(sorted(resources.items())),
        scorer=scorer,
        anomaly_count=anomaly_count,
        plans=plans,
    )


def _add_forecast(trace: SeriesTrace, target: int, body: Mapping[str, Any]) -> None:
    trace.fc_ts.append(target)
    trace.point.append(float(body["point"][0]))
    for interval in body["intervals"]:
        level = float(interval["level"])
        trace.lower.setdefault(level, []).append(float(interval["lower"][0]))
        trace.upper.setdefault(level, []).append(float(interval["upper"][0]))


def _add_share(res: ResourceTrace, target: int, body: Mapping[str, Any]) -> None:
    p = float(body["point"][0])
    res.point[target] = res.point.get(target, 0.0) + p
    for interval in body["intervals"]:
        level = float(interval["level"])
        res.widths.setdefault((target, level, "lo"), []).append(max(0.0, p - interval["lower"][0]))
        res.widths.setdefault((target, level, "hi"), []).append(max(0.0, interval["upper"][0] - p))
