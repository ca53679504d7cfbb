"""`pso score-anomalies` and `pso forecast`: the online models over one exported series."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.args import check_delimiter, finite_between
from app.cli.common import err_console, progress
from app.errors import UsageError


def _series_tool(source: Path, run: Any) -> int:
    from app.offline.series_file import SeriesFileError, count_rows

    total = count_rows(source)
    with progress() as bar:
        task = bar.add_task(source.name, total=total)
        try:
            rows: int = run(lambda n: bar.advance(task, n))
        except SeriesFileError as exc:
            raise UsageError(f"{source}: {exc}") from None
    return rows


_CSV_IN = typer.Argument(
    exists=True,
    dir_okay=False,
    readable=True,
    help="CSV with a header naming a timestamp and a value column (, ; tab or | between cells)",
)
_CSV_OUT = typer.Option("-o", "--output", dir_okay=False, help="CSV to write")
TimestampColumn = Annotated[
    str, typer.Option("--timestamp-column", help="name of the timestamp column (any case)")
]
ValueColumn = Annotated[str, typer.Option("--value-column", help="name of the value column")]
Delimiter = Annotated[
    str | None,
    typer.Option(
        help="what splits cells: one character, or 'tab' (default: the header tells)",
        callback=check_delimiter,
    ),
]


def score_anomalies_cmd(
    source: Annotated[Path, _CSV_IN],
    output: Annotated[Path, _CSV_OUT],
    threshold: Annotated[
        float | None,
        typer.Option(
            help="is_anomaly threshold on the calibrated likelihood (default 0.6)",
            callback=finite_between(0, 1, low_open=True),
        ),
    ] = None,
    timestamp_column: TimestampColumn = "timestamp",
    value_column: ValueColumn = "value",
    delimiter: Delimiter = None,
) -> None:
    """Score an exported series online: adds anomaly_score in [0, 1] and is_anomaly."""
    from app.offline.series_file import SeriesColumns
    from app.offline.series_tools import score_anomalies

    columns = SeriesColumns(timestamp_column, value_column, delimiter)
    rows = _series_tool(source, lambda p: score_anomalies(source, output, p, threshold, columns))
    err_console.print(f"scored {rows} rows -> {output}")


def forecast_cmd(
    source: Annotated[Path, _CSV_IN],
    output: Annotated[Path, _CSV_OUT],
    horizon: Annotated[int, typer.Option(min=1, max=240, help="rows ahead")] = 15,
    level: Annotated[
        float,
        typer.Option(
            help="interval coverage in percent",
            callback=finite_between(0, 100, low_open=True, high_open=True),
        ),
    ] = 80.0,
    timestamp_column: TimestampColumn = "timestamp",
    value_column: ValueColumn = "value",
    delimiter: Delimiter = None,
) -> None:
    """Forecast an exported series online: adds yhat_1..H, lo_1..H, hi_1..H per row."""
    from app.offline.series_file import SeriesColumns
    from app.offline.series_tools import forecast_series

    columns = SeriesColumns(timestamp_column, value_column, delimiter)
    notes: list[str] = []
    rows = _series_tool(
        source,
        lambda p: forecast_series(source, output, horizon, level / 100.0, p, columns, notes),
    )
    err_console.print(f"forecast {rows} rows -> {output}")
    for note in notes:
        err_console.print(f"note: {note}", soft_wrap=True)
