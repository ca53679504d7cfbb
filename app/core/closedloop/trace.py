"""The closed loop's inputs: natural demand window by window, and how the fleet behaves.

`DemandTrace` is what each subsystem would ask of each shared resource without any
intervention (a scenario's ground truth, or a recorded telemetry file's resource use).
`LoopSpec` says how the simulated fleet obeys and what it tolerates: the delay before an
order is carried out, the share of a throttle or deferral a subsystem complies with, how long
each subsystem's work may wait before it is lost, and the windows left out of the metrics
while every policy warms up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from app.core.config import FleetSpec

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: how long a deferrable subsystem's work may wait by default (a batch job run later that day)
DEFERRABLE_PATIENCE_S = 6 * 3600


@dataclass(frozen=True, slots=True)
class DemandTrace:
    """Natural demand ``demand[k, s, r]``: the mean use subsystem ``s`` asks of resource ``r``
    in window ``k`` (``[start_ms + k * step_ms, + step_ms)``), where ``uses[s, r]``."""

    name: str
    start_ms: int
    step_ms: int
    subsystems: tuple[str, ...]
    resources: tuple[str, ...]
    demand: FloatArray
    uses: BoolArray

    def __post_init__(self) -> None:
        shape = (len(self.subsystems), len(self.resources))
        if self.demand.ndim != 3 or self.demand.shape[1:] != shape:
            raise ValueError(f"demand must be (windows, {shape[0]}, {shape[1]})")
        if self.uses.shape != shape:
            raise ValueError(f"uses must be {shape}")
        if not np.isfinite(self.demand).all() or (self.demand < 0).any():
            raise ValueError("demand must be finite and >= 0")
        if self.step_ms < 1000:
            raise ValueError("step_ms must be >= 1000")

    @property
    def windows(self) -> int:
        return int(self.demand.shape[0])

    def window_ms(self, k: int) -> int:
        return self.start_ms + k * self.step_ms

    def totals(self) -> FloatArray:
        """Total natural demand per window and resource, ``(windows, resources)``."""
        return np.asarray(self.demand.sum(axis=1), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class LoopSpec:
    """How the simulated fleet obeys, and what is scored.

    ``patience_s[subsystem]``: how long its throttled or deferred work may wait to be served
    (0: what is not served in its window is lost). Subsystems not listed: 0, or
    `DEFERRABLE_PATIENCE_S` when the policy says they are deferrable.
    """

    actuation_delay_s: int = 0
    compliance: float = 1.0
    patience_s: Mapping[str, int] = field(default_factory=dict)
    warmup_windows: int = 0

    def __post_init__(self) -> None:
        if self.actuation_delay_s < 0:
            raise ValueError("actuation_delay_s must be >= 0")
        if not 0.0 <= self.compliance <= 1.0:
            raise ValueError("compliance must be in [0, 1]")
        if self.warmup_windows < 0:
            raise ValueError("warmup_windows must be >= 0")

    def patience_ms(self, subsystem: str, policy: FleetSpec) -> int:
        if subsystem in self.patience_s:
            return self.patience_s[subsystem] * 1000
        sub = policy.subsystems.get(subsystem)
        return DEFERRABLE_PATIENCE_S * 1000 if sub is not None and sub.deferrable else 0
