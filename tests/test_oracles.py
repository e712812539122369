"""Self-checks of the reference implementations (independent of sigreg): the oracles must agree
with each other and with the documented constants, otherwise every other test is moot."""

from __future__ import annotations

import math

import numpy as np
import oracles as O
import pytest


def test_constants():
    assert O.quad_null_mean() == pytest.approx(1.052464, abs=5e-7)
    assert O.EXACT_NULL_MEAN == pytest.approx(1.0594258, abs=5e-8)
    assert O.EXACT_VALUE_BOUND_PER_SAMPLE == pytest.approx(7.50, abs=5e-3)
    assert O.quad_grad_bound() == pytest.approx(5.93, abs=5e-3)
    assert O.exact_grad_bound(10**12) == pytest.approx(4.561, abs=5e-4)


@pytest.mark.parametrize("n", [1, 2, 5, 40, 300])
def test_exact_equals_fine_quadrature(n):
    x = 1.3 * np.random.default_rng(n).standard_normal(n) + 0.2
    ref = O.ep_fine_quadrature(x)
    assert abs(float(O.ep_exact(x)) - ref) <= 1e-12 * max(1.0, n / 10) * ref
    if n >= 2:
        refd = O.ep_fine_quadrature(x, debias=True)
        assert abs(float(O.ep_exact(x, debias=True)) - refd) <= 1e-11 * max(1.0, abs(refd), n / 10)


@pytest.mark.parametrize("n", [1, 4])
def test_fine_quadrature_equals_scipy_quad(n):
    x = np.random.default_rng(n + 7).standard_normal(n)
    assert O.ep_fine_quadrature(x) == pytest.approx(O.ep_scipy_quad(x), rel=1e-11)


def test_official_is_about_0p7_percent_below_exact_under_null():
    x = np.random.default_rng(1).standard_normal((2000, 32))
    ratio = O.ep_official(x, axis=1).mean() / O.ep_exact(x, axis=1).mean()
    assert 0.985 < ratio < 0.999
    assert O.quad_null_mean() / O.EXACT_NULL_MEAN == pytest.approx(1 - 0.00657, abs=2e-4)


def test_official_equals_fine_quadrature_with_fine_grid():
    x = np.random.default_rng(2).standard_normal(50)
    assert float(O.ep_official(x, t_max=14.0, n_points=1401)) == pytest.approx(
        O.ep_fine_quadrature(x), rel=1e-12
    )


@pytest.mark.parametrize("integration", ["trapezoid", "exact"])
@pytest.mark.parametrize("debias", [False, True])
def test_gradient_oracles_vs_finite_differences(integration, debias):
    x = np.random.default_rng(3).standard_normal(9) * 1.4
    g = O.ep_grad(x, integration=integration, debias=debias)
    h = 1e-5
    fd = np.array(
        [
            (
                O.ep(x + h * e, integration=integration, debias=debias)
                - O.ep(x - h * e, integration=integration, debias=debias)
            )
            / (2 * h)
            for e in np.eye(9)
        ]
    )
    np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-8)


def test_extremal_configuration_attains_bound():
    n = 1000
    x = np.full(n, 1 + math.sqrt(2))
    x[0] = math.sqrt(2)
    assert O.grad_exact(x)[0] == pytest.approx(O.exact_grad_bound(n), rel=1e-12)
    assert 4.5 < O.grad_official(x)[0] < O.quad_grad_bound()


def test_sliced_grad_vs_finite_differences():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 3))
    a = O.unit_directions(rng, 3, 4)
    cot = rng.standard_normal(4)
    g = O.sliced_grad(x, a, cot, reduction="none")
    h = 1e-6
    fd = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        fd[idx] = (
            O.sliced(x + e, a, reduction="none") @ cot - O.sliced(x - e, a, reduction="none") @ cot
        ) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-8)


def test_lejepa_pairwise_is_center_plus_spread():
    rng = np.random.default_rng(5)
    g, loc = rng.standard_normal((3, 7, 4)), rng.standard_normal((2, 7, 4))
    a = O.unit_directions(rng, 4, 3)
    c = O.lejepa(g, loc, a, prediction="center")
    p = O.lejepa(g, loc, a, prediction="pairwise")
    assert p[1] - c[1] == pytest.approx(np.mean((g - g.mean(0)) ** 2), rel=1e-12)


def test_null_constants_by_simulation():
    x = np.random.default_rng(6).standard_normal((20000, 8))
    for v, m in (
        (O.ep_official(x, axis=1), O.quad_null_mean()),
        (O.ep_exact(x, axis=1), O.EXACT_NULL_MEAN),
    ):
        assert abs(v.mean() - m) < 4 * v.std() / math.sqrt(v.size)
