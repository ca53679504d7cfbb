"""The compiled loops give numpy's bits: each kernel against the numpy expression it replaced.

Bit equality (signed zeros and NaN included) is what keeps live and replayed events
byte-identical on any processor; the golden backtest checks the whole engine, these tests
say which loop broke.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from app.core.forecasters import kernels

_SPECIAL = [0.0, -0.0, 1.0, -1.0, 1e-300, -1e300, np.inf, -np.inf, np.nan]
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
anything = st.floats(width=64) | st.sampled_from(_SPECIAL)


def same_bits(a: object, b: object) -> bool:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return x.shape == y.shape and x.tobytes() == y.tobytes()


@settings(max_examples=300, deadline=None)
@given(arrays(np.float64, st.integers(0, 300), elements=finite | st.sampled_from([0.0, -0.0])))
def test_pairwise_sum_is_numpys_sum(a: np.ndarray) -> None:
    with np.errstate(all="ignore"):
        expected = np.add.reduce(a)
    got = kernels.pairwise_sum(a)
    assert same_bits(got, expected) or (np.isnan(got) and np.isnan(expected))


def test_pairwise_sum_of_negative_zeros_and_long_arrays() -> None:
    for n in (1, 7, 8, 15, 16, 129, 1000):
        zeros = np.full(n, -0.0)
        assert same_bits(kernels.pairwise_sum(zeros), np.add.reduce(zeros))
        values = np.random.default_rng(n).standard_normal(n) * 1e6
        assert same_bits(kernels.pairwise_sum(values), np.add.reduce(values))


def test_max_and_min_follow_numpy_on_ties_and_nan() -> None:
    for a in _SPECIAL:
        for b in _SPECIAL:
            assert same_bits(kernels.npmax(a, b), np.maximum(a, b)), (a, b)
            assert same_bits(kernels.npmin(a, b), np.minimum(a, b)), (a, b)


def _numpy_blend(mae: np.ndarray, power: float, scored: np.ndarray, cold_below: int) -> np.ndarray:
    """The weights as the numpy code computed them before the kernels."""
    if power <= 0.0:
        w = np.zeros_like(mae)
        w[mae.argmin(axis=0), np.arange(mae.shape[1])] = 1.0
    else:
        w = mae + 1e-300
        np.divide(np.minimum.reduce(mae, axis=0) + 1e-300, w, out=w)
        if power == 4.0:
            w *= w
            w *= w
        else:
            w **= power
        w /= np.add.reduce(w, axis=0)
    cold = scored < cold_below
    w[:, cold] = 0.0
    w[1, cold] = 1.0
    return w


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float64, (3, 15), elements=st.floats(0.0, 1e12, width=64)),
    st.sampled_from([4.0, 0.0]),
    arrays(np.int64, 15, elements=st.integers(0, 6)),
)
def test_blend_weights_match_the_numpy_formula(
    mae: np.ndarray, power: float, scored: np.ndarray
) -> None:
    got = np.empty_like(mae)
    kernels.blend_weights(mae, power, scored, 3, got)
    assert same_bits(got, _numpy_blend(mae, power, scored, 3))


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float64, (3, 15), elements=anything),
    arrays(np.float64, 15, elements=st.floats(0.0, 1e6, width=64)),
)
def test_conformal_half_widths_are_a_running_max_times_the_scale(
    q_all: np.ndarray, scale: np.ndarray
) -> None:
    q_all[0] = 0.0  # the constant row the running max starts from
    got = np.empty((2, 15))
    kernels.conformal_half_widths(q_all, scale, got)
    expected = np.empty((2, 15))
    prev = q_all[0]
    with np.errstate(all="ignore"):  # inf * 0
        for k in range(2):
            prev = np.maximum(prev, q_all[k + 1])
            expected[k] = prev * scale
    assert same_bits(got, expected)


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.float64, (3, 15), elements=finite),
    st.tuples(finite, finite, finite),
    arrays(np.float64, 15, elements=finite),
)
def test_residual_forecast_matches_numpy(
    coef: np.ndarray, features: tuple[float, float, float], base: np.ndarray
) -> None:
    f0, f1, f2 = features
    with np.errstate(all="ignore"):
        expected = np.multiply(coef[0], f0)
        expected += coef[1] * f1
        expected += coef[2] * f2
        plus = expected + base
        got = np.empty(15)
        kernels.residual_forecast(coef, f0, f1, f2, base, False, got)
        assert same_bits(got, expected)
        kernels.residual_forecast(coef, f0, f1, f2, base, True, got)
        assert same_bits(got, plus)


def test_profile_forecast_matches_numpy_take() -> None:
    rng = np.random.default_rng(3)
    knots = rng.standard_normal(480) * 100.0
    idx = rng.integers(0, 480, size=(15, 4))
    wt = rng.random((15, 4))
    vals = knots.take(idx) * wt
    expected = vals[:, 0] + vals[:, 1]
    expected += vals[:, 2]
    expected += vals[:, 3]
    expected += 7.25
    got = np.empty(15)
    kernels.profile_forecast(knots, idx, wt, 7.25, got)
    assert same_bits(got, expected)


def test_kernels_refuse_arrays_of_the_wrong_layout() -> None:
    """A strided view would be silently slower or wrong elsewhere: the signatures refuse it."""
    q_all = np.zeros((3, 30))[:, ::2]
    try:
        kernels.conformal_half_widths(q_all, np.ones(15), np.empty((2, 15)))
    except TypeError:
        return
    raise AssertionError("a non-contiguous array was accepted")
