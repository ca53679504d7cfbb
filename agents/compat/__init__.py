"""What faust-streaming gets wrong for exactly-once recovery and pace, fixed at the edges:
one module per fix, each naming the faust-streaming version it was written against and the
upstream code it replaces, and the test that fails without it.

PSO patches private code of faust-streaming and aiokafka, so it runs only on the versions
these fixes were written and tested against: `check_versions` (called when the app is
built) refuses any other with one clear line.

- `transactions`: transactions picked by source partition; a shutdown that hangs.
- `table_writes`: table writes inside the transaction (`put`).
- `half_done`: a record that failed half-way stops the worker (`stop_worker`).
- `read_offsets`: offsets stuck behind an aborted transaction after offset 0.
- `consumer_thread`: changelog highwaters asked of the broker; short fetch waits.
- `consumer`: commits paced while busy; refused after a half-done record.
- `recovery`: stream partitions sought before they are resumed.
- `app`: the app and transport that put them together (`PsoApp`).

What remains by design: between computing the offsets to commit and committing, records of
the next, half-processed message may ride along in the transaction. Agents therefore write
their state last and are idempotent on replay (each subsystem's windows in `agents.ingest`
know the next telemetry offset they take; the core skips duplicate windows and shares).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from agents.compat.app import PsoApp
from agents.compat.consumer import PsoConsumer
from agents.compat.half_done import stop_worker
from agents.compat.table_writes import put
from agents.compat.transactions import processing
from app.errors import ExitCode, PsoError

#: distribution -> the minor version the fixes were written and tested against
TESTED: dict[str, str] = {"faust-streaming": "0.15", "aiokafka": "0.14"}


class UnsupportedVersion(PsoError, RuntimeError):
    """A faust-streaming or aiokafka other than the one PSO's fixes were tested against."""

    exit_code = ExitCode.USER_ERROR


def check_versions(installed: dict[str, str] | None = None) -> None:
    """Raise `UnsupportedVersion` unless the loaded faust-streaming and aiokafka are the
    minor versions in `TESTED` (``installed``: name -> version, for tests)."""
    for name, minor in TESTED.items():
        try:
            found = version(name) if installed is None else installed[name]
        except PackageNotFoundError:
            found = "none"
        if found.split(".")[:2] != minor.split("."):
            raise UnsupportedVersion(
                f"{name} {found} is installed, but PSO's fixes to its private code "
                f"(agents/compat) were written and tested against {minor}.x: install "
                f"{name}=={minor}.*"
            )


__all__ = [
    "TESTED",
    "PsoApp",
    "PsoConsumer",
    "UnsupportedVersion",
    "check_versions",
    "processing",
    "put",
    "stop_worker",
]
