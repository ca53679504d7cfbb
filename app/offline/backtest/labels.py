"""`pso backtest --labels FILE`: operators' verdicts replayed in event time, and what they did.

The file is JSONL, one `OperatorLabel` a line (what ``pso.labels`` carries). Each label is
applied where the live topology applies it, merged into the replay in event time: an anomaly
label just before the first window of its subsystem starting at or after its ``ts`` (stage 1,
in the worker that owns the subsystem), a conflict label just before the first window starting
at or after its ``ts`` is fed to stage 2. Labels with equal ``ts`` keep the file's order. A
label that names no series or resource of the input is counted as rejected, with its reason
(as live would dead-letter it). The run is compared with the same input without labels
(``baseline/``): ``metrics.json`` gets a ``labels`` block with precision before and after.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from app.core.events import OperatorLabel
from app.core.labels import AnomalyTarget, LabelRejected, parse_target
from app.offline.backtest.common import MAX_ERRORS, BacktestError
from app.wire.lines import bounded_lines
from app.wire.records import InvalidLabel, decode_label_record

if TYPE_CHECKING:  # the engine imports scipy: not when the CLI starts
    from app.core.engine import PredictionEngine, SubsystemPredictor


#: Longest line of a labels file: a label is about 100 bytes, but its id may hold 1000
#: characters, each up to 12 bytes as JSON escapes (a surrogate pair, ``\\ud83d\\ude00``).
MAX_LABEL_LINE_BYTES = 16 * 1024
_BOM = b"\xef\xbb\xbf"


def read_labels(path: Path | str) -> list[OperatorLabel]:
    """The labels of a JSONL file, sorted by ``ts`` (stable): `BacktestError` on the first
    line that is not one, naming the line. An empty file is no labels; a UTF-8 BOM (as
    Windows tools write) is skipped; a line is never held beyond `MAX_LABEL_LINE_BYTES`.
    """
    path = Path(path)
    if path.is_dir():
        raise BacktestError(f"labels file is a directory: {path}")
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        raise BacktestError(f"labels file not found: {path}") from None
    except OSError as exc:
        raise BacktestError(f"cannot read labels file {path}: {exc.strerror}") from None
    labels: list[OperatorLabel] = []
    with fh:
        for number, line in enumerate(bounded_lines(fh, MAX_LABEL_LINE_BYTES), start=1):
            if line is None:
                raise BacktestError(
                    f"{path}:{number}: not a label: longer than {MAX_LABEL_LINE_BYTES} bytes"
                )
            if number == 1:
                line = line.removeprefix(_BOM)
            if not line.strip():
                continue
            try:
                label, _ = decode_label_record(None, line)
            except InvalidLabel as exc:
                raise BacktestError(f"{path}:{number}: not a label: {exc}") from None
            labels.append(label)
    labels.sort(key=lambda label: label.ts)
    return labels


@dataclass(slots=True)
class LabelLog:
    """Labels applied and rejected (with why) by one process of the replay."""

    applied: int = 0
    handled: list[str] = field(default_factory=list)  # ids applied or rejected here
    rejects: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)

    def apply(self, to: PredictionEngine | SubsystemPredictor, label: OperatorLabel) -> None:
        self.handled.append(label.id)
        try:
            to.label(label)
        except LabelRejected as exc:
            self.rejects.append((label.id, f"{exc.code}: {exc}"))
        else:
            self.applied += 1


class AnomalyLabels:
    """Stage 1's side (a worker): each subsystem's anomaly labels, due by window start."""

    def __init__(self, labels: Sequence[OperatorLabel]) -> None:
        self.pending: dict[str, list[OperatorLabel]] = {}
        for label in labels:  # sorted by ts already
            if label.target != "anomaly":
                continue
            target = parse_target(label)
            assert isinstance(target, AnomalyTarget)
            self.pending.setdefault(target.subsystem, []).append(label)
        self.log = LabelLog()

    def before(self, predictor: SubsystemPredictor, window_start_ms: int) -> None:
        """Apply the subsystem's labels due at ``window_start_ms``, before that window."""
        queue = self.pending.get(predictor.subsystem)
        if not queue or queue[0].ts > window_start_ms:
            return
        n = 0
        while n < len(queue) and queue[n].ts <= window_start_ms:
            self.log.apply(predictor, queue[n])
            n += 1
        del queue[:n]

    def finish(self, engine: PredictionEngine) -> None:
        """End of input: the labels of this worker's subsystems after their last window."""
        for name in sorted(engine.subsystems):
            for label in self.pending.pop(name, []):
                self.log.apply(engine.subsystems[name], label)


class ConflictLabels:
    """Stage 2's side (the parent): conflict labels, due by the window fed next."""

    def __init__(self, labels: Sequence[OperatorLabel]) -> None:
        self.labels = [label for label in labels if label.target == "conflict"]
        self.reset()

    def reset(self) -> None:
        self.next = 0
        self.log = LabelLog()

    def before(self, engine: PredictionEngine, window_start_ms: int) -> None:
        labels = self.labels
        while self.next < len(labels) and labels[self.next].ts <= window_start_ms:
            self.log.apply(engine, labels[self.next])
            self.next += 1

    def finish(self, engine: PredictionEngine) -> None:
        self.before(engine, 2**63)


def label_metrics(
    path: Path | str,
    labels: Sequence[OperatorLabel],
    logs: Sequence[LabelLog],
    before: dict[str, Any],
    after: dict[str, Any],
    out: Path,
    baseline: Path,
) -> dict[str, Any]:
    """The ``labels`` block of ``metrics.json``: what was applied, and precision before (the
    run without labels) and after.

    Conflict precision is scored against observed breaches (`ConflictScorer`); anomaly
    precision against the input's own ``labels.anomaly`` when it has them. Both runs also
    count their anomaly alarms and predicted conflicts, and how many of them the file calls
    false or true (``labelled_alarms``). A well-formed id is applied to the series or
    resource it names without checking that the alarm was raised (as live); the labels
    whose id names no alarm of the run without labels are counted (``names_no_alarm``), so
    a mistyped id shows.
    """
    handled = {i for log in logs for i in log.handled}
    rejects = [r for log in logs for r in log.rejects]
    for label in labels:
        if label.id not in handled and label.target == "anomaly":
            target = parse_target(label)
            assert isinstance(target, AnomalyTarget)
            rejects.append((label.id, f"unknown_series: no subsystem {target.subsystem!r}"))
    verdicts: dict[str, str] = {}  # alarm key (anomaly event id, conflict id) -> verdict
    # the latest verdict stands; of two at the same ts, "true" (as `LabelBook.add` decides)
    for label in sorted(labels, key=lambda label: (label.ts, label.verdict == "true")):
        verdicts[parse_target(label).key] = label.verdict

    raised = _alarm_keys(baseline)  # each run's alarm files are read once
    raised_after = raised if out == baseline else _alarm_keys(out)
    refused = {i for i, _ in rejects}
    named = {key for keys in raised.values() for key in keys}
    unmatched = [
        label.id
        for label in labels
        if label.id not in refused and parse_target(label).key not in named
    ]

    def side(metrics: dict[str, Any], alarms: dict[str, list[str]]) -> dict[str, Any]:
        conflicts, anomalies = metrics["conflicts"]["overall"], metrics["anomalies"]
        return {
            "conflict_precision": conflicts["precision"],
            "conflict_recall": conflicts["recall"],
            "conflict_predictions": conflicts["predictions"],
            "anomaly_events": anomalies["events"],
            "anomaly_precision": anomalies["precision"],
            "anomaly_recall": anomalies["recall"],
            "labelled_alarms": _labelled_alarms(alarms, verdicts),
        }

    return {
        "file": str(path),
        "labels": len(labels),
        "applied": sum(log.applied for log in logs),
        "rejected": len(rejects),
        "rejects": [{"id": i, "reason": r} for i, r in rejects[:MAX_ERRORS]],
        # applied (well-formed ids are trusted, live too) yet naming no alarm of the baseline
        # (of this run when there is no baseline run: `run_backtest(baseline=False)`)
        "names_no_alarm": len(unmatched),
        "names_no_alarm_ids": unmatched[:MAX_ERRORS],
        "before": side(before, raised),
        "after": side(after, raised_after),
    }


def _alarm_keys(directory: Path) -> dict[str, list[str]]:
    """A run's alarms, what a label can name: its anomaly alarms' event ids and its predicted
    conflicts' ids (``anomalies``, ``conflicts``)."""
    anomalies = [
        orjson.loads(line)["event_id"]
        for line in (directory / "anomalies.jsonl").read_bytes().splitlines()
    ]
    conflicts = []
    for line in (directory / "conflicts.jsonl").read_bytes().splitlines():
        doc = orjson.loads(line)
        if doc["type"] == "conflict_predicted" and doc["status"] == "predicted":
            conflicts.append(doc["conflict_id"])
    return {"anomalies": anomalies, "conflicts": conflicts}


def _labelled_alarms(alarms: dict[str, list[str]], verdicts: dict[str, str]) -> dict[str, Any]:
    """A run's alarms (`_alarm_keys`), and how many of them the labels call false and true
    (``precision``: true / labelled; None if none is labelled)."""
    out: dict[str, Any] = {}
    for kind, keys in alarms.items():
        counts = {"alarms": len(keys), "false": 0, "true": 0}
        for key in keys:
            verdict = verdicts.get(key)
            if verdict is not None:
                counts[verdict] += 1
        judged = counts["false"] + counts["true"]
        out[kind] = {**counts, "precision": counts["true"] / judged if judged else None}
    return out
