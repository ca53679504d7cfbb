"""CLI errors are one readable line and exit code 2."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli.main import cli
from app.dev import demo
from app.errors import UsageError
from app.settings import BUILTIN_SNAPSHOT_KEY, load_settings


def run(
    *args: str, env: dict[str, str] | None = None, unset: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    for name in ("PSO_BROKER", *unset):
        full_env.pop(name, None)
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


KEY_SETTINGS = ("PSO_SNAPSHOT_KEY", "PSO_SNAPSHOT_KEYS_PREVIOUS", "PSO_DEV_MODE", "PSO_CONFIG")


def test_worker_refuses_the_builtin_key_on_an_external_broker() -> None:
    # Port 1: nothing listens there, and the refusal comes before any connection.
    result = run("worker", env={"PSO_BROKER": "127.0.0.1:1"}, unset=KEY_SETTINGS)
    line = one_line_error(result)
    assert "built-in snapshot key is public" in line and "PSO_DEV_MODE" in line


def test_worker_refuses_a_short_key() -> None:
    env = {"PSO_BROKER": "127.0.0.1:1", "PSO_SNAPSHOT_KEY": "hunter2"}
    line = one_line_error(run("worker", env=env, unset=KEY_SETTINGS))
    assert "snapshot_key" in line and "at least 32" in line and "hunter2" not in line


@pytest.mark.parametrize(
    ("env", "starts"),
    [
        ({}, False),  # the built-in key
        ({"PSO_DEV_MODE": "true"}, True),  # ... on a setup declared a development one
        ({"PSO_SNAPSHOT_KEY": "s" * 32}, True),  # a key of its own
        ({"PSO_SNAPSHOT_KEY": "s" * 32, "PSO_SNAPSHOT_KEYS_PREVIOUS": BUILTIN_SNAPSHOT_KEY}, False),
    ],
)
def test_worker_start_check_on_an_external_broker(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], starts: bool
) -> None:
    started: list[str] = []
    monkeypatch.setattr(
        "agents.worker.run_worker", lambda s, bootstrap, loglevel: started.append(bootstrap)
    )
    for name in KEY_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PSO_BROKER", "127.0.0.1:1")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, ["worker"])
    if starts:
        assert result.exit_code == 0, result.output
        assert started == ["127.0.0.1:1"]
    else:
        assert isinstance(result.exception, UsageError)
        assert started == []


def test_demo_gives_its_worker_a_key_of_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    envs: list[dict[str, str]] = []
    monkeypatch.setattr(demo.subprocess, "Popen", lambda *a, env, **kw: envs.append(env))
    for name in KEY_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for _ in range(2):
        demo._start_worker(load_settings(), "127.0.0.1:1", tmp_path / "p.yaml", tmp_path / "w")
    assert envs[0]["PSO_SNAPSHOT_KEY"] != envs[1]["PSO_SNAPSHOT_KEY"]  # fresh on every run
    for env in envs:
        monkeypatch.setenv("PSO_SNAPSHOT_KEY", env["PSO_SNAPSHOT_KEY"])
        assert not load_settings().uses_builtin_snapshot_key  # so `pso worker` accepts it
    own = "o" * 32
    monkeypatch.setenv("PSO_SNAPSHOT_KEY", own)
    demo._start_worker(load_settings(), "127.0.0.1:1", tmp_path / "p.yaml", tmp_path / "w")
    assert envs[-1]["PSO_SNAPSHOT_KEY"] == own  # a configured key is kept


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
