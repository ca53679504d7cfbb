"""`pso simulate`: deterministic telemetry to a JSONL file or a topic."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from app.cli.args import check_topic, finite_between
from app.cli.bench import ScenarioName
from app.cli.common import (
    bootstrap_for,
    err_console,
    parse_duration_ms,
    parse_time_ms,
    progress,
    settings,
)
from app.dev.simulator import policy_yaml
from app.errors import UsageError
from app.settings import Settings


def simulate(
    scenario: Annotated[
        ScenarioName | None,
        typer.Option(
            help="a closed-loop scenario with ground truth (natural demand of shared pools, one "
            "sample per window; its conflict episodes go to OUTPUT.episodes.json)"
        ),
    ] = None,
    subsystems: Annotated[int, typer.Option(min=1, max=100_000, help="how many subsystems")] = 8,
    seed: Annotated[int, typer.Option(help="seed: same seed, same telemetry")] = 0,
    start: Annotated[str, typer.Option(help="event time of the first sample")] = (
        "2026-11-23T00:00:00Z"
    ),
    duration: Annotated[
        str | None, typer.Option(help="event-time span, e.g. 1h, 1d, 1w [1h; scenarios 7d]")
    ] = None,
    interval: Annotated[
        str | None, typer.Option(help="time between samples of one subsystem [10s; scenarios 60s]")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", dir_okay=False, help="write JSONL here")
    ] = None,
    topic: Annotated[
        str | None, typer.Option(help="produce to this topic instead", callback=check_topic)
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="samples per message (batch envelope)")] = 1,
    no_incidents: Annotated[bool, typer.Option(help="no injected spikes or shifts")] = False,
    resources: Annotated[
        int, typer.Option(min=1, max=4, help="with --scenario: how many shared pools")
    ] = 1,
    noise: Annotated[
        float,
        typer.Option(help="with --scenario: noise scale", callback=finite_between(0.0, 1.0)),
    ] = 0.08,
    write_policy: Annotated[
        Path | None,
        typer.Option(dir_okay=False, help="also write a pso.yaml with capacities for this fleet"),
    ] = None,
) -> None:
    """Generate deterministic telemetry (daily/weekly cycles, noise, trends, shared resources)."""
    from app.dev.simulator import FleetSimulator

    if (output is None) == (topic is None):
        raise UsageError("give exactly one of -o FILE or --topic TOPIC")
    if scenario is not None:
        if output is None:
            raise UsageError("--scenario writes a file and its ground truth: give -o FILE")
        _scenario(
            scenario.value,
            output,
            write_policy,
            subsystems=subsystems,
            resources=resources,
            noise=noise,
            seed=seed,
            start_ms=parse_time_ms(start),
            duration_ms=parse_duration_ms(duration or "7d", "--duration"),
            interval_ms=parse_duration_ms(interval or "60s", "--interval"),
        )
        return
    sim = FleetSimulator(
        subsystems=subsystems,
        seed=seed,
        start_ms=parse_time_ms(start),
        interval_ms=parse_duration_ms(interval or "10s", "--interval"),
        incidents=not no_incidents,
    )
    duration_ms = parse_duration_ms(duration or "1h", "--duration")
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


def _scenario(
    name: str,
    output: Path,
    write_policy: Path | None,
    *,
    subsystems: int,
    resources: int,
    noise: float,
    seed: int,
    start_ms: int,
    duration_ms: int,
    interval_ms: int,
) -> None:
    """Write a scenario's natural demand as telemetry, its ground truth and its pso.yaml."""
    import yaml

    from app.dev.scenarios import generate, samples

    if interval_ms % 1000 or 86_400_000 % interval_ms:
        raise UsageError("--interval: a scenario's interval must divide a day in whole seconds")
    if duration_ms < 86_400_000 or duration_ms % 86_400_000:
        raise UsageError("--duration: a scenario runs whole days (e.g. 7d)")
    if start_ms % 86_400_000:
        raise UsageError("--start: a scenario starts at midnight UTC")
    days = duration_ms // 86_400_000
    sc = generate(
        name,
        subsystems=subsystems,
        resources=resources,
        days=days,
        noise=noise,
        seed=seed,
        step_s=interval_ms // 1000,
        start_ms=start_ms,
    )
    truth = output.with_name(output.name.removesuffix(".jsonl") + ".episodes.json")
    with output.open("wb") as fh, progress() as bar:
        task = bar.add_task(f"simulate {name}", total=sc.trace.windows * len(sc.trace.subsystems))
        for sample in samples(sc):
            fh.write(orjson.dumps(sample) + b"\n")
            bar.advance(task)
    truth.write_bytes(
        orjson.dumps(
            {
                "scenario": name,
                "capacity": {r: c.capacity for r, c in sc.policy.resources.items()},
                "episodes": sc.episodes,
                "injected": sc.injected,
            },
            option=orjson.OPT_INDENT_2,
        )
        + b"\n"
    )
    if write_policy is not None:
        doc = sc.policy.model_dump(mode="json", exclude={"prediction"})
        write_policy.write_text(yaml.safe_dump(doc, sort_keys=False))
    err_console.print(
        f"{name}: {sc.trace.windows} windows x {len(sc.trace.subsystems)} subsystems -> "
        f"{output}; {len(sc.episodes)} true conflict episodes -> {truth}"
    )


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
    from app.kafka.client import TelemetryProducer

    async with TelemetryProducer(s, bootstrap, topic=topic, batch_size=batch) as producer:
        with progress() as bar:
            task = bar.add_task(f"produce -> {topic}", total=total)
            for sample in samples:
                await producer.send(sample)
                bar.advance(task)
