"""The fleet policy as the core reads it: plain frozen dataclasses.

``pso.yaml`` and the ``PSO_*`` environment are parsed and validated by `app.settings`
(pydantic), whose models hand the core these with ``.spec()``: the core never parses a
file or reads the environment, so it runs the same in a worker, a backtest or a test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Tumbling event-time windows per subsystem, and how far a sample may jump ahead.

    Examples
    --------
    >>> WindowSpec(size_s=60, allowed_lateness_windows=2).lateness_ms
    120000
    """

    size_s: int = 60
    allowed_lateness_windows: int = 2
    max_time_jump_s: int = 3600
    jump_confirmations: int = 3

    @property
    def size_ms(self) -> int:
        return self.size_s * 1000

    @property
    def lateness_ms(self) -> int:
        return self.allowed_lateness_windows * self.size_ms

    @property
    def max_jump_ms(self) -> int:
        return self.max_time_jump_s * 1000


@dataclass(frozen=True, slots=True)
class ElasticSpec:
    """How an elastic resource may be scaled: its bounds, granularity and provisioning delay.

    ``target_utilisation`` is the headroom every policy plans for (demand kept under this
    share of capacity); ``level`` the central interval of the total demand whose upper bound
    sizes capacity (0.6: its 80th percentile, learnt from the total's own forecast errors);
    ``scale_in_hold_s`` how long the upper bound must stay under a smaller capacity before
    capacity is given back (no flapping).

    Examples
    --------
    >>> spec = ElasticSpec(min=100.0, max=1000.0, step=10.0)
    >>> spec.quantise(123.4), spec.quantise(5.0), spec.quantise(5000.0)
    (130.0, 100.0, 1000.0)
    """

    min: float
    max: float
    step: float
    provision_delay_s: int = 600
    target_utilisation: float = 0.8
    scale_in_hold_s: int = 300
    level: float = 0.6

    @property
    def provision_delay_ms(self) -> int:
        return self.provision_delay_s * 1000

    def quantise(self, capacity: float) -> float:
        """The smallest whole number of steps at least ``capacity``, within [min, max]."""
        steps = math.ceil(capacity / self.step - 1e-9)
        return float(min(self.max, max(self.min, steps * self.step)))


@dataclass(frozen=True, slots=True)
class AlertCosts:
    """What a missed conflict and a false alarm cost, in any one unit (only the ratio counts).

    Warning when the calibrated P(breach) reaches ``false_alarm / (miss + false_alarm)``
    minimises the expected cost: below it, the expected cost of staying silent
    (``p * miss``) is less than that of a warning that may be false (``(1 - p) *
    false_alarm``).

    Examples
    --------
    >>> AlertCosts(miss=10.0, false_alarm=1.0).threshold
    0.09090909090909091
    """

    miss: float
    false_alarm: float

    @property
    def threshold(self) -> float:
        return self.false_alarm / (self.miss + self.false_alarm)


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    """A shared resource (DB connection pool, GPU pool...), how much of it exists, and what
    a missed conflict costs against a false alarm (None: the fleet's conflict threshold)."""

    capacity: float
    unit: str = ""
    elastic: ElasticSpec | None = None
    costs: AlertCosts | None = None

    def conflict_threshold(self, default: float) -> float:
        """The alert threshold on the calibrated probability for this resource."""
        return self.costs.threshold if self.costs is not None else default


@dataclass(frozen=True, slots=True)
class SubsystemSpec:
    """Business policy of one subsystem for rebalance planning."""

    weight: float = 1.0
    min: dict[str, float] = field(default_factory=dict)  # resource -> guaranteed use
    deferrable: bool = False
    limits: dict[str, float] = field(default_factory=dict)  # metric -> saturation limit


@dataclass(frozen=True, slots=True)
class PredictionSpec:
    """Knobs of the prediction engine."""

    horizon: int = 15
    levels: tuple[float, ...] = (0.8, 0.95)
    conflict_threshold: float = 0.3
    accuracy_every_windows: int = 60
    idle_evict_s: int = 6 * 3600
    mode: Literal["advise", "dry-run"] = "advise"
    #: river forecasters that join each series' model selection, e.g.
    #: ``"river.time_series.SNARIMAX(p=2, d=0, q=1)"`` (`app.core.forecasters.river_candidate`)
    extra_candidates: tuple[str, ...] = ()
    #: values each series' anomaly detector remembers; None: two days of windows (1000-3000)
    anomaly_memory: int | None = None


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """The fleet policy: windows, shared resources, subsystems and prediction knobs."""

    window: WindowSpec = field(default_factory=WindowSpec)
    resources: dict[str, ResourceSpec] = field(default_factory=dict)
    subsystems: dict[str, SubsystemSpec] = field(default_factory=dict)
    prediction: PredictionSpec = field(default_factory=PredictionSpec)
