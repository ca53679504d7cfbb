"""Direct multi-horizon ridge regression of what the seasonal profile gets wrong."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.core.forecasters.kernels import NO_MASK, residual_forecast, residual_learn
from app.core.forecasters.phase import FloatArray, IntArray

N_FEATURES = 3
_N_PAIRS = N_FEATURES * (N_FEATURES + 1) // 2
# Upper-triangle storage order (00, 01, 02, 11, 12, 22) -> full 3x3, row-major; and diagonal.
_DIAG = np.array([0, 3, 5])


class ResidualRegression:
    """Forecast the profile residual ``h`` steps ahead from ``[r_t, fast EW r, slow EW r]``.

    Telemetry rarely sits exactly on its seasonal shape: it drifts for half an hour, shifts
    level after a deploy, grows with a trend the profile only catches up with over days. Those
    departures are autocorrelated, so the residual ``r_t = y_t - profile_t`` predicts the next
    ones. One ridge regression per horizon (*direct* strategy, no recursion) learns how much of
    the last residual (``r_t``), of the recent offset (fast EW mean) and of the persistent offset
    (slow EW mean) survives ``h`` steps: AR decay, local level and bias correction in one
    least-squares fit, per series, 3 coefficients per horizon. The sufficient statistics are
    exponentially forgotten so the fit follows regime changes; the (batched) solve is done every
    ``refit_every`` updates, as it is the only non-trivial cost.

    Parameters
    ----------
    horizon
        Number of horizons (one regression each).
    fast_rate, slow_rate
        Rates of the two EW means of the residual used as features.
    forgetting
        Per-update forgetting of the regression statistics (1/2880: about two days).
    ridge
        Ridge penalty relative to the mean feature energy (scale-free).
    refit_every
        Solve the normal equations every this many updates.
    max_coef
        Coefficients are clipped to ``[-max_coef, max_coef]``: a guard, not a prior.

    Examples
    --------
    An AR(1) residual with coefficient 0.8: the one-step regression finds it on ``r_t``.

    >>> rng = np.random.default_rng(0)
    >>> m = ResidualRegression(horizon=1)
    >>> r = 0.0
    >>> for _ in range(3000):
    ...     r = 0.8 * r + rng.normal()
    ...     m.learn(np.array([0]), np.array([r]))  # the origin one step back saw r
    ...     m.observe(0, r)
    >>> round(float(m.coef[0, 0]), 2)
    0.8
    """

    def __init__(
        self,
        horizon: int,
        fast_rate: float = 0.1,
        slow_rate: float = 0.01,
        forgetting: float = 1.0 / 2880.0,
        ridge: float = 1e-3,
        refit_every: int = 20,
        max_coef: float = 2.0,
    ) -> None:
        self.horizon = horizon
        self.fast_rate = fast_rate
        self.slow_rate = slow_rate
        self.forgetting = forgetting
        self.ridge = ridge
        self.refit_every = refit_every
        self.max_coef = max_coef
        # Exponential forgetting without decaying the sums every update: the features of an
        # origin are stored already scaled by ``_grow`` (= keep ** -origins seen), and the sums
        # are renormalised now and then. A term learnt ``h`` windows after its origin is then
        # off by keep ** h, the same factor for every term of horizon ``h``: the solution of
        # that horizon's normal equations is unchanged. Same fit, fewer array operations.
        # Arrays are feature-major (``(feature, horizon)``): contiguous rows are cheaper to
        # gather and add than strided columns at this size.
        # The sums in one array, so that one subtraction updates both: ``[X'y ; -(upper
        # triangle of X'X)]`` (negation is exact: the same numbers as separate sums).
        self._sums: FloatArray = np.zeros((N_FEATURES + _N_PAIRS, horizon))
        self.coef: FloatArray = np.zeros((N_FEATURES, horizon))
        self.features: FloatArray = np.zeros(N_FEATURES)
        # By origin slot (column): [g * x (3) ; g * upper triangle of x x' (6)].
        self.history: FloatArray = np.zeros((N_FEATURES + _N_PAIRS, horizon))
        self.fast = 0.0
        self.slow = 0.0
        self.n_obs = 0
        self.n_fit = 0
        self._grow = 1.0

    @property
    def sxy(self) -> FloatArray:
        """Sum of ``x * y`` per feature and horizon (forgetting-scaled)."""
        return self._sums[:N_FEATURES].copy()

    @property
    def sxx(self) -> FloatArray:
        """Upper triangle of ``X'X`` (order 00, 01, 02, 11, 12, 22) per horizon."""
        return -self._sums[N_FEATURES:]

    def learn(
        self,
        slots: IntArray,
        targets: FloatArray,
        valid: npt.NDArray[np.bool_] | None = None,
        *,
        negate: bool = False,
    ) -> None:
        """Learn one arrival: ``targets[h-1]`` is the residual the origin in ``slots[h-1]`` saw.

        ``valid`` masks horizons whose origin window was never learned (gaps); None = all valid.
        ``negate=True`` says ``targets`` holds minus the residuals (profile forecast errors, as
        the caller has them at hand: saves it an array operation).
        """
        has_valid = valid is not None
        mask = valid if has_valid else NO_MASK
        if not residual_learn(
            self.history, slots, targets, mask, has_valid, negate, N_FEATURES, self._sums
        ):
            return
        self.learned()

    def learned(self) -> None:
        """Count an arrival whose terms are in the sums (by `learn`, or by the forecaster's
        fused loop); refit every ``refit_every``."""
        self.n_fit += 1
        if self.n_fit % self.refit_every == 0:
            self._solve()

    def _solve(self) -> None:
        """Solve every horizon's 3x3 ridge system at once, by its adjugate (Cramer's rule).

        Plain element-wise arithmetic, not LAPACK: BLAS kernels differ between processors
        (AVX2, AVX-512...) in the last bits, and the same windows must give the same event
        bytes on every machine, live or replayed.
        """
        sxx = self.sxx
        a, b, c, d, e, f = sxx  # X'X per horizon: rows 00, 01, 02, 11, 12, 22
        lam = sxx.take(_DIAG, axis=0).sum(axis=0)  # trace of each X'X
        lam *= self.ridge / N_FEATURES
        lam += 1e-300
        r0, r1, r2 = self._sums[:N_FEATURES]
        # Overflowing or singular systems give non-finite coefficients, which are skipped.
        with np.errstate(all="ignore"):
            a, d, f = a + lam, d + lam, f + lam
            c00, c01, c02 = d * f - e * e, c * e - b * f, b * e - c * d
            c11, c12, c22 = a * f - c * c, b * c - a * e, a * d - b * b
            det = a * c00 + b * c01 + c * c02
            coef = np.array(
                [
                    (c00 * r0 + c01 * r1 + c02 * r2) / det,
                    (c01 * r0 + c11 * r1 + c12 * r2) / det,
                    (c02 * r0 + c12 * r1 + c22 * r2) / det,
                ]
            )
        if np.isfinite(coef).all():
            self.coef = np.clip(coef, -self.max_coef, self.max_coef)

    def observe(self, slot: int, r: float) -> None:
        """Take the newest residual ``r`` and remember the features of this origin at ``slot``."""
        self.n_obs += 1
        inv = 1.0 / self.n_obs
        self.fast += max(self.fast_rate, inv) * (r - self.fast)
        self.slow += max(self.slow_rate, inv) * (r - self.slow)
        r0, r1, r2 = r, self.fast, self.slow
        self.features[:] = (r0, r1, r2)
        g = self._grow = self._grow / (1.0 - self.forgetting)
        if g > 1e12:  # renormalise (every ~80k windows): sums and pending origins alike
            for arr in (self._sums, self.history):
                arr /= g
            g = self._grow = 1.0
        g0, g1, g2 = g * r0, g * r1, g * r2
        self.history[:, slot] = (g0, g1, g2, g0 * r0, g0 * r1, g0 * r2, g1 * r1, g1 * r2, g2 * r2)

    def forecast_into(self, out: FloatArray) -> None:
        """Write the predicted residual for horizons 1..``horizon`` into ``out``."""
        f0, f1, f2 = self.features.tolist()
        residual_forecast(self.coef, f0, f1, f2, out, False, out)

    def forecast(self) -> FloatArray:
        """Predicted residual for horizons 1..``horizon`` from the current features."""
        out: FloatArray = np.empty(self.horizon)
        self.forecast_into(out)
        return out
