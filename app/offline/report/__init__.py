"""The backtest report: ``metrics.json`` and a run's event files -> ``report.md`` and a
self-contained ``report.html`` (see `app.offline.report.document`). Modules: ``data`` (the run
read back), ``charts``, ``tables``, ``document`` (sections, Markdown, HTML)."""

from app.offline.report.data import (
    ResourceTrace,
    RunData,
    SeriesTrace,
    fmt_count,
    fmt_duration,
    fmt_pct,
    fmt_ratio,
    load_run,
)
from app.offline.report.document import render_report
from app.offline.report.tables import comparison_rows, summary_rows

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
