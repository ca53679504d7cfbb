"""A recorded telemetry file as the closed loop's natural demand: each subsystem's resource
use, window by window (PSO's own ingest closes the windows, with ``pso.yaml``'s window size).

Only the resources ``pso.yaml`` declares are kept. A subsystem that skipped a window keeps
its last value there (a gap in telemetry is not a gap in demand); before its first window it
asks nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.core.closedloop import DemandTrace
from app.core.events import LoadWindow
from app.core.rejects import SourceRef
from app.errors import ExitCode, PsoError
from app.settings import FleetPolicy
from app.wire.telemetry import TelemetryIngest


class TraceError(PsoError):
    """The telemetry file cannot drive the closed loop (one line, exit 2)."""

    exit_code = ExitCode.USER_ERROR


def read_trace(path: Path, policy: FleetPolicy) -> tuple[DemandTrace, int]:
    """The natural demand in ``path`` (JSONL telemetry) and how many lines were unusable."""
    ingest = TelemetryIngest(policy.window)
    windows: list[LoadWindow] = []
    bad = 0
    with path.open("rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            result = ingest.process(line.rstrip(b"\r\n"), SourceRef(path.name, 0, n))
            windows.extend(result.windows)
            bad += 1 if result.dead else 0
    windows.extend(ingest.flush())
    declared = set(policy.resources)
    seen = sorted({r for w in windows for r in w.resources if r in declared})
    if not windows:
        raise TraceError(f"{path}: no usable telemetry")
    if not seen:
        raise TraceError(
            f"{path}: no resource of the configuration ({', '.join(sorted(declared)) or 'none'}) "
            "appears in the telemetry"
        )
    step = policy.window.size_ms
    start = min(w.window_start_ms for w in windows)
    n_windows = (max(w.window_start_ms for w in windows) - start) // step + 1
    subs = sorted({w.subsystem for w in windows if any(r in declared for r in w.resources)})
    s_index = {name: i for i, name in enumerate(subs)}
    r_index = {name: i for i, name in enumerate(seen)}
    demand = np.full((n_windows, len(subs), len(seen)), np.nan)
    uses = np.zeros((len(subs), len(seen)), dtype=np.bool_)
    for w in windows:
        s = s_index.get(w.subsystem)
        if s is None:
            continue
        k = (w.window_start_ms - start) // step
        for res, stats in w.resources.items():
            r = r_index.get(res)
            if r is not None:
                demand[k, s, r] = max(0.0, stats.mean)
                uses[s, r] = True
    for s in range(len(subs)):  # carry the last value over gaps; nothing before the first
        for r in range(len(seen)):
            last = 0.0
            column = demand[:, s, r]
            for k in range(n_windows):
                if np.isnan(column[k]):
                    column[k] = last
                else:
                    last = float(column[k])
    trace = DemandTrace(path.stem, start, step, tuple(subs), tuple(seen), demand, uses)
    return trace, bad
