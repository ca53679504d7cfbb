"""Stage 1 in the workers: ingest the lines a worker owns, predict its subsystems' closed
windows in batches, spool windows and events with an index for the parent (`run`)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from app.core.accuracy import FloatArray
from app.core.events import (
    AccuracyReport,
    AnomalyDetected,
    ConflictObserved,
    ConflictPredicted,
    DeadLetter,
    Forecast,
    LoadWindow,
    OperatorLabel,
    OutputEvent,
    RebalanceRecommended,
    SaturationPredicted,
)
from app.core.ingest import IngestResult
from app.errors import PsoError
from app.offline.backtest.common import (
    _BATCH_MAX,
    _BATCH_PER_SUBSYSTEM,
    _FAST_LEN,
    _FAST_PREFIX,
    _IO_BUFFER,
    _LINE_ERROR,
    _LINE_ERRORS,
    _SLICE_WINDOWS,
    MAX_ERRORS,
    BacktestError,
    read_line_error,
)
from app.offline.backtest.labels import AnomalyLabels, LabelLog
from app.offline.backtest.source import _blocks, _Router
from app.settings import FleetPolicy
from app.wire.codec import SourceRef
from app.wire.events import TelemetrySample
from app.wire.records import encode
from app.wire.telemetry import TelemetryIngest

# --------------------------------------------------------------------------- stage 1 (workers)


@dataclass(slots=True)
class LineError:
    """One rejected input item, for the report."""

    line: int
    index: int | None
    code: str
    reason: str


@dataclass(slots=True)
class Stage1Result:
    """What one worker hands back: an index into its record file, counters, accuracy."""

    records: str
    index: list[tuple[int, str, int, int]] = field(default_factory=list)
    samples: int = 0
    invalid_lines: int = 0
    invalid_samples: int = 0
    late_samples: int = 0
    time_jump_samples: int = 0
    errors: list[LineError] = field(default_factory=list)
    labelled: bool = False
    anomalous_windows: list[tuple[str, int]] = field(default_factory=list)
    accuracy: dict[str, FloatArray] = field(default_factory=dict)  # `ForecastAccuracy.sums`
    labels: LabelLog = field(default_factory=LabelLog)  # operators' labels applied here


_COUNTER: Any = None


def _init_worker(counter: Any) -> None:
    global _COUNTER
    _COUNTER = counter


def _event_file(event: OutputEvent) -> str:
    if isinstance(event, Forecast):
        return "forecasts"
    if isinstance(event, AnomalyDetected):
        return "anomalies"
    if isinstance(event, ConflictPredicted | ConflictObserved):
        return "conflicts"
    if isinstance(event, RebalanceRecommended):
        return "rebalance"
    if isinstance(event, AccuracyReport):
        return "accuracy"
    if isinstance(event, SaturationPredicted):
        return "saturation"
    raise TypeError(f"unexpected event {type(event).__name__}")


def _labels(part: bytes, size_ms: int, into: set[tuple[str, int]]) -> bool:
    """Record windows whose samples carry ``labels.anomaly`` true; True if any label seen."""
    try:
        doc = orjson.loads(part)
    except orjson.JSONDecodeError:
        return False
    seen = False
    for element in doc if isinstance(doc, list) else [doc]:
        labels = element.get("labels") if isinstance(element, dict) else None
        if not isinstance(labels, dict) or "anomaly" not in labels:
            continue
        seen = True
        flag = labels["anomaly"]
        if flag is True or flag == 1 or (isinstance(flag, str) and flag.lower() == "true"):
            try:
                sample = TelemetrySample.model_validate(element)
            except ValidationError:
                continue
            into.add((sample.subsystem, sample.ts - sample.ts % size_ms))
    return seen


def _ingest(
    path: Path,
    workers: int,
    worker: int,
    ingest: TelemetryIngest,
    size_ms: int,
    out: Stage1Result,
    anomalous: set[tuple[str, int]],
    spool: Callable[[list[Any]], None],
    on_block: Callable[[], None] | None = None,
) -> IngestResult:
    """The stage-1 input loop: route, ingest, count; closed windows go to ``spool``.

    Every worker reads every line. The lines of other workers' subsystems are recognised by
    their ``{"subsystem":"NAME"`` prefix and skipped at the cost of a few byte operations.
    """
    counter = _COUNTER if worker == 0 else None
    router = _Router(workers, worker)
    owners = router.by_prefix
    where = SourceRef("backtest")  # one object, its offset set per line (copied on use)
    run = ingest.process_plain_run  # the common lines; anything else goes through `process`
    acc = IngestResult()  # accumulates items; dead letters and windows are taken per line
    closed = acc.windows
    prefix, start = _FAST_PREFIX, _FAST_LEN
    for numbers, lines in _blocks(path):
        # This worker's lines of the block (where they were, and sub-batch positions of
        # split batches), then the block in runs of common lines.
        own: list[bytes] = lines
        at: Sequence[int] = range(len(lines))
        split: dict[int, list[int]] = {}
        if workers > 1:
            own, at = [], []
            for i, line in enumerate(lines):
                if line.startswith(prefix):
                    end = line.find(b'"', start)
                    owner = owners.get(line[start:end]) if end > 0 else None
                    # A second "subsystem" key would override the first: route by parsing.
                    if owner is not None and line.find(b'"subsystem"', end) < 0:
                        if owner == worker:
                            own.append(line)
                            at.append(i)
                        continue
                line = line.strip()
                if line.startswith(_LINE_ERROR) or not line:
                    routed, positions = (line if worker == 0 else None), None
                else:
                    routed, positions = router.route(line)
                if routed is not None:
                    if positions is not None:
                        split[len(own)] = positions
                    own.append(routed)
                    at.append(i)
        k, n_own = 0, len(own)
        while k < n_own:
            k = run(own, k, acc)
            if k < n_own:
                _ingest_line(own[k], numbers[at[k]], split.get(k), ingest, where, acc, out)
                if b'"labels"' in own[k] and _labels(own[k].strip(), size_ms, anomalous):
                    out.labelled = True
                k += 1
        if closed:
            spool(closed)
            closed.clear()
        if counter is not None:
            counter.value = numbers[-1] if numbers else 0
        if on_block is not None:
            on_block()
    return acc


def _ingest_line(
    line: bytes,
    line_no: int,
    positions: list[int] | None,
    ingest: TelemetryIngest,
    where: SourceRef,
    acc: IngestResult,
    out: Stage1Result,
) -> None:
    """One line that is not a common sample: `TelemetryIngest.process` words what is wrong."""
    line = line.strip()
    if not line:
        return
    if line.startswith(_LINE_ERROR):
        out.samples += 1
        out.invalid_lines += 1
        if len(out.errors) < MAX_ERRORS:
            out.errors.append(LineError(line_no, None, *read_line_error(line)))
        return
    where.offset = line_no
    ingest.process(line, where, acc)
    if acc.dead:
        _count_dead(out, acc.dead, line_no, positions)
        acc.dead.clear()


def _count_dead(
    out: Stage1Result, dead: list[DeadLetter], line_no: int, positions: list[int] | None
) -> None:
    """Count a line's dead letters (one per message; held samples of earlier lines settled
    now come in records of their own, with their line as ``source_offset``)."""
    bad_line = False
    for letter in dead:
        by_reason = letter.rejected_by_reason
        out.late_samples += by_reason.get("late", 0)
        out.time_jump_samples += by_reason.get("time_jump", 0)
        out.invalid_samples += by_reason.get("invalid_sample", 0)
        own = letter.source_offset in (None, line_no)
        for reject in letter.rejects:
            code = reject.reason_code
            if code in ("late", "time_jump"):
                continue
            if code in _LINE_ERRORS or reject.index is None:
                bad_line = True
            index = reject.index
            if positions is not None and index is not None and own:
                index = positions[index]
            if len(out.errors) < MAX_ERRORS:
                at = line_no if own else int(letter.source_offset or 0)
                out.errors.append(LineError(at, index, code, reject.reason))
    out.invalid_lines += bad_line


#: emit(new index entries, watermark): see `_stage1`
EmitFn = Callable[[list[tuple[int, str, int, int]], int | None], None]


def _stage1(
    source: str,
    policy_json: bytes,
    workers: int,
    worker: int,
    tmpdir: str,
    emit: EmitFn | None = None,
    labels: Sequence[OperatorLabel] = (),
) -> Stage1Result:
    """Ingest and stage-1 predict every subsystem ``worker`` owns; spool records to disk.

    ``labels``: operators' labels, each applied before its subsystem's first window starting
    at or after its ``ts`` (`app.offline.backtest.labels`).

    With ``emit``, the new index entries go out with a watermark (after each slice of
    predictions, and after each input block that leaves no window pending): no window of a
    subsystem seen so far can start before it from then on (a new window is accepted only if
    it ends after the subsystem's ``closed_until``; pending windows start after the slice).
    None: no subsystem yet.
    """
    from app.core.bodies import share_values
    from app.core.engine import PredictionEngine  # scipy: only when needed

    policy = FleetPolicy.model_validate_json(policy_json)
    size_ms = policy.window.size_ms
    ingest = TelemetryIngest(policy.window)
    engine = PredictionEngine(policy.spec())
    taught = AnomalyLabels(labels)
    out = Stage1Result(records=os.path.join(tmpdir, f"stage1-{worker}.bin"))
    anomalous: set[tuple[str, int]] = set()
    pending: list[LoadWindow] = []  # closed windows not yet predicted, see `predict`
    sent = 0
    with open(out.records, "wb", buffering=_IO_BUFFER) as fh:

        def predict() -> None:
            """Predict the pending windows in time slices, each subsystem by subsystem (a
            stable sort keeps each one's windows in event-time order): a subsystem's models
            stay in the processor's caches across its windows of a slice, ~20 % faster than
            time order. Stage 1 is independent per subsystem and the index is sorted, so the
            records are the same. What is final streams out after each slice."""
            span = _SLICE_WINDOWS * size_ms
            pending.sort(key=lambda w: (w.window_start_ms // span, w.subsystem))
            i, count = 0, len(pending)
            while i < count:
                slice_end = (pending[i].window_start_ms // span + 1) * span
                while i < count and pending[i].window_start_ms < slice_end:
                    window = pending[i]
                    predictor = engine.subsystem(window.subsystem)
                    taught.before(predictor, window.window_start_ms)
                    result = predictor.process(window)
                    record = pickle.dumps(
                        (
                            encode(window),
                            [(_event_file(e), encode(e)) for e in result.events],
                            [share_values(share) for share in result.shares],
                        ),
                        protocol=pickle.HIGHEST_PROTOCOL,
                    )
                    start = window.window_start_ms
                    out.index.append((start, window.subsystem, fh.tell(), len(record)))
                    fh.write(record)
                    i += 1
                stream(slice_end if i < count else None)
            pending.clear()

        def stream(cap: int | None) -> None:
            """Send the new index entries, with the watermark (at most ``cap``: the start of
            the windows still pending)."""
            nonlocal sent
            if emit is None:
                return
            fh.flush()  # the parent reads these records while this process writes more
            closed = [w.closed_until for w in ingest.windows.values() if w.closed_until is not None]
            if cap is not None:
                closed.append(cap)
            emit(out.index[sent:], min(closed, default=None))
            sent = len(out.index)

        def on_block() -> None:
            """After each input block: predict once enough windows wait (then what is final
            streams out); with none pending, stream the watermark's progress."""
            batch = min(_BATCH_MAX, _BATCH_PER_SUBSYSTEM * max(1, len(ingest.windows)))
            if len(pending) >= batch:
                predict()
            elif not pending:
                stream(None)

        acc = _ingest(
            Path(source), workers, worker, ingest, size_ms, out, anomalous, pending.extend, on_block
        )
        out.samples += acc.items
        settled = IngestResult()  # held samples are applied at the end; some may be late
        pending.extend(ingest.flush(into=settled))
        _count_dead(out, settled.dead, 0, None)
        predict()
        if emit is not None:
            fh.flush()
            emit(out.index[sent:], None)
    taught.finish(engine)
    out.labels = taught.log
    out.index.sort()
    out.anomalous_windows = sorted(anomalous)
    for name in sorted(engine.subsystems):
        for (kind, series), model in sorted(engine.subsystems[name].series.items()):
            out.accuracy[f"{name}/{kind}:{series}"] = model.accuracy.sums
    return out


def _pin(workers: int, worker: int) -> None:
    """Keep stage-1 worker ``worker`` on a CPU of its own if there is one per worker (Linux):
    its models stay in that core's caches (a few per cent faster, measured on 2 cores). Else, or
    with fewer CPUs than workers, the scheduler decides."""
    if not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= workers:
        os.sched_setaffinity(0, {cpus[worker]})


def _stage1_process(
    conn: Any,
    counter: Any,
    source: str,
    policy_json: bytes,
    workers: int,
    worker: int,
    tmpdir: str,
    labels: Sequence[OperatorLabel] = (),
) -> None:
    """A forked stage-1 worker: stream index entries and watermarks, then the result."""
    _init_worker(counter)
    _pin(workers, worker)
    try:

        def emit(entries: list[tuple[int, str, int, int]], watermark: int | None) -> None:
            conn.send(("index", entries, watermark))

        result = _stage1(source, policy_json, workers, worker, tmpdir, emit, labels)
        result.index = []  # already streamed
        conn.send(("done", result, None))
    except PsoError as exc:  # the input's fault: the parent reports it as one line, sent as
        conn.send(("error", BacktestError(str(exc)), None))  # a class that always unpickles
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}", None))
        raise
    finally:
        conn.close()
