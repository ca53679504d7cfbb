"""The walls of the house hold: the contracts in pyproject.toml ([tool.importlinter]) — the
pure core imports nothing outside itself but numpy/scipy/numba/river, nothing imports the
CLI, Faust stays in agents, the wire contract knows no Kafka, and no import cycle anywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout and done.stdout.count("KEPT") >= 5
