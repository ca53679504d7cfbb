"""Compiled loops for the per-window arithmetic of one series (numba, ahead of first use).

Why: a series update is some sixty operations on vectors of ``horizon`` (15) numbers. As numpy
calls, each costs ~0.5 µs of dispatch for ~10 ns of arithmetic, so a window took ~100 µs and
the backtest could not reach its throughput target. These loops do the same work in a few µs.

Determinism (the same windows must give the same event bytes on every machine, live or
replayed): every loop performs the IEEE operations of the numpy code it replaced, in the same
order. Element-wise ``+ - * /``, ``abs``, ``sqrt`` and comparisons are exactly rounded
anywhere; sums follow numpy's pairwise order (`pairwise_sum`); ``maximum``/``minimum`` keep
numpy's NaN rule. numba compiles without ``fastmath``, so LLVM neither contracts to FMA nor
reorders a sum, whatever the processor. ``tests/unit/test_kernels.py`` holds each kernel to
the numpy expression it stands for, and the golden backtest holds the whole engine to its bytes.

Compiled code is cached next to this file (``__pycache__``); the first import on a machine
compiles for a few seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
from numba import types as nt

from app.core.forecasters.phase import FloatArray

_F = TypeVar("_F", bound=Callable[..., Any])

# Argument types: explicit signatures compile (or load from the cache) at import, not on a
# first call in the middle of a stream, and refuse an array of the wrong layout or dtype.
_f8, _i8, _b1 = nt.float64, nt.int64, nt.boolean
_F1, _F2, _F3 = nt.float64[::1], nt.float64[:, ::1], nt.float64[:, :, ::1]
_I1, _B1 = nt.int64[::1], nt.boolean[::1]
_F8x3: Any = nt.UniTuple(_f8, 3)  # type: ignore[no-untyped-call]
_SCORED: Any = nt.Tuple((_i8, _b1, _b1, _b1))  # type: ignore[no-untyped-call]

#: what a kernel gets for ``valid`` when its caller has no mask (``has_valid=False``: unread)
NO_MASK = np.ones(1, dtype=np.bool_)


def _RO(dtype: Any, ndim: int) -> Any:
    """A read-only C-contiguous array type (shared tables are frozen)."""
    return nt.Array(dtype, ndim, "C", readonly=True)


def _compiled(*signatures: Any) -> Callable[[_F], _F]:
    """``numba.njit`` for ``signatures``, cached on disk; typed for mypy (numba has no stubs)."""

    def compile_(fn: _F) -> _F:
        return cast(_F, numba.njit(list(signatures), cache=True)(fn))

    return compile_


# ------------------------------------------------------------------ numpy's own semantics


@_compiled(_f8(_f8, _f8))
def npmax(a: float, b: float) -> float:
    """``np.maximum(a, b)``: NaN if either is NaN; ``b`` on ties (so ``max(0.0, -0.0)`` is
    ``-0.0``, as numpy gives it)."""
    return a if (a > b or a != a) else b


@_compiled(_f8(_f8, _f8))
def npmin(a: float, b: float) -> float:
    """``np.minimum(a, b)``: NaN if either is NaN; ``b`` on ties."""
    return a if (a < b or a != a) else b


@_compiled(_f8(_F1, _i8, _i8))
def _pairwise(a: FloatArray, lo: int, n: int) -> float:
    """numpy's ``pairwise_sum`` of ``a[lo : lo + n]`` (loops_utils.h), bit for bit."""
    if n < 8:
        res = -0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    if n <= 128:
        r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
        r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
        i = 8
        stop = n - n % 8
        while i < stop:
            j = lo + i
            r0 += a[j]
            r1 += a[j + 1]
            r2 += a[j + 2]
            r3 += a[j + 3]
            r4 += a[j + 4]
            r5 += a[j + 5]
            r6 += a[j + 6]
            r7 += a[j + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[lo + i]
            i += 1
        return float(res)
    half = n // 2
    half -= half % 8
    return float(_pairwise(a, lo, half) + _pairwise(a, lo + half, n - half))


@_compiled(_f8(_F1))
def pairwise_sum(a: FloatArray) -> float:
    """``np.add.reduce(a)`` of a 1-d float64 array, bit for bit (the reduction starts from
    the identity ``0.0``, then adds numpy's pairwise sum)."""
    return 0.0 + _pairwise(a, 0, a.shape[0])


# ------------------------------------------------------------------ conformal (HorizonConformal)


@_compiled(_b1(_F2, _F1, _F2, _F2, _F2, _I1, _I1, _B1, _b1, _b1))
def conformal_learn(
    q: FloatArray,
    abs_err: FloatArray,
    issued: FloatArray,
    up: FloatArray,
    down: FloatArray,
    count: Any,
    informed_after: Any,
    valid: Any,
    has_valid: bool,
    informed: bool,
) -> bool:
    """`HorizonConformal.learn` on ``q`` (its levels' rows); returns the new ``informed``."""
    n_levels, horizon = issued.shape
    masking = has_valid or not informed
    active = np.ones(horizon)
    if masking:
        for h in range(horizon):
            ok = count[h] >= informed_after[h]
            if has_valid:
                ok = ok and valid[h]
                count[h] += 1 if valid[h] else 0
            else:
                count[h] += 1
            active[h] = 1.0 if ok else 0.0
        informed = True
        for h in range(horizon):
            if count[h] < informed_after[h]:
                informed = False
    for k in range(n_levels):
        for h in range(horizon):
            u = up[k, h] if abs_err[h] > issued[k, h] else down[k, h]
            if masking:
                u *= active[h]
            q[k, h] += u
    return informed


@_compiled(nt.void(_F2, _F1, _F2))
def conformal_half_widths(q_all: FloatArray, scale: FloatArray, out: FloatArray) -> None:
    """`HorizonConformal.half_widths`: running max down the levels (row 0 of ``q_all`` is
    the constant 0), times ``scale``."""
    n_levels, horizon = out.shape
    for h in range(horizon):
        prev = q_all[0, h]
        for k in range(n_levels):
            prev = npmax(prev, q_all[k + 1, h])
            out[k, h] = prev * scale[h]


# ------------------------------------------------------------------ the combination (forecast.py)


@_compiled(_i8(_F3, _I1, _I1, _i8, _b1, _B1, _F2, _i8, _f8))
def gather_issued(
    ring: FloatArray,
    slots: Any,
    origin: Any,
    n: int,
    check: bool,
    valid: Any,
    buf: FloatArray,
    n_err: int,
    y: float,
) -> int:
    """What was issued for window ``n``, into ``buf[row, h-1]`` (from ``ring[slot, h-1, row]``).

    With ``check``, ``valid[h-1]`` says whether the origin ``h`` windows back was learned.
    Then subtracts ``y`` from the first ``n_err`` rows (0: none). Returns -1 if no horizon is
    valid (nothing gathered), 0 if ``valid`` masks, 1 if every horizon counts (no mask).
    """
    rows, horizon = buf.shape
    state = 1
    if check:
        state = -1
        for h in range(horizon):
            ok = origin[slots[h]] == n - (h + 1)
            valid[h] = ok
            if ok:
                state = 0
        if state < 0:
            return state
    for h in range(horizon):
        src = ring[slots[h], h]
        for c in range(rows):
            buf[c, h] = src[c]
    for c in range(n_err):
        for h in range(horizon):
            buf[c, h] -= y
    return state


@_compiled(_b1(_F2, _i8, _f8, _i8, _i8, _F2, _b1, _F2, _I1, _b1, _B1, _b1, _f8, _i8))
def learn_errors(
    buf: FloatArray,
    n_err: int,
    y: float,
    lo0: int,
    n_levels: int,
    inside: FloatArray,
    with_inside: bool,
    mae: FloatArray,
    scored: Any,
    masked: bool,
    valid: Any,
    mature: bool,
    error_rate: float,
    mature_after: int,
) -> bool:
    """Absolute errors of the first ``n_err`` rows of ``buf`` (in place); coverage of the
    issued bounds (``inside``, 0/1, if ``with_inside``); the EW mean absolute errors ``mae``.
    Returns the new ``mature`` (every horizon scored ``mature_after`` times)."""
    horizon = buf.shape[1]
    for c in range(n_err):
        for h in range(horizon):
            buf[c, h] = abs(buf[c, h])
    if with_inside:
        hi0 = lo0 + n_levels
        for k in range(n_levels):
            for h in range(horizon):
                below = buf[lo0 + k, h] - y <= 0.0
                above = buf[hi0 + k, h] - y >= 0.0
                inside[k, h] = 1.0 if (below and above) else 0.0
    if mature and not masked:
        for c in range(n_err):
            for h in range(horizon):
                mae[c, h] += (buf[c, h] - mae[c, h]) * error_rate
        return mature
    rate = np.empty(horizon)
    for h in range(horizon):
        r = npmax(1.0 / (scored[h] + 1.0), error_rate)
        if masked:
            r *= 1.0 if valid[h] else 0.0
            scored[h] += 1 if valid[h] else 0
        else:
            scored[h] += 1
        rate[h] = r
    for c in range(n_err):
        for h in range(horizon):
            mae[c, h] += (buf[c, h] - mae[c, h]) * rate[h]
    least = scored[0]
    for h in range(1, horizon):
        least = min(least, scored[h])
    return bool(least >= mature_after)


@_compiled(nt.void(_F2, _f8, _I1, _i8, _F2))
def blend_weights(
    mae: FloatArray, power: float, scored: Any, cold_below: int, w: FloatArray
) -> None:
    """Weights ``(best_mae / mae) ** power`` normalised per horizon (``power <= 0``: the best
    only) into ``w``; horizons scored fewer than ``cold_below`` times go to candidate 1 (holt)."""
    n_cand, horizon = mae.shape
    tiny = 1e-300
    for h in range(horizon):
        if power <= 0.0:
            best = 0
            for c in range(1, n_cand):
                if mae[c, h] < mae[best, h]:
                    best = c
            for c in range(n_cand):
                w[c, h] = 1.0 if c == best else 0.0
        else:
            least = mae[0, h]
            for c in range(1, n_cand):
                least = npmin(least, mae[c, h])
            least += tiny
            total = 0.0
            for c in range(n_cand):
                v = least / (mae[c, h] + tiny)
                if power == 4.0:
                    v *= v
                    v *= v
                else:
                    v = v**power
                w[c, h] = v
                total += v
            for c in range(n_cand):
                w[c, h] /= total
        if scored[h] < cold_below:
            for c in range(n_cand):
                w[c, h] = 1.0 if c == 1 else 0.0


@_compiled(nt.void(_F2, _F2, _i8, _i8, _i8, _b1, _f8, _f8, _f8, _F1, _F1, _F3, _i8))
def combine(
    cur: FloatArray,
    weights: FloatArray,
    point_row: int,
    lo0: int,
    cal0: int,
    fallback: bool,
    spread: float,
    jump: float,
    mean: float,
    z: FloatArray,
    sqrt_h: FloatArray,
    ring: FloatArray,
    slot: int,
) -> None:
    """The combined point (``cur[point_row]``) from the candidates' rows and ``weights``; the
    bounds from the calibrated half-widths (``cur[cal0:]``), widened to the warm-up fallback
    ``z * (1.5 spread + 1.25 jump sqrt(h) + 0.01 |mean|)`` if ``fallback``; then the whole
    forecast into ``ring[slot]`` (transposed: ``ring[slot, h-1, row]``)."""
    n_cand, horizon = weights.shape
    rows = cur.shape[0]
    n_levels = rows - cal0
    hi0 = lo0 + n_levels
    spread_part = 1.5 * spread
    jump_part = 1.25 * jump
    mean_part = 0.01 * abs(mean)
    for h in range(horizon):
        p = weights[0, h] * cur[0, h] + weights[1, h] * cur[1, h]
        for c in range(2, n_cand):
            p += weights[c, h] * cur[c, h]
        cur[point_row, h] = p
        base = spread_part + jump_part * sqrt_h[h]
        base += mean_part
        for k in range(n_levels):
            width = cur[cal0 + k, h]
            if fallback:
                width = npmax(width, z[k] * base)
            cur[lo0 + k, h] = p - width
            cur[hi0 + k, h] = p + width
        dst = ring[slot, h]
        for c in range(rows):
            dst[c] = cur[c, h]


# ------------------------------------------------------------------ candidates


@_compiled(nt.void(_F1, _F1, _i8, _f8, _f8, _f8))
def _visit(
    knots: FloatArray, mass: FloatArray, i: int, w: float, keep: float, target: float
) -> None:
    """Knot ``i`` takes ``target`` with weight ``w``: a kernel running mean whose past mass
    decays by ``exp(keep * w)``."""
    if w > 0.0:
        m = mass[i] * math.exp(keep * w) + w
        mass[i] = m
        knots[i] += (w / m) * (target - knots[i])


@_compiled(
    _F8x3(
        _F1,
        _F1,
        _i8,
        _i8,
        _i8,
        _i8,
        _f8,
        _f8,
        _f8,
        _f8,
        _f8,
        _i8,
        _f8,
        _f8,
        _f8,
        _f8,
        _f8,
        _f8,
        _f8,
        _f8,
        _i8,
    )
)
def profile_learn(
    knots: FloatArray,
    mass: FloatArray,
    i0: int,
    i1: int,
    j0: int,
    j1: int,
    a: float,
    b: float,
    c: float,
    d: float,
    y: float,
    n: int,
    level: float,
    scale: float,
    clip_up: float,
    clip_down: float,
    scale_rate: float,
    level_rate: float,
    keep_daily: float,
    keep_weekly: float,
    day_windows: int,
) -> tuple[float, float, float]:
    """`SeasonalProfile.learn_window` (``n`` already counts this window): residuals above
    ``clip_up`` (below ``-clip_down``) times ``scale`` are clipped; returns
    ``(residual, level, scale)``."""
    w_part = knots[j0] * c + knots[j1] * d
    pred = level + (knots[i0] * a + knots[i1] * b) + w_part
    resid = y - pred
    r = resid
    if n > 10:
        up, down = clip_up * scale, -clip_down * scale
        r = up if r > up else (down if r < down else r)
    inv = 1.0 / n
    scale += (inv if inv > scale_rate else scale_rate) * (abs(resid) - scale)
    y_c = pred + r
    level += (inv if inv > level_rate else level_rate) * r
    # Daily knots learn what the level and the weekly knots do not explain...
    target = y_c - level - w_part
    _visit(knots, mass, i0, a, keep_daily, target)
    _visit(knots, mass, i1, b, keep_daily, target)
    # ...then the weekly knots what is left after the updated daily shape, but only once a
    # day has been seen: on day one the daily knots are still being filled, and the weekly
    # knots would steal the shape from them (and hand it to one weekday only).
    if n > day_windows:
        target = y_c - level - (knots[i0] * a + knots[i1] * b)
        _visit(knots, mass, j0, c, keep_weekly, target)
        _visit(knots, mass, j1, d, keep_weekly, target)
    return resid, level, scale


@_compiled(
    nt.void(_F1, nt.int64[:, ::1], _F2, _f8, _F1),
    nt.void(_F1, _RO(nt.int64, 2), _RO(nt.float64, 2), _f8, _F1),  # the shared grid table
)
def profile_forecast(
    knots: FloatArray, idx: Any, wt: FloatArray, level: float, out: FloatArray
) -> None:
    """`SeasonalProfile.forecast_into`: ``level`` + the four weighted knots of each window."""
    for h in range(out.shape[0]):
        v = knots[idx[h, 0]] * wt[h, 0] + knots[idx[h, 1]] * wt[h, 1]
        v += knots[idx[h, 2]] * wt[h, 2]
        v += knots[idx[h, 3]] * wt[h, 3]
        out[h] = v + level


@_compiled(_b1(_F2, _I1, _F1, _B1, _b1, _b1, _i8, _F2))
def residual_learn(
    history: FloatArray,
    slots: Any,
    targets: FloatArray,
    valid: Any,
    has_valid: bool,
    negate: bool,
    n_features: int,
    sums: FloatArray,
) -> bool:
    """`ResidualRegression.learn`'s update of ``sums``; False if no horizon was valid."""
    rows, horizon = sums.shape
    if has_valid:
        some = False
        for h in range(horizon):
            some = some or valid[h]
        if not some:
            return False
    for r in range(rows):
        for h in range(horizon):
            v = history[r, slots[h]]
            if has_valid:
                v *= 1.0 if valid[h] else 0.0
            if r < n_features:
                v *= targets[h]
                if not negate:
                    v = -v
            sums[r, h] -= v
    return True


@_compiled(nt.void(_F2, _f8, _f8, _f8, _F1, _b1, _F1))
def residual_forecast(
    coef: FloatArray,
    f0: float,
    f1: float,
    f2: float,
    base: FloatArray,
    add_base: bool,
    out: FloatArray,
) -> None:
    """`ResidualRegression.forecast_into`, plus ``base`` if ``add_base`` (``profile_ar``)."""
    for h in range(out.shape[0]):
        v = coef[0, h] * f0
        v += coef[1, h] * f1
        v += coef[2, h] * f2
        out[h] = v + base[h] if add_base else v


# ------------------------------------------------------------------ scoring (accuracy.py)


@_compiled(
    nt.void(_F2, _F1, nt.float64[:, :], _B1, _b1, _b1, _f8),
    nt.void(_F2, _F1, nt.boolean[:, :], _B1, _b1, _b1, _f8),
)
def accuracy_score(
    sums: FloatArray,
    abs_err: FloatArray,
    inside: Any,
    valid: Any,
    has_valid: bool,
    known: bool,
    naive_err: float,
) -> None:
    """`ForecastAccuracy.score`'s sums: targets, with a baseline, baseline error, model error,
    the same on targets with a baseline, then hits per level (rows of ``sums``)."""
    rows, horizon = sums.shape
    for h in range(horizon):
        if has_valid and not valid[h]:
            continue
        sums[0, h] += 1.0
        sums[3, h] += abs_err[h]
        if known:
            sums[1, h] += 1.0
            sums[2, h] += naive_err
            sums[4, h] += abs_err[h]
        for k in range(rows - 5):
            sums[5 + k, h] += inside[k, h]


# ------------------------------------------------------------------ one window, fused
# `SeriesForecaster` calls these two per window instead of the ten kernels above one by one:
# the same loops in the same order, minus ~2 µs of Python per call saved.


@_compiled(
    _SCORED(
        *(_F3, _I1, _I1, _i8, _b1, _B1, _F2, _f8),  # gather_issued
        *(_F2, _F2),  # residual_learn (history, sums)
        *(_i8, _F2, _b1, _F2, _I1, _b1, _f8, _i8),  # learn_errors
        *(_F2, _b1, _f8),  # accuracy_score (sums, known, naive error)
        *(_F2, _F2, _F2, _I1, _I1, _b1),  # conformal_learn
    )
)
def score_trusted(
    ring: FloatArray,
    slots: Any,
    origin: Any,
    n: int,
    check: bool,
    valid: Any,
    buf: FloatArray,
    y: float,
    history: FloatArray,
    resid_sums: FloatArray,
    lo0: int,
    inside: FloatArray,
    with_accuracy: bool,
    mae: FloatArray,
    scored: Any,
    mature: bool,
    error_rate: float,
    mature_after: int,
    accuracy_sums: FloatArray,
    known: bool,
    naive_err: float,
    q: FloatArray,
    up: FloatArray,
    down: FloatArray,
    count: Any,
    informed_after: Any,
    informed: bool,
) -> tuple[int, bool, bool, bool]:
    """`SeriesForecaster._score` of a trusted value: gather what was issued for window ``n``,
    then the residual regression, the error averages, the accuracy sums (``with_accuracy``)
    and the conformal tracker learn from it. Returns ``(state, mature, informed, learned)``:
    `gather_issued`'s state (-1: nothing to score), and whether the regression learnt."""
    n_cand = mae.shape[0]  # the candidates and the combination: the error rows
    n_levels = q.shape[0]
    state = gather_issued(ring, slots, origin, n, check, valid, buf, n_cand, y)
    if state < 0:
        return state, mature, informed, False
    masked = state == 0
    learned = residual_learn(history, slots, buf[0], valid, masked, True, 3, resid_sums)
    mature = learn_errors(
        buf,
        n_cand,
        y,
        lo0,
        n_levels,
        inside,
        with_accuracy,
        mae,
        scored,
        masked,
        valid,
        mature,
        error_rate,
        mature_after,
    )
    comb = buf[n_cand - 1]
    if with_accuracy:
        accuracy_score(accuracy_sums, comb, inside, valid, masked, known, naive_err)
    cal0 = lo0 + 2 * n_levels
    informed = conformal_learn(
        q, comb, buf[cal0:], up, down, count, informed_after, valid, masked, informed
    )
    return state, mature, informed, learned


_REFRESH_ARGS = (
    _f8,  # the profile's level (its knots and grid rows come first)
    *(_F1, _f8, _f8),  # holt (damp, level, trend)
    *(_F2, _F1),  # residual (coef, features)
    *(_b1, _F2, _f8, _I1, _i8, _F2),  # blend_weights (when reweighting)
    *(_F2, _F1),  # conformal (q with its 0 row, scale)
    *(_b1, _i8, _f8, _f8, _f8, _F1, _F1),  # warm-up fallback
    *(_F2, _i8, _i8, _F3, _I1, _i8, _i8),  # cur, lo0, cal0, ring, origin, slot, n
    _F1,  # out: each candidate's weight summed over horizons (when reweighting)
)
_REFRESHED: Any = nt.Tuple((_b1, _f8))  # type: ignore[no-untyped-call]


@_compiled(
    _REFRESHED(_F1, nt.int64[:, ::1], _F2, *_REFRESH_ARGS),
    _REFRESHED(_F1, _RO(nt.int64, 2), _RO(nt.float64, 2), *_REFRESH_ARGS),  # shared grid table
)
def refresh_forecast(
    knots: FloatArray,
    idx: Any,
    wt: FloatArray,
    profile_level: float,
    damp: FloatArray,
    holt_level: float,
    holt_trend: float,
    coef: FloatArray,
    features: FloatArray,
    reweight: bool,
    mae_cand: FloatArray,
    power: float,
    scored: Any,
    cold_below: int,
    weights: FloatArray,
    q_all: FloatArray,
    mae_comb: FloatArray,
    warming: bool,
    warmup: int,
    spread: float,
    jump: float,
    mean: float,
    z: FloatArray,
    sqrt_h: FloatArray,
    cur: FloatArray,
    lo0: int,
    cal0: int,
    ring: FloatArray,
    origin: Any,
    slot: int,
    n: int,
    totals: FloatArray,
) -> tuple[bool, float]:
    """`SeriesForecaster._refresh`: the candidates forecast from origin ``n`` into ``cur``
    (rows profile, holt, profile_ar), the weights if ``reweight``, the calibrated half-widths,
    then the combination and its bounds, into the ring. Returns the new ``warming`` and, if
    ``reweight``, the mean of ``mae_comb`` over horizons (else -1.0); ``totals`` then holds
    each candidate's weight summed over horizons."""
    horizon = cur.shape[1]
    profile_forecast(knots, idx, wt, profile_level, cur[0])
    for h in range(horizon):
        cur[1, h] = damp[h] * holt_trend + holt_level
    residual_forecast(coef, features[0], features[1], features[2], cur[0], True, cur[2])
    origin[slot] = n
    recent = -1.0
    if reweight:
        blend_weights(mae_cand, power, scored, cold_below, weights)
        for c in range(weights.shape[0]):
            totals[c] = pairwise_sum(weights[c])
        recent = pairwise_sum(mae_comb) / horizon
    conformal_half_widths(q_all, mae_comb, cur[cal0:])
    fallback = False
    if warming:
        least = scored[0]
        for h in range(1, horizon):
            least = min(least, scored[h])
        if least >= warmup:
            warming = False
        else:
            fallback = True
    n_cand = weights.shape[0]
    combine(cur, weights, n_cand, lo0, cal0, fallback, spread, jump, mean, z, sqrt_h, ring, slot)
    return warming, recent
