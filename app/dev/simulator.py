"""A deterministic fleet of simulated subsystems: the demo's and the benchmarks' telemetry.

Each subsystem has a load driver (requests per second) shaped by a daily cycle (business
hours, or nightly for batch jobs), a weekly cycle (quiet weekends for user-facing services),
a small hourly ripple, a slow trend and multiplicative noise. Metrics (``rps``, ``cpu``,
``latency_ms``) and shared-resource use (``db-main`` connections, ``gpu-pool`` GPUs) derive
from it. Capacities in `FleetSimulator.policy` are set below the fleet's combined daily peak,
so shared resources really do run into conflicts at predictable times of day; occasional
incidents (spikes, level shifts) give the anomaly detector something real to find.

Pure and deterministic: the same ``seed`` gives the same samples, in the same order, on any
machine. Event time is synthetic, starting at ``start_ms``; no clock is read.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from app.settings import FleetPolicy, ResourceConfig, SubsystemConfig, WindowConfig

DAY_MS = 86_400_000
#: series per subsystem in the benchmarks' fleets (see `five_series`)
SERIES_PER_SUBSYSTEM = 5
WEEK_MS = 7 * DAY_MS
HOUR_MS = 3_600_000

# name, base rps, kind ("user" peaks in business hours, "batch" at night), resources used
_CATALOGUE: list[tuple[str, float, str, dict[str, float]]] = [
    ("billing-api", 400.0, "user", {"db-main": 0.05}),
    ("checkout", 300.0, "user", {"db-main": 0.06}),
    ("search", 900.0, "user", {"db-main": 0.015}),
    ("recommender", 250.0, "user", {"gpu-pool": 0.02, "db-main": 0.01}),
    ("reporting", 60.0, "batch", {"db-main": 0.25}),
    ("ml-training", 20.0, "batch", {"gpu-pool": 0.3}),
    ("auth", 700.0, "user", {"db-main": 0.01}),
    ("notifications", 150.0, "user", {"db-main": 0.03}),
    ("ingest-etl", 80.0, "batch", {"db-main": 0.12}),
    ("gateway", 1500.0, "user", {}),
]


@dataclass(frozen=True, slots=True)
class SubsystemProfile:
    """How one simulated subsystem behaves."""

    name: str
    base_rps: float
    kind: str
    uses: dict[str, float]
    phase_h: float
    noise: float
    trend_per_day: float
    weight: float
    deferrable: bool


@dataclass(slots=True)
class _Incident:
    start_ms: int
    end_ms: int
    factor: float


@dataclass(slots=True)
class _Walker:
    """Per-subsystem random state: its own seeded RNG and slow AR(1) drift."""

    rng: random.Random
    drift: float = 0.0
    incidents: list[_Incident] = field(default_factory=list)


def _daily(kind: str, hour: float) -> float:
    if kind == "batch":
        # Nightly jobs: peak around 02:00, near idle in the afternoon.
        return 0.25 + 0.75 * math.exp(-(((hour - 2.0 + 12) % 24 - 12) ** 2) / 8.0)
    # User traffic: a business-hours hump with a lunch dip, low at night.
    return (
        0.25
        + 0.75 * math.exp(-((hour - 14.0) ** 2) / 18.0)
        - 0.08 * math.exp(-((hour - 12.5) ** 2) / 0.8)
    )


def _weekly(kind: str, day_of_week: int) -> float:
    if kind == "batch":
        return 1.0 if day_of_week != 6 else 0.8
    return 1.0 if day_of_week < 5 else 0.6


class FleetSimulator:
    """Deterministic telemetry for ``subsystems`` services sharing ``db-main`` and ``gpu-pool``.

    Parameters
    ----------
    subsystems
        How many subsystems (names cycle through a catalogue, suffixed beyond ten).
    seed
        Seeds every random choice.
    start_ms
        Event time of the first sample (epoch ms, UTC).
    interval_ms
        Time between two samples of one subsystem.
    incidents
        Whether to inject spikes and level shifts (for anomaly detection).
    noise
        Scale of the multiplicative noise (0.05 = about 5 %).
    """

    def __init__(
        self,
        subsystems: int = 8,
        seed: int = 0,
        start_ms: int = 1_795_564_800_000,  # 2026-11-25T00:00:00Z
        interval_ms: int = 10_000,
        incidents: bool = True,
        noise: float = 0.06,
    ) -> None:
        if subsystems < 1:
            raise ValueError("subsystems must be >= 1")
        if interval_ms < 1:
            raise ValueError("interval_ms must be >= 1")
        self.subsystems = subsystems
        self.seed = seed
        self.start_ms = start_ms
        self.interval_ms = interval_ms
        self.incidents = incidents
        self.noise = noise
        self.profiles = [self._profile(i) for i in range(subsystems)]

    def _profile(self, i: int) -> SubsystemProfile:
        name, base, kind, uses = _CATALOGUE[i % len(_CATALOGUE)]
        if i >= len(_CATALOGUE):
            name = f"{name}-{i // len(_CATALOGUE)}"
        rng = random.Random(zlib.crc32(f"{self.seed}:{name}".encode()))
        return SubsystemProfile(
            name=name,
            base_rps=base * rng.uniform(0.8, 1.2),
            kind=kind,
            uses=dict(uses),
            phase_h=rng.uniform(-1.5, 1.5),
            noise=self.noise * rng.uniform(0.6, 1.4),
            trend_per_day=rng.uniform(-0.005, 0.02),
            weight=round(rng.uniform(1.0, 10.0), 1),
            deferrable=kind == "batch",
        )

    def _walker(self, profile: SubsystemProfile) -> _Walker:
        rng = random.Random(zlib.crc32(f"{self.seed}:walk:{profile.name}".encode()))
        walker = _Walker(rng)
        if self.incidents:
            # About one incident every two days per subsystem, at random times in the first 30 days.
            t = self.start_ms + int(rng.uniform(0.5, 2.5) * DAY_MS)
            while t < self.start_ms + 30 * DAY_MS:
                duration = int(rng.choice([2, 5, 15, 45]) * 60_000)
                factor = rng.choice([2.5, 3.0, 0.2, 1.8])
                walker.incidents.append(_Incident(t, t + duration, factor))
                t += int(rng.uniform(1.0, 3.0) * DAY_MS)
        return walker

    def load(self, profile: SubsystemProfile, ts_ms: int) -> float:
        """Noise-free expected requests per second of ``profile`` at ``ts_ms``."""
        rel_days = (ts_ms - self.start_ms) / DAY_MS
        hour = ((ts_ms % DAY_MS) / HOUR_MS + profile.phase_h) % 24
        day_of_week = ((ts_ms // DAY_MS) + 3) % 7  # 1970-01-01 was a Thursday
        ripple = 1.0 + 0.04 * math.sin(2 * math.pi * (ts_ms % HOUR_MS) / HOUR_MS)
        trend = 1.0 + profile.trend_per_day * rel_days
        return (
            profile.base_rps
            * _daily(profile.kind, hour)
            * _weekly(profile.kind, day_of_week)
            * ripple
            * max(0.1, trend)
        )

    def _sample(self, profile: SubsystemProfile, walker: _Walker, ts_ms: int) -> dict[str, Any]:
        rng = walker.rng
        walker.drift = 0.995 * walker.drift + rng.gauss(0.0, profile.noise * 0.1)
        factor = 1.0
        for incident in walker.incidents:
            if incident.start_ms <= ts_ms < incident.end_ms:
                factor = incident.factor
                break
        rps = self.load(profile, ts_ms) * math.exp(walker.drift + rng.gauss(0.0, profile.noise))
        rps *= factor
        capacity_rps = profile.base_rps * 1.6
        cpu = min(1.0, max(0.01, rps / capacity_rps + rng.gauss(0.0, 0.01)))
        latency = 20.0 + 80.0 * cpu**4 + abs(rng.gauss(0.0, 2.0))
        resources = {
            res: round(max(0.0, rps * per_rps * (1.0 + rng.gauss(0.0, profile.noise / 2))), 3)
            for res, per_rps in sorted(profile.uses.items())
        }
        return {
            "subsystem": profile.name,
            "ts": ts_ms,
            "metrics": {
                "rps": round(rps, 3),
                "cpu": round(cpu, 4),
                "latency_ms": round(latency, 2),
            },
            "resources": resources,
        }

    def samples(self, duration_ms: int) -> Iterator[dict[str, Any]]:
        """Samples from ``start_ms`` for ``duration_ms``, in event-time order, all subsystems."""
        walkers = [self._walker(p) for p in self.profiles]
        steps = duration_ms // self.interval_ms
        for step in range(steps):
            ts = self.start_ms + step * self.interval_ms
            for profile, walker in zip(self.profiles, walkers, strict=True):
                yield self._sample(profile, walker, ts)

    def expected_peak(self, resource: str) -> float:
        """Largest noise-free total use of ``resource`` over one week (hourly grid)."""
        peak = 0.0
        for hour in range(7 * 24):
            ts = self.start_ms + hour * HOUR_MS
            total = sum(self.load(p, ts) * p.uses.get(resource, 0.0) for p in self.profiles)
            peak = max(peak, total)
        return peak

    def policy(self, window: WindowConfig | None = None, headroom: float = 0.85) -> FleetPolicy:
        """A `FleetPolicy` whose capacities sit at ``headroom`` × the weekly expected peak."""
        resources: dict[str, ResourceConfig] = {}
        for res in sorted({r for p in self.profiles for r in p.uses}):
            peak = self.expected_peak(res)
            if peak > 0:
                resources[res] = ResourceConfig(capacity=round(peak * headroom, 1))
        subsystems = {
            p.name: SubsystemConfig(
                weight=p.weight,
                min={
                    r: round(self.load(p, self.start_ms) * u * 0.5, 1)
                    for r, u in sorted(p.uses.items())
                    if r in resources
                },
                deferrable=p.deferrable,
                limits={"cpu": 0.9},
            )
            for p in self.profiles
        }
        return FleetPolicy(
            window=window or WindowConfig(), resources=resources, subsystems=subsystems
        )


def five_series(sample: dict[str, Any]) -> dict[str, Any]:
    """Pad a simulator sample to exactly 5 series with metrics derived from its own values.

    The simulator gives a subsystem 3 metrics and 0-2 resource uses; the benchmarks' scenario
    is 5 series each, so ``in_flight`` (rps × latency) and then ``mem_mb`` fill the gap.
    """
    metrics = dict(sample["metrics"])
    missing = SERIES_PER_SUBSYSTEM - len(metrics) - len(sample["resources"])
    if missing >= 1:
        metrics["in_flight"] = round(metrics["rps"] * metrics["latency_ms"] / 1000.0, 3)
    if missing >= 2:
        metrics["mem_mb"] = round(256.0 + 0.4 * metrics["rps"], 2)
    return {**sample, "metrics": metrics}


def policy_yaml(sim: FleetSimulator) -> str:
    """The ``pso.yaml`` of a simulated fleet: its resources, capacities and subsystems."""
    import yaml

    policy = sim.policy().model_dump(mode="json", exclude={"prediction"})
    return str(yaml.safe_dump(policy, sort_keys=False))
