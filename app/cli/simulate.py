"""`pso simulate`: deterministic telemetry to a JSONL file or a topic."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from app.cli.args import check_topic
from app.cli.common import bootstrap_for, parse_duration_ms, parse_time_ms, progress, settings
from app.dev.simulator import policy_yaml
from app.errors import UsageError
from app.settings import Settings


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
    from app.dev.simulator import FleetSimulator

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
