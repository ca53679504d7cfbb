"""The backtest report: ``metrics.json`` and the event files of a run -> ``report.md`` + ``.html``.

Written for an on-call engineer with two minutes: a summary table first, then one chart per
shared resource (total demand vs capacity, forecast band, predicted conflicts with their lead
times, observed breaches shaded), charts of the most active series (load, h=1 forecast band,
anomalies) and accuracy by horizon. The HTML is one self-contained file (PNG images inline as
``data:`` URIs, inline CSS, no scripts); ``report.md`` links the same PNGs under ``img/``.

Inputs follow the backtest's output contract (``pso backtest -o DIR``, issue 5): every
``*.jsonl`` line is one event exactly as live publishes it. Only what a chart needs is kept in
memory; ``forecasts.jsonl`` is streamed line by line.

Resource forecast band
----------------------
The h=1 forecast of a resource's total demand is the sum of its contributors' h=1 point
forecasts. The band combines the contributors' interval half-widths (per side, per level) the
way the conflict predictor combines their spreads: contributors are correlated with a fixed
ρ = 0.3, so ``w_total = sqrt((1 − ρ) Σ wᵢ² + ρ (Σ wᵢ)²)``. With ρ = 1 it would be the plain sum
of the widths (too wide when contributors are independent), with ρ = 0 the root sum of squares.

Deterministic: the same input files give byte-identical ``report.md``, ``report.html`` and
PNGs (fixed rcParams, no ``Software`` metadata, no clock read, sorted iteration everywhere).
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import orjson
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure

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


# --------------------------------------------------------------------------- charts


def _t(ms: Sequence[int] | int) -> Any:
    """Epoch ms -> numpy datetime64 (matplotlib plots those as UTC dates)."""
    return np.asarray(ms, dtype="datetime64[ms]")


def _time_axis(ax: Axes) -> None:
    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    ax.set_xlabel("event time (UTC)")


def _legend_below(ax: Axes, offset: float = -0.2) -> None:
    """Legend under the plot: it never hides data (tight_layout makes room for it)."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, offset), ncols=4, frameon=False)


def _png(fig: Figure) -> bytes:
    buf = BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _episodes(observed: Sequence[Mapping[str, Any]], step_ms: int) -> list[tuple[int, int]]:
    """Maximal runs of breached windows as (start, end) ms."""
    runs: list[tuple[int, int]] = []
    for o in sorted(observed, key=lambda o: int(o["window_start_ms"])):
        start = int(o["window_start_ms"])
        if runs and start <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(runs[-1][1], start + step_ms))
        else:
            runs.append((start, start + step_ms))
    return runs


def resource_chart(run: RunData, res: ResourceTrace) -> bytes:
    """Total demand vs capacity, h=1 forecast band, predicted conflicts, breaches shaded."""
    fig = Figure(figsize=(11, 4.2))
    ax = fig.add_subplot()
    for start, end in _episodes(res.observed, run.step_ms):
        ax.axvspan(_t(start), _t(end), color="tab:red", alpha=0.15, lw=0)
    shades = {0: 0.30, 1: 0.15}
    for k, level in enumerate(sorted(run.levels)):
        ts, _, lo, hi = res.band(level)
        if ts:
            ax.fill_between(
                _t(ts),
                lo,
                hi,
                color="tab:blue",
                alpha=shades.get(k, 0.1),
                lw=0,
                label=f"{level:.0%} forecast band (h=1)",
            )
    if res.point:
        ts = sorted(res.point)
        ax.plot(
            _t(ts),
            [res.point[t] for t in ts],
            color="tab:blue",
            lw=0.8,
            ls="--",
            label="forecast h=1 (sum of contributors)",
        )
    if res.actual:
        ts = sorted(res.actual)
        ax.plot(
            _t(ts), [res.actual[t] for t in ts], color="black", lw=1.0, label="actual total demand"
        )
    if res.capacity is not None:
        ax.axhline(res.capacity, color="tab:red", lw=1.2, label=f"capacity {res.capacity:g}")
    _conflict_markers(ax, run, res)
    if res.observed:
        ax.fill_between([], [], [], color="tab:red", alpha=0.15, label="observed breach")
    ax.set_title(f"{res.name}: total demand vs capacity")
    ax.set_ylabel(f"{res.name} demand (window mean)")
    _time_axis(ax)
    _legend_below(ax)
    fig.tight_layout()
    return _png(fig)


def _conflict_markers(ax: Axes, run: RunData, res: ResourceTrace) -> None:
    y = res.capacity if res.capacity is not None else 0.0
    lead_by_id: dict[str, float] = {}
    for ep in run.scorer.episodes:
        if ep.predicted_by is not None and ep.lead_ms is not None:
            lead_by_id.setdefault(ep.predicted_by, ep.lead_ms / 1000)
    hits = [p for p in res.predicted if p["conflict_id"] in lead_by_id]
    misses = [p for p in res.predicted if p["conflict_id"] not in lead_by_id]
    if hits:
        ax.plot(
            _t([int(p["emitted_at_ms"]) for p in hits]),
            [y] * len(hits),
            "v",
            color="darkred",
            ms=8,
            label="conflict predicted (then breached)",
        )
    if misses:
        ax.plot(
            _t([int(p["emitted_at_ms"]) for p in misses]),
            [y] * len(misses),
            "v",
            color="orange",
            mfc="none",
            ms=8,
            label="conflict predicted (no breach credited)",
        )
    if res.cleared:
        ax.plot(
            _t([int(c["emitted_at_ms"]) for c in res.cleared]),
            [y] * len(res.cleared),
            "x",
            color="dimgrey",
            ms=7,
            label="conflict cleared",
        )
    for p in res.predicted[:MAX_CONFLICT_LABELS]:
        lead = lead_by_id.get(p["conflict_id"])
        text = f"lead {fmt_duration(lead)}" if lead is not None else "—"
        ax.annotate(
            text,
            (_t(int(p["emitted_at_ms"])), y),
            xytext=(0, 9),
            textcoords="offset points",
            ha="center",
            fontsize=7,
            rotation=90,
            va="bottom",
        )


def series_chart(run: RunData, trace: SeriesTrace) -> bytes:
    """One series: window means, h=1 forecast and band, anomaly markers."""
    fig = Figure(figsize=(11, 3.0))
    ax = fig.add_subplot()
    shades = {0: 0.30, 1: 0.15}
    for k, level in enumerate(sorted(trace.lower)):
        ax.fill_between(
            _t(trace.fc_ts),
            trace.lower[level],
            trace.upper[level],
            color="tab:blue",
            alpha=shades.get(k, 0.1),
            lw=0,
            label=f"{level:.0%} band (h=1)",
        )
    if trace.fc_ts:
        ax.plot(
            _t(trace.fc_ts), trace.point, color="tab:blue", lw=0.8, ls="--", label="forecast h=1"
        )
    ax.plot(_t(trace.ts), trace.actual, color="black", lw=0.9, label="actual (window mean)")
    if trace.anomalies:
        ax.plot(
            _t([a[0] for a in trace.anomalies]),
            [a[1] for a in trace.anomalies],
            "o",
            color="tab:red",
            ms=7,
            mfc="none",
            mew=1.8,
            label=f"anomaly ({len(trace.anomalies)})",
        )
    ax.set_title(trace.label)
    ax.set_ylabel(trace.name)
    _time_axis(ax)
    _legend_below(ax, offset=-0.32)
    fig.tight_layout()
    return _png(fig)


def accuracy_chart(run: RunData) -> bytes:
    """MASE by horizon (with the naive line at 1) and interval coverage vs nominal."""
    overall = run.metrics.get("forecast", {}).get("overall", {})
    fig = Figure(figsize=(11, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    mase = overall.get("mase_by_horizon", [])
    finite = [m for m in mase if m is not None]
    if finite:
        hs = list(range(1, len(mase) + 1))
        ax1.plot(
            hs,
            [math.nan if m is None else m for m in mase],
            "o-",
            color="tab:blue",
            label="MASE (overall)",
        )
        ax1.axhline(1.0, color="grey", ls="--", lw=1, label="seasonal naive (= 1)")
        ax1.set_ylabel("MASE (lower is better)")
        ax1.set_title("Forecast error by horizon")
        ax1.set_ylim(0, max([1.15, *(1.1 * m for m in finite)]))
    else:  # the naive baseline is the same window a day earlier: no MASE before day 2
        mae = overall.get("mae_by_horizon", [])
        hs = list(range(1, len(mae) + 1))
        ax1.plot(
            hs,
            [math.nan if m is None else m for m in mae],
            "o-",
            color="tab:blue",
            label="MAE (overall)",
        )
        ax1.set_ylabel("MAE (lower is better)")
        ax1.set_title("Forecast error by horizon (MASE needs over a day of input)")
        ax1.set_ylim(bottom=0)
    ax1.set_xlabel("horizon (windows ahead)")
    ax1.legend(loc="upper left")
    colors = ["tab:green", "tab:purple", "tab:orange", "tab:brown"]
    for k, (key, values) in enumerate(sorted(overall.get("coverage", {}).items())):
        color = colors[k % len(colors)]
        h = list(range(1, len(values) + 1))
        ax2.plot(
            h,
            [math.nan if v is None else v for v in values],
            "o-",
            color=color,
            label=f"coverage of {float(key):.0%} interval",
        )
        ax2.axhline(float(key), color=color, ls="--", lw=1, label=f"nominal {float(key):.0%}")
    ax2.set_xlabel("horizon (windows ahead)")
    ax2.set_ylabel("share of actuals inside")
    ax2.set_ylim(0, 1.05)
    ax2.set_title("Interval coverage vs nominal")
    ax2.legend(loc="lower left", ncols=2)
    fig.tight_layout()
    return _png(fig)


# --------------------------------------------------------------------------- tables


Row = tuple[str, str]


def _at(values: Sequence[Any], h: int) -> Any:
    return values[h - 1] if 0 < h <= len(values) else None


def summary_rows(metrics: Mapping[str, Any]) -> list[Row]:
    """The summary table: (label, value) pairs, in reading order."""
    inp = metrics["input"]
    fc = metrics["forecast"]["overall"]
    conf = metrics["conflicts"]["overall"]
    anom = metrics["anomalies"]
    plans = metrics["plans"]
    runtime = metrics["runtime"]
    mase = fc.get("mase_by_horizon", [])
    rows: list[Row] = [
        ("input", str(inp["source"])),
        ("time range", f"{inp['from']} → {inp['to']}"),
        ("samples", fmt_count(inp["samples"])),
        ("windows", fmt_count(inp["windows"])),
        ("subsystems", fmt_count(inp["subsystems"])),
        ("invalid lines", fmt_count(inp["invalid_lines"])),
        ("invalid samples", fmt_count(inp["invalid_samples"])),
        ("late samples", fmt_count(inp["late_samples"])),
    ]
    horizons = [h for h in SUMMARY_HORIZONS if h <= len(mase)] or ([len(mase)] if mase else [])
    for h in horizons:
        rows.append((f"forecast MASE h={h}", fmt_ratio(_at(mase, h))))
    for key, values in sorted(fc.get("coverage", {}).items()):
        for h in horizons:
            rows.append((f"coverage {float(key):.0%} h={h}", fmt_pct(_at(values, h))))
    lead = conf.get("lead_time_s", {})
    rows += [
        ("conflict episodes", fmt_count(conf["episodes"])),
        ("episodes predicted", fmt_count(conf["predicted_episodes"])),
        ("conflict recall", fmt_pct(conf["recall"])),
        ("conflict predictions", fmt_count(conf["predictions"])),
        ("conflict precision", fmt_pct(conf["precision"])),
        ("median lead time", fmt_duration(lead.get("median"))),
        (
            "lead time p10 – p90",
            f"{fmt_duration(lead.get('p10'))} – {fmt_duration(lead.get('p90'))}",
        ),
        ("anomalies", fmt_count(anom["events"])),
    ]
    if anom.get("labelled"):
        delay = anom.get("detection_delay_s", {})
        rows += [
            ("anomaly precision", fmt_pct(anom.get("precision"))),
            ("anomaly recall", fmt_pct(anom.get("recall"))),
            ("median detection delay", fmt_duration(delay.get("median"))),
        ]
    else:
        rows.append(("anomaly labels", "none in input"))
    rows += [
        ("rebalance plans", fmt_count(plans["count"])),
        ("infeasible plans", fmt_count(plans["infeasible"])),
        (
            "runtime",
            f"{runtime['seconds']:.1f} s ({runtime['samples_per_s']:,.0f} samples/s, "
            f"{runtime['workers']} workers)",
        ),
    ]
    overrides = metrics.get("config", {}).get("overrides", [])
    if overrides:
        rows.append(("config overrides", ", ".join(overrides)))
    return rows


RESOURCE_HEADER = (
    "resource",
    "capacity",
    "episodes",
    "predicted",
    "recall",
    "predictions",
    "precision",
    "median lead",
)


def resource_rows(metrics: Mapping[str, Any]) -> list[tuple[str, ...]]:
    caps = metrics.get("config", {}).get("resources", {})
    out: list[tuple[str, ...]] = []
    for name, r in sorted(metrics["conflicts"].get("resources", {}).items()):
        cap = caps.get(name, {}).get("capacity")
        out.append(
            (
                name,
                fmt_float(cap) if cap is not None else DASH,
                fmt_count(r["episodes"]),
                fmt_count(r["predicted_episodes"]),
                fmt_pct(r["recall"]),
                fmt_count(r["predictions"]),
                fmt_pct(r["precision"]),
                fmt_duration(r.get("lead_time_s", {}).get("median")),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a run did to the fleet, for the what-if comparison."""

    episodes: int
    predicted_episodes: int
    recall: float | None
    predictions: int
    precision: float | None
    median_lead_s: float | None
    breach_windows: int
    overload: float  # Σ over breached windows of (demand − capacity)
    peak_excess: float
    plans: int
    infeasible: int
    residual_overload: float
    resource_breaches: tuple[tuple[str, int, float], ...] = ()  # name, windows, overload


def make_outcome(
    metrics: Mapping[str, Any],
    observed: Iterable[Mapping[str, Any]],
    plans: Iterable[Mapping[str, Any]],
) -> Outcome:
    """Comparison numbers from metrics.json, the observed breaches and the plans of a run."""
    conf = metrics["conflicts"]["overall"]
    by_resource: dict[str, list[float]] = {}
    for o in observed:
        excess = max(0.0, float(o["demand"]) - float(o["capacity"]))
        by_resource.setdefault(str(o["resource"]), []).append(excess)
    every = [x for name in sorted(by_resource) for x in by_resource[name]]
    return Outcome(
        episodes=conf["episodes"],
        predicted_episodes=conf["predicted_episodes"],
        recall=conf["recall"],
        predictions=conf["predictions"],
        precision=conf["precision"],
        median_lead_s=conf.get("lead_time_s", {}).get("median"),
        breach_windows=len(every),
        overload=math.fsum(every),
        peak_excess=max(every, default=0.0),
        plans=metrics["plans"]["count"],
        infeasible=metrics["plans"]["infeasible"],
        residual_overload=math.fsum(float(p["residual_overload"]) for p in plans),
        resource_breaches=tuple(
            (name, len(xs), math.fsum(xs)) for name, xs in sorted(by_resource.items())
        ),
    )


def outcome(out_dir: Path) -> Outcome:
    """Read the comparison numbers of one run (metrics.json, conflicts and plans)."""
    metrics = orjson.loads((out_dir / "metrics.json").read_bytes())
    observed = (c for c in _jsonl(out_dir / "conflicts.jsonl") if c["type"] == "conflict_observed")
    return make_outcome(metrics, observed, _jsonl(out_dir / "rebalance.jsonl"))


COMPARISON_HEADER = ("", "baseline", "what-if", "change")


def comparison_rows(
    base: Outcome,
    what_if: Outcome,
    base_metrics: Mapping[str, Any],
    metrics: Mapping[str, Any],
) -> list[tuple[str, str, str, str]]:
    """Side by side: the baseline run, this (what-if) run, and the difference."""

    def count(label: str, a: int, b: int) -> tuple[str, str, str, str]:
        return label, fmt_count(a), fmt_count(b), f"{b - a:+,}"

    def num(label: str, a: float, b: float) -> tuple[str, str, str, str]:
        return label, fmt_float(a), fmt_float(b), f"{b - a:+,.1f}"

    def share(label: str, a: float | None, b: float | None) -> tuple[str, str, str, str]:
        diff = DASH if a is None or b is None else f"{100 * (b - a):+.1f} pp"
        return label, fmt_pct(a), fmt_pct(b), diff

    rows: list[tuple[str, str, str, str]] = []
    caps_a = base_metrics.get("config", {}).get("resources", {})
    caps_b = metrics.get("config", {}).get("resources", {})
    for name in sorted(set(caps_a) | set(caps_b)):
        a, b = caps_a.get(name, {}).get("capacity"), caps_b.get(name, {}).get("capacity")
        diff = DASH if a is None or b is None else f"{b - a:+,.1f}"
        rows.append((f"capacity {name}", fmt_float(a), fmt_float(b), diff))
    lead_diff = (
        DASH
        if base.median_lead_s is None or what_if.median_lead_s is None
        else _signed_duration(what_if.median_lead_s - base.median_lead_s)
    )
    rows += [
        count("conflict episodes", base.episodes, what_if.episodes),
        count("episodes predicted", base.predicted_episodes, what_if.predicted_episodes),
        share("conflict recall", base.recall, what_if.recall),
        count("conflict predictions", base.predictions, what_if.predictions),
        share("conflict precision", base.precision, what_if.precision),
        (
            "median lead time",
            fmt_duration(base.median_lead_s),
            fmt_duration(what_if.median_lead_s),
            lead_diff,
        ),
        count("breached windows", base.breach_windows, what_if.breach_windows),
        num("overload (Σ demand − capacity)", base.overload, what_if.overload),
        num("worst excess in a window", base.peak_excess, what_if.peak_excess),
        count("rebalance plans", base.plans, what_if.plans),
        count("infeasible plans", base.infeasible, what_if.infeasible),
        num("residual overload of plans", base.residual_overload, what_if.residual_overload),
    ]
    per_a = {n: (w, o) for n, w, o in base.resource_breaches}
    per_b = {n: (w, o) for n, w, o in what_if.resource_breaches}
    for name in sorted(set(per_a) | set(per_b)):
        wa, oa = per_a.get(name, (0, 0.0))
        wb, ob = per_b.get(name, (0, 0.0))
        rows.append(count(f"breached windows {name}", wa, wb))
        rows.append(num(f"overload {name}", oa, ob))
    return rows


def _signed_duration(seconds: float) -> str:
    return ("+" if seconds >= 0 else "−") + fmt_duration(abs(seconds))


# --------------------------------------------------------------------------- documents


@dataclass(slots=True)
class Chart:
    file: str
    title: str
    png: bytes


@dataclass(slots=True)
class Section:
    title: str
    text: str = ""
    header: tuple[str, ...] | None = None
    rows: list[tuple[str, ...]] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)


def build_sections(run: RunData, baseline_dir: Path | None = None) -> list[Section]:
    """The report's content, independent of its format (Markdown or HTML)."""
    m = run.metrics
    sections = [
        Section("Summary", header=("", "value"), rows=list(summary_rows(m))),
        Section("Conflicts by resource", header=RESOURCE_HEADER, rows=resource_rows(m)),
    ]
    if baseline_dir is not None:
        base_metrics = orjson.loads((baseline_dir / "metrics.json").read_bytes())
        overrides = ", ".join(m.get("config", {}).get("overrides", [])) or "none"
        sections.append(
            Section(
                "What-if vs baseline",
                text=f"This run (what-if, overrides: {overrides}) against the baseline run in "
                f"{baseline_dir.name}/. Overload sums, over breached windows, the actual "
                "total demand above capacity.",
                header=COMPARISON_HEADER,
                rows=list(comparison_rows(outcome(baseline_dir), outcome_of(run), base_metrics, m)),
            )
        )
    res_charts = [
        Chart(
            f"resource-{k + 1:02d}-{_safe_name(name)}.png",
            f"Resource {name}",
            resource_chart(run, res),
        )
        for k, (name, res) in enumerate(run.resources.items())
    ]
    sections.append(
        Section(
            "Shared resources",
            text="Black: actual total demand (sum of contributors' window means). Red line: "
            "capacity; red shading: observed breaches. Blue: the sum of contributors' h=1 "
            "forecasts, with bands combining their interval widths per side with correlation "
            f"ρ = {RHO} (sqrt((1−ρ)Σw² + ρ(Σw)²)). Triangles: first emission of each predicted "
            "conflict, labelled with the lead time to the breach episode it predicted.",
            charts=res_charts,
        )
    )
    series_charts = [
        Chart(
            f"series-{k + 1:02d}-{_safe_name(run.series[key].label)}.png",
            run.series[key].label,
            series_chart(run, run.series[key]),
        )
        for k, key in enumerate(run.charted)
    ]
    rest = sorted(set(run.series) - set(run.charted))
    text = (
        f"The {len(run.charted)} most active of {len(run.series)} series (most anomalies, "
        "then largest relative variation). Red circles: anomalies."
    )
    if rest:
        text += " Not charted: " + ", ".join(run.series[k].label for k in rest) + "."
    sections.append(Section("Series", text=text, charts=series_charts))
    sections.append(
        Section(
            "Accuracy by horizon",
            text="MASE below 1 beats the seasonal-naive forecast (same window one day earlier). "
            "Coverage should sit on its dashed nominal line.",
            charts=[Chart("accuracy.png", "Accuracy by horizon", accuracy_chart(run))],
        )
    )
    return sections


def outcome_of(run: RunData) -> Outcome:
    """`Outcome` of the run already in memory (no second read of its files)."""
    observed = (o for r in run.resources.values() for o in r.observed)
    return make_outcome(run.metrics, observed, run.plans)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(sections: Sequence[Section], title: str) -> str:
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.text:
            lines += [s.text, ""]
        if s.header is not None:
            lines.append("| " + " | ".join(_md_cell(h) for h in s.header) + " |")
            lines.append("|" + "---|" * len(s.header))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in s.rows]
            lines.append("")
        for c in s.charts:
            lines += [f"![{c.title}](img/{c.file})", ""]
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:1.5em auto;
max-width:1150px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left}th{background:#f3f3f3}td:not(:first-child){font-variant-numeric:tabular-nums}
img{max-width:100%;display:block;margin:.6em 0}p{max-width:900px}
"""


def to_html(sections: Sequence[Section], title: str) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    for s in sections:
        out.append(f'<section id="{e(_safe_name(s.title.lower()))}"><h2>{e(s.title)}</h2>')
        if s.text:
            out.append(f"<p>{e(s.text)}</p>")
        if s.header is not None:
            out.append(
                "<table><thead><tr>"
                + "".join(f"<th>{e(h)}</th>" for h in s.header)
                + "</tr></thead><tbody>"
            )
            out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in s.rows]
            out.append("</tbody></table>")
        for c in s.charts:
            data = base64.b64encode(c.png).decode("ascii")
            out.append(
                f'<figure><img alt="{e(c.title)}" src="data:image/png;base64,{data}"></figure>'
            )
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def render_report(out_dir: Path, baseline_dir: Path | None = None) -> None:
    """Write ``report.md``, ``report.html`` and ``img/*.png`` into ``out_dir``.

    ``out_dir`` holds a backtest's output (``metrics.json`` and the event JSONL files).
    With ``baseline_dir`` (another run's output), a what-if comparison section is added.
    """
    out_dir = Path(out_dir)
    with matplotlib.rc_context(_RC):
        run = load_run(out_dir)
        sections = build_sections(run, None if baseline_dir is None else Path(baseline_dir))
    inp = run.metrics["input"]
    title = f"PSO backtest report: {inp['source']} ({inp['from']} → {inp['to']})"
    img = out_dir / "img"
    img.mkdir(parents=True, exist_ok=True)
    for s in sections:
        for c in s.charts:
            (img / c.file).write_bytes(c.png)
    (out_dir / "report.md").write_text(to_markdown(sections, title), encoding="utf-8")
    (out_dir / "report.html").write_text(to_html(sections, title), encoding="utf-8")


__all__ = [
    "ResourceTrace",
    "RunData",
    "SeriesTrace",
    "comparison_rows",
    "fmt_count",
    "fmt_duration",
    "fmt_pct",
    "fmt_ratio",
    "load_run",
    "render_report",
    "summary_rows",
]
