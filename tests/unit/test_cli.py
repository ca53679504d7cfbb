"""CLI errors are one readable line and exit code 2."""

import os
import subprocess
import sys
from pathlib import Path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.pop("PSO_BROKER", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_missing_file() -> None:
    line = one_line_error(run("produce", "/nonexistent.jsonl", env={"PSO_BROKER": "127.0.0.1:1"}))
    assert "'/nonexistent.jsonl' does not exist" in line


def test_unreachable_broker_after_bounded_retry() -> None:
    line = one_line_error(run("topics", "create", env={"PSO_BROKER": "127.0.0.1:1"}))
    assert "cannot reach Kafka at 127.0.0.1:1" in line


def test_bad_config_names_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "pso.yaml"
    cfg.write_text("resources:\n  db-main: {capacity: zero}\n")
    line = one_line_error(run("worker", env={"PSO_CONFIG": str(cfg), "PSO_BROKER": "127.0.0.1:1"}))
    assert "resources.db-main.capacity" in line


def test_bad_env_setting() -> None:
    line = one_line_error(run("topics", "create", env={"PSO_TOPIC_POLICY__PARTITIONS": "-3"}))
    assert "topic_policy.partitions" in line


def test_unknown_option() -> None:
    line = one_line_error(run("simulate", "--nope"))
    assert "--nope" in line


def test_simulate_to_file_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for out in (a, b):
        res = run(
            "simulate", "--subsystems", "3", "--duration", "10m", "--seed", "5", "-o", str(out)
        )
        assert res.returncode == 0, res.stderr
    assert a.read_bytes() == b.read_bytes()
    assert len(a.read_bytes().splitlines()) == 3 * 60


def test_schemas_check_passes() -> None:
    assert run("schemas", "export", "--check").returncode == 0
