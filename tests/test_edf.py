"""Cramér-von Mises, Anderson-Darling and Watson vs scipy / float64 oracles, properties,
detection power and validation."""

from __future__ import annotations

import gof_oracles as G
import numpy as np
import pytest
import scipy.special as sc
import scipy.stats as st
from helpers import assert_close, make, to64

import sigreg

EDF = ["cramer_von_mises", "anderson_darling", "watson"]


def _data(seed, shape):
    return 0.2 + 1.1 * np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("name", EDF)
@pytest.mark.parametrize("axis,keepdims", [(0, False), (-1, True)])
def test_edf_matches_oracle(xp, device, dtype, name, axis, keepdims):
    G.check_along_axis(xp, device, dtype, name, _data(1, (40, 3)), axis, keepdims)


def test_anderson_darling_is_scipy_goodness_of_fit():
    x = _data(6, (50, 2))
    out = sigreg.anderson_darling(x)
    ref = [G.anderson_darling_scipy(x[:, j]) for j in range(2)]
    np.testing.assert_allclose(out, ref, rtol=1e-12)


def test_anderson_darling_is_scipy_anderson_on_standardised_samples():
    x = _data(2, 75)
    z = (x - x.mean()) / x.std(ddof=1)
    ref = st.anderson(z, dist="norm", method="interpolate").statistic
    np.testing.assert_allclose(sigreg.anderson_darling(z), ref, rtol=1e-12)


def test_anderson_darling_finite_far_in_the_tails():
    x = np.array([-60.0, -3.0, 0.0, 1.0, 45.0])
    out = sigreg.anderson_darling(x)
    u = np.sort(x)
    i = np.arange(1, 6)
    ref = -5 - np.sum((2 * i - 1) * sc.log_ndtr(u) + (11 - 2 * i) * sc.log_ndtr(-u)) / 5
    assert np.isfinite(out) and out > 500
    np.testing.assert_allclose(out, ref, rtol=1e-13)


def test_watson_is_invariant_to_the_origin_on_the_circle():
    """U^2 depends on u_i = Phi(x_i) only through the circle u mod 1 (Watson 1961)."""
    x = _data(3, 60)
    for shift in (0.17, 0.5, 0.83):
        rotated = sc.ndtri((sc.ndtr(x) + shift) % 1.0)
        np.testing.assert_allclose(sigreg.watson(rotated), sigreg.watson(x), rtol=1e-9)
    # Cramér-von Mises is not rotation invariant
    rotated = sc.ndtri((sc.ndtr(x) + 0.17) % 1.0)
    assert abs(sigreg.cramer_von_mises(rotated) - sigreg.cramer_von_mises(x)) > 1e-3


def test_one_sample_closed_form():
    """N = 1: W^2 = 1/12 + (u - 1/2)^2, A^2 = -1 - log u - log(1 - u) (U^2 needs N >= 2)."""
    x = np.array([0.7])
    u = sc.ndtr(0.7)
    np.testing.assert_allclose(sigreg.cramer_von_mises(x), 1 / 12 + (u - 0.5) ** 2, rtol=1e-14)
    np.testing.assert_allclose(sigreg.watson(np.array([0.7, -0.1]))[()] >= 1 / 24, True)
    np.testing.assert_allclose(
        sigreg.anderson_darling(x), -1 - np.log(u) - np.log1p(-u), rtol=1e-14
    )


def test_permutation_invariant_and_batched(xp, device):
    rng = np.random.default_rng(4)
    x_np = rng.standard_normal((2, 3, 25))
    x = make(xp, device, x_np)
    perm = make(xp, device, x_np[..., rng.permutation(25)])
    for name in EDF:
        f = getattr(sigreg, name)
        assert tuple(f(x, axis=-1).shape) == (2, 3)
        assert_close(f(x, axis=-1), to64(f(perm, axis=-1)))


@pytest.mark.parametrize("name", EDF)
@pytest.mark.parametrize("alternative", ["uniform", "t3", "shifted"])
def test_detects_alternatives_at_n1000(name, alternative):
    """Standardised (mean 0, variance 1) uniform and t3, and N(0.2, 1), beyond the null's
    asymptotic 99% quantile; N(0, 1) itself is not flagged."""
    rng = np.random.default_rng(5)
    f = getattr(sigreg, name)
    x = {
        "uniform": rng.uniform(-np.sqrt(3), np.sqrt(3), 1000),
        "t3": rng.standard_t(3, 1000) / np.sqrt(3),
        "shifted": 0.2 + rng.standard_normal(1000),
    }[alternative]
    assert f(x) > G.QUANTILE_99[name]
    assert f(rng.standard_normal(1000)) < G.QUANTILE_99[name]


@pytest.mark.parametrize("name", EDF)
def test_validation(name):
    f = getattr(sigreg, name)
    with pytest.raises(ValueError, match="x contains NaN"):
        f(np.array([0.0, np.inf]))
    with pytest.raises(ValueError, match="at least [12] sample"):
        f(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="at least one dimension"):
        f(np.float64(1.0))
    with pytest.raises(ValueError, match="axis=2 is out of range"):
        f(np.zeros((3, 2)), axis=2)
    with pytest.raises(TypeError, match="keepdims must be a bool"):
        f(np.zeros(3), keepdims=1)
    with pytest.raises(TypeError, match="x must be real-valued"):
        f(np.zeros(3, dtype=complex))
    with pytest.raises(TypeError, match="x must be an array"):
        f([[0.0], [1.0, 2.0]])  # ragged: not an array-like
    assert float(f([0.0, 1.0])) == float(f(np.array([0.0, 1.0])))  # lists: via numpy


def test_watson_needs_two_samples():
    """One point gives U^2 = 1/12 whatever its value: no evidence, so an error."""
    with pytest.raises(ValueError, match="at least 2 sample"):
        sigreg.watson(np.array([5.0]))


def test_half_precision_and_integer_inputs():
    """float16 is computed in float32 and returned as float16; integers promote to float64."""
    x = np.random.default_rng(7).standard_normal(64)
    for name in EDF + ["extended_jarque_bera", "mean_variance"]:
        f = getattr(sigreg, name)
        half = f(x.astype(np.float16))
        assert half.dtype == np.float16
        np.testing.assert_allclose(half, f(x.astype(np.float16).astype(np.float32)), rtol=1e-3)
        ints = np.arange(-3, 4)
        assert f(ints).dtype == np.float64
        np.testing.assert_allclose(f(ints), f(ints.astype(np.float64)), rtol=1e-15)
