"""Online, per-series anomaly detection (pure core: no I/O, event time passed in)."""

from app.core.anomaly.detector import AnomalyScore, SeriesAnomalyDetector, score_series
from app.core.anomaly.likelihood import AnomalyLikelihood, log_tail_score
from app.core.anomaly.novelty import PatternNovelty
from app.core.anomaly.onset import OnsetGate

__all__ = [
    "AnomalyLikelihood",
    "AnomalyScore",
    "OnsetGate",
    "PatternNovelty",
    "SeriesAnomalyDetector",
    "log_tail_score",
    "score_series",
]
