"""`pso backtest`: the prediction engine offline over a recorded file or topic range."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.args import check_topic
from app.cli.common import bootstrap_for, err_console, parse_time_ms, progress, settings
from app.errors import UsageError
from app.offline.backtest import apply_overrides, copy_topic, run_backtest
from app.settings import load_policy


def backtest(
    input: Annotated[
        Path | None,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="telemetry .jsonl or .csv (or use --topic)",
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", file_okay=False, help="output directory")
    ] = Path("backtest-out"),
    topic: Annotated[
        str | None,
        typer.Option(help="read a Kafka topic range instead", callback=check_topic),
    ] = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="with --topic: first record time (RFC 3339)")
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", help="with --topic: end record time (RFC 3339)")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            readable=True,
            help="pso.yaml (default: PSO_CONFIG or built-in)",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="what-if: KEY=VALUE into pso.yaml (repeatable)"),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="stage-1 processes")] = 2,
    labels: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            readable=True,
            help="operators' labels (JSONL, as on pso.labels), replayed in event time; "
            "compared with a run without them",
        ),
    ] = None,
) -> None:
    """Replay telemetry through the prediction engine offline and score it."""

    if (input is None) == (topic is None):
        raise UsageError("give exactly one of INPUT or --topic TOPIC")
    if topic is None and (from_ or to):
        raise UsageError("--from and --to select a range of --topic; an INPUT file is whole")
    start_ms = parse_time_ms(from_) if from_ else None
    end_ms = parse_time_ms(to) if to else None
    s = settings()
    policy = load_policy(config) if config is not None else s.policy()
    overrides = list(set_ or [])
    if overrides:
        apply_overrides(policy, overrides)  # fail fast, before reading anything
    with tempfile.TemporaryDirectory(prefix="pso-topic-") as tmp:
        source = input
        if topic is not None:
            import asyncio

            source = Path(tmp) / "topic.jsonl"
            n = asyncio.run(copy_topic(s, bootstrap_for(s), topic, start_ms, end_ms, source))
            err_console.print(f"read {n} records from {topic}")
        assert source is not None
        with progress() as bar:
            tasks: dict[str, Any] = {}

            def report(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    label = "lines" if stage == "ingest" else "windows -> conflicts"
                    tasks[stage] = bar.add_task(label, total=total)
                bar.update(tasks[stage], completed=done, total=total)

            metrics = run_backtest(  # a BacktestError is a PsoError: one line, exit 2
                source,
                policy,
                output,
                overrides=overrides,
                workers=workers,
                progress=report,
                labels=labels,
            )
    inp, conf = metrics["input"], metrics["conflicts"]["overall"]
    err_console.print(
        f"{inp['samples']} samples, {inp['windows']} windows, "
        f"{inp['invalid_lines']} invalid lines, {conf['episodes']} conflict episodes "
        f"(recall {_fmt(conf['recall'])}, precision {_fmt(conf['precision'])}) "
        f"in {metrics['runtime']['seconds']:.1f} s -> {output}"
    )
    if labels is not None:
        taught = metrics["labels"]
        before, after = taught["before"], taught["after"]
        stray = taught["names_no_alarm"]
        named = f" ({stray} naming no alarm of the run without labels)" if stray else ""
        err_console.print(
            f"labels: {taught['applied']} applied{named}, {taught['rejected']} rejected; conflict "
            f"precision {_fmt(before['conflict_precision'])} -> "
            f"{_fmt(after['conflict_precision'])}, anomaly alarms {before['anomaly_events']} -> "
            f"{after['anomaly_events']} (labelled false: "
            f"{before['labelled_alarms']['anomalies']['false']} -> "
            f"{after['labelled_alarms']['anomalies']['false']})"
        )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
