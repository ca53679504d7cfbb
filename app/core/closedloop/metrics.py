"""What a closed-loop run is judged on, and how PSO compares with the others.

Per scenario × policy, over the scored windows (after the warm-up):

* ``conflict_minutes`` — minutes of windows in which the load admitted to a resource
  exceeded its capacity (summed over resources);
* ``episodes`` — maximal runs of such windows;
* ``unmet_value`` — business weight × unit-hours of demand not served in time (lost: not
  served within its subsystem's patience);
* ``deferred`` — ``work``: unit-hours deferred on instruction; ``delayed``: unit-hours
  served late (deferred or queued); ``mean_delay_s``: their mean delay;
* ``capacity_unit_hours`` — capacity in place, integrated over time (the cost);
* ``actions`` — orders carried out: capacity changes, and caps that change what a subsystem
  is told (a new cap, throttle <-> defer, a limit moved by more than 10 %; `plant.changes`).

`verdict` compares PSO with the better of ``reactive`` and ``hpa`` (fewer conflict-minutes,
then less unmet value) and with the oracle's reduction over that baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.core.closedloop.plant import HOUR_MS, WindowOutcome

#: the keys of a JSON row, in order
ROW_KEYS: tuple[str, ...] = (
    "scenario",
    "policy",
    "conflict_minutes",
    "episodes",
    "unmet_value",
    "deferred",
    "capacity_unit_hours",
    "actions",
)


@dataclass(slots=True)
class LoopMetrics:
    """Running totals of one policy's run over the scored windows."""

    step_ms: int
    warmup_windows: int
    conflict_windows: int = 0
    episodes: int = 0
    unmet_value: float = 0.0
    deferred: float = 0.0
    delayed: float = 0.0
    delay_weighted_s: float = 0.0
    capacity_unit_hours: float = 0.0
    actions: int = 0
    scored_windows: int = 0
    _in_conflict: list[bool] = field(default_factory=list)

    def add(self, outcome: WindowOutcome) -> None:
        conflict = [bool(c) for c in outcome.conflict]
        if len(self._in_conflict) != len(conflict):
            self._in_conflict = [False] * len(conflict)
        if outcome.k >= self.warmup_windows:
            self.scored_windows += 1
            self.conflict_windows += sum(conflict)
            self.episodes += sum(
                1
                for now, before in zip(conflict, self._in_conflict, strict=True)
                if now and not before
            )
            self.unmet_value += outcome.unmet_value
            self.deferred += outcome.deferred
            self.delayed += outcome.delayed
            self.delay_weighted_s += outcome.delay_weighted_s
            self.capacity_unit_hours += float(outcome.capacity.sum()) * self.step_ms / HOUR_MS
            self.actions += outcome.actions
        self._in_conflict = conflict

    @property
    def conflict_minutes(self) -> float:
        return self.conflict_windows * self.step_ms / 60_000

    @property
    def mean_delay_s(self) -> float:
        return self.delay_weighted_s / self.delayed if self.delayed > 0 else 0.0

    def row(self, scenario: str, policy: str) -> dict[str, Any]:
        """The JSON row: exactly `ROW_KEYS`."""
        return {
            "scenario": scenario,
            "policy": policy,
            "conflict_minutes": round(self.conflict_minutes, 3),
            "episodes": self.episodes,
            "unmet_value": round(self.unmet_value, 3),
            "deferred": {
                "work": round(self.deferred, 3),
                "delayed": round(self.delayed, 3),
                "mean_delay_s": round(self.mean_delay_s, 1),
            },
            "capacity_unit_hours": round(self.capacity_unit_hours, 3),
            "actions": self.actions,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    """PSO against the better baseline of one scenario (ratios; None where undefined)."""

    scenario: str
    baseline: str
    conflict_cut: float | None  # 1 - pso / baseline conflict-minutes
    unmet_cut: float | None
    cost_ratio: float | None  # pso / baseline capacity-unit-hours
    action_ratio: float | None  # pso / baseline actions
    oracle_share: float | None  # pso's conflict-minute reduction / the oracle's
    pso_actions: int

    def targets_met(self) -> bool:
        """The issue's bar: -70 % conflict-minutes, -50 % unmet value, cost <= +10 %,
        actions <= 2x, >= 70 % of the oracle's reduction."""
        return (
            self.conflict_cut is not None
            and self.conflict_cut >= 0.7
            and (self.unmet_cut is None or self.unmet_cut >= 0.5)
            and self.cost_ratio is not None
            and self.cost_ratio <= 1.1
            and (self.action_ratio is None or self.action_ratio <= 2.0)
            and (self.oracle_share is None or self.oracle_share >= 0.7)
        )


def _cut(pso: float, base: float) -> float | None:
    return None if base <= 0 else 1.0 - pso / base


def verdict(scenario: str, rows: Sequence[Mapping[str, Any]]) -> Verdict | None:
    """Compare ``pso`` with the better of ``reactive`` and ``hpa`` on one scenario's rows."""
    by = {row["policy"]: row for row in rows if row["scenario"] == scenario}
    if "pso" not in by:
        return None
    bases = [by[name] for name in ("reactive", "hpa") if name in by]
    if not bases:
        return None
    base = min(bases, key=lambda row: (row["conflict_minutes"], row["unmet_value"]))
    pso = by["pso"]
    share = None
    if "oracle" in by:
        gain = base["conflict_minutes"] - by["oracle"]["conflict_minutes"]
        if gain > 0:
            share = (base["conflict_minutes"] - pso["conflict_minutes"]) / gain
    return Verdict(
        scenario=scenario,
        baseline=str(base["policy"]),
        conflict_cut=_cut(pso["conflict_minutes"], base["conflict_minutes"]),
        unmet_cut=_cut(pso["unmet_value"], base["unmet_value"]),
        cost_ratio=(
            pso["capacity_unit_hours"] / base["capacity_unit_hours"]
            if base["capacity_unit_hours"] > 0
            else None
        ),
        action_ratio=pso["actions"] / base["actions"] if base["actions"] > 0 else None,
        oracle_share=share,
        pso_actions=int(pso["actions"]),
    )
