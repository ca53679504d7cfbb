"""The closed-loop report: one self-contained HTML page (and Markdown with its PNGs) per run
of `pso bench closed-loop -o DIR`.

First the table (every scenario × policy) and the verdict on PSO; then, per scenario, two
charts — the busiest day (the scored day with the most conflict-minutes when nobody acts) and
the whole scored period — with one panel per policy: offered demand against capacity,
conflicts shaded, capacity orders and caps marked. Built like the backtest's report
(`app.offline.report.document`: sections, inline PNGs, no scripts); deterministic bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib import dates as mdates
from matplotlib.figure import Figure

from app.core.closedloop import LoopRun
from app.offline.closedloop.bench import HEADER, Case, table_rows, verdict_line
from app.offline.report.document import Chart, Section, to_html, to_markdown

DAY_MS = 86_400_000
_RC: Any = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 7,
    "timezone": "UTC",
    "path.simplify": True,
    "agg.path.chunksize": 10_000,
}
_COLOURS = {"none": "tab:gray", "reactive": "tab:orange", "hpa": "tab:purple", "pso": "tab:blue"}


def _png(fig: Figure) -> bytes:
    buf = BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def busiest_day(case: Case) -> int:
    """The scored day with the most conflict windows when nobody acts (else the first)."""
    per_day = DAY_MS // case.trace.step_ms
    first = -(-case.loop.warmup_windows // per_day)
    days = max(1, case.trace.windows // per_day)
    run = case.runs.get("none") or next(iter(case.runs.values()))
    counts = [int(run.conflict[d * per_day : (d + 1) * per_day].sum()) for d in range(days)]
    scored = [d for d in range(min(first, days - 1), days)]
    return max(scored, key=lambda d: (counts[d], -d))


def policy_chart(case: Case, first: int, last: int, title: str, marks: bool = True) -> bytes:
    """One panel per policy over windows ``[first, last)``: offered demand vs capacity."""
    trace = case.trace
    names = list(case.runs)
    n_res = len(trace.resources)
    fig = Figure(figsize=(11, 1.55 * len(names) * n_res + 0.6))
    axes = fig.subplots(len(names) * n_res, 1, sharex=True, squeeze=False)[:, 0]
    t = np.asarray([trace.window_ms(k) for k in range(first, last)], dtype="datetime64[ms]")
    top = 0.0
    for r in range(n_res):
        for run in case.runs.values():
            top = max(top, float(run.offered[first:last, r].max(initial=0.0)))
            top = max(top, float(run.capacity[first:last, r].max(initial=0.0)))
    for i, name in enumerate(names):
        run = case.runs[name]
        for r, res in enumerate(trace.resources):
            ax = axes[i * n_res + r]
            _panel(ax, run, r, t, first, last, marks, trace.window_ms(first), trace.window_ms(last))
            ax.set_ylim(0, top * 1.08 if top > 0 else 1.0)
            label = f"{name}" + (f" · {res}" if n_res > 1 else "")
            ax.set_ylabel(label, rotation=0, ha="right", va="center")
    locator = mdates.AutoDateLocator(minticks=4, maxticks=12)  # type: ignore[no-untyped-call]
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    axes[0].set_title(title)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=5, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _png(fig)


def _panel(
    ax: Any,
    run: LoopRun,
    r: int,
    t: Any,
    first: int,
    last: int,
    marks: bool,
    start_ms: int,
    end_ms: int,
) -> None:
    colour = _COLOURS.get(run.policy, "tab:green")
    conflict = run.conflict[first:last, r]
    if conflict.any():
        ax.fill_between(
            t,
            0,
            1,
            where=conflict,
            transform=ax.get_xaxis_transform(),
            color="tab:red",
            alpha=0.25,
            lw=0,
            step="post",
            label="conflict",
        )
    ax.plot(t, run.natural[first:last, r], color="0.6", lw=0.6, label="natural demand")
    ax.plot(t, run.offered[first:last, r], color="black", lw=0.8, label="offered demand")
    ax.step(t, run.capacity[first:last, r], where="post", color=colour, lw=1.2, label="capacity")
    if not marks:
        return
    scale = [ms for ms, res in run.scale_marks if res == r and start_ms <= ms < end_ms]
    caps = [ms for ms, res in run.cap_marks if res == r and start_ms <= ms < end_ms]
    if scale:
        ax.plot(
            np.asarray(scale, dtype="datetime64[ms]"),
            [0.02] * len(scale),
            "|",
            color=colour,
            ms=7,
            transform=ax.get_xaxis_transform(),
            label="capacity order",
        )
    if caps:
        ax.plot(
            np.asarray(caps, dtype="datetime64[ms]"),
            [0.08] * len(caps),
            "v",
            color="tab:red",
            ms=3,
            transform=ax.get_xaxis_transform(),
            label="cap set",
        )


def build_sections(cases: Sequence[Case]) -> list[Section]:
    rows = [row for case in cases for row in case.rows()]
    verdicts = [v for case in cases if (v := case.verdict()) is not None]
    sections = [
        Section(
            "Table",
            text="Over the scored windows (after the warm-up). Conflict-minutes: minutes in "
            "which the load admitted to a resource exceeded its capacity. Unmet value: "
            "weight × unit-hours lost (not served within the subsystem's patience). Deferred: "
            "unit-hours held back on instruction; late: served after their window; capacity: "
            "unit-hours in place (the cost); actions: capacity orders carried out and caps set.",
            header=HEADER,
            rows=table_rows(rows),
        ),
        Section(
            "PSO against the better baseline", text=" ".join(verdict_line(v) for v in verdicts)
        ),
    ]
    for k, case in enumerate(cases):
        day = busiest_day(case)
        per_day = DAY_MS // case.trace.step_ms
        lo, hi = day * per_day, min(case.trace.windows, (day + 1) * per_day)
        text = (
            f"{len(case.trace.subsystems)} subsystems on {', '.join(case.trace.resources)}; "
            f"{case.trace.windows} windows of {case.trace.step_ms // 1000} s. Grey: natural "
            "demand; black: offered (natural + queued, before caps); coloured steps: "
            "capacity; red: conflicts; ticks: capacity orders; triangles: caps set."
        )
        if case.episodes:
            text += f" Ground truth: {len(case.episodes)} conflict episodes with nobody acting."
        if case.injected:
            text += (
                " Injected: "
                + "; ".join(
                    f"{i['kind']} ×{i['factor']:g} on {i['subsystem']}" for i in case.injected
                )
                + "."
            )
        if case.note:
            text += f" ({case.note}.)"
        name = case.name.replace("/", "_")
        charts = [
            Chart(
                f"{k + 1:02d}-{name}-day.png",
                f"{case.name}: busiest day",
                policy_chart(case, lo, hi, f"{case.name}: day {day + 1} (busiest scored day)"),
            ),
            Chart(
                f"{k + 1:02d}-{name}-period.png",
                f"{case.name}: scored period",
                policy_chart(
                    case,
                    min(case.loop.warmup_windows, case.trace.windows - 1),
                    case.trace.windows,
                    f"{case.name}: the scored period",
                    marks=False,
                ),
            ),
        ]
        sections.append(Section(f"Scenario {case.name}", text=text, charts=charts))
    return sections


def render(cases: Sequence[Case], out_dir: Path, command: str) -> Path:
    """Write ``report.html``, ``report.md``, ``rows.json`` and ``img/*.png`` into ``out_dir``."""
    import orjson

    out_dir.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(_RC):
        sections = build_sections(cases)
    sections.insert(0, Section("Command", text=command))
    title = "PSO closed-loop benchmark"
    img = out_dir / "img"
    img.mkdir(exist_ok=True)
    for s in sections:
        for c in s.charts:
            (img / c.file).write_bytes(c.png)
    (out_dir / "report.md").write_text(to_markdown(sections, title), encoding="utf-8")
    (out_dir / "report.html").write_text(to_html(sections, title), encoding="utf-8")
    rows = [row for case in cases for row in case.rows()]
    (out_dir / "rows.json").write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2) + b"\n")
    return out_dir / "report.html"
