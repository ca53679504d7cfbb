"""Building blocks of `app.core.forecast.SeriesForecaster` (pure, picklable, event-time only)."""

from app.core.forecasters.conformal import HorizonConformal
from app.core.forecasters.holt import DampedHolt
from app.core.forecasters.phase import SeasonalGrid, grid_for
from app.core.forecasters.profile import SeasonalProfile
from app.core.forecasters.residual import ResidualRegression

__all__ = [
    "DampedHolt",
    "HorizonConformal",
    "ResidualRegression",
    "SeasonalGrid",
    "SeasonalProfile",
    "grid_for",
]
