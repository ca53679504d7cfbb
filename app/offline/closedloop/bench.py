"""`pso bench closed-loop`: every policy on every chosen scenario (or a recorded trace), the
rows of the table, and the verdict on PSO.

A scenario is generated (`app.dev.scenarios`) and handed to the core's closed loop as plain
data; a trace is read with PSO's own ingest (`app.offline.closedloop.trace`). Each policy runs
the whole demand on its own fleet; the rows are `app.core.closedloop.metrics.ROW_KEYS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from app.core.closedloop import (
    POLICIES,
    DemandTrace,
    LoopRun,
    LoopSpec,
    Verdict,
    run_policy,
    verdict,
)
from app.dev.scenarios import generate
from app.offline.closedloop.trace import read_trace
from app.settings import FleetPolicy

#: (label of what runs, windows done, windows in all) now and then
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What every run shares (the CLI's options)."""

    seed: int = 0
    subsystems: int = 6
    resources: int = 1
    days: int = 7
    noise: float = 0.08
    warmup_s: int = 2 * 86_400
    actuation_delay_s: int = 0
    compliance: float = 1.0
    policies: tuple[str, ...] = POLICIES


@dataclass(slots=True)
class Case:
    """One scenario (or trace) and its policies' runs."""

    name: str
    trace: DemandTrace
    policy: FleetPolicy
    loop: LoopSpec
    runs: dict[str, LoopRun] = field(default_factory=dict)
    episodes: list[dict[str, Any]] = field(default_factory=list)
    injected: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    def rows(self) -> list[dict[str, Any]]:
        return [run.metrics.row(self.name, name) for name, run in self.runs.items()]

    def verdict(self) -> Verdict | None:
        return verdict(self.name, self.rows())


def _loop(options: BenchOptions, trace: DemandTrace, base: LoopSpec | None = None) -> LoopSpec:
    warmup = options.warmup_s * 1000 // trace.step_ms
    base = base or LoopSpec()
    return replace(
        base,
        actuation_delay_s=options.actuation_delay_s,
        compliance=options.compliance,
        warmup_windows=warmup,
    )


def scenario_case(name: str, options: BenchOptions) -> Case:
    """A generated scenario, ready to run."""
    sc = generate(
        name,
        subsystems=options.subsystems,
        resources=options.resources,
        days=options.days,
        noise=options.noise,
        seed=options.seed,
    )
    return Case(
        name,
        sc.trace,
        sc.policy,
        _loop(options, sc.trace, sc.loop),
        episodes=sc.episodes,
        injected=sc.injected,
    )


def trace_case(path: Path, policy: FleetPolicy, options: BenchOptions) -> Case:
    """A recorded telemetry file, ready to run (its resource use is the natural demand)."""
    trace, bad = read_trace(path, policy)
    note = f"{bad} unusable lines left out" if bad else ""
    return Case(trace.name, trace, policy, _loop(options, trace), note=note)


def run_case(case: Case, policies: Sequence[str], progress: Progress | None = None) -> Case:
    """Run ``policies`` on ``case``, one after another (each on its own fleet)."""
    spec = case.policy.spec()
    total = case.trace.windows
    for name in policies:
        label = f"{case.name}: {name}"

        def tick(done: int, label: str = label) -> None:
            if progress is not None:
                progress(label, done, total)

        case.runs[name] = run_policy(case.trace, spec, case.loop, name, tick)
    return case


def check_warmup(case: Case) -> str | None:
    """Why ``case`` cannot be scored (the warm-up leaves nothing), or None."""
    if case.loop.warmup_windows >= case.trace.windows:
        days = case.trace.windows * case.trace.step_ms / 86_400_000
        return (
            f"{case.name}: the warm-up covers the whole run ({days:.2g} days); "
            "give a shorter --warmup or more --days"
        )
    return None


# --------------------------------------------------------------------------- the table

HEADER = (
    "scenario",
    "policy",
    "conflict-min",
    "episodes",
    "unmet value",
    "deferred (u·h)",
    "late (u·h)",
    "mean delay",
    "capacity u·h",
    "actions",
)


def table_rows(rows: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The rows as the printed table shows them."""
    out: list[tuple[str, ...]] = []
    for row in rows:
        d = row["deferred"]
        out.append(
            (
                row["scenario"],
                row["policy"],
                f"{row['conflict_minutes']:g}",
                str(row["episodes"]),
                f"{row['unmet_value']:.1f}",
                f"{d['work']:.1f}",
                f"{d['delayed']:.1f}",
                f"{d['mean_delay_s'] / 60:.1f} min",
                f"{row['capacity_unit_hours']:.0f}",
                str(row["actions"]),
            )
        )
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f} %"


def _change(cut: float | None) -> str:
    """A reduction as a signed change: a cut of 0.82 is "−82 %", one of −0.87 (PSO did worse)
    "+87 %".

    >>> _change(0.82), _change(-0.87), _change(0.001), _change(None)
    ('−82 %', '+87 %', '0 %', 'n/a')
    """
    if cut is None:
        return "n/a"
    pct = round(100 * cut)
    return "0 %" if pct == 0 else (f"−{pct} %" if pct > 0 else f"+{-pct} %")


def verdict_line(v: Verdict) -> str:
    """One line per scenario: PSO against the better baseline and the oracle."""
    if v.conflict_cut is None:  # a control: nothing to prevent, so nothing should be done
        return f"{v.scenario}: no conflict to prevent; PSO took {v.pso_actions} actions"
    return (
        f"{v.scenario}: vs {v.baseline}: conflict-minutes {_change(v.conflict_cut)}, "
        f"unmet value {_change(v.unmet_cut)}, capacity ×{_ratio(v.cost_ratio)}, "
        f"actions ×{_ratio(v.action_ratio)}; {_pct(v.oracle_share)} of the oracle's reduction"
        f" — targets {'met' if v.targets_met() else 'NOT met'}"
    )


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"
