"""torch autograd and jax.grad through the goodness-of-fit statistics (sorting, Phi,
log Phi, Cholesky) give finite gradients equal to float64 central finite differences."""

from __future__ import annotations

import numpy as np
import oracles as O
import pytest
from array_api_compat import array_namespace

import sigreg

UNIVARIATE = [
    "extended_jarque_bera",
    "mean_variance",
    "cramer_von_mises",
    "anderson_darling",
    "watson",
]


def _central_differences(f, x, h=1e-6):
    grad = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        grad[idx] = (float(f(up)) - float(f(down))) / (2 * h)
    return grad


def _cases():
    rng = np.random.default_rng(50)
    a = O.unit_directions(rng, 3, 4)
    cases = {
        name: (lambda x, name=name: getattr(sigreg, name)(x), 0.3 + 1.4 * rng.standard_t(4, 15))
        for name in UNIVARIATE
    }
    cases["anderson_darling_tails"] = (sigreg.anderson_darling, np.array([-9.0, -1.0, 0.5, 12.0]))
    cases["henze_zirkler"] = (sigreg.henze_zirkler, rng.exponential(size=(12, 2)))
    for stat in ("anderson_darling", "extended_jarque_bera", "epps_pulley"):
        cases[f"sliced_{stat}"] = (
            lambda x, stat=stat: sigreg.sliced_statistic(
                x, array_namespace(x).asarray(a), statistic=stat
            ),
            rng.uniform(-2.0, 2.0, (10, 3)),
        )
    return cases


CASES = _cases()
# jit compilation costs seconds per case: sorting + log Phi, and Cholesky + solve
JAX_CASES = ["anderson_darling", "henze_zirkler"]


def _check(grad, f, x_np):
    assert np.all(np.isfinite(grad))
    fd = _central_differences(f, x_np)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7 * max(1.0, np.abs(fd).max()))


@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_autograd_matches_finite_differences(case):
    torch = pytest.importorskip("torch")
    f, x_np = CASES[case]
    x = torch.tensor(x_np, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(f(x), x)
    _check(grad.numpy(), f, x_np)


@pytest.mark.parametrize("case", JAX_CASES)
def test_jax_grad_matches_finite_differences(case):
    jax = pytest.importorskip("jax")
    f, x_np = CASES[case]
    grad = jax.jit(jax.grad(f))(jax.numpy.asarray(x_np))
    assert grad.dtype == jax.numpy.float64
    _check(np.asarray(grad), f, x_np)
