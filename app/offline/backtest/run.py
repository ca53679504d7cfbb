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
import gc
import math
import os
import pickle
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from app.core.events import (
    OperatorLabel,
    OutputEvent,
    RebalanceRecommended,
    ms_to_iso,
)
from app.errors import PsoError, validation_reason
from app.offline.backtest.common import _IO_BUFFER, FILES, MAX_ERRORS, BacktestError, ProgressFn
from app.offline.backtest.labels import ConflictLabels, label_metrics, read_labels
from app.offline.backtest.metrics import anomaly_metrics, conflict_metrics, forecast_metrics
from app.offline.backtest.source import check_csv_header
from app.offline.backtest.stage1 import (
    Stage1Result,
    _event_file,
    _init_worker,
    _stage1,
    _stage1_process,
)
from app.settings import ConfigError, FleetPolicy
from app.wire.records import encode

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
        raise ConfigError(f"--set: {validation_reason(exc)}") from None


def _known(node: Any) -> str:
    if isinstance(node, dict) and node:
        return f" (known: {', '.join(sorted(map(str, node)))})"
    return ""


# --------------------------------------------------------------------------- driver


def _read_source(source: Path | str) -> Path:
    path = Path(source)
    if not path.is_file():
        raise BacktestError(f"input file not found: {path}")
    if path.suffix.lower() not in (".jsonl", ".json", ".ndjson", ".csv"):
        raise BacktestError(f"{path}: unknown input format (use .jsonl or .csv)")
    if path.suffix.lower() == ".csv":
        check_csv_header(path)
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

    def __init__(
        self,
        policy: FleetPolicy,
        out: Path,
        spools: list[str],
        labels: Sequence[OperatorLabel] = (),
    ) -> None:
        self.policy = policy
        self.labels = ConflictLabels(labels)
        self.out = out
        self.spool_paths = spools
        self.spools: list[Any] = [None] * len(spools)
        self.files = {
            name: (out / f"{name}.jsonl").open("wb", buffering=_IO_BUFFER) for name in FILES
        }
        self.reset()

    def reset(self) -> None:
        from app.core.bodies import share_from_values
        from app.core.engine import PredictionEngine  # scipy: only now

        self.share_from_values = share_from_values

        for fh in self.files.values():
            fh.seek(0)
            fh.truncate()
        self.engine = PredictionEngine(self.policy.spec())
        self.labels.reset()
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
        self.labels.before(self.engine, start)
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
        self.labels.finish(self.engine)

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
    labels: Sequence[OperatorLabel] = (),
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
        result = _stage1(str(path), policy_json, 1, 0, tmpdir, labels=labels)
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
            args=(sender, counter, str(path), policy_json, workers, i, tmpdir, labels),
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
                    if isinstance(payload, PsoError):
                        raise payload  # the input's fault (a bad header, say): one line, exit 2
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
    labels: Path | str | None = None,
) -> dict[str, Any]:
    """Backtest ``source`` under ``policy`` (plus ``overrides``); write ``out_dir``; return metrics.

    With overrides or ``labels`` (a JSONL file of operators' labels, replayed in event time:
    `app.offline.backtest.labels`) and ``baseline``, the run without them is backtested first
    into ``out_dir/baseline`` and the report compares the two; with labels, ``metrics.json``
    gets a ``labels`` block (precision before and after).
    """
    path = _read_source(source)
    taught = read_labels(labels) if labels is not None else []
    out = Path(out_dir)
    changed = apply_overrides(policy, overrides) if overrides else policy
    compare = bool(overrides or labels is not None) and baseline
    before = None
    if compare:
        before = run_backtest(
            path, policy, out / "baseline", workers=workers, progress=progress, render=render
        )
    metrics = _backtest_once(path, changed, out, list(overrides), max(1, workers), progress, taught)
    if labels is not None:
        metrics["labels"] = label_metrics(
            labels,
            taught,
            metrics.pop("_label_logs", []),
            before if before is not None else metrics,
            metrics,
            out,
            out / "baseline" if before is not None else out,
        )
        _write_metrics(out, metrics)
    if render:
        _render(out, out / "baseline" if compare else None)
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
    labels: Sequence[OperatorLabel] = (),
) -> dict[str, Any]:
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with _lean_gc(), tempfile.TemporaryDirectory(prefix="pso-backtest-") as tmpdir:
        spools = [os.path.join(tmpdir, f"stage1-{k}.bin") for k in range(workers)]
        stage2 = _Stage2(policy, out, spools, labels)
        try:
            results, overlapped = _run_stages(
                path, policy, workers, tmpdir, progress, stage2, labels
            )
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
            {name: engine.resources[name].scorer for name in sorted(engine.resources)},
            {name: engine.resources[name].predictor.reliability for name in engine.resources},
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
    _write_metrics(out, metrics)
    if labels:
        metrics["_label_logs"] = [r.labels for r in results] + [stage2.labels.log]
    return metrics


def _write_metrics(out: Path, metrics: dict[str, Any]) -> None:
    (out / "metrics.json").write_bytes(
        orjson.dumps(metrics, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
