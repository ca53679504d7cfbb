"""Conversions between the forecaster's numbers and event bodies, on the hot path.

Stage 1 builds a forecast body per series per window and a share per resource use; the
backtest's workers hand shares to its stage 2 as plain values. These functions build the
bodies without re-validation (the forecaster guarantees finite, ordered values; the schema
tests validate real outputs).
"""

from __future__ import annotations

from app.core.accuracy import HorizonTotals
from app.core.events import (
    HorizonAccuracy,
    Interval,
    ResourceShare,
    SeriesForecastBody,
)
from app.core.types import SeriesForecast


def forecast_body(fc: SeriesForecast) -> SeriesForecastBody:
    """The wire form of a `SeriesForecast` (origin and step travel with the event)."""
    levels = sorted(fc.lower)
    rows = [list(fc.point)]
    rows += [list(fc.lower[level]) for level in levels]
    rows += [list(fc.upper[level]) for level in levels]
    return body_from_rows(rows, tuple(levels), fc.model, fc.recent_error, fc.warming_up)


def body_from_rows(
    rows: list[list[float]],
    levels: tuple[float, ...],
    model: str,
    recent_error: float,
    warming_up: bool,
) -> SeriesForecastBody:
    """A forecast body from ``[point, lower per level.., upper per level..]`` lists.

    Built without re-validation: on the hot path, and the forecaster guarantees finite,
    ordered values (property-tested); the schema tests validate real outputs. The lists are
    used as they are (not copied): nobody mutates them.
    """
    n = len(levels)
    intervals = [
        Interval(level=lvl, lower=rows[1 + k], upper=rows[1 + n + k])
        for k, lvl in enumerate(levels)
    ]
    return SeriesForecastBody(
        point=rows[0],
        intervals=intervals,
        model=model,
        recent_error=recent_error,
        warming_up=warming_up,
    )


#: a `ResourceShare` as plain values: subsystem, resource, window start, step (s), actual, the
#: forecast's rows (point, lower per level.., upper per level..), levels, model, recent error,
#: warming up
ShareValues = tuple[
    str, str, int, int, float, list[list[float]], tuple[float, ...], str, float, bool
]


def share_values(share: ResourceShare) -> ShareValues:
    """``share`` as plain values, which pickle small and fast; `share_from_values` inverts it.

    How the backtest's workers hand shares to its stage 2: no JSON round trip and no
    validation on the way back (the values come from the engine; pickle keeps floats exact).
    """
    body = share.forecast
    rows = [body.point, *(i.lower for i in body.intervals), *(i.upper for i in body.intervals)]
    return (
        share.subsystem,
        share.resource,
        share.window_start_ms,
        share.step_s,
        share.actual,
        rows,
        tuple(i.level for i in body.intervals),
        body.model,
        body.recent_error,
        body.warming_up,
    )


def share_from_values(values: ShareValues) -> ResourceShare:
    """The `ResourceShare` that `share_values` took apart (equal, same bytes)."""
    subsystem, resource, start, step_s, actual, rows, levels, model, recent, warming = values
    return ResourceShare(
        event_id=f"share:{resource}:{subsystem}:{start}",
        subsystem=subsystem,
        resource=resource,
        window_start_ms=start,
        step_s=step_s,
        actual=actual,
        forecast=body_from_rows(rows, levels, model, recent, warming),
    )


def forecast_from_body(body: SeriesForecastBody, origin_ms: int, step_ms: int) -> SeriesForecast:
    return SeriesForecast(
        origin_ms=origin_ms,
        step_ms=step_ms,
        point=tuple(body.point),
        lower={i.level: tuple(i.lower) for i in body.intervals},
        upper={i.level: tuple(i.upper) for i in body.intervals},
        model=body.model,
        recent_error=body.recent_error,
        warming_up=body.warming_up,
    )


def horizon_report(totals: list[HorizonTotals], levels: tuple[float, ...]) -> list[HorizonAccuracy]:
    out = []
    for h, t in enumerate(totals, start=1):
        if t.n == 0:
            continue
        coverage = {f"{level:g}": c for level in levels if (c := t.coverage(level)) is not None}
        out.append(HorizonAccuracy(horizon=h, n=t.n, mae=t.mae, mase=t.mase, coverage=coverage))
    return out
