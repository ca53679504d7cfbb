"""Every user error of every ``pso`` command is one line on stderr and exit code 2.

A table of bad paths (missing, a directory, unreadable, unwritable), bad durations and times,
bad numbers and bad configuration (``pso.yaml`` and ``PSO_*``), one or more per command. Each
row runs the real CLI as ``python -m app.cli`` in its own process (forked from a server that
imported the CLI once, see `tests.cli_forkserver`) and asserts exit code 2, exactly one line
on stderr naming the problem, nothing on stdout, no traceback.

Every row runs with ``PSO_BROKER=127.0.0.1:1``: were an argument of a command that talks to
Kafka not checked before any network, the row would end with "cannot reach Kafka" instead of
its own message.

Long (about 850 lines) because the table is the test: one row per command and error, kept
in one place so a new command's rows sit beside the others.

The unreadable and unwritable rows drop every capability in the child first: the tests run
as root in CI, and root reads a mode-000 file. Their messages ("is not readable", "permission
denied") only exist when the kernel refused the access.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.cli.main import main, user_error_message
from app.errors import PsoError, UsageError

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Case:
    """One bad command line: ``{d}`` in args and env is the folder of prepared files."""

    id: str
    args: tuple[str, ...]
    expect: str  # must appear in the one stderr line
    env: dict[str, str] = field(default_factory=dict)
    unprivileged: bool = False  # run without capabilities (root reads mode-000 files)


def case(
    id: str,
    *args: str,
    expect: str,
    env: dict[str, str] | None = None,
    unprivileged: bool = False,
) -> Any:
    return pytest.param(Case(id, args, expect, env or {}, unprivileged), id=id)


NOT_YAML = {"PSO_CONFIG": "{d}/not-yaml.yaml"}
BAD_FIELD = {"PSO_CONFIG": "{d}/bad-field.yaml"}

CASES = [
    # ---- broker
    case("broker-port-range", "broker", "--port", "70000", expect="'--port'"),
    case("broker-port-not-a-number", "broker", "--port", "abc", expect="'--port'"),
    case("broker-data-dir-is-a-file", "broker", "--data-dir", "{d}/good.csv", expect="is a file"),
    case(
        "broker-data-dir-unwritable",
        "broker",
        "--data-dir",
        "{d}/read-only/broker",
        expect="permission denied: {d}/read-only/broker",
        unprivileged=True,
    ),
    case(
        "broker-bad-env",
        "broker",
        expect="embedded: Input should be 'auto', 'kafka' or 'tansu'",
        env={"PSO_EMBEDDED": "bogus"},
    ),
    case(
        "broker-fetch-cache-dir-is-a-file",
        "broker",
        "fetch",
        expect="not a directory: {d}/good.csv/cache",
        env={"PSO_CACHE_DIR": "{d}/good.csv/cache"},
    ),
    # ---- worker (the policy file and the environment are its configuration)
    case("worker-config-not-yaml", "worker", expect="not valid YAML", env=NOT_YAML),
    case("worker-config-bad-field", "worker", expect="resources.db-main.capacity", env=BAD_FIELD),
    case(
        "worker-config-missing",
        "worker",
        expect="config file not found",
        env={"PSO_CONFIG": "{d}/missing.yaml"},
    ),
    case(
        "worker-config-is-a-directory",
        "worker",
        expect="{d}/a-dir",
        env={"PSO_CONFIG": "{d}/a-dir"},
    ),
    case(
        "worker-config-unreadable",
        "worker",
        expect="permission denied: {d}/locked.yaml",
        env={"PSO_CONFIG": "{d}/locked.yaml"},
        unprivileged=True,
    ),
    case(
        "worker-bad-env-number", "worker", expect="window.size_s", env={"PSO_WINDOW__SIZE_S": "0"}
    ),
    case(
        "worker-bad-env-float",
        "worker",
        expect="commit_interval_s",
        env={"PSO_COMMIT_INTERVAL_S": "soon"},
    ),
    case("worker-bad-loglevel", "worker", "--loglevel", "loud", expect="'--loglevel'"),
    case(
        "worker-data-dir-is-a-file",
        "worker",
        expect="not a directory: {d}/good.csv",
        env={"PSO_DATA_DIR": "{d}/good.csv"},
    ),
    case(
        "worker-data-dir-unwritable",
        "worker",
        expect="permission denied: {d}/read-only",
        env={"PSO_DATA_DIR": "{d}/read-only/data"},
        unprivileged=True,
    ),
    # ---- demo (would start a broker and a worker: must fail before)
    case("demo-negative-duration", "demo", "--duration", "-1", expect="'--duration'"),
    case("demo-nan-duration", "demo", "--duration", "nan", expect="'--duration'"),
    case("demo-zero-speed", "demo", "--speed", "0", expect="'--speed'"),
    case("demo-infinite-speed", "demo", "--speed", "inf", expect="'--speed'"),
    case("demo-no-subsystems", "demo", "--subsystems", "0", expect="'--subsystems'"),
    case("demo-bad-env", "demo", expect="app_id", env={"PSO_APP_ID": "not an id"}),
    # ---- simulate
    case("simulate-output-is-a-directory", "simulate", "-o", "{d}/a-dir", expect="is a directory"),
    case(
        "simulate-output-parent-missing",
        "simulate",
        "-o",
        "{d}/missing/x.jsonl",
        expect="no such file or directory: {d}/missing/x.jsonl",
    ),
    case(
        "simulate-output-unwritable",
        "simulate",
        "-o",
        "{d}/read-only/x.jsonl",
        expect="permission denied: {d}/read-only/x.jsonl",
        unprivileged=True,
    ),
    case(
        "simulate-policy-is-a-directory",
        "simulate",
        "-o",
        "{d}/out.jsonl",
        "--write-policy",
        "{d}/a-dir",
        expect="is a directory",
    ),
    case(
        "simulate-zero-interval",
        "simulate",
        "-o",
        "{d}/o.jsonl",
        "--interval",
        "0s",
        expect="--interval",
    ),
    case(
        "simulate-bad-interval",
        "simulate",
        "-o",
        "{d}/o.jsonl",
        "--interval",
        "often",
        expect="--interval",
    ),
    case(
        "simulate-negative-duration",
        "simulate",
        "-o",
        "{d}/o.jsonl",
        "--duration",
        "-5m",
        expect="--duration",
    ),
    case(
        "simulate-no-subsystems",
        "simulate",
        "-o",
        "{d}/o.jsonl",
        "--subsystems",
        "0",
        expect="'--subsystems'",
    ),
    case(
        "simulate-start-out-of-range",
        "simulate",
        "-o",
        "{d}/o.jsonl",
        "--start",
        "1e30",
        expect="outside",
    ),
    case(
        "simulate-bad-start",
        "simulate",
        "-o",
        "{d}/o.jsonl",
        "--start",
        "yesterday",
        expect="bad time",
    ),
    case("simulate-no-target", "simulate", expect="exactly one of"),
    case("simulate-bad-topic", "simulate", "--topic", "a b", expect="topic name"),
    case(
        "simulate-topic-bad-env",
        "simulate",
        "--topic",
        "t",
        expect="topic_policy.partitions",
        env={"PSO_TOPIC_POLICY__PARTITIONS": "-3"},
    ),
    # ---- produce
    case("produce-missing", "produce", "{d}/missing.jsonl", expect="does not exist"),
    case("produce-directory", "produce", "{d}/a-dir", expect="is a directory"),
    case(
        "produce-unreadable",
        "produce",
        "{d}/locked.jsonl",
        expect="is not readable",
        unprivileged=True,
    ),
    case("produce-zero-batch", "produce", "{d}/good.jsonl", "--batch", "0", expect="'--batch'"),
    case("produce-bad-topic", "produce", "{d}/good.jsonl", "--topic", "a/b", expect="topic name"),
    case(
        "produce-bad-env",
        "produce",
        "{d}/good.jsonl",
        expect="security_protocol",
        env={"PSO_SECURITY_PROTOCOL": "CARRIER_PIGEON"},
    ),
    # ---- tail
    case("tail-zero-max", "tail", "t", "--max", "0", expect="'--max'"),
    case("tail-nan-idle", "tail", "t", "--idle-timeout", "nan", expect="'--idle-timeout'"),
    case("tail-bad-topic", "tail", "a b", expect="topic name"),
    case(
        "tail-bad-env",
        "tail",
        "t",
        expect="heartbeat_interval_s",
        env={"PSO_HEARTBEAT_INTERVAL_S": "-1"},
    ),
    # ---- topics create
    case(
        "topics-create-bad-env",
        "topics",
        "create",
        expect="topic_policy.partitions",
        env={"PSO_TOPIC_POLICY__PARTITIONS": "-3"},
    ),
    case(
        "topics-create-bad-env-number",
        "topics",
        "create",
        expect="topic_policy.replication",
        env={"PSO_TOPIC_POLICY__REPLICATION": "three"},
    ),
    # ---- schemas export
    case("schemas-dir-is-a-file", "schemas", "export", "--dir", "{d}/good.csv", expect="is a file"),
    case(
        "schemas-dir-unwritable",
        "schemas",
        "export",
        "--dir",
        "{d}/read-only/schemas",
        expect="permission denied: {d}/read-only/schemas",
        unprivileged=True,
    ),
    # ---- backtest
    case("backtest-input-missing", "backtest", "{d}/missing.jsonl", expect="does not exist"),
    case("backtest-input-directory", "backtest", "{d}/a-dir", expect="is a directory"),
    case(
        "backtest-input-unreadable",
        "backtest",
        "{d}/locked.jsonl",
        expect="is not readable",
        unprivileged=True,
    ),
    case(
        "backtest-output-is-a-file",
        "backtest",
        "{d}/good.jsonl",
        "-o",
        "{d}/good.csv",
        expect="is a file",
    ),
    case(
        "backtest-output-unwritable",
        "backtest",
        "{d}/good.jsonl",
        "-o",
        "{d}/read-only/out",
        expect="permission denied: {d}/read-only/out",
        unprivileged=True,
    ),
    case(
        "backtest-config-not-yaml",
        "backtest",
        "{d}/good.jsonl",
        "--config",
        "{d}/not-yaml.yaml",
        expect="not valid YAML",
    ),
    case(
        "backtest-config-bad-field",
        "backtest",
        "{d}/good.jsonl",
        "--config",
        "{d}/bad-field.yaml",
        expect="resources.db-main.capacity",
    ),
    case(
        "backtest-config-directory",
        "backtest",
        "{d}/good.jsonl",
        "--config",
        "{d}/a-dir",
        expect="is a directory",
    ),
    case(
        "backtest-env-config-unreadable",
        "backtest",
        "{d}/good.jsonl",
        expect="permission denied: {d}/locked.yaml",
        env={"PSO_CONFIG": "{d}/locked.yaml"},
        unprivileged=True,
    ),
    case(
        "backtest-env-config-not-yaml",
        "backtest",
        "{d}/good.jsonl",
        expect="not valid YAML",
        env=NOT_YAML,
    ),
    case(
        "backtest-bad-env",
        "backtest",
        "{d}/good.jsonl",
        expect="window.size_s",
        env={"PSO_WINDOW__SIZE_S": "-60"},
    ),
    case(
        "backtest-zero-workers",
        "backtest",
        "{d}/good.jsonl",
        "--workers",
        "0",
        expect="'--workers'",
    ),
    case(
        "backtest-bad-set", "backtest", "{d}/good.jsonl", "--set", "window.nope=3", expect="--set"
    ),
    case(
        "backtest-range-without-topic",
        "backtest",
        "{d}/good.jsonl",
        "--from",
        "2026-01-01",
        expect="--topic",
    ),
    case("backtest-bad-time", "backtest", "--topic", "t", "--from", "noon", expect="bad time"),
    case("backtest-bad-topic", "backtest", "--topic", "a b", expect="topic name"),
    # ---- replay
    case(
        "replay-zero-speed",
        "replay",
        "--from-topic",
        "a",
        "--to-topic",
        "b",
        "--speed",
        "0x",
        expect="bad speed",
    ),
    case(
        "replay-bad-time",
        "replay",
        "--from-topic",
        "a",
        "--to-topic",
        "b",
        "--to",
        "later",
        expect="bad time",
    ),
    case(
        "replay-bad-seek",
        "replay",
        "--from-topic",
        "a",
        "--to-topic",
        "b",
        "--seek",
        "fast",
        expect="bad seek",
    ),
    case(
        "replay-bad-topic", "replay", "--from-topic", "a:b", "--to-topic", "b", expect="topic name"
    ),
    case(
        "replay-bad-env",
        "replay",
        "--from-topic",
        "a",
        "--to-topic",
        "b",
        expect="session_timeout_s",
        env={"PSO_SESSION_TIMEOUT_S": "0"},
    ),
    # ---- score-anomalies
    case(
        "score-input-missing",
        "score-anomalies",
        "{d}/missing.csv",
        "-o",
        "{d}/o.csv",
        expect="does not exist",
    ),
    case(
        "score-input-directory",
        "score-anomalies",
        "{d}/a-dir",
        "-o",
        "{d}/o.csv",
        expect="is a directory",
    ),
    case(
        "score-input-unreadable",
        "score-anomalies",
        "{d}/locked.csv",
        "-o",
        "{d}/o.csv",
        expect="is not readable",
        unprivileged=True,
    ),
    case(
        "score-output-directory",
        "score-anomalies",
        "{d}/good.csv",
        "-o",
        "{d}/a-dir",
        expect="is a directory",
    ),
    case(
        "score-output-unwritable",
        "score-anomalies",
        "{d}/good.csv",
        "-o",
        "{d}/read-only/o.csv",
        expect="permission denied: {d}/read-only/o.csv",
        unprivileged=True,
    ),
    case(
        "score-nan-threshold",
        "score-anomalies",
        "{d}/good.csv",
        "-o",
        "{d}/o.csv",
        "--threshold",
        "nan",
        expect="'--threshold'",
    ),
    case(
        "score-threshold-above-one",
        "score-anomalies",
        "{d}/good.csv",
        "-o",
        "{d}/o.csv",
        "--threshold",
        "2",
        expect="'--threshold'",
    ),
    case(
        "score-threshold-just-above-one",  # was "1 is not in (0, 1]"
        "score-anomalies",
        "{d}/good.csv",
        "-o",
        "{d}/o.csv",
        "--threshold",
        "1.0000001",
        expect="1.0000001 is not in (0, 1]",
    ),
    case("score-bad-row", "score-anomalies", "{d}/bad-row.csv", "-o", "{d}/o.csv", expect="row 3"),
    case(
        "score-no-such-column",
        "score-anomalies",
        "{d}/good.csv",
        "-o",
        "{d}/o.csv",
        "--value-column",
        "cpu",
        expect="missing column 'cpu'",
    ),
    case(
        "score-bad-delimiter",
        "score-anomalies",
        "{d}/good.csv",
        "-o",
        "{d}/o.csv",
        "--delimiter",
        "ab",
        expect="not a delimiter",
    ),
    # ---- forecast
    case(
        "forecast-input-missing",
        "forecast",
        "{d}/missing.csv",
        "-o",
        "{d}/o.csv",
        expect="does not exist",
    ),
    case(
        "forecast-input-directory",
        "forecast",
        "{d}/a-dir",
        "-o",
        "{d}/o.csv",
        expect="is a directory",
    ),
    case(
        "forecast-input-unreadable",
        "forecast",
        "{d}/locked.csv",
        "-o",
        "{d}/o.csv",
        expect="is not readable",
        unprivileged=True,
    ),
    case(
        "forecast-output-directory",
        "forecast",
        "{d}/good.csv",
        "-o",
        "{d}/a-dir",
        expect="is a directory",
    ),
    case(
        "forecast-output-parent-missing",
        "forecast",
        "{d}/good.csv",
        "-o",
        "{d}/missing/o.csv",
        expect="no such file or directory: {d}/missing/o.csv",
    ),
    case(
        "forecast-output-unwritable",
        "forecast",
        "{d}/good.csv",
        "-o",
        "{d}/read-only/o.csv",
        expect="permission denied: {d}/read-only/o.csv",
        unprivileged=True,
    ),
    case(
        "forecast-zero-horizon",
        "forecast",
        "{d}/good.csv",
        "-o",
        "{d}/o.csv",
        "--horizon",
        "0",
        expect="'--horizon'",
    ),
    case(
        "forecast-level-100",
        "forecast",
        "{d}/good.csv",
        "-o",
        "{d}/o.csv",
        "--level",
        "100",
        expect="'--level'",
    ),
    case(
        "forecast-nan-level",
        "forecast",
        "{d}/good.csv",
        "-o",
        "{d}/o.csv",
        "--level",
        "nan",
        expect="'--level'",
    ),
    case("forecast-bad-row", "forecast", "{d}/bad-row.csv", "-o", "{d}/o.csv", expect="row 3"),
    # ---- bench closed-loop
    case(
        "bench-telemetry-without-config",
        "bench",
        "closed-loop",
        "--telemetry",
        "{d}/good.jsonl",
        expect="--telemetry and --config go together",
    ),
    case(
        "bench-scenario-and-telemetry",
        "bench",
        "closed-loop",
        "--scenario",
        "steady",
        "--telemetry",
        "{d}/good.jsonl",
        "--config",
        "{d}/elastic.yaml",
        expect="give --scenario or --telemetry, not both",
    ),
    case(
        "bench-unknown-scenario", "bench", "closed-loop", "--scenario", "x", expect="'--scenario'"
    ),
    case(
        "bench-warmup-covers-the-run",
        "bench",
        "closed-loop",
        "--scenario",
        "steady",
        "--days",
        "1",
        expect="the warm-up covers the whole run",
    ),
    case("bench-bad-warmup", "bench", "closed-loop", "--warmup", "soon", expect="--warmup"),
    case(
        "bench-telemetry-missing",
        "bench",
        "closed-loop",
        "--telemetry",
        "{d}/missing.jsonl",
        "--config",
        "{d}/elastic.yaml",
        expect="does not exist",
    ),
    case(
        "bench-config-bad-field",
        "bench",
        "closed-loop",
        "--telemetry",
        "{d}/good.jsonl",
        "--config",
        "{d}/bad-field.yaml",
        expect="resources.db-main.capacity",
    ),
    case(
        "bench-telemetry-without-the-resources",
        "bench",
        "closed-loop",
        "--telemetry",
        "{d}/good.jsonl",
        "--config",
        "{d}/elastic.yaml",
        expect="no resource of the configuration (db-main) appears in the telemetry",
    ),
    case(
        "bench-output-is-a-file",
        "bench",
        "closed-loop",
        "-o",
        "{d}/good.csv",
        expect="is a file",
    ),
    case(
        "simulate-scenario-to-a-topic",
        "simulate",
        "--scenario",
        "steady",
        "--topic",
        "pso.telemetry",
        expect="--scenario writes a file and its ground truth",
    ),
    case(
        "simulate-scenario-part-days",
        "simulate",
        "--scenario",
        "steady",
        "-o",
        "{d}/o.jsonl",
        "--duration",
        "36h",
        expect="a scenario runs whole days",
    ),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Good, bad, missing, locked (mode 000) and read-only (mode 555) paths."""
    d = tmp_path_factory.mktemp("cli-errors")
    (d / "good.csv").write_text("timestamp,value\n2026-01-01T00:00:00Z,1\n2026-01-01T00:01:00Z,2\n")
    (d / "bad-row.csv").write_text("timestamp,value\n2026-01-01T00:00:00Z,1\nnoon,2\n")
    (d / "good.jsonl").write_text(
        '{"subsystem": "api", "ts": 1795564800000, "metrics": {"rps": 1.0}}\n'
    )
    (d / "not-yaml.yaml").write_text("resources: [db-main\n")
    (d / "bad-field.yaml").write_text("resources:\n  db-main: {capacity: zero}\n")
    (d / "elastic.yaml").write_text(
        "resources:\n  db-main: {capacity: 10, elastic: {min: 5, max: 20, step: 1}}\n"
    )
    (d / "a-dir").mkdir()
    for name in ("locked.csv", "locked.jsonl", "locked.yaml"):
        (d / name).write_text("timestamp,value\n")
        (d / name).chmod(0o000)
    (d / "read-only").mkdir()
    (d / "read-only").chmod(0o555)
    yield d
    (d / "read-only").chmod(0o755)


@pytest.fixture(scope="module")
def cli_server() -> Iterator[subprocess.Popen[str]]:
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.cli_forkserver"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    with server:  # closes its pipes on the way out
        yield server
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)


def run_cli(
    server: subprocess.Popen[str],
    args: list[str],
    env: dict[str, str],
    cwd: Path,
    unprivileged: bool = False,
) -> dict[str, Any]:
    assert server.stdin is not None and server.stdout is not None
    request = {"args": args, "env": env, "cwd": str(cwd), "drop_privileges": unprivileged}
    server.stdin.write(json.dumps(request) + "\n")
    server.stdin.flush()
    reply: dict[str, Any] = json.loads(server.stdout.readline())
    return reply


# Every row: a broker address that refuses connections (a check that came after the network
# would show "cannot reach Kafka" instead of the row's message), and a strong snapshot key (a
# start-up check of the key must not be what a row trips over).
BASE_ENV = {"PSO_BROKER": "127.0.0.1:1", "PSO_SNAPSHOT_KEY": secrets.token_hex(32)}


@pytest.mark.parametrize("bad", CASES)
def test_user_error_is_one_line_exit_2(
    bad: Case, files: Path, cli_server: subprocess.Popen[str]
) -> None:
    def fill(text: str) -> str:
        return text.replace("{d}", str(files))

    env = {**BASE_ENV, **{k: fill(v) for k, v in bad.env.items()}}
    result = run_cli(cli_server, [fill(a) for a in bad.args], env, files, bad.unprivileged)
    stderr = result["stderr"]
    assert "Traceback" not in stderr, stderr
    assert result["code"] == 2, (result["code"], stderr)
    assert len(stderr.splitlines()) == 1 and stderr.endswith("\n"), stderr
    assert stderr.startswith("error: ") and fill(bad.expect) in stderr, stderr
    assert result["stdout"] == "", result["stdout"]


def test_unprivileged_rows_really_meet_permission_errors(
    files: Path, cli_server: subprocess.Popen[str]
) -> None:
    """The same command that fails without capabilities succeeds with them (as root)."""
    args = ["forecast", str(files / "locked.csv"), "-o", str(files / "o.csv")]
    denied = run_cli(cli_server, args, {}, files, unprivileged=True)
    assert "is not readable" in denied["stderr"], denied
    if os.geteuid() == 0:  # root with its capabilities reads the mode-000 file
        allowed = run_cli(cli_server, args, {}, files)
        assert "is not readable" not in allowed["stderr"], allowed


def test_every_command_has_rows() -> None:
    """A command added to ``pso`` without error rows here fails this test."""
    from typer.main import get_command

    from app.cli.main import cli

    def leaves(group: Any, prefix: str) -> set[str]:
        names = set()
        for name, sub in group.commands.items():
            if hasattr(sub, "commands") and sub.commands:
                names |= leaves(sub, f"{prefix}{name} ")
                if getattr(sub, "invoke_without_command", False):
                    names.add(f"{prefix}{name}")
            else:
                names.add(f"{prefix}{name}")
        return names

    commands = leaves(get_command(cli), "")
    covered = set()
    for param in CASES:
        (bad,) = param.values
        two = " ".join(bad.args[:2])
        covered.add(two if two in commands else bad.args[0])
    assert commands <= covered, sorted(commands - covered)


# ---- bugs are not user errors


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """An internal error escapes `main` (the interpreter prints its traceback, exit 1)."""
    import app.cli.schemas

    def broken() -> dict[str, bytes]:
        return {"x": 1 / 0}  # type: ignore[dict-item]

    monkeypatch.setattr(app.cli.schemas, "render_schemas", broken)
    monkeypatch.setattr(sys, "argv", ["pso", "schemas", "export", "--check"])
    with pytest.raises(ZeroDivisionError):
        main()


def test_user_error_message_tells_bugs_from_user_errors() -> None:
    assert user_error_message(UsageError("bad --x")) == "bad --x"
    assert user_error_message(PermissionError(13, "Permission denied", "/etc/x")) == (
        "permission denied: /etc/x"
    )
    assert user_error_message(OSError(13, "Permission denied")) is None  # no path: not ours
    assert user_error_message(OSError(98, "Address already in use", "x")) is None
    assert user_error_message(ValueError("interval_ms must be >= 1")) is None
    assert user_error_message(KeyError("api")) is None


def test_exit_code_comes_from_the_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that failed on its way (exit code 3: a restart may fix it) is one line too."""
    import app.cli.schemas
    from agents.checkpoints import ReplayStalled

    def refuse() -> dict[str, bytes]:
        raise ReplayStalled("replay of pso.telemetry:0 stalled at offset 7")

    monkeypatch.setattr(app.cli.schemas, "render_schemas", refuse)
    monkeypatch.setattr(sys, "argv", ["pso", "schemas", "export", "--check"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 3
    captured = capsys.readouterr()
    assert captured.err == "error: replay of pso.telemetry:0 stalled at offset 7\n"
    assert captured.out == ""


def test_every_pso_error_is_a_user_error_message() -> None:
    """`user_error_message` relies on the base: no list of classes to keep up to date."""
    from app.dev.broker import BrokerError
    from app.kafka.connection import BrokerUnreachable
    from app.kafka.range import TopicNotFound
    from app.settings import ConfigError

    class Brandnew(PsoError):
        pass

    for error in (ConfigError, BrokerError, BrokerUnreachable, TopicNotFound, Brandnew):
        assert user_error_message(error("one line")) == "one line"
