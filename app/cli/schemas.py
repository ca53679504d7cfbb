"""`pso schemas export`: write ``schemas/`` from the wire models, or check it is in sync."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.common import err_console
from app.errors import UsageError
from app.wire.schemas import SCHEMA_DIR, render_schemas

schemas_cli = typer.Typer(
    help="JSON Schemas of every message PSO reads or writes.", no_args_is_help=True
)


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
