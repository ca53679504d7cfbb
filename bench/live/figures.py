"""How measured values become the figures the JSON reports.

Owns the three reductions every phase uses: nearest-rank percentiles (`pct`), the
``{n, p50, p99, max}`` summary of a list of seconds in milliseconds (`summary_ms`), and CPU
microseconds per sample (`us_per_sample`), which stays comparable however busy the machine is.
"""

from __future__ import annotations

import math
from typing import Any


def us_per_sample(cpu_s: float | None, samples: int) -> float | None:
    """CPU microseconds per sample: comparable across runs however busy the machine is."""
    return round(cpu_s / samples * 1e6, 1) if cpu_s is not None and samples else None


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]  # nearest rank


def summary_ms(values: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50": round(pct(ms, 0.50), 1) if ms else None,  # type: ignore[arg-type]
        "p99": round(pct(ms, 0.99), 1) if ms else None,  # type: ignore[arg-type]
        "max": round(max(ms), 1) if ms else None,
    }
