"""Proactive scaling of elastic resources: when to add capacity, how much, and when to give
it back.

An elastic resource (`app.core.config.ElasticSpec`) may move within ``[min, max]`` in whole
``step``s; what is added lands ``provision_delay`` after it is ordered, what is removed goes at
once. `ScalePlanner` keeps one resource's *schedule* — the orders not yet landed — and, once
per window, reads a demand path over the horizon (PSO: the upper bound of the forecast total
at the configured level; the oracle: the truth) and:

* looks only at the windows a decision now can matter for (`ScalePlanner.reach`: those that
  start before capacity ordered at the next window could land); later windows are decided
  later, on fresher forecasts, still in time;
* **scales out** when the capacity the schedule will have in one of them, ``h``, is below
  what it needs (``demand / target_utilisation``, in whole steps): to the largest need from
  ``h`` on, starting ``provision_delay`` before window ``h`` so that it lands in time (at
  once, and late, when that moment is already past);
* **scales in** only when the largest need has stayed at least 10 % below the current
  capacity (the HPA's tolerance) for ``scale_in_hold_s``: to the largest need seen over that
  hold (hysteresis — noise around a step boundary cannot make capacity flap).

`elastic_plan` turns a conflict window into a value-ranked plan against the capacity the
schedule will have then (scale what can land in time, allocate and defer the rest), with the
schedule attached, using the same `RebalancePlanner` as every other plan.

Pure and deterministic: event time only, plain picklable state.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from app.core.config import ElasticSpec, FleetSpec
from app.core.conflicts import TotalDemand, level_z
from app.core.events import ConflictPredicted, RebalanceRecommended, ScaleAction, ms_to_iso
from app.core.planner import PlanMode, RebalancePlanner

ScaleReason = Literal["predicted", "observed", "scale_in"]
#: capacity changes only when the need departs from it by more than this share (the HPA's
#: tolerance): noise around a step boundary cannot make capacity flap
TOLERANCE = 0.1
_EPS = 1e-9


@dataclass(slots=True)
class ScalePlanner:
    """One elastic resource's scale schedule and the rules that change it.

    Examples
    --------
    >>> spec = ElasticSpec(min=10.0, max=100.0, step=10.0, provision_delay_s=120,
    ...                    target_utilisation=0.5, scale_in_hold_s=120)
    >>> sp = ScalePlanner("pool", spec, step_ms=60_000)
    >>> sp.decide(0, [10.0, 10.0, 24.0, 12.0], capacity=30.0)  # window 3 needs 48 -> 50
    True
    >>> [(a.target, a.start_ms, a.lands_ms) for a in sp.schedule]
    [(50.0, 0, 120000)]
    >>> sp.planned(60_000, 30.0), sp.planned(120_000, 30.0)
    (30.0, 50.0)
    """

    resource: str
    spec: ElasticSpec
    step_ms: int
    schedule: list[ScaleAction] = field(default_factory=list)
    #: (origin_ms, largest need over the horizon) of the windows since the last gap
    history: deque[tuple[int, float]] = field(default_factory=deque)

    def planned(self, window_ms: int, capacity: float) -> float:
        """Capacity expected in the window starting at ``window_ms``: the last order landed by
        then, else ``capacity`` (what is in place now)."""
        cap = capacity
        for action in self.schedule:
            if action.lands_ms <= window_ms:
                cap = action.target
        return cap

    @property
    def reach(self) -> int:
        """How many windows ahead a decision now matters: those starting before capacity
        ordered at the *next* window could land. Later windows are decided later, on fresher
        forecasts, and still in time."""
        return -(-self.spec.provision_delay_ms // self.step_ms) + 1

    def needs(self, demand: Sequence[float]) -> list[float]:
        """Capacity each window needs so that ``demand`` stays under the target utilisation."""
        spec = self.spec
        return [spec.quantise(max(0.0, d) / spec.target_utilisation) for d in demand]

    def pause(self) -> None:
        """No usable demand path this window (forecasts warming up): the hold starts over."""
        self.history.clear()

    def decide(
        self,
        origin_ms: int,
        demand: Sequence[float],
        capacity: float,
        reason: ScaleReason = "predicted",
        scale_out: bool = True,
    ) -> bool:
        """Read one window's demand path (``demand[h-1]`` for the window starting at
        ``origin_ms + (h-1) * step_ms``) with ``capacity`` in place; True if the schedule
        changed. ``scale_out=False``: only scale in (a rule that adds capacity on its own
        trigger)."""
        self.schedule = [a for a in self.schedule if a.lands_ms > origin_ms]
        if not demand:
            self.pause()
            return False
        needs = self.needs(demand)[: self.reach]
        changed = scale_out and self._scale_out(origin_ms, needs, capacity, reason)
        self.history.append((origin_ms, max(needs)))
        hold_ms = self.spec.scale_in_hold_s * 1000
        while len(self.history) > 1 and self.history[1][0] <= origin_ms - hold_ms:
            self.history.popleft()
        if not changed and not self.schedule and self.history[0][0] <= origin_ms - hold_ms:
            keep = max(need for _, need in self.history)
            if keep <= capacity * (1.0 - TOLERANCE) + _EPS:
                self.schedule = [self._action(capacity, keep, origin_ms, origin_ms, "scale_in")]
                changed = True
        return changed

    def _scale_out(
        self, origin_ms: int, needs: list[float], capacity: float, reason: ScaleReason
    ) -> bool:
        delay = self.spec.provision_delay_ms
        for h, need in enumerate(needs):
            window_ms = origin_ms + h * self.step_ms
            if need <= self.planned(window_ms, capacity) * (1.0 + TOLERANCE) + _EPS:
                continue
            start = max(origin_ms, window_ms - delay)
            # size for the windows the order can still reach: capacity that lands after a
            # peak is cost without effect (the planner caps and defers what cannot be scaled)
            land = min(h + max(0, -(-(start + delay - window_ms) // self.step_ms)), len(needs) - 1)
            target = max(needs[land:])
            if target <= self.planned(start + delay, capacity) * (1.0 + TOLERANCE) + _EPS:
                continue
            kept = [a for a in self.schedule if a.start_ms < start and a.target < target]
            self.schedule = [
                *kept,
                self._action(capacity, target, start, start + delay, reason),
            ]
            return True
        return False

    def _action(
        self, capacity: float, target: float, start: int, lands: int, reason: ScaleReason
    ) -> ScaleAction:
        return ScaleAction(
            resource=self.resource,
            capacity=float(capacity),
            target=float(target),
            start_ms=int(start),
            lands_ms=int(lands),
            reason=reason,
        )


# --------------------------------------------------------------------------- demand paths


def upper_path(total: TotalDemand, level: float, z: Sequence[float] | None = None) -> list[float]:
    """The upper bound of the total at ``level``, per horizon: ``mean + z * sigma_up``, with
    ``z`` per horizon as learnt from the total's own errors
    (`app.core.conflicts.ConflictPredictor.upper_z`), else the split normal's. ``z`` may be
    longer than the total (a contributor's shorter forecast shortens the total)."""
    zs = list(z[: total.horizon]) if z is not None else [level_z(level)] * total.horizon
    if len(zs) < total.horizon:
        zs += [level_z(level)] * (total.horizon - len(zs))
    return [m + zh * s for m, zh, s in zip(total.mean, zs, total.sigma_up, strict=True)]


def upper_shares(total: TotalDemand, h: int, upper: float) -> dict[str, float]:
    """Each contributor's demand at horizon index ``h`` so that they sum to ``upper``, the
    total's upper bound there (with the observed floor): its own mean plus a part of the
    total's margin in proportion to its upper sigma. A learnt bound may lie under the mean
    (a negative margin); shares are clamped at 0, and then sum to a little more."""
    margin = upper - total.mean[h]
    sigmas = [p.sigma_up[h] for p in total.paths]
    whole = math.fsum(sigmas)
    out = {}
    for name, path, sigma in zip(total.names, total.paths, sigmas, strict=True):
        part = margin * sigma / whole if whole > 0.0 else margin / len(total.paths)
        out[name] = max(0.0, path.mean[h] + part)
    return out


# --------------------------------------------------------------------------- plans


def planner_conflict(
    resource: str,
    conflict_id: str,
    emitted_at_ms: int,
    start_ms: int,
    end_ms: int,
    peak: float,
    capacity: float,
) -> ConflictPredicted:
    """The planner's input for a conflict window that is not (or no longer) a fresh event:
    a renewal while a conflict lasts, or a window the oracle or a reactive rule judged."""
    return ConflictPredicted(
        event_id=f"{conflict_id}:plan:{emitted_at_ms}",
        status="updated",
        conflict_id=conflict_id,
        resource=resource,
        emitted_at_ms=emitted_at_ms,
        emitted_at=ms_to_iso(emitted_at_ms),
        expected_start_ms=start_ms,
        expected_end_ms=end_ms,
        expected_start=ms_to_iso(start_ms),
        lead_time_s=max(0, start_ms - emitted_at_ms) // 1000,
        probability=1.0,
        predicted_peak=float(peak),
        capacity=float(capacity),
        contributors=[],
    )


def elastic_plan(
    planner: RebalancePlanner,
    conflict: ConflictPredicted,
    demand: Mapping[str, Mapping[str, float]],
    capacity: float,
    headroom: Sequence[tuple[int, float]],
    schedule: Sequence[ScaleAction],
    policy: FleetSpec,
    mode: PlanMode,
) -> RebalanceRecommended:
    """A plan for ``conflict``'s window against ``capacity`` — what the resource will have
    then, scale orders landed — with ``schedule`` attached.

    ``demand`` is subsystem -> resource -> demand in the window planned for (the worst of the
    conflict); ``headroom`` ``[(window_start_ms, room), ...]`` after the conflict, where
    deferred load may go.
    """
    plan = planner.plan(
        conflict,
        demand,
        {conflict.resource: list(headroom)},
        policy,
        mode=mode,
        capacities={conflict.resource: capacity},
    )
    return replace(plan, scaling=list(schedule))


def scale_only_plan(
    resource: str, emitted_at_ms: int, schedule: Sequence[ScaleAction], mode: PlanMode
) -> RebalanceRecommended:
    """A plan that only changes capacity (no conflict, no allocations)."""
    return RebalanceRecommended(
        event_id=f"scale:{resource}:{emitted_at_ms}",
        conflict_id="",
        mode=mode,
        emitted_at_ms=emitted_at_ms,
        window_start_ms=emitted_at_ms,
        resources=[resource],
        allocations=[],
        deferrals=[],
        feasible=True,
        residual_overload=0.0,
        value_protected=0.0,
        value_at_risk=0.0,
        note="",
        window_end_ms=emitted_at_ms,
        scaling=list(schedule),
    )


# --------------------------------------------------------------------------- stage 2


class ElasticResource:
    """Stage 2's elastic side for one resource: the schedule, and the plans that carry it.

    Once per judged window, `observe` reads the forecast total's upper bound and lets the
    `ScalePlanner` move the schedule; `plan` answers a predicted or updated conflict against
    the capacity the schedule will have (allocations sized from the upper bound); `follow_up`
    renews the allocations of a conflict that outlasts its plan's window, or publishes a
    changed schedule on its own.
    """

    def __init__(
        self,
        resource: str,
        spec: ElasticSpec,
        step_ms: int,
        horizon: int,
        planner: RebalancePlanner,
    ) -> None:
        self.resource = resource
        self.spec = spec
        self.step_ms = step_ms
        self.horizon = horizon
        self.planner = planner
        self.scaler = ScalePlanner(resource, spec, step_ms)
        self.upper: list[float] = []
        self.origin_ms = 0
        self.unpublished = False
        self.plan_until_ms: int | None = None

    def observe(
        self,
        origin_ms: int,
        total: TotalDemand,
        calibrated: bool,
        capacity: float,
        observed: float = 0.0,
        z: Sequence[float] | None = None,
    ) -> None:
        """Scale on this window's forecast total (not while any forecast is warming up), its
        upper bound ``mean + z * sigma_up`` (``z``: see `upper_path`). The windows a decision
        now can reach are planned for at least ``observed``, the total just measured: a surge
        no forecast saw is answered at once, as a reactive rule would."""
        self.origin_ms = origin_ms
        self.upper = upper_path(total, self.spec.level, z) if total.horizon else []
        reach = self.scaler.reach
        self.upper = [max(u, observed) if h < reach else u for h, u in enumerate(self.upper)]
        if not calibrated or not self.upper:
            self.scaler.pause()
            return
        if self.scaler.decide(origin_ms, self.upper, capacity):
            self.unpublished = True

    def _window(self, h: int) -> int:
        return self.origin_ms + h * self.step_ms

    def plan(
        self,
        conflict: ConflictPredicted,
        total: TotalDemand,
        capacity: float,
        policy: FleetSpec,
        mode: PlanMode,
    ) -> RebalanceRecommended:
        """The plan for ``conflict`` (``total``: this window's forecast total): its worst
        window against the scheduled capacity. The allocations hold until the conflict's end
        or until more capacity lands, whichever comes first (a renewal plans what is left)."""
        start, end = conflict.expected_start_ms, conflict.expected_end_ms
        end = min([end, *(a.lands_ms for a in self.scaler.schedule if start < a.lands_ms < end)])
        conflict = replace(conflict, expected_end_ms=end)
        span = [h for h in range(total.horizon) if start <= self._window(h) < end] or [0]
        worst = max(
            span,
            key=lambda h: (self.upper[h] - self.scaler.planned(self._window(h), capacity), -h),
        )
        shares = upper_shares(total, worst, self.upper[worst])
        demand = {name: {self.resource: value} for name, value in sorted(shares.items())}
        headroom = [
            (t, self.scaler.planned(t, capacity) - self.upper[h])
            for h in range(total.horizon)
            if (t := self._window(h)) >= conflict.expected_end_ms
        ]
        self.plan_until_ms = conflict.expected_end_ms
        self.unpublished = False
        return elastic_plan(
            self.planner,
            conflict,
            demand,
            self.scaler.planned(self._window(worst), capacity),
            headroom,
            self.scaler.schedule,
            policy,
            mode,
        )

    def follow_up(
        self,
        open_conflict: str | None,
        total: TotalDemand,
        capacity: float,
        policy: FleetSpec,
        mode: PlanMode,
    ) -> RebalanceRecommended | None:
        """After this window's conflict events (none of which was planned): a renewal of the
        open conflict's allocations once its last plan's window has passed and the upper bound
        still exceeds the scheduled capacity, else the schedule if it changed."""
        origin = self.origin_ms
        if open_conflict is None:
            self.plan_until_ms = None
        elif self.plan_until_ms is not None and self.plan_until_ms <= origin and self.upper:
            over = [
                h
                for h, u in enumerate(self.upper)
                if u > self.scaler.planned(self._window(h), capacity) + _EPS
            ]
            if over:
                end = self._window(len(self.upper))
                conflict = planner_conflict(
                    self.resource, open_conflict, origin, origin, end, max(self.upper), capacity
                )
                return self.plan(conflict, total, capacity, policy, mode)
        if self.unpublished:
            self.unpublished = False
            return scale_only_plan(self.resource, origin, self.scaler.schedule, mode)
        return None
