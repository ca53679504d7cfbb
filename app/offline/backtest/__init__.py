"""`pso backtest`: the prediction engine replayed offline over recorded telemetry (see
`app.offline.backtest.run` for how the work is split between processes).

Modules: ``source`` (the input), ``stage1`` (the workers), ``run`` (the driver, stage 2 and
the what-if), ``metrics`` (``metrics.json``), ``settings`` (sizes and limits).
"""

from app.offline.backtest.common import FILES, BacktestError
from app.offline.backtest.metrics import (
    anomaly_metrics,
    conflict_metrics,
    conflict_summary,
    forecast_metrics,
)
from app.offline.backtest.run import apply_overrides, run_backtest
from app.offline.backtest.source import copy_topic

__all__ = [
    "FILES",
    "BacktestError",
    "anomaly_metrics",
    "apply_overrides",
    "conflict_metrics",
    "conflict_summary",
    "copy_topic",
    "forecast_metrics",
    "run_backtest",
]
