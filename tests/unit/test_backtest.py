"""`pso backtest`: golden outputs, worker-count invariance, bad input, what-if.

The golden scenario (see tests/data/backtest/regenerate.py): 3 services sharing db-main for
6 hours from 09:00 UTC, 5-minute windows, capacity 29.6 — reviewed by eye: the midday ramp
breaches capacity in 2 episodes, the first predicted 35 min ahead (recall 0.5, precision 1.0),
20 rebalance plans, all feasible; a labelled 30-minute checkout incident is not alarmed on
(the detector is still warming up after 4 h of 5-minute windows), so anomaly recall is 0.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.core.engine import PredictionEngine
from app.core.snapshot import seal, unseal
from app.offline.backtest import FILES, anomaly_metrics, apply_overrides, run_backtest
from app.offline.backtest.source import _blocks, _csv_lines
from app.settings import ConfigError, FleetPolicy, ResourceConfig, load_policy
from app.wire.codec import MAX_MESSAGE_BYTES
from app.wire.records import encode

DATA = Path(__file__).resolve().parents[1] / "data" / "backtest"
EXPECTED = DATA / "expected"


@pytest.fixture(scope="module")
def policy() -> FleetPolicy:
    return load_policy(DATA / "pso.yaml")


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory: pytest.TempPathFactory, policy: FleetPolicy) -> Path:
    out = tmp_path_factory.mktemp("golden2")
    run_backtest(DATA / "input.jsonl", policy, out, workers=2, render=False)
    return out


def _metrics(path: Path) -> dict[str, object]:
    metrics = orjson.loads((path / "metrics.json").read_bytes())
    metrics.pop("runtime", None)
    metrics["input"]["source"] = "input.jsonl"
    return dict(metrics)


def test_golden_event_files_match_expected(golden_run: Path) -> None:
    for name in FILES:
        got = (golden_run / f"{name}.jsonl").read_bytes()
        assert got == (EXPECTED / f"{name}.jsonl").read_bytes(), name


# OpenBLAS picks its kernels by processor; the engine must not depend on them (no BLAS or
# LAPACK on its path), or live workers and backtests on different machines would disagree.
_CORES = ["Prescott", "Sandybridge"] if platform.machine() in ("x86_64", "AMD64") else [""]


@pytest.mark.parametrize("core", _CORES)
def test_golden_events_do_not_depend_on_the_blas_kernel(tmp_path: Path, core: str) -> None:
    code = (
        "import sys; from pathlib import Path; from app.offline.backtest import run_backtest; "
        "from app.settings import load_policy; d = Path(sys.argv[1]); "
        "run_backtest(d / 'input.jsonl', load_policy(d / 'pso.yaml'), Path(sys.argv[2]), "
        "workers=1, render=False)"
    )
    env = {**os.environ, "OPENBLAS_CORETYPE": core}
    subprocess.run([sys.executable, "-c", code, str(DATA), str(tmp_path)], env=env, check=True)
    for name in ("forecasts", "conflicts", "rebalance", "accuracy"):
        got = (tmp_path / f"{name}.jsonl").read_bytes()
        assert got == (EXPECTED / f"{name}.jsonl").read_bytes(), (core, name)


def test_golden_metrics_match_expected(golden_run: Path) -> None:
    assert _metrics(golden_run) == orjson.loads((EXPECTED / "metrics.json").read_bytes())


def test_golden_metrics_say_what_was_reviewed(golden_run: Path) -> None:
    m = orjson.loads((golden_run / "metrics.json").read_bytes())
    assert m["input"]["samples"] == 1080 and m["input"]["windows"] == 216
    assert m["input"]["subsystems"] == 3 and m["input"]["invalid_lines"] == 0
    assert m["conflicts"]["overall"]["episodes"] == 2
    assert m["conflicts"]["overall"]["predicted_episodes"] == 2
    assert m["conflicts"]["overall"]["lead_time_s"]["values"] == [300.0, 2400.0]
    calibration = m["conflicts"]["overall"]["calibration"]
    assert calibration["scored"] == 68  # 72 windows of db-main; the last horizon never resolves
    assert sum(b["count"] for b in calibration["bins"]) == 68
    assert m["anomalies"]["labelled"] is True
    assert m["runtime"]["workers"] == 2 and m["runtime"]["samples_per_s"] > 0
    assert len(m["forecast"]["overall"]["mae_by_horizon"]) == 4


def test_every_line_is_the_live_event_bytes(golden_run: Path) -> None:
    kinds = {
        "windows": {"load_window"},
        "forecasts": {"forecast"},
        "conflicts": {"conflict_predicted", "conflict_observed"},
        "rebalance": {"rebalance_recommended"},
        "accuracy": {"accuracy_report"},
    }
    for name, types in kinds.items():
        lines = (golden_run / f"{name}.jsonl").read_bytes().splitlines()
        assert lines, name
        for line in lines:
            doc = orjson.loads(line)
            assert doc["type"] in types
            assert orjson.dumps(doc) == line  # canonical: what to_json() gives


def test_workers_one_and_two_write_identical_files(tmp_path: Path, policy: FleetPolicy) -> None:
    # A batch line mixing subsystems is split across workers: still identical.
    lines = (DATA / "input.jsonl").read_bytes().splitlines()[:300]
    batch = b"[" + b",".join(lines[300 - 6 :]) + b"]"
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join([*lines[: 300 - 6], batch]) + b"\n")
    for workers in (1, 2, 3):
        run_backtest(source, policy, tmp_path / f"w{workers}", workers=workers, render=False)
    for name in [*(f"{f}.jsonl" for f in FILES)]:
        one = (tmp_path / "w1" / name).read_bytes()
        assert one == (tmp_path / "w2" / name).read_bytes() == (tmp_path / "w3" / name).read_bytes()
    assert _metrics(tmp_path / "w1") == _metrics(tmp_path / "w2") == _metrics(tmp_path / "w3")


def test_odd_lines_route_the_same_with_any_worker_count(
    tmp_path: Path, policy: FleetPolicy
) -> None:
    # The workers skip each other's lines by their raw ``{"subsystem":"NAME"`` prefix: lines
    # that look like that but are not plain must still reach the same owner in every case.
    lines = (DATA / "input.jsonl").read_bytes().splitlines()[:240]
    checkout = next(x for x in lines[120:] if x.startswith(b'{"subsystem":"checkout"'))
    odd = [
        lines[120] + b"\r",  # CRLF
        b"",
        b"   ",
        b"  " + lines[121],  # leading blanks
        b'{"subsystem":"search",' + checkout[1:],  # a second "subsystem" key: the last wins
        checkout.replace(b'"checkout"', b'"check\\u006fut"'),  # an escaped name
        b'{"subsystem":"\xff","ts":1795597200000}',  # not UTF-8: invalid JSON
        b'{"subsystem":"newcomer","ts":1795604400000,"metrics":{"cpu":1}}',  # last seen here
        b'{"subsystem":"search","ts":1795604400000,"metrics":{"cpu":-1},"resources":{"db-main":-2}}',
    ]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\r\n".join([*lines[:120], *odd, *lines[122:]]) + b"\n")
    metrics = [
        run_backtest(source, policy, tmp_path / f"w{w}", workers=w, render=False) for w in (1, 2, 3)
    ]
    for name in FILES:
        one = (tmp_path / "w1" / f"{name}.jsonl").read_bytes()
        assert one == (tmp_path / "w2" / f"{name}.jsonl").read_bytes(), name
        assert one == (tmp_path / "w3" / f"{name}.jsonl").read_bytes(), name
    assert _metrics(tmp_path / "w1") == _metrics(tmp_path / "w2") == _metrics(tmp_path / "w3")
    errors = [(e["line"], e["code"]) for e in metrics[0]["input"]["errors"]]
    assert errors == [(127, "invalid_json"), (129, "invalid_sample")]
    assert metrics[0]["input"]["subsystems"] == 4 and metrics[0]["input"]["samples"] == 240 + 5
    windows = [orjson.loads(x) for x in (tmp_path / "w1" / "windows.jsonl").read_bytes().split()]
    assert sum(w["samples"] for w in windows) == 240 + 5 - 2  # two rejected, none late


def test_stage2_streams_while_stage1_runs(
    tmp_path: Path, policy: FleetPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # many blocks, many watermarks
    monkeypatch.setattr("app.offline.backtest.source._BLOCK_BYTES", 4096)
    m = run_backtest(DATA / "input.jsonl", policy, tmp_path, workers=2, render=False)
    assert m["runtime"]["stage2_overlapped"] is True
    for name in FILES:
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (
            EXPECTED / f"{name}.jsonl"
        ).read_bytes()
    assert _metrics(tmp_path) == orjson.loads((EXPECTED / "metrics.json").read_bytes())


def test_a_late_newcomer_with_old_windows_restarts_stage2(
    tmp_path: Path, policy: FleetPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Watermarks only cover subsystems already seen: a subsystem that first shows up at the
    # end with the oldest windows breaks the streamed order, so stage 2 must start over.
    monkeypatch.setattr("app.offline.backtest.source._BLOCK_BYTES", 4096)
    # The workers pause before the block that brings the newcomer, so that stage 2 has
    # streamed past its windows by then (else nothing would need starting over: whether it
    # has is a race between processes, and the restart is what this test is about).
    import time

    import app.offline.backtest.stage1 as stage1

    blocks = stage1._blocks

    def paused(path: Path) -> Any:
        for numbers, lines in blocks(path):
            if any(b'"newcomer"' in line for line in lines):
                time.sleep(2.0)
            yield numbers, lines

    monkeypatch.setattr(stage1, "_blocks", paused)
    lines = (DATA / "input.jsonl").read_bytes().splitlines()
    late = [x.replace(b'"checkout"', b'"newcomer"') for x in lines[:90] if b'"checkout"' in x]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join([*lines, *late]) + b"\n")
    one = run_backtest(source, policy, tmp_path / "w1", workers=1, render=False)
    two = run_backtest(source, policy, tmp_path / "w2", workers=2, render=False)
    assert two["runtime"]["stage2_overlapped"] is False
    assert two["input"]["subsystems"] == 4
    for name in FILES:
        a = (tmp_path / "w1" / f"{name}.jsonl").read_bytes()
        assert a == (tmp_path / "w2" / f"{name}.jsonl").read_bytes(), name
    assert _metrics(tmp_path / "w1") == _metrics(tmp_path / "w2")
    assert one["input"]["windows"] == two["input"]["windows"]


def test_malformed_lines_are_reported_with_line_numbers(
    tmp_path: Path, policy: FleetPolicy
) -> None:
    good = (DATA / "input.jsonl").read_bytes().splitlines()[:30]
    bad = [
        b'{"subsystem": "checkout", "ts": ',  # truncated JSON
        b'{"subsystem": "checkout", "ts": 1795597200000, "metrics": {"cpu": "high"}}',
        b"[]",
        b'[{"subsystem": "search", "ts": 1795597260000}, {"ts": 5}]',
    ]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join([*good[:10], *bad, *good[10:]]) + b"\n")
    m = run_backtest(source, policy, tmp_path / "out", workers=2, render=False)
    errors = m["input"]["errors"]
    assert [(e["line"], e["code"]) for e in errors] == [
        (11, "invalid_json"),
        (12, "invalid_sample"),
        (13, "empty_batch"),
        (14, "invalid_sample"),
    ]
    assert errors[1]["reason"].startswith("metrics.cpu")
    assert errors[3]["index"] == 1
    assert m["input"]["invalid_lines"] == 3
    assert m["input"]["invalid_samples"] == 2
    assert m["input"]["windows"] > 0


def test_csv_input_with_bad_cell(tmp_path: Path, policy: FleetPolicy) -> None:
    rows = ["subsystem,ts,cpu,rps,res:db-main,label:anomaly"]
    for i in range(40):
        rows.append(f"checkout,{1795597200000 + i * 60_000},0.5,{100 + i},{5 + i % 3},")
    rows.insert(5, "checkout,1795597440000,oops,1,1,")
    rows.insert(9, "checkout,1795597440000,1")
    source = tmp_path / "in.csv"
    source.write_text("\n".join(rows) + "\n")
    m = run_backtest(source, policy, tmp_path / "out", workers=2, render=False)
    errors = m["input"]["errors"]
    assert [(e["line"], e["code"]) for e in errors] == [(6, "invalid_sample"), (10, "invalid_csv")]
    assert errors[0]["reason"].startswith("metrics.cpu")
    assert errors[1]["reason"] == "row has 3 cells, header has 6"
    assert m["input"]["invalid_lines"] == 2
    assert m["input"]["subsystems"] == 1 and m["input"]["windows"] == 8
    first = orjson.loads((tmp_path / "out" / "windows.jsonl").read_bytes().splitlines()[0])
    assert set(first["metrics"]) == {"cpu", "rps"} and set(first["resources"]) == {"db-main"}


def test_a_semicolon_csv_with_decimal_commas_is_the_same_telemetry(
    tmp_path: Path, policy: FleetPolicy
) -> None:
    rows = [("subsystem", "ts", "cpu", "rps", "res:db-main")]
    for i in range(40):
        rps = f"{1000 + 25 * i}" if i else "1000.5"  # 1.025 in the export: a thousand and 25
        rows.append(("checkout", str(1795597200000 + i * 60_000), f"0.{i % 7}5", rps, "5"))
    plain, semicolon = tmp_path / "plain.csv", tmp_path / "semicolon.csv"
    plain.write_text("".join(",".join(r) + "\n" for r in rows))
    lines = "".join(";".join(r).replace(".", ",") + "\n" for r in rows)
    lines = re.sub(r";(\d)(\d{3});", r";\1.\2;", lines)  # thousands grouped: 1.025
    lines = lines.replace("\n", "\n;;;;\n", 3)  # empty spreadsheet rows: no data
    semicolon.write_text("\n" + lines)  # a blank line before the header
    a = run_backtest(plain, policy, tmp_path / "a", workers=1, render=False)
    b = run_backtest(semicolon, policy, tmp_path / "b", workers=1, render=False)
    assert b["input"]["errors"] == [] and b["input"]["windows"] == a["input"]["windows"] > 0
    windows = (tmp_path / "a" / "windows.jsonl").read_bytes()
    assert (tmp_path / "b" / "windows.jsonl").read_bytes() == windows


@pytest.mark.parametrize("workers", [1, 2])
def test_csv_bytes_that_are_not_utf8_are_one_invalid_line(
    tmp_path: Path, policy: FleetPolicy, workers: int
) -> None:
    rows = [b"subsystem,ts,cpu"]
    rows += [b"checkout,%d,0.5" % (1795597200000 + i * 60_000) for i in range(40)]
    rows[7] = b"checkout,1795597560000,0.\xff5"  # one byte that is not UTF-8
    source = tmp_path / "in.csv"
    source.write_bytes(b"\n".join(rows) + b"\n")
    m = run_backtest(source, policy, tmp_path / "out", workers=workers, render=False)
    errors = m["input"]["errors"]
    assert [(e["line"], e["code"], e["reason"]) for e in errors] == [
        (8, "invalid_csv", "row is not UTF-8 text")
    ]
    assert m["input"]["samples"] == 40 and m["input"]["windows"] == 8


def test_a_csv_row_the_csv_module_refuses_is_one_invalid_line(
    tmp_path: Path, policy: FleetPolicy
) -> None:
    rows = ["subsystem,ts,cpu"]
    rows += [f"checkout,{1795597200000 + i * 60_000},0.5" for i in range(40)]
    rows[7] = "checkout,1795597560000," + "9" * 200_000  # over the csv module's field limit
    source = tmp_path / "in.csv"
    source.write_text("\n".join(rows) + "\n")
    m = run_backtest(source, policy, tmp_path / "out", workers=2, render=False)
    errors = m["input"]["errors"]
    assert [(e["line"], e["code"]) for e in errors] == [(8, "invalid_csv")]
    assert errors[0]["reason"] == "not CSV: field larger than field limit (131072)"
    assert m["input"]["samples"] == 40 and m["input"]["windows"] == 8


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stray_quote_spoils_its_own_csv_row_only(
    tmp_path: Path, policy: FleetPolicy, workers: int
) -> None:
    rows = ["subsystem,ts,cpu"]
    rows += [f"checkout,{1795597200000 + i * 60_000},0.5" for i in range(40)]
    rows[8] = 'checkout,1795597620000,"0.5'  # a quote that never closes
    rows[20] = 'checkout,1795598340000,"0.5"'  # the next quote in the file, 12 rows on
    source = tmp_path / "in.csv"
    source.write_text("\n".join(rows) + "\n")
    m = run_backtest(source, policy, tmp_path / "out", workers=workers, render=False)
    errors = [(e["line"], e["code"], e["reason"]) for e in m["input"]["errors"]]
    assert errors == [(9, "invalid_csv", "not CSV: a quoted field is not closed on its line")]
    assert m["input"]["invalid_lines"] == 1 and m["input"]["invalid_samples"] == 0
    windows = (tmp_path / "out" / "windows.jsonl").read_bytes().splitlines()
    assert sum(orjson.loads(w)["samples"] for w in windows) == 39  # every other row is read


def test_a_quoted_csv_cell_may_span_lines(tmp_path: Path, policy: FleetPolicy) -> None:
    rows = ["subsystem,ts,cpu,label:note"]
    rows += [f"checkout,{1795597200000 + i * 60_000},0.5," for i in range(40)]
    rows[5] = 'checkout,1795597440000,0.5,"restarted by hand,\nsee the ticket"'  # 2 lines
    rows[20] = "checkout,1795598340000"
    source = tmp_path / "in.csv"
    source.write_text("\n".join(rows) + "\n")
    m = run_backtest(source, policy, tmp_path / "out", workers=2, render=False)
    errors = [(e["line"], e["code"]) for e in m["input"]["errors"]]
    assert errors == [(22, "invalid_csv")]  # physical line numbers after the two-line row
    windows = (tmp_path / "out" / "windows.jsonl").read_bytes().splitlines()
    assert sum(orjson.loads(w)["samples"] for w in windows) == 39


@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_a_csv_line_over_the_largest_message_is_too_large_and_never_held_whole(
    tmp_path: Path, policy: FleetPolicy, end: str
) -> None:
    rows = ["subsystem,ts,cpu"]
    rows += [f"checkout,{1795597200000 + i * 60_000},0.5" for i in range(40)]
    rows[6] = "checkout,1795597500000," + "1" * (24 << 20)
    at_limit = "checkout,1795597740000,"  # a line of exactly the largest length, then its end
    rows[10] = at_limit + "0" * (MAX_MESSAGE_BYTES - len(at_limit) - 3) + "0.5"
    rows[30] = "checkout,1795598940000"  # line 31 must still be called line 31
    source = tmp_path / "in.csv"
    source.write_bytes((end.join(rows) + end).encode())
    tracemalloc.start()
    try:
        lines = [number for number, _ in _csv_lines(source)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == list(range(2, 42)) and peak < 8 * MAX_MESSAGE_BYTES  # never held whole
    m = run_backtest(source, policy, tmp_path / "out", workers=2, render=False)
    errors = [(e["line"], e["code"], e["reason"]) for e in m["input"]["errors"]]
    assert errors == [
        (7, "too_large", f"line is {len(rows[6])} characters (max {MAX_MESSAGE_BYTES})"),
        (11, "invalid_csv", "not CSV: field larger than field limit (131072)"),
        (31, "invalid_csv", "row has 2 cells, header has 3"),
    ]
    assert m["input"]["samples"] == 40 and m["input"]["windows"] == 8


@pytest.mark.parametrize("split", [5, 20])
def test_a_line_over_the_largest_message_is_too_large_and_never_held_whole(
    tmp_path: Path, policy: FleetPolicy, split: int
) -> None:
    good = [
        b'{"subsystem":"checkout","ts":%d,"metrics":{"cpu":0.5}}' % (1795597200000 + i * 60_000)
        for i in range(40)
    ]
    endless = b'{"subsystem":"checkout","ts":1795597200000,"metrics":{"cpu":' + b"1" * (24 << 20)
    padded = b" " * (5 << 18) + good[split]  # 1.25 MiB, 60 bytes of sample
    lines = [*good[:5], endless, *good[5:split], padded, *good[split + 1 :]]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    tracemalloc.start()
    try:
        longest = max(len(line) for _, block in _blocks(source) for line in block)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert longest <= MAX_MESSAGE_BYTES and peak < 8 * MAX_MESSAGE_BYTES  # never held whole
    m = run_backtest(source, policy, tmp_path / "out", workers=2, render=False)
    errors = [(e["line"], e["code"], e["reason"]) for e in m["input"]["errors"]]
    assert errors == [  # each reported with its true length, as the live ingest would
        (6, "too_large", f"line is {len(endless)} bytes (max {MAX_MESSAGE_BYTES})"),
        (split + 2, "too_large", f"line is {len(padded)} bytes (max {MAX_MESSAGE_BYTES})"),
    ]
    assert m["input"]["samples"] == 41 and m["input"]["invalid_lines"] == 2


def test_an_excel_csv_and_a_header_the_csv_module_refuses(
    tmp_path: Path, policy: FleetPolicy
) -> None:
    rows = ["subsystem,ts,cpu"]
    rows += [f"checkout,{1795597200000 + i * 60_000},0.5" for i in range(40)]
    excel = tmp_path / "excel.csv"  # a UTF-8 byte order mark before the header
    excel.write_bytes(b"\xef\xbb\xbf" + "\n".join(rows).encode() + b"\n")
    m = run_backtest(excel, policy, tmp_path / "out", workers=2, render=False)
    assert m["input"]["samples"] == 40 and m["input"]["invalid_lines"] == 0
    huge = tmp_path / "huge.csv"
    huge.write_text("subsystem,ts," + "c" * 200_000 + "\n")
    with pytest.raises(ValueError, match="the CSV header is not CSV: field larger"):
        run_backtest(huge, policy, tmp_path / "out2", workers=2, render=False)


@pytest.mark.parametrize("header", [b"time,cpu", b"subsystem,\xffts,cpu"])
def test_a_bad_csv_header_is_one_error_before_any_output(
    tmp_path: Path, policy: FleetPolicy, header: bytes
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(header + b"\ncheckout,1795597200000,0.5\n")
    with pytest.raises(ValueError, match="CSV header"):  # not a worker's RuntimeError
        run_backtest(source, policy, tmp_path / "out", workers=2, render=False)
    assert not (tmp_path / "out").exists()


def test_what_if_capacity_changes_conflicts_and_keeps_a_baseline(
    tmp_path: Path, policy: FleetPolicy
) -> None:
    m = run_backtest(
        DATA / "input.jsonl",
        policy,
        tmp_path,
        overrides=["resources.db-main.capacity=500"],
        workers=2,
        render=False,
    )
    assert m["config"]["resources"]["db-main"]["capacity"] == 500
    assert m["config"]["overrides"] == ["resources.db-main.capacity=500"]
    assert m["conflicts"]["overall"]["episodes"] == 0
    assert (tmp_path / "conflicts.jsonl").read_bytes() == b""
    baseline = _metrics(tmp_path / "baseline")
    assert baseline == orjson.loads((EXPECTED / "metrics.json").read_bytes())


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("resources.db-mian.capacity=1", "no config key 'resources.db-mian'"),
        ("resources.db-main.capcity=1", "no config key 'resources.db-main.capcity'"),
        ("resources.db-main.capacity=-3", "resources.db-main.capacity"),
        ("resources.db-main.capacity", "expected KEY=VALUE"),
        ("window.size_s.x=1", "'window.size_s' is not a mapping"),
    ],
)
def test_bad_set_is_one_clear_line(policy: FleetPolicy, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(policy, [override])
    text = str(info.value)
    assert message in text and "\n" not in text


def test_set_adds_free_form_entries_and_parses_yaml_scalars(policy: FleetPolicy) -> None:
    changed = apply_overrides(
        policy, ["subsystems.search.limits.latency_ms=250", "subsystems.search.deferrable=true"]
    )
    assert changed.subsystems["search"].limits["latency_ms"] == 250.0
    assert changed.subsystems["search"].deferrable is True
    assert policy.subsystems["search"].deferrable is False  # the original is untouched


def test_missing_input_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="input file not found"):
        run_backtest(tmp_path / "nope.jsonl", FleetPolicy(), tmp_path / "out", render=False)


def test_anomaly_metrics_are_window_based() -> None:
    step = 60_000
    truth = [("a", 0), ("a", step), ("a", 2 * step), ("b", 10 * step)]
    events = [("a", step), ("a", step), ("c", 0)]  # two series alarmed on one window
    m = anomaly_metrics(True, truth, events, step)
    assert m["events"] == 3
    assert m["precision"] == 0.5  # detected windows: a@1 (true), c@0 (false)
    assert m["recall"] == 0.5  # episodes: a@0..2 (found 60 s late), b@10 (missed)
    assert m["detection_delay_s"]["values"] == [60.0]
    assert anomaly_metrics(False, [], events, step)["recall"] is None


def test_engine_state_sealed_mid_backtest_resumes_identically(policy: FleetPolicy) -> None:
    from app.wire.codec import SourceRef
    from app.wire.telemetry import TelemetryIngest

    ingest = TelemetryIngest(policy.window)
    windows = []
    for i, line in enumerate((DATA / "input.jsonl").read_bytes().splitlines()[:240]):
        windows.extend(ingest.process(line, SourceRef("t", None, i)).windows)
    engine = PredictionEngine(policy.spec())
    for window in windows[:30]:
        engine.process(window)
    key = b"backtest-test-key-0123456789abcdef"
    restored = PredictionEngine.restore(policy, engine.snapshot(key), key)
    state = unseal(seal(restored.resources, key, context=("t",)), key, context=("t",))
    assert sorted(state) == sorted(engine.resources)
    for window in windows[30:]:
        a = [encode(e) for e in engine.process(window)]
        assert a == [encode(e) for e in restored.process(window)]


def test_policy_without_resources_has_no_conflict_metrics(tmp_path: Path) -> None:
    policy = FleetPolicy(resources={"other": ResourceConfig(capacity=1.0)})
    lines = (DATA / "input.jsonl").read_bytes().splitlines()[:60]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    m = run_backtest(source, policy, tmp_path / "out", workers=1, render=False)
    assert m["conflicts"]["overall"]["episodes"] == 0
    assert m["conflicts"]["overall"]["recall"] is None
