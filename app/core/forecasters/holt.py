"""Damped-trend Holt smoothing: the non-seasonal candidate."""

from __future__ import annotations

import numpy as np

from app.core.forecasters.phase import FloatArray


class DampedHolt:
    """Level + damped trend (Gardner & McKenzie), forecasting ``horizon`` steps at once.

    The seasonal candidates need a day of history and assume a repeating shape; this one needs
    two points and assumes nothing, so it carries cold starts, random-walk-like series (queues,
    connection counts that drift) and series whose "seasonality" is noise. Damping keeps a
    15-step extrapolation of a noisy slope from running away.

    Parameters
    ----------
    horizon
        Number of steps `forecast` returns.
    alpha
        Level smoothing (0.5: reacts within a couple of windows).
    beta
        Trend smoothing, relative to ``alpha`` (the trend moves by ``alpha * beta * error``).
    phi
        Trend damping per step (0.9: a trend is believed for about ten windows).

    Examples
    --------
    >>> h = DampedHolt(horizon=3)
    >>> for y in [1.0, 2.0, 3.0, 4.0, 5.0]:
    ...     h.learn_one(y)
    >>> [round(v, 2) for v in h.forecast().tolist()]  # lags a ramp: the trend is believed slowly
    [4.4, 4.61, 4.79]
    """

    def __init__(
        self, horizon: int, alpha: float = 0.5, beta: float = 0.1, phi: float = 0.9
    ) -> None:
        self.horizon = horizon
        self.alpha = alpha
        self.beta = beta
        self.phi = phi
        self.level = 0.0
        self.trend = 0.0
        self.n = 0
        steps = np.arange(1, horizon + 1, dtype=np.float64)
        self._damp: FloatArray = np.cumsum(phi**steps)

    def _ahead(self, steps: int) -> float:
        """Sum of ``phi**i`` for ``i = 1..steps``: how far the trend carries in ``steps``."""
        if steps <= self.horizon:
            return float(self._damp[steps - 1])
        phi = self.phi
        return steps * 1.0 if phi == 1.0 else phi * (1.0 - phi**steps) / (1.0 - phi)

    def learn_one(self, y: float, steps: int = 1) -> None:
        """Learn ``y``, observed ``steps`` windows after the previous one (``> 1`` = a gap)."""
        if self.n == 0:
            self.level = y
        else:
            pred = self.level + self.trend * self._ahead(steps)
            err = y - pred
            self.level = pred + self.alpha * err
            self.trend = self.trend * self.phi**steps + self.alpha * self.beta * err
        self.n += 1

    def predict_one(self) -> float:
        """One-step point forecast."""
        return self.level + self.trend * self.phi

    def forecast_into(self, out: FloatArray) -> None:
        """Write the point forecasts for 1..``horizon`` steps ahead into ``out``."""
        np.multiply(self._damp, self.trend, out=out)
        out += self.level

    def forecast(self) -> FloatArray:
        """Point forecasts for 1..``horizon`` steps ahead."""
        out: FloatArray = np.empty(self.horizon)
        self.forecast_into(out)
        return out
