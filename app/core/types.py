"""Small value types shared by the pure core (forecasters, detectors, conflict predictor)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SeriesForecast:
    """A multi-horizon forecast of one series, made at the end of a window.

    ``point[h-1]`` is the forecast for the window ``h`` steps after ``origin_ms``'s window;
    ``lower[level][h-1]``/``upper[level][h-1]`` bound it at coverage ``level`` (e.g. 0.8, 0.95).
    """

    origin_ms: int
    step_ms: int
    point: tuple[float, ...]
    lower: dict[float, tuple[float, ...]] = field(default_factory=dict)
    upper: dict[float, tuple[float, ...]] = field(default_factory=dict)
    model: str = ""
    recent_error: float = 0.0
    warming_up: bool = True

    @property
    def horizon(self) -> int:
        return len(self.point)

    def target_ms(self, h: int) -> int:
        """Start (event time, ms) of the window that horizon ``h`` (1-based) forecasts."""
        return self.origin_ms + (h - 1) * self.step_ms
