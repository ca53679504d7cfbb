"""PSO's anomaly detector as a river anomaly detector: ``learn_one(x)``, ``score_one(x)``.

river's anomaly detectors take a dict of features; PSO's `SeriesAnomalyDetector` takes one
series' value and its event time. `RiverAnomalyDetector` is the bridge, and nothing more: the
value is ``x[feature]`` (or the one feature that is not ``ts_ms``), the event time ``x["ts_ms"]``
(ms) when given, else the window after the last one learned; a missing value is scored 0
and not learned, as `SeriesAnomalyDetector` does with a NaN. ``score_one`` is the detector's
graded, onset-gated ``anomaly_score`` in [0, 1], computed before learning and without changing
the state, so river's progressive validation (score, then learn), its anomaly filters
(`river.anomaly.ThresholdFilter`, `QuantileFilter`) and pipelines run it unchanged. The
detector itself is `detector` (verdicts, expected range, ``process_one``).
"""

from __future__ import annotations

import math
from typing import Any

from river import base

from app.core.anomaly.detector import SeriesAnomalyDetector


class RiverAnomalyDetector(base.AnomalyDetector):
    """A `SeriesAnomalyDetector` as a `river.base.AnomalyDetector`.

    Parameters are those of `SeriesAnomalyDetector` (``params``), plus ``feature`` (which key
    of ``x`` is the value; None: the only key that is not ``ts_ms``) and ``step_ms`` (the
    spacing assumed when ``x`` carries no ``ts_ms``: it also sizes the detector's memory, two
    days of values).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(3)
    >>> det = RiverAnomalyDetector()
    >>> scores = []
    >>> for i in range(600):
    ...     x = {"load": 10.0 + rng.gauss(0.0, 0.2) + (5.0 if i == 500 else 0.0)}
    ...     scores.append(det.score_one(x))
    ...     det.learn_one(x)
    >>> round(scores[500], 2), round(scores[501], 2)  # the onset, then a tenth
    (1.0, 0.1)
    """

    def __init__(self, feature: str | None = None, step_ms: int = 60_000, **params: Any) -> None:
        self.feature = feature
        self.step_ms = step_ms
        self.params = params
        self.detector = SeriesAnomalyDetector(**params)

    @classmethod
    def _unit_test_params(cls) -> Any:
        yield {"warmup": 5}

    def _value(self, x: dict[Any, Any]) -> float:
        if self.feature is not None:
            return float(x.get(self.feature, math.nan))
        values = [v for k, v in x.items() if k != "ts_ms"]
        if not values:
            return math.nan  # a missing value: scored 0, nothing learned
        if len(values) > 1:
            raise ValueError(
                f"RiverAnomalyDetector: x has {len(values)} values besides ts_ms; "
                "name the one to score with feature="
            )
        return float(values[0])

    def _ts(self, x: dict[Any, Any]) -> int:
        ts = x.get("ts_ms")
        if ts is not None:
            return int(ts)
        last = self.detector.last_ts
        return 0 if last is None else last + self.step_ms

    def learn_one(self, x: dict[Any, Any]) -> None:
        self.detector.learn_one(self._ts(x), self._value(x))

    def score_one(self, x: dict[Any, Any]) -> float:
        score = self.detector.score_one(self._ts(x), self._value(x)).score
        return score if math.isfinite(score) else 0.0
