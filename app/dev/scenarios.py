"""Scenarios with ground truth for the closed loop: natural demand on shared pools, window by
window, and the conflict episodes it has when nobody intervenes.

Every scenario is a fleet of subsystems with business days: onsets at the start of the
working day, lunch dips, evening tails, quieter weekends, scheduled jobs, each day a little
different (amplitude ±, onsets shifted by minutes) plus multiplicative noise (slow AR(1) drift
and window-to-window jitter, scale ``noise``). Pools are elastic (`ElasticConfig`): capacity
moves in whole steps between ``min`` and ``max`` and takes 10 minutes to provision. Nothing is
shaped for any policy; the capacity is set from the scenario's own expected demand.

* ``steady`` — a control: flat demand with noise in a pool at its floor, well under capacity.
  Nothing should be done.
* ``daily-peaks`` — daily peaks collide on a shared pool: the 09:00 log-in surge, the morning
  reports job and the partner API's start land within minutes of each other.
* ``noisy-neighbour`` — one low-value tenant's scheduled workload ramps up every afternoon
  (and grows day by day) and, unchecked, starves the high-value services sharing its pool.
* ``batch-collision`` — deferrable batch jobs are scheduled inside the online peak, on a pool
  whose hard maximum (a database's connection limit) cannot hold both.
* ``incident`` — what history cannot tell: a level shift after a bad deploy, a short spike
  and a slow leak until a restart.
* ``flash-crowd`` — a sudden surge no model can foresee.

With several resources, subsystems are dealt to them in turn and each pool gets the
scenario's roles in order. Pure and deterministic: the same arguments give the same arrays;
no clock is read.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.core.closedloop import DemandTrace, LoopSpec
from app.settings import ElasticConfig, FleetPolicy, ResourceConfig, SubsystemConfig, WindowConfig

SCENARIOS: tuple[str, ...] = (
    "steady",
    "daily-peaks",
    "noisy-neighbour",
    "batch-collision",
    "incident",
    "flash-crowd",
)
MONDAY_MS = 1_795_392_000_000  # 2026-11-23T00:00:00Z, a Monday
DAY_MIN = 1440
RESOURCE_NAMES = ("cpu-pool", "db-pool", "gpu-pool", "cache-pool")
BATCH_PATIENCE_S = 6 * 3600
FloatArray = Any  # numpy arrays of float64

#: shape(minutes of the day, day context) -> multiplier (about 0..1)
Shape = Callable[[FloatArray, "Day"], FloatArray]


@dataclass(frozen=True, slots=True)
class Day:
    """One day of one subsystem: its index, weekday, amplitude and onset shift (minutes)."""

    index: int
    weekday: int  # 0 = Monday
    amplitude: float
    shift: float
    rng: np.random.Generator


@dataclass(frozen=True, slots=True)
class Role:
    """One kind of subsystem in a scenario."""

    name: str
    level: float  # demand at shape 1.0 (resource units)
    shape: Shape
    weight: float = 5.0
    deferrable: bool = False
    patience_s: int = 0
    weekend: float = 0.5  # weekend multiplier


@dataclass(frozen=True, slots=True)
class PoolShape:
    """How a scenario sizes its pools from their expected weekday peak ``P``."""

    capacity: float  # x P
    min: float  # x P
    max: float  # x P
    floor_at_capacity: bool = False  # min = capacity


@dataclass(frozen=True, slots=True)
class Scenario:
    """A generated scenario: its natural demand, policy, fleet behaviour and ground truth."""

    name: str
    trace: DemandTrace
    policy: FleetPolicy
    loop: LoopSpec
    episodes: list[dict[str, Any]]
    injected: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------- shapes


def _ramp(m: FloatArray, start: float, minutes: float) -> FloatArray:
    """0 before ``start``, 1 after ``start + minutes``, a cosine edge between."""
    x = np.clip((m - start) / max(minutes, 1e-6), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * x)


def _span(m: FloatArray, on: float, rise: float, off: float, fall: float) -> FloatArray:
    return _ramp(m, on, rise) * (1.0 - _ramp(m, off, fall))


def _business(on_h: float, rise: float, off_h: float, fall: float, base: float) -> Shape:
    def shape(m: FloatArray, day: Day) -> FloatArray:
        lunch = 0.1 * np.exp(-(((m - 12.5 * 60) / 25.0) ** 2))
        body = _span(m, on_h * 60 + day.shift, rise, off_h * 60 + day.shift, fall)
        return base + (1.0 - base) * body - lunch * body

    return shape


def _hump(centre_h: float, width_h: float, base: float) -> Shape:
    def shape(m: FloatArray, day: Day) -> FloatArray:
        return base + (1.0 - base) * np.exp(
            -(((m - centre_h * 60 - day.shift) / (width_h * 60)) ** 2)
        )

    return shape


def _job(start_h: float, minutes: float, base: float = 0.03, weekdays_only: bool = True) -> Shape:
    """A scheduled job: near-step start (2 min), runs ``minutes`` (± 15 % a day)."""

    def shape(m: FloatArray, day: Day) -> FloatArray:
        if weekdays_only and day.weekday >= 5:
            return np.full(m.shape, base)
        length = minutes * (1.0 + 0.15 * float(day.rng.uniform(-1.0, 1.0)))
        start = start_h * 60 + day.shift / 3.0  # cron is punctual; the load builds a little late
        return base + (1.0 - base) * _span(m, start, 2.0, start + length, 3.0)

    return shape


def _flat(base: float = 1.0) -> Shape:
    def shape(m: FloatArray, day: Day) -> FloatArray:
        return base + 0.03 * np.sin(2 * np.pi * m / DAY_MIN)

    return shape


def _sum(*parts: tuple[float, Shape]) -> Shape:
    def shape(m: FloatArray, day: Day) -> FloatArray:
        return sum((w * part(m, day) for w, part in parts), np.zeros(m.shape))

    return shape


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True, slots=True)
class _Design:
    roles: tuple[Role, ...]
    pool: PoolShape
    #: (kind, role index, start minute from the trace's start, factor, minutes)
    events: tuple[tuple[str, int, float, float, float], ...] = ()


def _design(name: str, days: int, rng: np.random.Generator) -> _Design:
    web = _business(8.75, 30.0, 17.5, 150.0, 0.2)
    if name == "steady":
        roles = tuple(
            Role(n, lvl, _flat(), weight=w, weekend=1.0)
            for n, lvl, w in (("api", 30, 6), ("worker", 20, 3), ("cache", 15, 4), ("web", 25, 8))
        )
        return _Design(roles, PoolShape(capacity=1.6, min=1.6, max=3.0, floor_at_capacity=True))
    if name == "daily-peaks":
        roles = (
            Role("web", 40, web, weight=8),
            Role("reports", 30, _job(9.0, 60), weight=3, weekend=1.0),
            Role("partner-api", 25, _business(9.0, 15.0, 12.0, 60.0, 0.15), weight=6),
            Role("search", 25, _hump(13.0, 3.0, 0.25), weight=5),
            Role("mobile", 20, _business(18.75, 30.0, 22.0, 60.0, 0.2), weight=4, weekend=1.2),
            Role("sync", 10, _sum((1.0, _job(9.0, 20)), (1.0, _job(14.0, 20))), weight=2),
        )
        return _Design(roles, PoolShape(capacity=0.75, min=0.2, max=2.0))
    if name == "noisy-neighbour":
        grow = _NeighbourShape()
        roles = (
            Role("checkout", 35, _hump(13.0, 3.5, 0.2), weight=9),
            Role("catalog", 30, _hump(12.0, 4.0, 0.25), weight=6),
            Role("analytics", 45, grow, weight=1, weekend=0.3),
            Role("auth", 20, _hump(11.0, 4.0, 0.3), weight=8),
            Role("search", 25, _hump(14.0, 3.0, 0.25), weight=5),
            Role("notify", 10, _hump(16.0, 3.0, 0.4), weight=3),
        )
        return _Design(roles, PoolShape(capacity=0.8, min=0.2, max=2.0))
    if name == "batch-collision":
        roles = (
            Role("storefront", 45, _business(8.5, 90.0, 18.0, 120.0, 0.2), weight=9),
            Role("etl", 30, _job(11.0, 75), weight=2, deferrable=True, patience_s=BATCH_PATIENCE_S),
            Role("payments", 25, _business(9.0, 60.0, 17.0, 120.0, 0.2), weight=10),
            Role(
                "reindex",
                25,
                _job(14.0, 60),
                weight=1,
                deferrable=True,
                patience_s=BATCH_PATIENCE_S,
            ),
            Role("api", 20, _hump(13.0, 3.5, 0.3), weight=6),
            Role(
                "ml-train",
                20,
                _job(10.5, 90),
                weight=2,
                deferrable=True,
                patience_s=BATCH_PATIENCE_S,
            ),
        )
        return _Design(roles, PoolShape(capacity=0.75, min=0.2, max=0.95))
    smooth = (
        Role("web", 40, _hump(13.0, 3.5, 0.2), weight=8),
        Role("api", 30, _hump(12.0, 4.0, 0.25), weight=6),
        Role("search", 25, _hump(14.0, 3.0, 0.25), weight=5),
        Role("worker", 20, _hump(11.0, 4.0, 0.3), weight=3),
        Role("auth", 15, _hump(13.0, 4.0, 0.3), weight=9),
        Role("notify", 10, _hump(16.0, 3.0, 0.4), weight=2),
    )
    last = max(days - 1, 0)
    if name == "incident":
        shift_day, spike_day, leak_day = min(3, last), min(4, last), min(5, last)
        events: tuple[tuple[str, int, float, float, float], ...] = (
            ("shift", 0, shift_day * DAY_MIN + 10 * 60, 1.6, 0.0),
            ("spike", 1, spike_day * DAY_MIN + 14 * 60, 3.0, 10.0),
            ("leak", 2, leak_day * DAY_MIN + 2 * 60, 2.5, 20 * 60.0),
        )
        return _Design(smooth, PoolShape(capacity=0.9, min=0.2, max=2.0), events)
    if name == "flash-crowd":
        day = min(4, last)
        at = day * DAY_MIN + int(rng.integers(10 * 60, 16 * 60))
        events = (("surge", 0, float(at), 4.0, 40.0),)
        return _Design(smooth, PoolShape(capacity=0.9, min=0.2, max=2.5), events)
    raise ValueError(f"unknown scenario {name!r} (one of {', '.join(SCENARIOS)})")


class _NeighbourShape:
    """A tenant's scheduled workload: from 13:00 it ramps up over 25 minutes, holds about 90
    minutes, and grows 12 % a day as the tenant onboards users."""

    def __call__(self, m: FloatArray, day: Day) -> FloatArray:
        growth = 1.0 + 0.12 * day.index
        start = 13 * 60 + day.shift
        hold = 90.0 * (1.0 + 0.1 * float(day.rng.uniform(-1.0, 1.0)))
        on = _span(m, start, 25.0, start + 25.0 + hold, 15.0)
        return 0.06 + (growth - 0.06) * on


# --------------------------------------------------------------------------- generation


def _rng(seed: int, *parts: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(":".join(parts).encode())])


def _series(
    role: Role,
    name: str,
    scenario: str,
    days: int,
    step_min: float,
    noise: float,
    seed: int,
    start_weekday: int,
) -> tuple[FloatArray, FloatArray]:
    """(noisy demand, expected demand) of one subsystem, one value per window."""
    rng = _rng(seed, scenario, name)
    per_day = round(DAY_MIN / step_min)
    m = np.arange(per_day) * step_min
    expected = np.empty(days * per_day)
    for d in range(days):
        weekday = (start_weekday + d) % 7
        day = Day(
            d,
            weekday,
            float(1.0 + 0.6 * noise * rng.standard_normal()),
            float(3.0 * rng.standard_normal()),
            _rng(seed, scenario, name, str(d)),
        )
        factor = role.weekend if weekday >= 5 else 1.0
        expected[d * per_day : (d + 1) * per_day] = (
            role.level * factor * day.amplitude * np.maximum(role.shape(m, day), 0.0)
        )
    n = expected.size
    phi = 0.97
    drift = np.empty(n)
    level = 0.0
    shocks = rng.standard_normal(n) * (noise / 2.0) * math.sqrt(1.0 - phi * phi)
    for i in range(n):
        level = phi * level + shocks[i]
        drift[i] = level
    jitter = rng.standard_normal(n) * noise
    return expected * np.exp(drift + jitter - 0.5 * noise * noise), expected


def generate(
    name: str,
    *,
    subsystems: int = 6,
    resources: int = 1,
    days: int = 7,
    noise: float = 0.08,
    seed: int = 0,
    step_s: int = 60,
    start_ms: int = MONDAY_MS,
    warmup_days: int = 2,
) -> Scenario:
    """The scenario called ``name`` (one of `SCENARIOS`), deterministic in its arguments."""
    if subsystems < 1 or resources < 1 or days < 1:
        raise ValueError("subsystems, resources and days must be >= 1")
    if resources > len(RESOURCE_NAMES):
        raise ValueError(f"at most {len(RESOURCE_NAMES)} resources")
    if not 0.0 <= noise <= 1.0:
        raise ValueError("noise must be in [0, 1]")
    if step_s < 1 or DAY_MIN * 60 % step_s:
        raise ValueError("step_s must divide a day")
    design = _design(name, days, _rng(seed, name, "design"))
    pools = RESOURCE_NAMES[:resources]
    step_min = step_s / 60.0
    start_weekday = int(((start_ms // 86_400_000) + 3) % 7)
    names: list[str] = []
    cells: list[tuple[int, Role, FloatArray, FloatArray]] = []
    for i in range(subsystems):
        r = i % resources
        role = design.roles[(i // resources) % len(design.roles)]
        cycle = i // (len(design.roles) * resources)
        name_i = role.name + (f".{pools[r]}" if resources > 1 else "")
        name_i += f"-{cycle + 1}" if cycle else ""
        names.append(name_i)
        noisy, expected = _series(role, name_i, name, days, step_min, noise, seed, start_weekday)
        cells.append((r, role, noisy, expected))
    per_day = round(DAY_MIN / step_min)
    injected = _inject(design, cells, names, per_day, step_min, start_ms, resources)
    demand = np.zeros((days * per_day, subsystems, resources))
    uses = np.zeros((subsystems, resources), dtype=np.bool_)
    expected_total = np.zeros((days * per_day, resources))
    for s, (r, _, noisy, expected) in enumerate(cells):
        demand[:, s, r] = np.round(np.maximum(noisy, 0.0), 3)
        expected_total[:, r] += expected
        uses[s, r] = True
    trace = DemandTrace(name, start_ms, step_s * 1000, tuple(names), tuple(pools), demand, uses)
    policy = _policy(design, cells, names, pools, expected_total, per_day, start_weekday, step_s)
    loop = LoopSpec(
        patience_s={n: role.patience_s for n, (_, role, _, _) in zip(names, cells, strict=True)},
        warmup_windows=min(warmup_days, max(days - 1, 0)) * per_day,
    )
    capacity = {r: policy.resources[r].capacity for r in pools}
    return Scenario(name, trace, policy, loop, episodes(trace, capacity), injected)


def _inject(
    design: _Design,
    cells: list[tuple[int, Role, FloatArray, FloatArray]],
    names: list[str],
    per_day: int,
    step_min: float,
    start_ms: int,
    resources: int,
) -> list[dict[str, Any]]:
    """Apply the scenario's events (level shift, spike, leak, surge) to the first pool's
    subsystems; what was injected, for the record."""
    out = []
    n = len(cells[0][2])
    t = np.arange(n) * step_min
    for kind, index, at_min, factor, minutes in design.events:
        s = index * resources
        if s >= len(cells):
            continue
        noisy = cells[s][2]
        if kind == "shift":
            mult = np.where(t >= at_min, factor, 1.0)
            end = t[-1] + step_min
        elif kind == "spike":
            mult = 1.0 + (factor - 1.0) * _span(t, at_min, 1.0, at_min + minutes, 1.0)
            end = at_min + minutes
        elif kind == "leak":
            mult = 1.0 + (factor - 1.0) * np.clip((t - at_min) / minutes, 0.0, 1.0) * (
                t < at_min + minutes
            )
            end = at_min + minutes
        else:  # surge: up in 2 minutes, decays over ``minutes``
            rise = _ramp(t, at_min, 2.0)
            decay = np.exp(-np.maximum(t - at_min - 2.0, 0.0) / minutes)
            mult = 1.0 + (factor - 1.0) * rise * decay
            end = at_min + 3 * minutes
        noisy *= mult
        out.append(
            {
                "kind": kind,
                "subsystem": names[s],
                "start_ms": int(start_ms + at_min * 60_000),
                "end_ms": int(start_ms + end * 60_000),
                "factor": factor,
            }
        )
    return out


def _policy(
    design: _Design,
    cells: list[tuple[int, Role, FloatArray, FloatArray]],
    names: list[str],
    pools: tuple[str, ...],
    expected_total: FloatArray,
    per_day: int,
    start_weekday: int,
    step_s: int,
) -> FleetPolicy:
    resources = {}
    for r, pool in enumerate(pools):
        weekday_rows = [
            d for d in range(expected_total.shape[0] // per_day) if (start_weekday + d) % 7 < 5
        ] or [0]
        peak = max(
            float(expected_total[d * per_day : (d + 1) * per_day, r].max())
            for d in weekday_rows[:1]
        )
        peak = max(peak, 1.0)
        step = _nice_step(peak / 40.0)
        shape = design.pool
        capacity = _round_to(shape.capacity * peak, step)
        low = capacity if shape.floor_at_capacity else _round_to(shape.min * peak, step)
        high = max(_round_to(shape.max * peak, step), capacity)
        resources[pool] = ResourceConfig(
            capacity=capacity,
            elastic=ElasticConfig(min=min(low, capacity), max=high, step=step),
        )
    subsystems = {
        name: SubsystemConfig(weight=role.weight, deferrable=role.deferrable)
        for name, (_, role, _, _) in zip(names, cells, strict=True)
    }
    return FleetPolicy(
        window=WindowConfig(size_s=step_s, allowed_lateness_windows=0),
        resources=resources,
        subsystems=subsystems,
    )


def _nice_step(x: float) -> float:
    """1, 2 or 5 times a power of ten, at least ``x``."""
    power = 10.0 ** math.floor(math.log10(max(x, 1e-9)))
    for k in (1.0, 2.0, 5.0, 10.0):
        if k * power >= x:
            return k * power
    return 10.0 * power


def _round_to(x: float, step: float) -> float:
    return float(max(step, round(x / step) * step))


def episodes(trace: DemandTrace, capacity: dict[str, float]) -> list[dict[str, Any]]:
    """The true conflict episodes without intervention: maximal runs of windows whose natural
    total exceeds the configured capacity, per resource."""
    totals = trace.totals()
    out = []
    for r, res in enumerate(trace.resources):
        over = totals[:, r] > capacity[res]
        k = 0
        while k < trace.windows:
            if not over[k]:
                k += 1
                continue
            first = k
            while k < trace.windows and over[k]:
                k += 1
            out.append(
                {
                    "resource": res,
                    "start_ms": trace.window_ms(first),
                    "end_ms": trace.window_ms(k),
                    "windows": k - first,
                    "peak": round(float(totals[first:k, r].max()), 3),
                    "capacity": capacity[res],
                }
            )
    return out


def samples(scenario: Scenario) -> Iterator[dict[str, Any]]:
    """The natural demand as telemetry: one sample per subsystem per window, its resource use
    being its demand (``pso bench closed-loop --telemetry`` reads it back as it is)."""
    trace = scenario.trace
    for k in range(trace.windows):
        ts = trace.window_ms(k)
        for s, sub in enumerate(trace.subsystems):
            resources = {
                res: float(trace.demand[k, s, r])
                for r, res in enumerate(trace.resources)
                if trace.uses[s, r]
            }
            yield {"subsystem": sub, "ts": ts, "resources": resources}
