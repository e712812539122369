"""The array-API normal CDF and log-CDF vs mpmath (50 digits) and scipy.special."""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import scipy.special as sc
from helpers import assert_same_backend, make, to64

from sigreg._special import log_ndtr, log_ndtr_pair, ndtr

mpmath.mp.dps = 50
# Phi(x) is a normal (not subnormal) float64 for x >= -37.5
GRID = np.concatenate(
    [np.linspace(-37.5, 8.5, 1201), -np.logspace(-4, 1.5, 120), np.logspace(-4, 0.9, 120), [0.0]]
)
LOG_GRID = np.concatenate([np.linspace(-1e3, -40.0, 80), GRID, np.linspace(9.0, 37.0, 60)])


def _phi(v):
    return float(mpmath.ncdf(mpmath.mpf(float(v))))


def _log_phi(v):
    v = mpmath.mpf(float(v))
    return float(mpmath.log(mpmath.ncdf(v)) if v < 0 else mpmath.log1p(-mpmath.ncdf(-v)))


@pytest.fixture(scope="module")
def references():
    return np.array([_phi(v) for v in GRID]), np.array([_log_phi(v) for v in LOG_GRID])


def test_float64_relative_error_below_1e14(xp, device, references):
    phi, log_phi = references
    got = to64(ndtr(xp, make(xp, device, GRID)))
    assert np.max(np.abs(got / phi - 1.0)) <= 1e-14
    got_log = to64(log_ndtr(xp, make(xp, device, LOG_GRID)))
    assert np.all(np.isfinite(got_log))
    assert np.max(np.abs(got_log / log_phi - 1.0)) <= 1e-14


def test_float32_in_float32_out(xp, device, references):
    x = make(xp, device, GRID[GRID > -12.0], "float32")  # float32 Phi underflows below ~-13
    out, out_log = ndtr(xp, x), log_ndtr(xp, x)
    assert out.dtype == out_log.dtype == xp.float32
    assert_same_backend(out, x)
    phi = references[0][GRID > -12.0]
    np.testing.assert_allclose(to64(out), sc.ndtr(to64(x)), rtol=2e-6, atol=0)
    np.testing.assert_allclose(to64(out_log), sc.log_ndtr(to64(x)), rtol=2e-6, atol=1e-30)
    assert phi.shape == out.shape


def test_agrees_with_scipy():
    """scipy's ndtr loses ~1e-13 in the tails (rounding of x/sqrt(2)), which carries over to
    its log_ndtr for x > 5 (where log Phi(x) ~ -Phi(-x))."""
    np.testing.assert_allclose(ndtr(np, GRID), sc.ndtr(GRID), rtol=5e-13, atol=0)
    central = np.abs(GRID) < 5
    np.testing.assert_allclose(ndtr(np, GRID[central]), sc.ndtr(GRID[central]), rtol=1e-14)
    left, right = LOG_GRID < 5.0, (LOG_GRID >= 5.0) & (LOG_GRID < 37.0)
    np.testing.assert_allclose(
        log_ndtr(np, LOG_GRID[left]), sc.log_ndtr(LOG_GRID[left]), rtol=1e-14
    )
    np.testing.assert_allclose(
        log_ndtr(np, LOG_GRID[right]), sc.log_ndtr(LOG_GRID[right]), rtol=5e-13
    )


def test_symmetry_and_limits():
    x = np.linspace(-8.0, 8.0, 801)
    np.testing.assert_allclose(ndtr(np, x) + ndtr(np, -x), 1.0, rtol=0, atol=2e-16)
    assert ndtr(np, np.array(-40.0)) == 0.0 and ndtr(np, np.array(40.0)) == 1.0
    assert log_ndtr(np, np.array(40.0)) == 0.0
    np.testing.assert_allclose(
        log_ndtr(np, np.array(-1e5)), -5e9 - np.log(1e5 * np.sqrt(2 * np.pi))
    )


def test_derivative_is_the_normal_density():
    torch = pytest.importorskip("torch")
    x = torch.linspace(-30.0, 8.0, 2001, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(ndtr(torch, x).sum(), x)
    dens = np.exp(-0.5 * x.detach().numpy() ** 2) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(grad.numpy(), dens, rtol=1e-12, atol=1e-300)
    (glog,) = torch.autograd.grad(log_ndtr(torch, x).sum(), x)
    np.testing.assert_allclose(glog.numpy(), dens / sc.ndtr(x.detach().numpy()), rtol=1e-11)


def test_log_ndtr_pair_is_both_tails():
    lower, upper = log_ndtr_pair(np, LOG_GRID)
    np.testing.assert_array_equal(lower, log_ndtr(np, LOG_GRID))
    np.testing.assert_allclose(upper, sc.log_ndtr(-LOG_GRID), rtol=5e-13, atol=1e-300)
