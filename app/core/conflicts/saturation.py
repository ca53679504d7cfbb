"""Saturation warnings: one subsystem metric forecast to cross its configured limit, once
per episode, with the same probability logic as a conflict on a single series."""

from __future__ import annotations

from app.core.conflicts.demand import (
    exceedance_probability,
    first_run_at_least,
    marginal_path,
    require_finite,
)
from app.core.events import (
    SaturationPredicted,
)
from app.core.types import SeriesForecast

# --------------------------------------------------------------------------- saturation


class SaturationWatch:
    """Warn once per episode when a subsystem metric is forecast to cross its limit.

    Same probability logic as `ConflictPredictor` on a single series (no clamping at zero:
    metrics may be negative). An episode opens when P(metric > limit) reaches ``threshold``
    at some horizon, emitting one `SaturationPredicted`; it ends silently when every horizon
    is below ``threshold - hysteresis``. One instance serves every (subsystem, metric); only
    open episodes are stored.

    Parameters
    ----------
    horizon
        Largest horizon looked at.
    threshold
        Probability that opens an episode.
    hysteresis
        Gap below the threshold required to end it.
    """

    def __init__(self, horizon: int = 15, threshold: float = 0.5, hysteresis: float = 0.15) -> None:
        if horizon < 1:
            raise ValueError("horizon must be >= 1")
        if not 0.0 < threshold < 1.0:
            raise ValueError("threshold must be in (0, 1)")
        if not 0.0 <= hysteresis < threshold:
            raise ValueError("hysteresis must be in [0, threshold)")
        self.horizon = horizon
        self.threshold = threshold
        self.hysteresis = hysteresis
        self.active: dict[tuple[str, str], int] = {}

    def update(
        self, subsystem: str, metric: str, forecast: SeriesForecast, limit: float
    ) -> SaturationPredicted | None:
        """Advance the (subsystem, metric) episode with a new forecast."""
        limit = require_finite(limit, "limit")
        key = (subsystem, metric)
        h_max = min(self.horizon, forecast.horizon)
        path = marginal_path(forecast, h_max, clamp_nonnegative=False, name=f"{subsystem}.{metric}")
        probs = [
            exceedance_probability(m, su, sd, limit)
            for m, su, sd in zip(path.mean, path.sigma_up, path.sigma_down, strict=True)
        ]
        if key in self.active:
            if first_run_at_least(probs, self.threshold - self.hysteresis) is None:
                del self.active[key]
            return None
        run = first_run_at_least(probs, self.threshold)
        if run is None:
            return None
        first, last = run
        start = forecast.target_ms(first + 1)
        origin = forecast.origin_ms
        self.active[key] = start
        return SaturationPredicted(
            event_id=f"saturation:{subsystem}:{metric}@{start}:{origin}",
            subsystem=subsystem,
            metric=metric,
            limit=float(limit),
            emitted_at_ms=origin,
            expected_start_ms=start,
            lead_time_s=(start - origin) // 1000,
            probability=float(max(probs[first : last + 1])),
            predicted_peak=float(max(path.mean[first : last + 1])),
        )

    def forget(self, subsystem: str) -> None:
        """Drop every episode of an evicted subsystem (bounded state)."""
        for key in sorted(k for k in self.active if k[0] == subsystem):
            del self.active[key]
