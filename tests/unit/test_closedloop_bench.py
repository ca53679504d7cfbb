"""`pso bench closed-loop`: JSON rows with exactly the issue's keys, trace-driven runs that
give the scenario's figures, determinism, and no action on the steady control."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from app.core.closedloop import ROW_KEYS, LoopSpec, run_policy
from app.dev.scenarios import generate

REPO = Path(__file__).resolve().parents[2]
SHORT = ("--days", "2", "--warmup", "1d", "--subsystems", "3")


def _pso(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args], cwd=REPO, capture_output=True, timeout=280
    )


def _rows(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr.decode()
    rows: list[dict[str, Any]] = orjson.loads(result.stdout)
    return rows


def test_json_rows_have_exactly_the_issue_keys() -> None:
    result = _pso("bench", "closed-loop", "--scenario", "daily-peaks", *SHORT, "--json")
    rows = _rows(result)
    assert [row["policy"] for row in rows] == ["none", "reactive", "hpa", "pso", "oracle"]
    expected = [
        "scenario",
        "policy",
        "conflict_minutes",
        "episodes",
        "unmet_value",
        "deferred",
        "capacity_unit_hours",
        "actions",
    ]
    assert list(ROW_KEYS) == expected
    for row in rows:
        assert list(row) == expected
        assert row["scenario"] == "daily-peaks"
    none = rows[0]
    assert none["actions"] == 0 and none["conflict_minutes"] > 0  # the scenario collides


def test_a_recorded_trace_drives_the_same_loop_as_its_scenario(tmp_path: Path) -> None:
    trace, config = tmp_path / "peaks.jsonl", tmp_path / "pso.yaml"
    made = _pso(
        "simulate", "--scenario", "daily-peaks", "--subsystems", "3", "--duration", "2d",
        "-o", str(trace), "--write-policy", str(config),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr.decode()
    truth = orjson.loads((tmp_path / "peaks.episodes.json").read_bytes())
    assert truth["scenario"] == "daily-peaks" and truth["episodes"]
    policies = ("--policy", "none", "--policy", "hpa", "--policy", "oracle")
    from_file = _rows(
        _pso("bench", "closed-loop", "--telemetry", str(trace), "--config", str(config),
             "--warmup", "1d", *policies, "--json")
    )  # fmt: skip
    generated = _rows(
        _pso("bench", "closed-loop", "--scenario", "daily-peaks", *SHORT, *policies, "--json")
    )
    assert [row["scenario"] for row in from_file] == ["peaks"] * 3  # the file's stem
    assert [dict(row, scenario="x") for row in from_file] == [
        dict(row, scenario="x") for row in generated
    ]


def test_same_seed_same_figures() -> None:
    sc = generate("noisy-neighbour", subsystems=3, days=2, seed=5)
    loop = LoopSpec(warmup_windows=720)
    spec = sc.policy.spec()
    for name in ("reactive", "hpa", "pso", "oracle"):
        a = run_policy(sc.trace, spec, loop, name).metrics.row("s", name)
        b = run_policy(sc.trace, spec, loop, name).metrics.row("s", name)
        assert a == b, name


def test_pso_takes_no_action_on_the_steady_control() -> None:
    sc = generate("steady", days=3, seed=0)
    run = run_policy(sc.trace, sc.policy.spec(), sc.loop, "pso")
    assert run.metrics.actions == 0
    assert run.metrics.conflict_minutes == 0
