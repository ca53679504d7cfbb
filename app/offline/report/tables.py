"""The report's tables: the summary, per resource, and a what-if against its baseline."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from app.offline.report.data import (
    DASH,
    SUMMARY_HORIZONS,
    _jsonl,
    fmt_count,
    fmt_duration,
    fmt_float,
    fmt_pct,
    fmt_ratio,
)

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


def label_rows(labels: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """With ``--labels``: the alarms without labels (baseline) and with them, and how many of
    them the labels call false or true (`app.offline.backtest.labels`)."""
    before, after = labels["before"], labels["after"]
    rows: list[tuple[str, str, str, str]] = []
    for kind, name in (("anomalies", "anomaly alarms"), ("conflicts", "conflicts predicted")):
        a, b = before["labelled_alarms"][kind], after["labelled_alarms"][kind]
        for key in ("alarms", "false", "true"):
            what = name if key == "alarms" else f"{name} labelled {key}"
            rows.append((what, fmt_count(a[key]), fmt_count(b[key]), f"{b[key] - a[key]:+,}"))
    return rows


def _signed_duration(seconds: float) -> str:
    return ("+" if seconds >= 0 else "−") + fmt_duration(abs(seconds))
