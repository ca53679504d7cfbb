"""`pso produce`: validate a JSONL telemetry file and produce it, keyed by subsystem."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from app.cli.args import check_topic
from app.cli.common import bootstrap_for, err_console, progress, settings
from app.settings import Settings


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
    from app.kafka.client import TelemetryProducer, iter_jsonl_samples

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
