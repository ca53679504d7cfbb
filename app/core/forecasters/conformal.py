"""Online conformal calibration of per-horizon interval widths."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from app.core.forecasters.kernels import NO_MASK, conformal_half_widths, conformal_learn
from app.core.forecasters.phase import FloatArray


class HorizonConformal:
    """Normalised split-conformal intervals per horizon, calibrated by quantile tracking.

    For each horizon ``h`` the half-width at level ``l`` is ``q[l, h] * s[h]``: ``s`` is the
    caller's running mean absolute error of that horizon (local scale, so intervals widen with
    busy hours and shrink at night; the forecaster already keeps it to weigh its candidates),
    and ``q`` is the quantile of the normalised score ``|e| / s`` tracked online (Angelopoulos
    et al., "Conformal PID control", 2023; the "adaptive conformal inference" of Gibbs &
    Candès, 2021): when the target of an interval is revealed, ``q += step * (miss - (1-l))``
    where ``miss`` says whether *the interval that was issued* for it missed. Whatever the
    error distribution, the long-run miss rate of the issued intervals is driven to ``1 - l``
    (the tracker's guarantee), with constant memory and a handful of vector operations per
    window: no residual is stored (the caller keeps the issued widths with its forecasts).

    Parameters
    ----------
    horizon
        Number of horizons.
    levels
        Coverage levels, sorted, e.g. ``(0.8, 0.95)``.
    step
        Tracker step in normalised units (0.05: recovers from a regime change in a few hundred
        windows, small enough that the width does not jitter).

    Examples
    --------
    >>> c = HorizonConformal(horizon=1, levels=(0.8,))
    >>> scale = np.array([4.5])  # mean of |errors| uniform on 0..9
    >>> for i in range(2000):
    ...     c.learn(np.array([float(i % 10)]), c.half_widths(scale))
    >>> covered = sum(float(i % 10) <= c.half_widths(scale)[0, 0] for i in range(10))
    >>> covered in (8, 9)
    True
    """

    def __init__(
        self, horizon: int, levels: tuple[float, ...] = (0.8, 0.95), step: float = 0.05
    ) -> None:
        self.horizon = horizon
        self.levels = levels
        self.step = step
        miss = np.array([[1.0 - lvl] for lvl in levels])
        # q rises by step * level when missed and falls by step * (1 - level) when covered:
        # zero drift exactly at the target miss rate.
        self._up: FloatArray = (1.0 - miss) * step
        self._down: FloatArray = -miss * step
        # Start at the Gaussian answer: |e| / mean|e| has quantile z_{(1+l)/2} * sqrt(pi/2).
        # Row 0 is a constant 0: one cumulative max then both clamps q at 0 and nests levels.
        q0 = [0.0] + [NormalDist().inv_cdf(0.5 + lvl / 2.0) * 1.2533 for lvl in levels]
        self._q: FloatArray = np.repeat(np.array(q0)[:, None], horizon, axis=1)
        self.q: FloatArray = self._q[1:]
        self.count: npt.NDArray[np.int64] = np.zeros(horizon, dtype=np.int64)
        # The first h widths issued for horizon h were issued before any error of that horizon
        # was known (scale 0): they are not the tracker's doing and must not move it.
        self._informed_after: npt.NDArray[np.int64] = np.arange(1, horizon + 1)
        self._informed = False  # every horizon past that: no masking needed
        self._n = 0
        self._bind()

    def _bind(self) -> None:
        """Scratch (not pickled)."""
        horizon = self.horizon
        self._up_full = np.repeat(self._up, horizon, axis=1)
        self._down_full = np.repeat(self._down, horizon, axis=1)

    _SCRATCH = ("_up_full", "_down_full")

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        for key in self._SCRATCH:
            del state[key]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.q = self._q[1:]  # pickle copies views: re-attach
        self._bind()

    def learn(
        self,
        abs_err: FloatArray,
        issued: FloatArray,
        valid: npt.NDArray[np.bool_] | None = None,
    ) -> None:
        """Take the absolute errors revealed now (one per horizon) and the half-widths that were
        issued for them (``(levels, horizon)``, from `half_widths` at the forecast's origin).
        ``valid`` masks horizons with nothing revealed (e.g. after gaps)."""
        has_valid = valid is not None
        self._informed = conformal_learn(
            self.q,
            abs_err,
            issued,
            self._up_full,
            self._down_full,
            self.count,
            self._informed_after,
            valid if has_valid else NO_MASK,
            has_valid,
            self._informed,
        )
        self.stepped()

    def stepped(self) -> None:
        """Count a learnt window (by `learn`, or by the forecaster's fused loop)."""
        self._n += 1
        if self._n % 8 == 0:
            # q only goes below 0 while the scale is exactly 0 (a constant series); outputs
            # are clamped anyway, this keeps it from drifting down for ever meanwhile.
            np.maximum(self.q, 0.0, out=self.q)

    def half_widths(self, scale: FloatArray, out: FloatArray | None = None) -> FloatArray:
        """Half-widths ``(levels, horizon)`` for the current ``scale`` (per horizon): >= 0 and
        non-decreasing across (sorted) levels. Written into ``out`` if given."""
        if out is None:
            out = np.empty((len(self.levels), self.horizon))
        conformal_half_widths(self._q, scale, out)
        return out
