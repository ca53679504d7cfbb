"""Write docs/benchmarks.md from the JSON the benches printed (``bench/results/*.json``).

``make bench`` runs each bench with its output into ``bench/results/NAME.json`` and then this
script; the README links the page it writes and states no figure of its own. Each bench's
JSON is shown as it is: its scalar figures, flattened to dotted names (a curated subset first
where one is listed below), with the date of the run (the file's time) and the targets the
bench reports, if any. Nothing is computed here: a figure on the page is a figure a bench
printed.

Run: ``.venv/bin/python bench/report.py [bench/results] [-o docs/benchmarks.md]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: what each bench is, and its headline figures (dotted paths into its JSON), in order
BENCHES: dict[str, tuple[str, list[str]]] = {
    "live_throughput": (
        "The live worker on a real broker: catch-up rates against the ceiling (raw consume + "
        "orjson.loads), produce -> readable latency at a paced 10k samples/s, checkpoint seal "
        "bursts, memory for 2,000 subsystems x 5 series after their first checkpoints",
        [
            "ceiling_eps",
            "validation_us_per_sample",
            "pso_ingest_eps",
            "pso_eps",
            "ratios.ingest_vs_ceiling",
            "ratios.pso_vs_ceiling",
            "latency_ms.p50",
            "latency_ms.p99",
            "latency_ms.max",
            "checkpoint_seal_ms.p50",
            "checkpoint_seal_ms.max",
            "rss_mb_2000_subsystems",
            "rss.worker.rss_mb",
            "latency.paced_samples_per_s",
            "loadavg_at_phase_start.end_to_end",
            "loadavg_at_phase_start.paced",
            "broker",
        ],
    ),
    "engine": (
        "The prediction engine on the simulator: forecast accuracy, interval coverage, "
        "conflict recall / precision / lead, cost and state per series",
        [],
    ),
    "backtest_speed": ("`pso backtest` throughput on 100 subsystems x 5 series", []),
    "forecast_quality": ("Forecast quality on held-out-style series", []),
    "anomaly_quality": (
        "Anomaly scores, NAB scoring with one threshold swept over the whole corpus",
        [
            "corpus",
            "anomaly_score.standard.score",
            "anomaly_score.standard.threshold",
            "anomaly_score.low_fp.score",
            "anomaly_score.low_fn.score",
            "bootstrap_over_files.standard.p2_5",
            "bootstrap_over_files.standard.p97_5",
            "bootstrap_over_files.low_fp.p2_5",
            "bootstrap_over_files.low_fp.p97_5",
            "per_file_oracle_standard",
            "is_anomaly.standard",
            "zscore_baseline.standard",
            "us_per_point_process_one",
            "bytes_per_series",
        ],
    ),
    "closed_loop": ("Closed loop: none / reactive / hpa / pso / oracle on the scenarios", []),
}


def flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    """Scalar leaves of ``doc`` by dotted path (lists of scalars kept whole)."""
    out: dict[str, Any] = {}
    if isinstance(doc, dict):
        for key, value in doc.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(doc, list) and all(not isinstance(v, dict | list) for v in doc):
        out[prefix] = doc
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out.update(flatten(value, f"{prefix}[{i}]"))
    else:
        out[prefix] = doc
    return out


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def section(name: str, path: Path) -> list[str]:
    doc = json.loads(path.read_text())
    what, headline = BENCHES.get(name, (name, []))
    when = dt.datetime.fromtimestamp(path.stat().st_mtime, tz=dt.UTC).strftime("%Y-%m-%d")
    flat = flatten(doc)
    lines = [f"## {name}", "", f"{what}. Run of {when}: `{path.relative_to(ROOT)}`.", ""]
    lines += ["| figure | value |", "|---|---|"]
    shown = [k for k in headline if k in flat]
    rest = [k for k in flat if k not in shown]
    for key in shown:
        lines.append(f"| **{key}** | {cell(flat[key])} |")
    if len(rest) > 60:  # a long JSON: its headline here, the whole file one click away
        lines.append(f"| ({len(rest)} more figures) | see the JSON file |")
    else:
        lines += [f"| {key} | {cell(flat[key])} |" for key in rest]
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    files = sorted(args.results.resolve().glob("*.json"))
    order = {name: i for i, name in enumerate(BENCHES)}
    files.sort(key=lambda p: (order.get(p.stem, len(order)), p.stem))
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/report.py` from the JSON the benches printed (`make bench`); do "
        "not edit by hand. The machine is a shared 2-core VM whose speed drifts by about "
        "±30 % between runs: compare figures within one run, not across runs or pages.",
        "",
    ]
    for path in files:
        lines += section(path.stem, path)
    args.output.write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {args.output} from {len(files)} result files")


if __name__ == "__main__":
    main()
