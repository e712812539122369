"""Null laws of the Epps-Pulley test: eigenvalues vs closed-form mean and variance, the
contour inversion vs SciPy's adaptive Imhof integral and Monte Carlo, tail behaviour,
Henze's approximation, and the exact finite-N null simulation."""

from __future__ import annotations

import math

import numpy as np
import oracles as O
import pytest

from sigreg import _null_distribution as nd
from sigreg.gof import null_statistics

SQRT2PI = math.sqrt(2.0 * math.pi)
# E and Var of the limits (NOTES sections 3 and 6); composite: Gaussian integrals of
# K_c(t, t) and K_c(s, t)^2 against exp(-(s^2 + t^2)/2).
LIMIT_MEAN = {"simple": O.EXACT_NULL_MEAN, "composite": SQRT2PI * (1.0 - math.sqrt(3.0) / 2.0)}
LIMIT_VAR = {
    "simple": 4.0 * math.pi * (1 / math.sqrt(5) - 2 / math.sqrt(8) + 1 / 3),
    "composite": 4.0
    * math.pi
    * (1 / math.sqrt(5) - 2 * (1 + 1 / 8 + 11 / 128) / math.sqrt(8) + 5 / 12),
}


@pytest.mark.parametrize("kind", nd.KINDS)
def test_eigenvalues_match_closed_form_mean_and_variance(kind):
    lam = nd.eigenvalues(kind)
    assert np.all(lam > 0) and np.all(np.diff(lam) <= 0)
    assert abs(lam.sum() - LIMIT_MEAN[kind]) <= 1e-12
    assert abs(2.0 * np.sum(lam**2) - LIMIT_VAR[kind]) <= 1e-12
    assert nd.eigenvalues(kind) is lam  # cached
    assert not lam.flags.writeable


def test_simple_limit_variance_is_limit_of_finite_n_variance():
    assert abs(O.exact_null_var(10**9) - LIMIT_VAR["simple"]) < 1e-8


def _imhof_scipy(lam, q):
    from scipy.integrate import quad

    def f(u):
        theta = 0.5 * np.sum(np.arctan(lam * u)) - 0.5 * q * u
        return math.sin(theta) / (u * np.prod((1 + (lam * u) ** 2) ** 0.25))

    return 0.5 + quad(f, 0, np.inf, limit=5000, epsabs=1e-13)[0] / math.pi


@pytest.mark.parametrize("kind", nd.KINDS)
def test_limit_sf_matches_scipy_imhof(kind):
    pytest.importorskip("scipy")
    lam = nd.eigenvalues(kind)
    qs = np.array([0.05, 0.3, 1.0, 3.0])
    got = nd.limit_sf(kind, qs)
    ref = np.array([_imhof_scipy(lam, q) for q in qs])
    np.testing.assert_allclose(got, ref, rtol=0, atol=5e-9)


@pytest.mark.parametrize("kind", nd.KINDS)
def test_limit_sf_matches_monte_carlo(kind):
    lam = nd.eigenvalues(kind)
    rng = np.random.default_rng(40)
    sims = rng.chisquare(1, (100_000, lam.size)) @ lam
    qs = np.quantile(sims, [0.5, 0.9, 0.99])
    emp = np.array([(sims > q).mean() for q in qs])
    se = np.sqrt(emp * (1 - emp) / sims.size)
    assert np.all(np.abs(nd.limit_sf(kind, qs) - emp) <= 4 * se)


@pytest.mark.parametrize("kind", nd.KINDS)
def test_limit_sf_far_tail_relative_accuracy(kind):
    """Deep in the tail P(Q > q) ~ C P(lam_1 chi2_1 > q) with C = prod (1 - lam_k/lam_1)^-1/2;
    the relative gap must shrink like O(1/q) and p-values stay positive (no absolute floor)."""
    lam = nd.eigenvalues(kind)
    c = np.prod(1.0 - lam[1:] / lam[0]) ** -0.5
    qs = np.array([20.0, 40.0, 80.0, 160.0]) * lam[0]
    p = nd.limit_sf(kind, qs)
    asym = c * np.array([math.erfc(math.sqrt(q / (2 * lam[0]))) for q in qs])
    gap = np.abs(p / asym - 1.0)
    assert np.all(p > 0) and p[-1] < 1e-30
    assert np.all(np.diff(gap) < 0) and gap[-1] < 0.02
    assert np.all(np.abs(gap * qs - gap[-1] * qs[-1]) <= 0.5 * gap[-1] * qs[-1])


@pytest.mark.parametrize("kind", nd.KINDS)
def test_limit_sf_edges_and_monotone(kind):
    grid = np.linspace(0.0, 60.0 * nd.eigenvalues(kind)[0], 400)
    p = nd.limit_sf(kind, grid)
    assert np.all(np.diff(p) <= 1e-15) and p[0] == 1.0
    edge = nd.limit_sf(kind, np.array([-1.0, np.nan, 1e6, 1e-9, 1e-3]))
    assert edge[0] == 1.0 and np.isnan(edge[1]) and edge[2] == 0.0 and edge[3] == 1.0
    assert 1.0 - 1e-5 < edge[4] <= 1.0


def test_henze_approximation_near_limit_law_for_large_n_and_support():
    q = np.array([0.2, 0.5, 1.0, 1.5, 2.0])
    big = nd.henze_sf(q, np.full(q.shape, 1e9))
    np.testing.assert_allclose(big, nd.limit_sf("composite", q), atol=0.015)
    ends = nd.henze_sf(np.array([0.0, 100.0, np.nan]), np.full(3, 20.0))
    assert ends[0] > 0.9999 and ends[1] == 0.0 and np.isnan(ends[2])
    small = nd.henze_sf(np.linspace(0.01, 5.0, 50), np.full(50, 8.0))
    assert np.all(np.diff(small) <= 0)


@pytest.mark.parametrize("standardize", [False, True])
def test_null_simulation_mean(standardize):
    """The simulated simple statistic has E[EP] = 1.0594 at every N (NOTES section 3)."""
    n, reps = 16, 4000
    sims = null_statistics(n, reps, np.random.default_rng(41), standardize=standardize)
    assert sims.shape == (reps,) and np.all(sims >= 0)
    if standardize:
        assert sims.mean() < O.EXACT_NULL_MEAN / 2  # estimating mean and scale absorbs most
    else:
        se = math.sqrt(O.exact_null_var(n) / reps)
        assert abs(sims.mean() - O.EXACT_NULL_MEAN) <= 4 * se
