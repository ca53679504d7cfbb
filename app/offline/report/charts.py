"""The report's charts (matplotlib, deterministic PNG bytes): per resource, per series, and
accuracy by horizon."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from io import BytesIO
from typing import Any

import numpy as np
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from app.offline.report.data import (
    MAX_CONFLICT_LABELS,
    ResourceTrace,
    RunData,
    SeriesTrace,
    fmt_duration,
)

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
