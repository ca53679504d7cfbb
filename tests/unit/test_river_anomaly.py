"""PSO's anomaly detector through river's own API: progressive validation, filters, pipelines."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import river.checks
from river import anomaly, base, compose, evaluate, metrics

from app.core.anomaly import SeriesAnomalyDetector
from app.core.anomaly.river_api import RiverAnomalyDetector

DATA = Path(__file__).parents[1] / "data" / "anomaly"
FILE = "nab_ec2_cpu_utilization_825cc2.csv"


def _ms(text: str) -> int:
    stamp = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    return int(stamp.timestamp() * 1000)


def labelled_series() -> list[tuple[dict[str, Any], bool]]:
    """A real CPU series with its labelled anomaly windows, as river's (x, y) stream."""
    windows = json.loads((DATA / "nab_windows.json").read_text())[FILE]["windows"]
    spans = [(_ms(a), _ms(b)) for a, b in windows]
    with (DATA / FILE).open() as fh:
        rows = [(_ms(r["timestamp"]), float(r["value"])) for r in csv.DictReader(fh)]
    return [({"ts_ms": ts, "cpu": v}, any(a <= ts <= b for a, b in spans)) for ts, v in rows]


def test_river_progressive_validation_scores_exactly_what_pso_scores() -> None:
    """`river.evaluate.iter_progressive_val_score` runs PSO's detector with no adapter; what it
    scores is the `anomaly_score` PSO's own `process_one` gives, row for row, on a real series."""
    stream = labelled_series()
    model = RiverAnomalyDetector(feature="cpu")
    assert isinstance(model, base.AnomalyDetector)
    steps = evaluate.iter_progressive_val_score(
        stream, model, metrics.ROCAUC(), step=1, yield_predictions=True
    )
    by_river = [step["Prediction"] for step in steps]

    pso = SeriesAnomalyDetector()
    by_pso = [pso.process_one(x["ts_ms"], x["cpu"]).score for x, _ in stream]
    assert by_river == by_pso
    assert max(by_pso) > 0.5 and sorted(by_pso)[len(by_pso) // 2] < 0.1  # graded, mostly low


def test_river_filter_and_pipeline_run_it_unchanged() -> None:
    """A river pipeline selects the value and its time out of richer features and scores what
    the detector scores alone (without ``ts_ms`` it would assume one value a minute, and size
    its memory for that); river's `ThresholdFilter` decides on that score; a labelled anomaly
    window of the real series is caught."""
    stream = labelled_series()
    pipeline = compose.Select("ts_ms", "cpu") | RiverAnomalyDetector()  # value and its time
    alone = RiverAnomalyDetector(feature="cpu")
    # river's filter protects its detector: values it flags are not learned (its switch to
    # turn that off, protect_anomaly_detector=False, stops all learning in river 0.26).
    flagged = anomaly.ThresholdFilter(RiverAnomalyDetector(feature="cpu"), threshold=0.45)
    protected = SeriesAnomalyDetector()
    by_pipeline, by_alone, decisions, by_hand, labels = [], [], [], [], []
    for x, y in stream:
        richer = {**x, "host": "i-825cc2", "region": 1.0}
        by_pipeline.append(pipeline.score_one(richer))
        pipeline.learn_one(richer)
        by_alone.append(alone.score_one(x))
        alone.learn_one(x)
        decisions.append(flagged.classify(flagged.score_one(x)))
        flagged.learn_one(x)
        hit = protected.score_one(x["ts_ms"], x["cpu"]).score >= 0.45
        if not hit:
            protected.learn_one(x["ts_ms"], x["cpu"])
        by_hand.append(hit)
        labels.append(y)
    assert by_pipeline == by_alone
    assert decisions == by_hand
    assert any(d and y for d, y in zip(decisions, labels, strict=True))


def _anomaly_stream(model: Any, scale: int = 1) -> Iterator[Any]:
    """A small stream for river's checks (`river.checks._yield_datasets` opens with
    ``import sklearn``, which PSO does not install: the anomaly branch never uses it)."""
    yield river.checks._DummyDataset(  # type: ignore[no-untyped-call]
        *(({"v": 10.0 + (t % 5) + (30.0 if t == 40 else 0.0)}, None) for t in range(60))
    )


def test_value_without_feature_name_must_be_unambiguous() -> None:
    with pytest.raises(ValueError, match="feature="):
        RiverAnomalyDetector().score_one({"a": 1.0, "b": 2.0})


def test_river_estimator_checks_pass(monkeypatch: Any) -> None:
    """river's `check_estimator`: repr, clone, pickling, parameters, learn_one, score_one
    (its ROC AUC check needs scikit-learn, which PSO does not install: left out)."""
    monkeypatch.setattr(river.checks, "_yield_datasets", _anomaly_stream)
    model = RiverAnomalyDetector(warmup=5)
    checks = [c for c in river.checks.yield_checks(model) if c.__name__ != "check_roc_auc"]
    assert {"check_clone_is_idempotent", "check_pickling"} <= {c.__name__ for c in checks}
    for check in checks:
        check(model.clone())
