"""The ``pso`` command line (typer + rich).

Every failure a user can cause (bad argument, unusable file, bad config, unreachable broker)
is one readable line on stderr and exit code 2, decided in one place: `main`. Arguments are
checked while parsing (typer/click checks and callbacks), so a command that talks to Kafka
fails on a bad argument before any network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from app.cli_args import check_loglevel, check_topic, finite_between
from app.errors import PsoError, UsageError, path_error_message
from app.events import SCHEMAS
from app.settings import ConfigError, Settings, load_settings

cli = typer.Typer(
    name="pso",
    help="PSO, the predictive system orchestrator: forecasts shared-resource conflicts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
broker_cli = typer.Typer(help="The embedded Apache Kafka broker.", invoke_without_command=True)
topics_cli = typer.Typer(help="PSO's Kafka topics.", no_args_is_help=True)
schemas_cli = typer.Typer(
    help="JSON Schemas of every message PSO reads or writes.", no_args_is_help=True
)
cli.add_typer(broker_cli, name="broker")
cli.add_typer(topics_cli, name="topics")
cli.add_typer(schemas_cli, name="schemas")

err_console = Console(stderr=True)
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


# --------------------------------------------------------------------------- helpers


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(text: str, option: str = "duration") -> int:
    """``90s``, ``5m``, ``2h``, ``1d``, ``1w`` (bare numbers are seconds) -> milliseconds (>= 1)."""
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f"{option}: bad duration {text!r} (use e.g. 30s, 5m, 2h, 1d, 1w)")
    number, unit = match.groups()
    ms = int(float(number) * _UNIT_MS[unit or "s"])
    if ms < 1:
        raise UsageError(f"{option}: {text!r} is not a duration (at least 1 ms)")
    return ms


_LAST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def parse_time_ms(text: str) -> int:
    """RFC 3339 (``2026-11-25T06:00:00Z``; naive = UTC) or epoch s/ms -> epoch ms.

    Kafka record timestamps are non-negative int64, and RFC 3339 ends with year 9999.
    """
    from app.series_tools import parse_timestamp

    try:
        ms = parse_timestamp(text)
    except ValueError:
        raise UsageError(f"bad time {text!r} (use RFC 3339, e.g. 2026-11-25T06:00:00Z)") from None
    if not 0 <= ms <= _LAST_MS:
        raise UsageError(f"time {text!r} is outside 1970-01-01 .. 9999-12-31")
    return ms


def settings() -> Settings:
    return load_settings()


def bootstrap_for(s: Settings) -> str:
    """The broker to talk to: ``PSO_BROKER``, else a running embedded broker."""
    if s.broker:
        return s.broker
    from app.broker import running_embedded

    found = running_embedded()
    if found is None:
        raise UsageError(
            "no Kafka broker: set PSO_BROKER=host:port, or start one with `pso broker`"
        )
    return found


@contextlib.contextmanager
def progress() -> Iterator[Progress]:
    """A progress bar on stderr that is wiped when the work fails: the error is the one line."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )
    with bar:
        try:
            yield bar
        except BaseException:
            bar.live.transient = True  # stop without drawing the bar (or its trailing newline)
            bar.live.stop()
            bar.disable = True
            raise


# --------------------------------------------------------------------------- broker


@broker_cli.callback()
def broker_main(
    ctx: typer.Context,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="listen port (default: a free one)")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(file_okay=False, help="log dir (default: a temp dir)")
    ] = None,
) -> None:
    """Run the embedded single-node Kafka (KRaft) in the foreground until Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    from app.broker import run_foreground

    run_foreground(port=port, data_dir=data_dir)


@broker_cli.command("fetch")
def broker_fetch() -> None:
    """Download the broker jars from Maven Central into the cache (idempotent)."""
    from app.broker import fetch_jars

    path = fetch_jars()
    err_console.print(f"kafka jars ready in {path}")


# --------------------------------------------------------------------------- worker


@cli.command()
def worker(
    loglevel: Annotated[
        str, typer.Option(help="debug, info, warning", callback=check_loglevel)
    ] = "info",
) -> None:
    """Run a PSO worker (Faust) against PSO_BROKER or the running embedded broker."""
    s = settings()
    s.policy()  # validate pso.yaml before starting anything
    if s.broker and s.uses_builtin_snapshot_key and not s.dev_mode:
        # Anyone who can write a changelog could seal a pickle with the public key.
        raise UsageError(
            "the built-in snapshot key is public, a worker on PSO_BROKER must not use it: set "
            "PSO_SNAPSHOT_KEY to a secret of 32+ bytes (and keep the built-in key out of "
            "PSO_SNAPSHOT_KEYS_PREVIOUS), or PSO_DEV_MODE=true on a development setup"
        )
    bootstrap = bootstrap_for(s)
    from agents.worker import run_worker

    run_worker(s, bootstrap, loglevel=loglevel)


# --------------------------------------------------------------------------- topics


@topics_cli.command("create")
def topics_create() -> None:
    """Create PSO's topics (idempotent) with partitions, retention and compaction from settings."""
    s = settings()
    from app.topics import create_topics

    result = asyncio.run(create_topics(s, bootstrap_for(s)))
    for name, status in result.items():
        err_console.print(f"{status:8} {name}")


# --------------------------------------------------------------------------- schemas


def render_schemas() -> dict[str, bytes]:
    """Schema file name -> canonical JSON bytes, generated from `app.events`."""
    out = {}
    for name, model in SCHEMAS.items():
        schema = model.model_json_schema()
        schema["$id"] = f"https://pso.dev/schemas/{name}"
        out[name] = json.dumps(schema, indent=2, sort_keys=True).encode() + b"\n"
    return out


@schemas_cli.command("export")
def schemas_export(
    out_dir: Annotated[
        Path, typer.Option("--dir", file_okay=False, help="where to write")
    ] = SCHEMA_DIR,
    check: Annotated[
        bool, typer.Option(help="fail if the files differ instead of writing")
    ] = False,
) -> None:
    """Write schemas/*.json from the pydantic models (or --check that they are in sync)."""
    rendered = render_schemas()
    if check:
        stale = [
            n
            for n, data in rendered.items()
            if not (out_dir / n).is_file() or (out_dir / n).read_bytes() != data
        ]
        if stale:
            raise UsageError(f"schemas out of date: {', '.join(stale)} (run `pso schemas export`)")
        err_console.print(f"{len(rendered)} schemas in sync")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in rendered.items():
        (out_dir / name).write_bytes(data)
    err_console.print(f"wrote {len(rendered)} schemas to {out_dir}")


# --------------------------------------------------------------------------- simulate / produce


@cli.command()
def simulate(
    subsystems: Annotated[int, typer.Option(min=1, max=100_000, help="how many subsystems")] = 8,
    seed: Annotated[int, typer.Option(help="seed: same seed, same telemetry")] = 0,
    start: Annotated[str, typer.Option(help="event time of the first sample")] = (
        "2026-11-23T00:00:00Z"
    ),
    duration: Annotated[str, typer.Option(help="event-time span, e.g. 1h, 1d, 1w")] = "1h",
    interval: Annotated[str, typer.Option(help="time between samples of one subsystem")] = "10s",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", dir_okay=False, help="write JSONL here")
    ] = None,
    topic: Annotated[
        str | None, typer.Option(help="produce to this topic instead", callback=check_topic)
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="samples per message (batch envelope)")] = 1,
    no_incidents: Annotated[bool, typer.Option(help="no injected spikes or shifts")] = False,
    write_policy: Annotated[
        Path | None,
        typer.Option(dir_okay=False, help="also write a pso.yaml with capacities for this fleet"),
    ] = None,
) -> None:
    """Generate deterministic telemetry (daily/weekly cycles, noise, trends, shared resources)."""
    from app.simulator import FleetSimulator

    if (output is None) == (topic is None):
        raise UsageError("give exactly one of -o FILE or --topic TOPIC")
    sim = FleetSimulator(
        subsystems=subsystems,
        seed=seed,
        start_ms=parse_time_ms(start),
        interval_ms=parse_duration_ms(interval, "--interval"),
        incidents=not no_incidents,
    )
    duration_ms = parse_duration_ms(duration, "--duration")
    total = (duration_ms // sim.interval_ms) * subsystems
    if write_policy is not None:
        write_policy.write_text(policy_yaml(sim))
    samples = sim.samples(duration_ms)
    if output is not None:
        with output.open("wb") as fh, progress() as bar:
            task = bar.add_task("simulate", total=total)
            for chunk in _batched_by_subsystem(samples, batch):
                fh.write(orjson.dumps(chunk if batch > 1 else chunk[0]) + b"\n")
                bar.advance(task, len(chunk))
        return
    assert topic is not None
    s = settings()
    asyncio.run(_produce_samples(s, bootstrap_for(s), topic, samples, total, batch))


def policy_yaml(sim: Any) -> str:
    import yaml

    policy = sim.policy().model_dump(mode="json", exclude={"prediction"})
    return str(yaml.safe_dump(policy, sort_keys=False))


def _batched_by_subsystem(
    samples: Iterator[dict[str, Any]], size: int
) -> Iterator[list[dict[str, Any]]]:
    """Group consecutive samples into per-subsystem batches of up to ``size``."""
    pending: dict[str, list[dict[str, Any]]] = {}
    for sample in samples:
        group = pending.setdefault(sample["subsystem"], [])
        group.append(sample)
        if len(group) >= size:
            yield group
            del pending[sample["subsystem"]]
    for name in sorted(pending):
        yield pending[name]


async def _produce_samples(
    s: Settings,
    bootstrap: str,
    topic: str,
    samples: Iterator[dict[str, Any]],
    total: int | None,
    batch: int,
) -> None:
    from app.client import TelemetryProducer

    async with TelemetryProducer(s, bootstrap, topic=topic, batch_size=batch) as producer:
        with progress() as bar:
            task = bar.add_task(f"produce -> {topic}", total=total)
            for sample in samples:
                await producer.send(sample)
                bar.advance(task)


@cli.command()
def produce(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="JSONL: one sample or batch array per line",
        ),
    ],
    topic: Annotated[
        str | None,
        typer.Option(help="target topic (default: the telemetry topic)", callback=check_topic),
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="samples per message")] = 100,
) -> None:
    """Validate a JSONL telemetry file and produce it, keyed by subsystem."""
    s = settings()
    asyncio.run(_produce_file(s, bootstrap_for(s), file, topic or s.topics.telemetry, batch))


async def _produce_file(s: Settings, bootstrap: str, file: Path, topic: str, batch: int) -> None:
    from app.client import TelemetryProducer, iter_jsonl_samples

    lines = sum(1 for _ in file.open("rb"))
    bad = 0
    async with TelemetryProducer(s, bootstrap, topic=topic, batch_size=batch) as producer:
        with progress() as bar:
            task = bar.add_task(f"produce {file.name} -> {topic}", total=lines)
            for lineno, sample, error in iter_jsonl_samples(file):
                if sample is None:
                    bad += 1
                    err_console.print(f"[yellow]line {lineno}: {error} (skipped)")
                else:
                    await producer.send(sample)
                bar.update(task, completed=lineno)
    err_console.print(
        f"sent {producer.sent} samples in {producer.messages} messages; {bad} invalid"
    )


# --------------------------------------------------------------------------- tail


@cli.command()
def tail(
    topic: Annotated[
        str, typer.Argument(help="topic to read, e.g. pso.load", callback=check_topic)
    ],
    as_json: Annotated[bool, typer.Option("--json", help="one raw JSON value per line")] = False,
    from_beginning: Annotated[bool, typer.Option(help="start at the earliest offset")] = True,
    max_messages: Annotated[int | None, typer.Option("--max", min=1, help="stop after N")] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            help="stop after N idle seconds", callback=finite_between(0, 1e9, low_open=True)
        ),
    ] = None,
) -> None:
    """Print messages of a topic as they arrive."""
    s = settings()
    asyncio.run(
        _tail(s, bootstrap_for(s), topic, as_json, from_beginning, max_messages, idle_timeout)
    )


async def _tail(
    s: Settings,
    bootstrap: str,
    topic: str,
    as_json: bool,
    from_beginning: bool,
    max_messages: int | None,
    idle_timeout: float | None,
) -> None:
    from app.kafka_io import start_consumer

    console = Console()
    consumer = await start_consumer(
        s, bootstrap, topic, auto_offset_reset="earliest" if from_beginning else "latest"
    )
    seen = 0
    idle = 0.0
    try:
        while max_messages is None or seen < max_messages:
            batches = await consumer.getmany(timeout_ms=500)
            if not batches:
                idle += 0.5
                if idle_timeout is not None and idle >= idle_timeout:
                    return
                continue
            idle = 0.0
            for _tp, records in sorted(batches.items(), key=lambda kv: kv[0].partition):
                for rec in records:
                    seen += 1
                    value = rec.value or b""
                    if as_json:
                        sys.stdout.write(value.decode("utf-8", "replace") + "\n")
                    else:
                        key = rec.key.decode("utf-8", "replace") if rec.key else "-"
                        console.print(
                            f"[dim]{rec.partition}:{rec.offset}[/] [bold]{key}[/] ", end=""
                        )
                        console.print_json(value.decode("utf-8", "replace")) if _is_json(
                            value
                        ) else console.print(repr(value))
                    if max_messages is not None and seen >= max_messages:
                        return
            sys.stdout.flush()
    finally:
        await consumer.stop()


def _is_json(value: bytes) -> bool:
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    return True


# --------------------------------------------------------------------------- series tools


def _series_tool(source: Path, run: Any) -> int:
    from app.series_tools import SeriesFileError, count_rows

    total = count_rows(source)
    with progress() as bar:
        task = bar.add_task(source.name, total=total)
        try:
            rows: int = run(lambda n: bar.advance(task, n))
        except SeriesFileError as exc:
            raise UsageError(f"{source}: {exc}") from None
    return rows


_CSV_IN = typer.Argument(
    exists=True, dir_okay=False, readable=True, help="CSV with columns timestamp,value"
)
_CSV_OUT = typer.Option("-o", "--output", dir_okay=False, help="CSV to write")


@cli.command("score-anomalies")
def score_anomalies_cmd(
    source: Annotated[Path, _CSV_IN],
    output: Annotated[Path, _CSV_OUT],
    threshold: Annotated[
        float | None,
        typer.Option(
            help="is_anomaly threshold on the calibrated likelihood (default 0.45)",
            callback=finite_between(0, 1, low_open=True),
        ),
    ] = None,
) -> None:
    """Score an exported series online: adds anomaly_score in [0, 1] and is_anomaly."""
    from app.series_tools import score_anomalies

    rows = _series_tool(source, lambda p: score_anomalies(source, output, p, threshold))
    err_console.print(f"scored {rows} rows -> {output}")


@cli.command("forecast")
def forecast_cmd(
    source: Annotated[Path, _CSV_IN],
    output: Annotated[Path, _CSV_OUT],
    horizon: Annotated[int, typer.Option(min=1, max=240, help="rows ahead")] = 15,
    level: Annotated[
        float,
        typer.Option(
            help="interval coverage in percent",
            callback=finite_between(0, 100, low_open=True, high_open=True),
        ),
    ] = 80.0,
) -> None:
    """Forecast an exported series online: adds yhat_1..H, lo_1..H, hi_1..H per row."""
    from app.series_tools import forecast_series

    rows = _series_tool(
        source, lambda p: forecast_series(source, output, horizon, level / 100.0, p)
    )
    err_console.print(f"forecast {rows} rows -> {output}")


# --------------------------------------------------------------------------- demo


@cli.command()
def demo(
    duration: Annotated[
        float,
        typer.Option(
            help="stop after N seconds (0 = until Ctrl-C)", callback=finite_between(0, 1e9)
        ),
    ] = 0,
    subsystems: Annotated[int, typer.Option(min=1, max=10_000, help="simulated subsystems")] = 8,
    speed: Annotated[
        float,
        typer.Option(
            help="event time runs this many times faster",
            callback=finite_between(0, 1e6, low_open=True),
        ),
    ] = 60.0,
) -> None:
    """Embedded broker + topics + one worker + the simulator, with a live view of load windows."""
    from app.demo import run_demo

    code = run_demo(settings(), duration_s=duration, subsystems=subsystems, speed=speed)
    raise typer.Exit(code)


# --------------------------------------------------------------------------- elsewhere


def _register_commands() -> None:
    from app.backtest import register as register_backtest
    from app.replay import register as register_replay

    register_backtest(cli)
    register_replay(cli)


_register_commands()


# --------------------------------------------------------------------------- entry point


def user_error_message(exc: BaseException) -> str | None:
    """The one line to show for an error the user caused; None for a bug (keeps its traceback).

    The one place that decides what is a user error: `PsoError` (and the older errors below,
    until they derive from it), typer/click's usage errors, and an `OSError` about a path
    (missing, a directory, not allowed...). Anything else is a bug.
    """
    from app.broker import BrokerError
    from app.kafka_io import BrokerUnreachable

    if isinstance(exc, PsoError | ConfigError | BrokerError | BrokerUnreachable):
        return str(exc)
    if isinstance(exc, typer.TyperException):  # click's usage errors (typer vendors click)
        return exc.format_message()
    if isinstance(exc, OSError):
        return path_error_message(exc)
    return None


def _print_error(message: str) -> None:
    if message:  # a usage error that showed the help instead has no message of its own
        err_console.print(
            Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True
        )


def main() -> None:
    """Run the CLI: a user error is one line on stderr and exit code 2; a bug raises."""
    import logging

    if sys.argv[1:2] != ["worker"]:
        # Client libraries log connection retries as warnings; the CLI says it in one line.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        code = cli(standalone_mode=False)  # returns the exit code of typer.Exit
        if isinstance(code, int) and code:
            sys.exit(code)
    except (KeyboardInterrupt, typer.Abort):
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        message = user_error_message(exc)
        if message is None:
            raise  # a bug: the traceback says where
        _print_error(message)
        sys.exit(exc.exit_code if isinstance(exc, PsoError) else 2)


if __name__ == "__main__":
    main()
