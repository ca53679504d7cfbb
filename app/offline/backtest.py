"""`pso backtest`: the prediction engine replayed offline, in event time, on both cores.

The input (a JSONL or CSV telemetry file, or a Kafka topic range copied to a temporary JSONL
file) goes through the live code path: `TelemetryIngest.process` on each line's bytes, the
engine's `SubsystemPredictor` (stage 1) per closed window, `ResourcePredictor` (stage 2) per
shared resource. Stage 1 partitions cleanly by subsystem, so ``workers`` processes each own
every ``workers``-th subsystem in order of first appearance; each reads the whole input, skips
other workers' lines cheaply, writes its closed windows and stage-1 events to a temporary
file with an index, and the parent replays the merged index in
``(window_start_ms, subsystem)`` order, feeding shares to stage 2. The output files are the
same bytes whatever the worker count (a test checks it).

Where the time goes (measured on the 20-minute benchmark): a worker predicts its closed
windows in batches, each subsystem's few windows in a row, so that its models are still in the
processor's caches (in time order, cache misses cost ~20 % more); each worker is pinned to a
CPU of its own when there are enough; stage 2 runs in the parent while stage 1 goes on, on
what the workers stream as final.

Output directory (the contract with `app.offline.report`): one JSONL file per event family, each
line the event's JSON as live publishes it (``windows``, ``forecasts``, ``anomalies``,
``conflicts``, ``rebalance``, ``accuracy``, plus ``saturation``), and ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import math
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from app.core.accuracy import ConflictScorer, FloatArray
from app.core.events import (
    AccuracyReport,
    AnomalyDetected,
    ConflictObserved,
    ConflictPredicted,
    DeadLetter,
    Forecast,
    LoadWindow,
    OutputEvent,
    RebalanceRecommended,
    SaturationPredicted,
    ms_to_iso,
)
from app.core.ingest import IngestResult
from app.errors import ExitCode, PsoError
from app.settings import ConfigError, FleetPolicy
from app.wire.codec import SourceRef, is_copy
from app.wire.events import TelemetrySample
from app.wire.records import encode
from app.wire.telemetry import TelemetryIngest

#: event files, in the order they are created
FILES = (
    "windows",
    "forecasts",
    "anomalies",
    "conflicts",
    "rebalance",
    "accuracy",
    "saturation",
)
MAX_ERRORS = 20
MIN_BASELINE_TARGETS = 30
_LINE_ERRORS = frozenset({"invalid_json", "too_large", "empty_batch"})
_FAST_PREFIX = b'{"subsystem":"'
_FAST_LEN = len(_FAST_PREFIX)
_BLOCK_BYTES = 1 << 20
_IO_BUFFER = 1 << 20  # spool and output files: ~8 KB records, one system call per megabyte
# Stage 1 predicts closed windows in batches of this many per subsystem (at most _BATCH_MAX
# windows: memory), grouped by subsystem: see `_stage1`.
_BATCH_PER_SUBSYSTEM = 8
_BATCH_MAX = 20_000
_SLICE_WINDOWS = 4  # windows per subsystem between two streamings to stage 2
_CSV_ERROR = b"\x00csv:"  # a CSV row that cannot become a sample (never valid JSON)

#: progress(stage, done, total): stage is "ingest" (lines) or "conflicts" (windows)
ProgressFn = Callable[[str, int, int], None]


class BacktestError(PsoError, ValueError):
    """Bad backtest input (missing file, unknown format): one readable line."""

    exit_code = ExitCode.USER_ERROR


# --------------------------------------------------------------------------- what-if


def apply_overrides(policy: FleetPolicy, overrides: Sequence[str]) -> FleetPolicy:
    """Return ``policy`` with ``KEY=VALUE`` edits applied (dotted path into ``pso.yaml``).

    Values parse as YAML scalars (``120``, ``true``, ``1.5``). Every intermediate key must
    exist, and so must the leaf, except inside free-form maps (``min``, ``limits``) where a new
    entry may be added: a typo is an error, not a silently ignored setting.
    """
    doc: dict[str, Any] = policy.model_dump(mode="json")
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. resources.db.capacity=120")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: value {text!r} is not a YAML scalar") from None
        parts = key.split(".")
        node: Any = doc
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or part not in node:
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"--set {key}: no config key {where!r}{_known(node)}")
            node = node[part]
        leaf = parts[-1]
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:-1])!r} is not a mapping")
        free_form = len(parts) >= 2 and parts[-2] in ("min", "limits")
        if leaf not in node and not free_form:
            raise ConfigError(f"--set {key}: no config key {key!r}{_known(node)}")
        node[leaf] = value
    try:
        return FleetPolicy.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--set: {path}: {msg}") from None


def _known(node: Any) -> str:
    if isinstance(node, dict) and node:
        return f" (known: {', '.join(sorted(map(str, node)))})"
    return ""


# --------------------------------------------------------------------------- input


def _csv_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """CSV rows as telemetry JSON bytes; a bad row yields bytes that fail to decode."""
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        if "subsystem" not in header or "ts" not in header:
            raise BacktestError(f"{path}: CSV header needs 'subsystem' and 'ts' columns")
        for row in reader:
            line_no = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            yield line_no, _csv_row(header, row)


def _csv_row(header: list[str], row: list[str]) -> bytes:
    if len(row) != len(header):
        return _CSV_ERROR + f"row has {len(row)} cells, header has {len(header)}".encode()
    sample: dict[str, Any] = {"metrics": {}, "resources": {}}
    for name, cell in zip(header, row, strict=True):
        cell = cell.strip()
        if cell == "":
            continue
        if name == "subsystem":
            sample["subsystem"] = cell
        elif name == "ts":
            sample["ts"] = int(cell) if cell.isdigit() else cell
        elif name.startswith("label:"):
            low = cell.lower()
            sample.setdefault("labels", {})[name[6:]] = (
                low in ("1", "true", "yes")
                if low in ("0", "1", "true", "false", "yes", "no")
                else cell
            )
        else:
            value: Any = cell  # not a number: the sample validation names the column
            with contextlib.suppress(ValueError):
                value = float(cell)
            kind = "resources" if name.startswith("res:") else "metrics"
            sample[kind][name[4:] if kind == "resources" else name] = value
    return orjson.dumps(sample)


def _blocks(path: Path) -> Iterator[tuple[Sequence[int], list[bytes]]]:
    """The input in blocks of (line numbers, lines); JSONL lines come unstripped, maybe empty.

    Reading megabytes at a time and splitting in C keeps the per-line cost of the stage-1
    loop (which every worker runs over every line) to a few operations.
    """
    if path.suffix.lower() == ".csv":
        rows = list(_csv_lines(path))  # CSV is the small, hand-made case
        yield [n for n, _ in rows], [line for _, line in rows]
        return
    with path.open("rb") as fh:
        first, tail = 1, b""
        while block := fh.read(_BLOCK_BYTES):
            lines = (tail + block).split(b"\n")
            tail = lines.pop()
            yield range(first, first + len(lines)), lines
            first += len(lines)
        if tail:
            yield range(first, first + 1), [tail]


class _Router:
    """Which worker owns which subsystem: the n-th subsystem to appear goes to ``n % workers``.

    Every worker reads every line and routes it with the same code, so all of them assign
    the same owners; first-appearance order spreads a fleet evenly over the workers (a hash
    of the name left one of two workers with 52 % of a 100-subsystem fleet).
    """

    def __init__(self, workers: int, worker: int) -> None:
        self.workers = workers
        self.worker = worker
        self.by_name: dict[str, int] = {}
        #: owners by the raw bytes of names seen in the ``{"subsystem":"NAME"`` form
        self.by_prefix: dict[bytes, int] = {}

    def owner(self, name: str) -> int:
        owner = self.by_name.get(name)
        if owner is None:
            owner = self.by_name[name] = len(self.by_name) % self.workers
        return owner

    def route(self, line: bytes) -> tuple[bytes | None, list[int] | None]:
        """The part of ``line`` this worker owns (the line itself, a sub-batch, or None).

        Lines without a usable subsystem (not JSON, not objects...) belong to worker 0,
        which dead-letters them exactly as the live ingest would. A batch mixing owners is
        split; the second value then maps sub-batch positions back to the line's indices.
        """
        workers, worker = self.workers, self.worker
        if workers == 1:
            return line, None
        end = line.find(b'"', _FAST_LEN) if line.startswith(_FAST_PREFIX) else -1
        if end > 0:
            raw = line[_FAST_LEN:end]
            owner = self.by_prefix.get(raw)
            if owner is None and b"\\" not in raw:
                owner = self.by_prefix[raw] = self.owner(raw.decode("utf-8", "replace"))
            # A second "subsystem" key would override the first one: parse those lines.
            if owner is not None and line.count(b'"subsystem"') == 1:
                return (line if owner == worker else None), None
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            return (line if worker == 0 else None), None
        if isinstance(doc, dict):
            sub = doc.get("subsystem")
            owner = self.owner(sub) if isinstance(sub, str) else 0
            return (line if owner == worker else None), None
        if isinstance(doc, list) and doc:
            owners = [
                self.owner(e["subsystem"])
                if isinstance(e, dict) and isinstance(e.get("subsystem"), str)
                else 0
                for e in doc
            ]
            if all(o == owners[0] for o in owners):
                return (line if owners[0] == worker else None), None
            mine = [i for i, o in enumerate(owners) if o == worker]
            return (orjson.dumps([doc[i] for i in mine]), mine) if mine else (None, None)
        return (line if worker == 0 else None), None


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
                if line.startswith(_CSV_ERROR) or not line:
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
    if line.startswith(_CSV_ERROR):
        out.samples += 1
        out.invalid_lines += 1
        if len(out.errors) < MAX_ERRORS:
            reason = line[len(_CSV_ERROR) :].decode()
            out.errors.append(LineError(line_no, None, "invalid_csv", reason))
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
) -> Stage1Result:
    """Ingest and stage-1 predict every subsystem ``worker`` owns; spool records to disk.

    With ``emit``, the new index entries go out with a watermark (after each slice of
    predictions, and after each input block that leaves no window pending): no window of a
    subsystem seen so far can start before it from then on (a new window is accepted only if
    it ends after the subsystem's ``closed_until``; pending windows start after the slice).
    None: no subsystem yet.
    """
    from app.core.engine import PredictionEngine, share_values  # scipy: only when needed

    policy = FleetPolicy.model_validate_json(policy_json)
    size_ms = policy.window.size_ms
    ingest = TelemetryIngest(policy.window)
    engine = PredictionEngine(policy.spec())
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
                    result = engine.subsystem(window.subsystem).process(window)
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
    conn: Any, counter: Any, source: str, policy_json: bytes, workers: int, worker: int, tmpdir: str
) -> None:
    """A forked stage-1 worker: stream index entries and watermarks, then the result."""
    _init_worker(counter)
    _pin(workers, worker)
    try:

        def emit(entries: list[tuple[int, str, int, int]], watermark: int | None) -> None:
            conn.send(("index", entries, watermark))

        result = _stage1(source, policy_json, workers, worker, tmpdir, emit)
        result.index = []  # already streamed
        conn.send(("done", result, None))
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}", None))
        raise
    finally:
        conn.close()


# --------------------------------------------------------------------------- driver


def _read_source(source: Path | str) -> Path:
    path = Path(source)
    if not path.is_file():
        raise BacktestError(f"input file not found: {path}")
    if path.suffix.lower() not in (".jsonl", ".json", ".ndjson", ".csv"):
        raise BacktestError(f"{path}: unknown input format (use .jsonl or .csv)")
    return path


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            count += chunk.count(b"\n")
    return count


class _Stage2:
    """The parent's half: stage-1 records in ``(window_start_ms, subsystem)`` order → files.

    Writes each window and its stage-1 events, and feeds its resource shares to stage 2.
    Records must be fed in order; `reset` starts over (used when streaming guessed wrong).
    """

    def __init__(self, policy: FleetPolicy, out: Path, spools: list[str]) -> None:
        self.policy = policy
        self.out = out
        self.spool_paths = spools
        self.spools: list[Any] = [None] * len(spools)
        self.files = {
            name: (out / f"{name}.jsonl").open("wb", buffering=_IO_BUFFER) for name in FILES
        }
        self.reset()

    def reset(self) -> None:
        from app.core.engine import PredictionEngine, share_from_values  # scipy: only now

        self.share_from_values = share_from_values

        for fh in self.files.values():
            fh.seek(0)
            fh.truncate()
        self.engine = PredictionEngine(self.policy.spec())
        self.counts = {"windows": 0, "rebalance": 0, "infeasible": 0}
        self.subsystems: set[str] = set()
        self.span = [0, 0]
        self.anomaly_events: list[tuple[str, int]] = []
        self.last: tuple[int, str] | None = None

    def feed(self, start: int, subsystem: str, offset: int, length: int, k: int) -> None:
        self.last = (start, subsystem)
        spool = self.spools[k]
        if spool is None:
            # Records are read in nearly file order: a large buffer turns most reads into copies.
            spool = self.spools[k] = open(self.spool_paths[k], "rb", buffering=_IO_BUFFER)  # noqa: SIM115
        spool.seek(offset)
        window, events, shares = pickle.loads(spool.read(length))
        files = self.files
        files["windows"].write(window + b"\n")
        self.counts["windows"] += 1
        self.subsystems.add(subsystem)
        span = self.span
        span[0] = start if self.counts["windows"] == 1 else min(span[0], start)
        span[1] = max(span[1], start + self.policy.window.size_ms)
        for name, blob in events:
            files[name].write(blob + b"\n")
            if name == "anomalies":
                self.anomaly_events.append((subsystem, orjson.loads(blob)["window_start_ms"]))
        for values in shares:
            share = self.share_from_values(values)
            self.write(self.engine.resource(share.resource).add(share))

    def write(self, events: list[OutputEvent]) -> None:
        for event in events:
            self.files[_event_file(event)].write(encode(event) + b"\n")
            if isinstance(event, RebalanceRecommended):
                self.counts["rebalance"] += 1
                self.counts["infeasible"] += not event.feasible

    def finish(self) -> None:
        """End of input: judge windows still waiting for a contributor that never came."""
        self.write(self.engine.finish())

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()
        for spool in self.spools:
            if spool is not None:
                spool.close()


def _run_stages(
    path: Path,
    policy: FleetPolicy,
    workers: int,
    tmpdir: str,
    progress: ProgressFn | None,
    stage2: _Stage2,
) -> tuple[list[Stage1Result], bool]:
    """Stage 1 in ``workers`` processes, stage 2 in this one; return results, and whether
    stage 2 overlapped stage 1.

    Workers stream index entries and watermarks. Entries below every worker's watermark are
    final in ``(window_start_ms, subsystem)`` order, so stage 2 takes them while stage 1
    still runs. The watermark only covers subsystems a worker has seen: if a subsystem first
    seen later brings an older window, the order would break, so that is checked, and stage
    2 then starts over once stage 1 is done (same output, no overlap).
    """
    policy_json = policy.model_dump_json().encode()
    # Lines, for the progress bar only: a pass over the file that nobody else needs.
    total = _count_lines(path) if progress is not None else 0
    if workers == 1:
        _init_worker(None)
        result = _stage1(str(path), policy_json, 1, 0, tmpdir)
        if progress is not None:
            progress("ingest", total, total)
        for n, (start, subsystem, offset, length) in enumerate(result.index):
            stage2.feed(start, subsystem, offset, length, 0)
            if progress is not None and n % 1000 == 0:
                progress("conflicts", n, len(result.index))
        return [result], False
    import heapq
    import multiprocessing
    from multiprocessing.connection import Connection
    from multiprocessing.connection import wait as wait_any

    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("q", 0, lock=False)
    conns, procs = [], []
    for i in range(workers):
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_stage1_process,
            args=(sender, counter, str(path), policy_json, workers, i, tmpdir),
            daemon=True,
        )
        proc.start()
        sender.close()
        conns.append(receiver)
        procs.append(proc)
    results: list[Stage1Result | None] = [None] * workers
    marks: list[float] = [-math.inf] * workers  # each worker's watermark
    pending: list[tuple[int, str, int, int, int]] = []  # heap of (start, subsystem, ..., k)
    seen: list[tuple[int, str, int, int, int]] = []
    overlapped = True
    try:
        live = list(conns)
        while live or pending:
            for conn in wait_any(live, timeout=0.1) if live else []:
                assert isinstance(conn, Connection)
                k = conns.index(conn)
                try:
                    kind, payload, watermark = conn.recv()
                except EOFError:
                    raise RuntimeError(f"backtest worker {k} died") from None
                if kind == "error":
                    raise RuntimeError(f"backtest worker {k} failed: {payload}")
                if kind == "done":
                    results[k] = payload
                    marks[k] = math.inf
                    live.remove(conn)
                    continue
                marks[k] = -math.inf if watermark is None else watermark
                for start, subsystem, offset, length in payload:
                    entry = (start, subsystem, offset, length, k)
                    seen.append(entry)
                    if overlapped:
                        if stage2.last is not None and (start, subsystem) < stage2.last:
                            overlapped = False  # an older window after newer ones: start over
                        heapq.heappush(pending, entry)
            if not overlapped:
                pending.clear()
                continue
            low = min(marks)
            budget = 2000  # then look at the pipes again
            while pending and pending[0][0] < low and budget:
                stage2.feed(*heapq.heappop(pending))
                budget -= 1
            if progress is not None:
                progress("ingest", min(int(counter.value), total), total)
                progress("conflicts", stage2.counts["windows"], max(len(seen), 1))
    finally:
        for proc in procs:
            if proc.is_alive() and any(r is None for r in results):
                proc.terminate()
            proc.join()
        for conn in conns:
            conn.close()
    if not overlapped:
        stage2.reset()
        for entry in sorted(seen):
            stage2.feed(*entry)
    if progress is not None:
        progress("ingest", total, total)
    done = [r for r in results if r is not None]
    assert len(done) == workers
    return done, overlapped


def run_backtest(
    source: Path | str,
    policy: FleetPolicy,
    out_dir: Path | str,
    *,
    overrides: Sequence[str] = (),
    workers: int = 2,
    progress: ProgressFn | None = None,
    baseline: bool = True,
    render: bool = True,
) -> dict[str, Any]:
    """Backtest ``source`` under ``policy`` (plus ``overrides``); write ``out_dir``; return metrics.

    With overrides and ``baseline``, the unchanged policy is backtested first into
    ``out_dir/baseline`` and the report compares the two.
    """
    path = _read_source(source)
    out = Path(out_dir)
    changed = apply_overrides(policy, overrides) if overrides else policy
    if overrides and baseline:
        run_backtest(
            path, policy, out / "baseline", workers=workers, progress=progress, render=render
        )
    metrics = _backtest_once(path, changed, out, list(overrides), max(1, workers), progress)
    if render:
        _render(out, out / "baseline" if overrides and baseline else None)
    return metrics


def _render(out: Path, baseline_dir: Path | None) -> None:
    try:
        from app.offline.report import render_report  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return
    render_report(out, baseline_dir=baseline_dir)


@contextlib.contextmanager
def _lean_gc() -> Iterator[None]:
    """Rare garbage collections while replaying (forked workers inherit the setting).

    The replay allocates millions of short-lived containers that reference counting frees;
    with the default thresholds the cyclic collector ran ~500 times per 100k samples and
    took ~10 % of stage 1, mostly re-scanning the imported modules (hence ``freeze``).
    """
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def _backtest_once(
    path: Path,
    policy: FleetPolicy,
    out: Path,
    overrides: list[str],
    workers: int,
    progress: ProgressFn | None,
) -> dict[str, Any]:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with _lean_gc(), tempfile.TemporaryDirectory(prefix="pso-backtest-") as tmpdir:
        spools = [os.path.join(tmpdir, f"stage1-{k}.bin") for k in range(workers)]
        stage2 = _Stage2(policy, out, spools)
        try:
            results, overlapped = _run_stages(path, policy, workers, tmpdir, progress, stage2)
            stage2.finish()
            if progress is not None:
                total = stage2.counts["windows"]
                progress("conflicts", total, total)
        finally:
            stage2.close()
    engine, counts, subsystems, span = stage2.engine, stage2.counts, stage2.subsystems, stage2.span
    anomaly_events = stage2.anomaly_events
    seconds = time.perf_counter() - started
    samples = sum(r.samples for r in results)
    errors = sorted(
        (e for r in results for e in r.errors), key=lambda e: (e.line, e.index or -1, e.code)
    )[:MAX_ERRORS]
    levels = engine.config.levels
    accuracy = {key: sums for result in results for key, sums in result.accuracy.items()}
    labelled_windows = sorted({w for r in results for w in r.anomalous_windows})
    metrics: dict[str, Any] = {
        "input": {
            "source": str(path),
            "samples": samples,
            "invalid_lines": sum(r.invalid_lines for r in results),
            "invalid_samples": sum(r.invalid_samples for r in results),
            "late_samples": sum(r.late_samples for r in results),
            "time_jump_samples": sum(r.time_jump_samples for r in results),
            "windows": counts["windows"],
            "subsystems": len(subsystems),
            "from": ms_to_iso(span[0]) if counts["windows"] else None,
            "to": ms_to_iso(span[1]) if counts["windows"] else None,
            "errors": [
                {"line": e.line, "index": e.index, "code": e.code, "reason": e.reason}
                for e in errors
            ],
        },
        "config": {
            "resources": {
                name: {"capacity": policy.resources[name].capacity}
                for name in sorted(policy.resources)
            },
            "overrides": overrides,
        },
        "forecast": forecast_metrics(accuracy, levels),
        "conflicts": conflict_metrics(
            {name: engine.resources[name].scorer for name in sorted(engine.resources)}
        ),
        "anomalies": anomaly_metrics(
            any(r.labelled for r in results),
            labelled_windows,
            anomaly_events,
            policy.window.size_ms,
        ),
        "plans": {"count": counts["rebalance"], "infeasible": counts["infeasible"]},
        "runtime": {
            "seconds": round(seconds, 3),
            "samples_per_s": round(samples / seconds, 1) if seconds > 0 else None,
            "workers": workers,
            "stage2_overlapped": overlapped,
        },
    }
    (out / "metrics.json").write_bytes(
        orjson.dumps(metrics, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    return metrics


# --------------------------------------------------------------------------- metrics


def _levels_key(level: float) -> str:
    return f"{level:g}"


def _nullable(values: list[float]) -> list[float | None]:
    return [None if v != v else v for v in values]  # NaN marks "no target"


def _horizon_blocks(sums: FloatArray, levels: tuple[float, ...]) -> list[dict[str, Any]]:
    """MAE, MASE and coverage per horizon of each ``sums[s]`` (`ForecastAccuracy.sums`
    layout), as `HorizonTotals` defines them; None where a horizon has no target."""
    import numpy as np  # not at import: the CLI starts without it

    n, n_naive, naive_err, abs_err, vs_naive = (sums[:, row] for row in range(5))
    nan = math.nan
    with np.errstate(all="ignore"):
        mae = np.where(n > 0, abs_err / n, nan).tolist()
        mase = np.where((n_naive > 0) & (naive_err > 0.0), vs_naive / naive_err, nan).tolist()
        cover = np.where(n[:, None, :] > 0, sums[:, 5:] / n[:, None, :], nan).tolist()
    counts = n[:, 0].tolist() if sums.shape[2] else [0.0] * len(sums)
    keys = [_levels_key(lv) for lv in levels]
    return [
        {
            "n": int(counts[s]),
            "mae_by_horizon": _nullable(mae[s]),
            "mase_by_horizon": _nullable(mase[s]),
            "coverage": {key: _nullable(cover[s][k]) for k, key in enumerate(keys)},
        }
        for s in range(len(sums))
    ]


def forecast_metrics(accuracy: dict[str, FloatArray], levels: tuple[float, ...]) -> dict[str, Any]:
    """Per series and overall MAE / MASE / coverage per horizon (`HorizonTotals` definitions),
    from each series' `ForecastAccuracy.sums`.

    Overall MAE and coverage pool every target; overall MASE is the mean of per-series MASE
    over series with at least 30 baseline targets at that horizon (pooling MASE across series
    of different units would let the largest series dominate).
    """
    import numpy as np  # not at import: the CLI starts without it

    keys = sorted(accuracy)
    if not keys:
        empty: dict[str, Any] = {"mae_by_horizon": [], "mase_by_horizon": []}
        empty["coverage"] = {_levels_key(lv): [] for lv in levels}
        return {"overall": empty, "series": {}}
    stack = np.stack([accuracy[key] for key in keys])  # (series, rows, horizon)
    series = dict(zip(keys, _horizon_blocks(stack, levels), strict=True))
    pooled = np.add.reduce(stack, axis=0)  # series after series, in key order
    overall = _horizon_blocks(pooled[None], levels)[0]
    del overall["n"]
    n_naive, naive_err = stack[:, 1], stack[:, 2]
    with np.errstate(all="ignore"):
        ratio = stack[:, 4] / naive_err
    usable = (n_naive >= MIN_BASELINE_TARGETS) & (naive_err > 0.0)
    mase: list[float | None] = []
    for h in range(stack.shape[2]):
        values = ratio[usable[:, h], h].tolist()
        mase.append(math.fsum(values) / len(values) if values else None)
    overall["mase_by_horizon"] = mase
    return {"overall": overall, "series": series}


def _quantiles(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)

    def q(p: float) -> float | None:
        if not ordered:
            return None
        pos = p * (len(ordered) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    return {"median": q(0.5), "p10": q(0.1), "p90": q(0.9), "values": ordered}


def _conflict_block(scorers: Sequence[ConflictScorer]) -> dict[str, Any]:
    episodes = sum(len(s.episodes) for s in scorers)
    predicted = sum(1 for s in scorers for e in s.episodes if e.predicted_by is not None)
    decided = [p for s in scorers for p in s.predictions.values() if p.hit or s._expired(p)]
    hits = sum(1 for p in decided if p.hit)
    return {
        "episodes": episodes,
        "predicted_episodes": predicted,
        "recall": predicted / episodes if episodes else None,
        "predictions": sum(len(s.predictions) for s in scorers),
        "precision": hits / len(decided) if decided else None,
        "lead_time_s": _quantiles([v for s in scorers for v in s.lead_times_s]),
    }


def conflict_metrics(scorers: dict[str, ConflictScorer]) -> dict[str, Any]:
    """Episodes, recall, precision and lead times per resource and overall (`ConflictScorer`).

    Overall precision pools the decided predictions of every resource (not a mean of ratios).
    """
    return {
        "overall": _conflict_block([scorers[k] for k in sorted(scorers)]),
        "resources": {k: _conflict_block([scorers[k]]) for k in sorted(scorers)},
    }


def anomaly_metrics(
    labelled: bool,
    anomalous_windows: Sequence[tuple[str, int]],
    events: Sequence[tuple[str, int]],
    step_ms: int,
) -> dict[str, Any]:
    """Window-based anomaly precision, recall and detection delay against input labels.

    A window is labelled anomalous if any of its samples says ``labels.anomaly: true``; an
    episode is a maximal run of such windows of one subsystem. A *detected window* is a
    (subsystem, window) with at least one `AnomalyDetected` event on any series. Precision =
    detected windows inside a labelled episode / detected windows. Recall = episodes with a
    detection inside them / episodes. Delay = first detection − episode start.
    """
    detected = sorted(set(events))
    block: dict[str, Any] = {
        "events": len(events),
        "labelled": labelled,
        "precision": None,
        "recall": None,
        "detection_delay_s": {"median": None, "values": []},
    }
    if not labelled:
        return block
    truth = set(anomalous_windows)
    episodes: list[tuple[str, int, int]] = []  # subsystem, first start, last start
    for sub, start in sorted(truth):
        if episodes and episodes[-1][0] == sub and episodes[-1][2] + step_ms == start:
            episodes[-1] = (sub, episodes[-1][1], start)
        else:
            episodes.append((sub, start, start))
    if detected:
        block["precision"] = sum(1 for d in detected if d in truth) / len(detected)
    delays: list[float] = []
    for sub, first, last in episodes:
        hits = [start for s, start in detected if s == sub and first <= start <= last]
        if hits:
            delays.append((min(hits) - first) / 1000)
    if episodes:
        block["recall"] = len(delays) / len(episodes)
    quant = _quantiles(delays)
    block["detection_delay_s"] = {"median": quant["median"], "values": quant["values"]}
    return block


# --------------------------------------------------------------------------- kafka input


async def copy_topic(
    settings: Any,
    bootstrap: str,
    topic: str,
    start_ms: int | None,
    end_ms: int | None,
    target: Path,
) -> int:
    from app.kafka.range import read_range  # type: ignore[import-not-found,unused-ignore]

    count = 0
    with target.open("wb") as fh:
        async for _key, value, _ts, headers, *_rest in read_range(
            settings, bootstrap, topic, start_ms, end_ms
        ):
            if is_copy(headers):
                continue  # a worker's copy of samples it read away from home: derived
            line = (value or b"").replace(b"\r", b" ").replace(b"\n", b" ")
            fh.write(line + b"\n")
            count += 1
    return count


# --------------------------------------------------------------------------- CLI


__all__ = [
    "BacktestError",
    "anomaly_metrics",
    "apply_overrides",
    "conflict_metrics",
    "forecast_metrics",
    "run_backtest",
]
