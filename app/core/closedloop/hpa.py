"""The Kubernetes Horizontal Pod Autoscaler's rule, as the reactive baseline real fleets run.

An elastic resource's capacity is ``replicas × step``. Every ``period`` (15 s) the controller
reads the latest window's utilisation — offered load over the capacity in place — and
(``pkg/controller/podautoscaler``, autoscaling/v2 defaults):

* **replica calculator**: ``ratio = utilisation / target``; within the tolerance
  (``|ratio − 1| ≤ 0.1``) nothing changes, else ``desired = ceil(ready × ratio)``. Capacity
  still being provisioned is *unready*: when the ratio says scale up, the ratio is recomputed
  with unready replicas counted at zero use (over all replicas), and if that falls within the
  tolerance or flips direction, nothing changes; when it says scale down, unready replicas are
  left out.
* **stabilisation**: every recommendation is kept; scale-up takes the newest (window 0 s),
  scale-down the *highest* recommendation of the last 300 s.
* **rate limits**: scale-up at most ``max(+4 replicas, +100 %)`` per 15 s period; scale-down
  up to 100 % per period (no limit); then ``[min, max]`` replicas.

`replicas_for` is the calculator alone (tested against the formula on hand-made cases);
`HpaController` adds stabilisation and limits and keeps the recommendations.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from app.core.config import ElasticSpec

PERIOD_MS = 15_000
DOWN_STABILISATION_MS = 300_000
TOLERANCE = 0.1
UP_PODS = 4
UP_PERCENT = 100.0


def replicas_for(
    current: float, ready: float, usage: float, target: float, tolerance: float = TOLERANCE
) -> float:
    """The replica calculator for a utilisation target.

    ``current`` replicas (spec), of which ``ready`` are in place; ``usage`` is the offered
    load in replicas' worth (load / step), so utilisation over the ready ones is
    ``usage / ready``.

    Examples
    --------
    >>> replicas_for(10, 10, usage=8.5, target=0.8)   # ratio 1.0625: within tolerance
    10
    >>> replicas_for(10, 10, usage=12.0, target=0.8)  # ratio 1.5 -> ceil(10 x 1.5)
    15
    >>> replicas_for(10, 10, usage=4.0, target=0.8)   # ratio 0.5 -> ceil(10 x 0.5)
    5
    >>> replicas_for(15, 10, usage=12.0, target=0.8)  # 5 unready at 0: 12 / 15 / 0.8 = 1.0
    15
    >>> replicas_for(15, 10, usage=16.0, target=0.8)  # 16 / 15 / 0.8 = 1.33 -> ceil(15 x 1.33)
    20
    """
    if ready <= 0:
        return current
    ratio = usage / ready / target
    unready = max(0.0, current - ready)
    if unready <= 0:
        if abs(ratio - 1.0) <= tolerance:
            return current
        return math.ceil(ready * ratio - 1e-9)
    if ratio > 1.0:
        total = ready + unready
        new_ratio = usage / total / target  # unready replicas count at zero use
        if abs(new_ratio - 1.0) <= tolerance or new_ratio < 1.0:
            return current
        new = math.ceil(total * new_ratio - 1e-9)
        return current if new < current else new
    if abs(ratio - 1.0) <= tolerance:  # scale down: unready replicas are left out
        return current
    new = math.ceil(ready * ratio - 1e-9)
    return current if new > current else new


@dataclass(slots=True)
class HpaController:
    """One elastic resource's HPA: recommendations, stabilisation, rate limits.

    Examples
    --------
    >>> spec = ElasticSpec(min=10.0, max=1000.0, step=10.0)
    >>> hpa = HpaController(spec)
    >>> hpa.tick(0, current=10, ready=10, load=300.0)  # ratio 3.75 -> 38, limited to 2 x 10
    20.0
    >>> hpa.tick(15_000, current=20, ready=10, load=300.0)  # 300/200/0.8 -> 38, <= 2 x 20
    38.0
    >>> hpa.tick(30_000, current=38, ready=38, load=100.0)  # 13 recommended, 38 held 300 s
    38.0
    >>> hpa.tick(330_001, current=38, ready=38, load=100.0)  # the 38s are older than 300 s
    13.0
    """

    spec: ElasticSpec
    period_ms: int = PERIOD_MS
    down_window_ms: int = DOWN_STABILISATION_MS
    tolerance: float = TOLERANCE
    recommendations: deque[tuple[int, float]] = field(default_factory=deque)

    @property
    def min_replicas(self) -> int:
        return math.ceil(self.spec.min / self.spec.step - 1e-9)

    @property
    def max_replicas(self) -> int:
        return math.floor(self.spec.max / self.spec.step + 1e-9)

    def tick(self, now_ms: int, current: float, ready: float, load: float) -> float:
        """The replicas to have after this loop iteration (``current`` if unchanged)."""
        step = self.spec.step
        rec = replicas_for(
            current, ready, load / step, self.spec.target_utilisation, self.tolerance
        )
        self.recommendations.append((now_ms, rec))
        while self.recommendations and self.recommendations[0][0] <= now_ms - self.down_window_ms:
            self.recommendations.popleft()
        down = max(r for _, r in self.recommendations)
        desired = current
        if desired < rec:
            desired = rec
        if desired > down:
            desired = down
        up_limit = max(current + UP_PODS, math.ceil(current * (1.0 + UP_PERCENT / 100.0)))
        desired = min(desired, up_limit)
        return float(min(self.max_replicas, max(self.min_replicas, desired)))
