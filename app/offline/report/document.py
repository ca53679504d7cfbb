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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import orjson

from app.offline.report.charts import accuracy_chart, resource_chart, series_chart
from app.offline.report.data import _RC, RHO, RunData, _safe_name, load_run
from app.offline.report.tables import (
    COMPARISON_HEADER,
    RESOURCE_HEADER,
    Outcome,
    comparison_rows,
    label_rows,
    make_outcome,
    outcome,
    resource_rows,
    summary_rows,
)

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
        labels = m.get("labels")
        taught = (
            f"; labels: {labels['applied']} applied, {labels['rejected']} rejected, "
            f"{labels.get('names_no_alarm', 0)} naming no alarm of the baseline, from "
            f"{Path(labels['file']).name}"
            if labels
            else ""
        )
        rows: list[tuple[str, ...]] = list(
            comparison_rows(outcome(baseline_dir), outcome_of(run), base_metrics, m)
        )
        sections.append(
            Section(
                "What-if vs baseline",
                text=f"This run (what-if, overrides: {overrides}{taught}) against the baseline "
                f"run in {baseline_dir.name}/. Overload sums, over breached windows, the actual "
                "total demand above capacity.",
                header=COMPARISON_HEADER,
                rows=rows + list(label_rows(labels) if labels else []),
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
