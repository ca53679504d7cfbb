"""`pso bench closed-loop`: every policy on every chosen scenario (or a recorded trace) in the
closed loop, as a table, JSON rows or an HTML report."""

from __future__ import annotations

import shlex
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from app.cli.args import finite_between
from app.cli.common import err_console, parse_duration_ms, progress
from app.errors import UsageError

bench_cli = typer.Typer(
    help="Benchmarks that compare PSO with other policies.", no_args_is_help=True
)


class ScenarioName(StrEnum):
    steady = "steady"
    daily_peaks = "daily-peaks"
    noisy_neighbour = "noisy-neighbour"
    batch_collision = "batch-collision"
    incident = "incident"
    flash_crowd = "flash-crowd"


class PolicyName(StrEnum):
    none = "none"
    reactive = "reactive"
    hpa = "hpa"
    pso = "pso"
    oracle = "oracle"


@bench_cli.command("closed-loop")
def closed_loop(
    scenario: Annotated[
        list[ScenarioName] | None,
        typer.Option(help="scenario to run (repeatable; default: all of them)"),
    ] = None,
    telemetry: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            readable=True,
            help="a recorded telemetry .jsonl as the natural demand (needs --config)",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, readable=True, help="pso.yaml of the --telemetry fleet"
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="scenario seed: same seed, same figures")] = 0,
    subsystems: Annotated[int, typer.Option(min=1, max=1000, help="scenario subsystems")] = 6,
    resources: Annotated[int, typer.Option(min=1, max=4, help="scenario shared pools")] = 1,
    days: Annotated[int, typer.Option(min=1, max=60, help="scenario days (from a Monday)")] = 7,
    noise: Annotated[
        float, typer.Option(help="scenario noise scale", callback=finite_between(0.0, 1.0))
    ] = 0.08,
    warmup: Annotated[
        str, typer.Option(help="left out of the metrics while every policy warms up")
    ] = "2d",
    actuation_delay: Annotated[
        str, typer.Option(help="from a decision to the fleet carrying it out")
    ] = "0s",
    compliance: Annotated[
        float,
        typer.Option(
            help="share of a throttle or deferral a subsystem obeys",
            callback=finite_between(0.0, 1.0),
        ),
    ] = 1.0,
    policy: Annotated[
        list[PolicyName] | None, typer.Option(help="policy to run (repeatable; default: all)")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="one JSON array on stdout")] = False,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", file_okay=False, help="write an HTML report here"),
    ] = None,
) -> None:
    """Run none, reactive, hpa, pso and the oracle on the same demand and compare them."""
    from app.offline.closedloop.bench import (
        BenchOptions,
        check_warmup,
        run_case,
        scenario_case,
        trace_case,
    )

    if (telemetry is None) != (config is None):
        raise UsageError("--telemetry and --config go together")
    if telemetry is not None and scenario:
        raise UsageError("give --scenario or --telemetry, not both")
    warmup_ms = parse_duration_ms(warmup, "--warmup") if warmup.strip() not in ("0", "0s") else 0
    delay_ms = (
        parse_duration_ms(actuation_delay, "--actuation-delay")
        if actuation_delay.strip() not in ("0", "0s")
        else 0
    )
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)  # an unusable path fails before any work
    policies = tuple(p.value for p in policy) if policy else tuple(p.value for p in PolicyName)
    options = BenchOptions(
        seed=seed,
        subsystems=subsystems,
        resources=resources,
        days=days,
        noise=noise,
        warmup_s=warmup_ms // 1000,
        actuation_delay_s=delay_ms // 1000,
        compliance=compliance,
        policies=policies,
    )
    if telemetry is not None and config is not None:
        from app.settings import load_policy

        cases = [trace_case(telemetry, load_policy(config), options)]
    else:
        names = [s.value for s in scenario] if scenario else [s.value for s in ScenarioName]
        cases = [scenario_case(name, options) for name in dict.fromkeys(names)]
    for case in cases:
        if (why := check_warmup(case)) is not None:
            raise UsageError(why)
    with progress() as bar:
        tasks: dict[str, Any] = {}

        def report(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done)

        for case in cases:
            run_case(case, policies, report)
    rows = [row for case in cases for row in case.rows()]
    if json:
        sys.stdout.buffer.write(orjson.dumps(rows) + b"\n")
    else:
        _print_table(cases)
    if output is not None:
        from app.offline.closedloop.report import render

        command = "pso " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        path = render(cases, output, command)
        err_console.print(f"report: {path}")


def _print_table(cases: list[Any]) -> None:
    from app.offline.closedloop.bench import HEADER, table_rows, verdict_line

    table = Table(*HEADER)
    for case in cases:
        for row in table_rows(case.rows()):
            table.add_row(*row)
    console = Console()
    console.print(table)
    for case in cases:
        if (v := case.verdict()) is not None:
            console.print(verdict_line(v), highlight=False)
