"""`pso backtest`: the prediction engine replayed offline, in event time, on both cores.

The input (a JSONL or CSV telemetry file, or a Kafka topic range copied to a temporary JSONL
file) goes through the live code path: `TelemetryIngest.process` on each line's bytes, the
engine's `SubsystemPredictor` (stage 1) per closed window, `ResourcePredictor` (stage 2) per
shared resource. Stage 1 partitions cleanly by subsystem, so ``workers`` processes each own
the subsystems with ``zlib.crc32(name) % workers == i``; each writes its closed windows and
stage-1 events to a temporary file with an index, and the parent replays the merged index in
``(window_start_ms, subsystem)`` order, feeding shares to stage 2. The output files are the
same bytes whatever the worker count (a test checks it).

Output directory (the contract with `app.report`): one JSONL file per event family, each
line ``event.to_json()`` as live publishes it (``windows``, ``forecasts``, ``anomalies``,
``conflicts``, ``rebalance``, ``accuracy``, plus ``saturation``), and ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import pickle
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
import yaml
from pydantic import ValidationError

from app.codec import SourceRef
from app.core.accuracy import ConflictScorer, HorizonTotals
from app.core.ingest import TelemetryIngest
from app.errors import UsageError
from app.events import (
    AccuracyReport,
    AnomalyDetected,
    ConflictObserved,
    ConflictPredicted,
    Forecast,
    OutputEvent,
    RebalanceRecommended,
    ResourceShare,
    SaturationPredicted,
    TelemetrySample,
    ms_to_iso,
)
from app.settings import ConfigError, FleetPolicy

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
_CSV_ERROR = b"\x00csv:"  # a CSV row that cannot become a sample (never valid JSON)

#: progress(stage, done, total): stage is "ingest" (lines) or "conflicts" (windows)
ProgressFn = Callable[[str, int, int], None]


class BacktestError(ValueError):
    """Bad backtest input (missing file, unknown format): one readable line."""


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


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    if path.suffix.lower() == ".csv":
        yield from _csv_lines(path)
        return
    with path.open("rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            line = line.strip()
            if line:
                yield line_no, line


def _owner(name: str, workers: int) -> int:
    return zlib.crc32(name.encode()) % workers


def _route(line: bytes, workers: int, worker: int) -> tuple[bytes | None, list[int] | None]:
    """The part of ``line`` that ``worker`` owns (the line itself, a sub-batch, or None).

    Lines without a usable subsystem (not JSON, not objects...) belong to worker 0, which
    dead-letters them exactly as the live ingest would. A batch mixing owners is split; the
    second value then maps sub-batch positions back to the line's batch indices.
    """
    if workers == 1:
        return line, None
    if line.startswith(_FAST_PREFIX) and line.count(b'"subsystem"') == 1:
        end = line.find(b'"', len(_FAST_PREFIX))
        name = line[len(_FAST_PREFIX) : end]
        if end > 0 and b"\\" not in name:
            return (
                line if _owner(name.decode("utf-8", "replace"), workers) == worker else None
            ), None
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return (line if worker == 0 else None), None
    if isinstance(doc, dict):
        sub = doc.get("subsystem")
        owner = _owner(sub, workers) if isinstance(sub, str) else 0
        return (line if owner == worker else None), None
    if isinstance(doc, list) and doc:
        owners = [
            _owner(e["subsystem"], workers)
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
    lines: int = 0
    samples: int = 0
    invalid_lines: int = 0
    invalid_samples: int = 0
    late_samples: int = 0
    errors: list[LineError] = field(default_factory=list)
    labelled: bool = False
    anomalous_windows: list[tuple[str, int]] = field(default_factory=list)
    accuracy: dict[str, list[HorizonTotals]] = field(default_factory=dict)


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


def _stage1(
    source: str, policy_json: bytes, workers: int, worker: int, tmpdir: str
) -> Stage1Result:
    """Ingest and stage-1 predict every subsystem ``worker`` owns; spool records to disk."""
    from app.core.engine import PredictionEngine  # scipy: only when a backtest runs

    policy = FleetPolicy.model_validate_json(policy_json)
    size_ms = policy.window.size_ms
    ingest = TelemetryIngest(policy.window)
    engine = PredictionEngine(policy)
    out = Stage1Result(records=os.path.join(tmpdir, f"stage1-{worker}.bin"))
    anomalous: set[tuple[str, int]] = set()
    counter = _COUNTER
    with open(out.records, "wb") as fh:

        def spool(windows: list[Any]) -> None:
            for window in windows:
                result = engine.subsystem(window.subsystem).process(window)
                record = pickle.dumps(
                    (
                        window.to_json(),
                        [(_event_file(e), e.to_json()) for e in result.events],
                        result.shares,
                    ),
                    protocol=pickle.HIGHEST_PROTOCOL,
                )
                out.index.append((window.window_start_ms, window.subsystem, fh.tell(), len(record)))
                fh.write(record)

        for line_no, line in _lines(Path(source)):
            out.lines += 1
            if counter is not None and out.lines % 2000 == 0 and worker == 0:
                counter.value = out.lines
            if line.startswith(_CSV_ERROR):
                if worker == 0:
                    out.samples += 1
                    out.invalid_lines += 1
                    if len(out.errors) < MAX_ERRORS:
                        reason = line[len(_CSV_ERROR) :].decode()
                        out.errors.append(LineError(line_no, None, "invalid_csv", reason))
                continue
            part, positions = _route(line, workers, worker)
            if part is None:
                continue
            if b'"labels"' in part and _labels(part, size_ms, anomalous):
                out.labelled = True
            result = ingest.process(part, SourceRef("backtest", None, line_no))
            out.samples += result.items
            bad_line = False
            for dead in result.dead:
                if dead.reason_code == "late":
                    out.late_samples += 1
                    continue
                if dead.reason_code == "invalid_sample":
                    out.invalid_samples += 1
                if dead.reason_code in _LINE_ERRORS or dead.index is None:
                    bad_line = True
                index = dead.index
                if positions is not None and index is not None:
                    index = positions[index]
                if len(out.errors) < MAX_ERRORS:
                    out.errors.append(LineError(line_no, index, dead.reason_code, dead.reason))
            out.invalid_lines += bad_line
            if result.windows:
                spool(result.windows)
        spool(ingest.flush())
    if counter is not None and worker == 0:
        counter.value = out.lines
    out.index.sort()
    out.anomalous_windows = sorted(anomalous)
    for name in sorted(engine.subsystems):
        for (kind, series), model in sorted(engine.subsystems[name].series.items()):
            out.accuracy[f"{name}/{kind}:{series}"] = model.accuracy.totals
    return out


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


def _run_stage1(
    path: Path, policy: FleetPolicy, workers: int, tmpdir: str, progress: ProgressFn | None
) -> list[Stage1Result]:
    policy_json = policy.model_dump_json().encode()
    total = _count_lines(path)
    if workers == 1:
        _init_worker(None)
        result = _stage1(str(path), policy_json, 1, 0, tmpdir)
        if progress is not None:
            progress("ingest", total, total)
        return [result]
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("q", 0, lock=False)
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(counter,)
    ) as pool:
        futures = [
            pool.submit(_stage1, str(path), policy_json, workers, i, tmpdir) for i in range(workers)
        ]
        while not all(f.done() for f in futures):
            if progress is not None:
                progress("ingest", min(int(counter.value), total), total)
            time.sleep(0.1)
        results = [f.result() for f in futures]
    if progress is not None:
        progress("ingest", total, total)
    return results


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
        from app.report import render_report  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return
    render_report(out, baseline_dir=baseline_dir)


def _backtest_once(
    path: Path,
    policy: FleetPolicy,
    out: Path,
    overrides: list[str],
    workers: int,
    progress: ProgressFn | None,
) -> dict[str, Any]:
    from app.core.engine import PredictionEngine  # scipy: only when a backtest runs

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    engine = PredictionEngine(policy)
    counts = {"windows": 0, "rebalance": 0, "infeasible": 0}
    subsystems: set[str] = set()
    span = [0, 0]
    anomaly_events: list[tuple[str, int]] = []
    with tempfile.TemporaryDirectory(prefix="pso-backtest-") as tmpdir:
        results = _run_stage1(path, policy, workers, tmpdir, progress)
        merged = sorted((entry, k) for k, result in enumerate(results) for entry in result.index)
        files = {name: (out / f"{name}.jsonl").open("wb") for name in FILES}
        spools = [open(result.records, "rb") for result in results]  # noqa: SIM115

        def write_stage2(events: list[OutputEvent]) -> None:
            for event in events:
                files[_event_file(event)].write(event.to_json() + b"\n")
                if isinstance(event, RebalanceRecommended):
                    counts["rebalance"] += 1
                    counts["infeasible"] += not event.feasible

        try:
            for n, ((start, subsystem, offset, length), k) in enumerate(merged):
                spools[k].seek(offset)
                window, events, shares = pickle.loads(spools[k].read(length))
                files["windows"].write(window + b"\n")
                counts["windows"] += 1
                subsystems.add(subsystem)
                span[0] = start if n == 0 else min(span[0], start)
                span[1] = max(span[1], start + policy.window.size_ms)
                for name, blob in events:
                    files[name].write(blob + b"\n")
                    if name == "anomalies":
                        anomaly_events.append((subsystem, orjson.loads(blob)["window_start_ms"]))
                share: ResourceShare
                for share in shares:
                    write_stage2(engine.resource(share.resource).add(share))
                if progress is not None and n % 1000 == 0:
                    progress("conflicts", n, len(merged))
            # End of input: judge windows still waiting for a contributor that never came.
            write_stage2(engine.finish())
            if progress is not None:
                progress("conflicts", len(merged), len(merged))
        finally:
            for fh in files.values():
                fh.close()
            for spool in spools:
                spool.close()
    seconds = time.perf_counter() - started
    samples = sum(r.samples for r in results)
    errors = sorted(
        (e for r in results for e in r.errors), key=lambda e: (e.line, e.index or -1, e.code)
    )[:MAX_ERRORS]
    accuracy: dict[str, list[HorizonTotals]] = {}
    for result in results:
        accuracy.update(result.accuracy)
    labelled_windows = sorted({w for r in results for w in r.anomalous_windows})
    metrics: dict[str, Any] = {
        "input": {
            "source": str(path),
            "samples": samples,
            "invalid_lines": sum(r.invalid_lines for r in results),
            "invalid_samples": sum(r.invalid_samples for r in results),
            "late_samples": sum(r.late_samples for r in results),
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
        "forecast": forecast_metrics(accuracy, engine.config.levels),
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
        },
    }
    (out / "metrics.json").write_bytes(
        orjson.dumps(metrics, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    return metrics


# --------------------------------------------------------------------------- metrics


def _levels_key(level: float) -> str:
    return f"{level:g}"


def _horizon_block(totals: Sequence[HorizonTotals], levels: tuple[float, ...]) -> dict[str, Any]:
    return {
        "n": totals[0].n if totals else 0,
        "mae_by_horizon": [t.mae if t.n else None for t in totals],
        "mase_by_horizon": [t.mase for t in totals],
        "coverage": {_levels_key(lv): [t.coverage(lv) for t in totals] for lv in levels},
    }


def forecast_metrics(
    accuracy: dict[str, list[HorizonTotals]], levels: tuple[float, ...]
) -> dict[str, Any]:
    """Per series and overall MAE / MASE / coverage per horizon (`HorizonTotals` definitions).

    Overall MAE and coverage pool every target; overall MASE is the mean of per-series MASE
    over series with at least 30 baseline targets at that horizon (pooling MASE across series
    of different units would let the largest series dominate).
    """
    series = {key: _horizon_block(accuracy[key], levels) for key in sorted(accuracy)}
    horizon = max((len(t) for t in accuracy.values()), default=0)
    pooled = [HorizonTotals(levels) for _ in range(horizon)]
    for key in sorted(accuracy):
        for h, t in enumerate(accuracy[key]):
            pooled[h].merge(t)
    overall = _horizon_block(pooled, levels)
    mase: list[float | None] = []
    for h in range(horizon):
        values = [
            m
            for key in sorted(accuracy)
            if accuracy[key][h].n_naive >= MIN_BASELINE_TARGETS
            and (m := accuracy[key][h].mase) is not None
        ]
        mase.append(math.fsum(values) / len(values) if values else None)
    overall["mase_by_horizon"] = mase
    del overall["n"]
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


async def _copy_topic(
    settings: Any,
    bootstrap: str,
    topic: str,
    start_ms: int | None,
    end_ms: int | None,
    target: Path,
) -> int:
    from app.kafka_range import read_range  # type: ignore[import-not-found,unused-ignore]

    count = 0
    with target.open("wb") as fh:
        async for _key, value, *_rest in read_range(settings, bootstrap, topic, start_ms, end_ms):
            line = (value or b"").replace(b"\r", b" ").replace(b"\n", b" ")
            fh.write(line + b"\n")
            count += 1
    return count


# --------------------------------------------------------------------------- CLI


def register(cli: typer.Typer) -> None:
    """Add ``pso backtest`` to the typer app ``cli``."""

    @cli.command("backtest")
    def backtest(
        input: Annotated[
            Path | None, typer.Argument(help="telemetry .jsonl or .csv (or use --topic)")
        ] = None,
        output: Annotated[Path, typer.Option("-o", "--output", help="output directory")] = Path(
            "backtest-out"
        ),
        topic: Annotated[str | None, typer.Option(help="read a Kafka topic range instead")] = None,
        from_: Annotated[
            str | None, typer.Option("--from", help="with --topic: first record time (RFC 3339)")
        ] = None,
        to: Annotated[
            str | None, typer.Option("--to", help="with --topic: end record time (RFC 3339)")
        ] = None,
        config: Annotated[
            Path | None, typer.Option(help="pso.yaml (default: PSO_CONFIG or built-in)")
        ] = None,
        set_: Annotated[
            list[str] | None,
            typer.Option("--set", help="what-if: KEY=VALUE into pso.yaml (repeatable)"),
        ] = None,
        workers: Annotated[int, typer.Option(min=1, max=64, help="stage-1 processes")] = 2,
    ) -> None:
        """Replay telemetry through the prediction engine offline and score it."""
        from app import cli as cli_module
        from app.settings import load_policy

        if (input is None) == (topic is None):
            raise UsageError("give exactly one of INPUT or --topic TOPIC")
        s = cli_module.settings()
        policy = load_policy(config) if config is not None else s.policy()
        overrides = list(set_ or [])
        if overrides:
            apply_overrides(policy, overrides)  # fail fast, before reading anything
        with tempfile.TemporaryDirectory(prefix="pso-topic-") as tmp:
            source = input
            if topic is not None:
                import asyncio

                start_ms = cli_module.parse_time_ms(from_) if from_ else None
                end_ms = cli_module.parse_time_ms(to) if to else None
                source = Path(tmp) / "topic.jsonl"
                n = asyncio.run(
                    _copy_topic(s, cli_module.bootstrap_for(s), topic, start_ms, end_ms, source)
                )
                cli_module.err_console.print(f"read {n} records from {topic}")
            assert source is not None
            with cli_module.progress() as bar:
                tasks: dict[str, Any] = {}

                def report(stage: str, done: int, total: int) -> None:
                    if stage not in tasks:
                        label = "lines" if stage == "ingest" else "windows -> conflicts"
                        tasks[stage] = bar.add_task(label, total=total)
                    bar.update(tasks[stage], completed=done, total=total)

                try:
                    metrics = run_backtest(
                        source,
                        policy,
                        output,
                        overrides=overrides,
                        workers=workers,
                        progress=report,
                    )
                except BacktestError as exc:
                    raise UsageError(str(exc)) from None
        inp, conf = metrics["input"], metrics["conflicts"]["overall"]
        cli_module.err_console.print(
            f"{inp['samples']} samples, {inp['windows']} windows, "
            f"{inp['invalid_lines']} invalid lines, {conf['episodes']} conflict episodes "
            f"(recall {_fmt(conf['recall'])}, precision {_fmt(conf['precision'])}) "
            f"in {metrics['runtime']['seconds']:.1f} s -> {output}"
        )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


__all__ = [
    "BacktestError",
    "anomaly_metrics",
    "apply_overrides",
    "conflict_metrics",
    "forecast_metrics",
    "register",
    "run_backtest",
]
