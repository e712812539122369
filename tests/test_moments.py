"""mean_variance and extended_jarque_bera vs scipy / float64 oracles, null behaviour, the
shape-blindness of the mean/variance statistic, detection and validation."""

from __future__ import annotations

import gof_oracles as G
import numpy as np
import pytest
import scipy.stats as st

import sigreg

MOMENTS = ["mean_variance", "extended_jarque_bera"]


@pytest.mark.parametrize("name", MOMENTS)
@pytest.mark.parametrize("axis,keepdims", [(0, False), (-1, True)])
def test_moments_match_oracle(xp, device, dtype, name, axis, keepdims):
    x_np = 0.1 + 1.2 * np.random.default_rng(10).standard_t(6, (30, 3))
    G.check_along_axis(xp, device, dtype, name, x_np, axis, keepdims)


def test_jarque_bera_part_is_scipy():
    x = np.random.default_rng(11).gamma(3.0, size=(200, 2))
    jb = sigreg.extended_jarque_bera(x) - sigreg.mean_variance(x)
    np.testing.assert_allclose(jb, st.jarque_bera(x, axis=0).statistic, rtol=1e-12)


def test_null_means_are_the_chi2_degrees_of_freedom():
    """E[N m^2] = 1 and E[N (m_2 - 1)^2 / 2] = 1 - 1/(2N) exactly; E[JB] -> 2."""
    x = np.random.default_rng(12).standard_normal((4000, 500))
    mv = sigreg.mean_variance(x, axis=1)
    ejb = sigreg.extended_jarque_bera(x, axis=1)
    se = np.std(mv) / np.sqrt(4000)
    assert abs(np.mean(mv) - 2.0) < 4 * se
    assert abs(np.mean(ejb) - 4.0) < 4 * np.std(ejb) / np.sqrt(4000) + 0.1  # JB bias O(1/N)


def test_mean_variance_is_blind_to_shape_while_epps_pulley_is_not():
    """A uniform with mean 0 and variance 1 matches N(0, 1) in the first two moments."""
    rng = np.random.default_rng(13)
    u = rng.uniform(-np.sqrt(3), np.sqrt(3), 1000)
    null_ep = sigreg.epps_pulley(rng.standard_normal((1000, 400)), axis=0)
    assert sigreg.mean_variance(u) < G.QUANTILE_99["mean_variance"]
    assert sigreg.epps_pulley(u) > np.quantile(null_ep, 0.99)
    exact = (u - u.mean()) / u.std()  # exactly standardised: the statistic is zero
    assert sigreg.mean_variance(exact) < 1e-20
    assert sigreg.extended_jarque_bera(exact) > G.QUANTILE_99["extended_jarque_bera"]


@pytest.mark.parametrize("alternative", ["uniform", "t3", "scaled"])
def test_extended_jarque_bera_detects_alternatives_at_n1000(alternative):
    rng = np.random.default_rng(14)
    x = {
        "uniform": rng.uniform(-np.sqrt(3), np.sqrt(3), 1000),
        "t3": rng.standard_t(3, 1000) / np.sqrt(3),
        "scaled": 1.2 * rng.standard_normal(1000),
    }[alternative]
    q = G.QUANTILE_99["extended_jarque_bera"]
    assert sigreg.extended_jarque_bera(x) > q
    assert sigreg.extended_jarque_bera(rng.standard_normal(1000)) < q


def test_mean_variance_detects_location_and_scale():
    rng = np.random.default_rng(15)
    q = G.QUANTILE_99["mean_variance"]
    assert sigreg.mean_variance(0.15 + rng.standard_normal(1000)) > q
    assert sigreg.mean_variance(1.15 * rng.standard_normal(1000)) > q


@pytest.mark.parametrize("name", MOMENTS)
def test_validation(name):
    f = getattr(sigreg, name)
    with pytest.raises(ValueError, match="x contains NaN"):
        f(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="axis=-3 is out of range"):
        f(np.zeros((3, 2)), axis=-3)
    with pytest.raises(TypeError, match="x must be real-valued"):
        f(np.zeros(3, dtype=complex))


def test_extended_jarque_bera_needs_two_distinct_values():
    with pytest.raises(ValueError, match="at least 2 sample"):
        sigreg.extended_jarque_bera(np.ones(1))
    with pytest.raises(ValueError, match="zero variance"):
        sigreg.extended_jarque_bera(np.ones((5, 2)))
    np.testing.assert_allclose(sigreg.mean_variance(np.ones(4)), 4 + 2)  # defined for N = 1
