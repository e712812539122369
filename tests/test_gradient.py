"""Analytic VJPs (epps_pulley_vjp, sliced_epps_pulley_vjp) vs the NOTES section 2 formulas and
vs autodiff (torch autograd / jax.grad) of independent ports of the statistic; autodiff through
the public functions vs the oracle gradient."""

from __future__ import annotations

import math

import numpy as np
import oracles as O
import pytest
from helpers import assert_close, assert_same_backend, load_backend, make, to64

sigreg = pytest.importorskip("sigreg")

OPTS = [
    dict(integration="trapezoid", debias=False),
    dict(integration="trapezoid", debias=True),
    dict(integration="exact", debias=False),
    dict(integration="exact", debias=True),
]
OPT_IDS = ["trap", "trap-debias", "exact", "exact-debias"]


# ----------------------------------------------------- independent autodiff ports
def _port(xp, x, integration, debias, t_max=3.0, n_points=17):
    """Statistic along axis -1 written with plain xp ops (torch or jax.numpy)."""
    n = x.shape[-1]
    if integration == "exact":
        d = x[..., :, None] - x[..., None, :]
        pair = xp.sum(xp.exp(-0.5 * d**2), axis=(-1, -2))
        pair = (pair - n) / (n - 1) if debias else pair / n
        single = math.sqrt(2.0) * xp.sum(xp.exp(-0.25 * x**2), axis=-1)
        return O.SQRT2PI * (pair - single + n / math.sqrt(3.0))
    t_np, phi_np, w_np = O.official_grid(t_max, n_points)
    t, phi, w = (xp.asarray(a) for a in (t_np, phi_np, w_np))
    xt = x[..., :, None] * t
    c = xp.mean(xp.cos(xt), axis=-2)
    s = xp.mean(xp.sin(xt), axis=-2)
    if debias:
        err = (n * (c**2 + s**2) - 1.0) / (n - 1) - 2.0 * phi * c + phi**2
    else:
        err = (c - phi) ** 2 + s**2
    return n * xp.sum(err * w, axis=-1)


def _port_sliced(xp, x, a, reduction, **opts):
    y = x @ a  # (..., N, M)
    vals = _port(xp, xp.swapaxes(y, -1, -2), **opts)
    if reduction == "mean":
        return xp.mean(vals, axis=-1)
    if reduction == "sum":
        return xp.sum(vals, axis=-1)
    return vals


def _rng_data(seed, shape, loc=0.2, scale=1.1):
    return loc + scale * np.random.default_rng(seed).standard_normal(shape)


# ------------------------------------------------------------ vs NOTES formulas
@pytest.mark.parametrize("opts", OPTS, ids=OPT_IDS)
@pytest.mark.parametrize("axis,keepdims", [(0, False), (-2, True)])
def test_vjp_matches_formula(xp, device, dtype, opts, axis, keepdims):
    x_np = _rng_data(20, (3, 9, 2))
    x = make(xp, device, x_np, dtype)
    value, pullback = sigreg.epps_pulley_vjp(x, axis=axis, keepdims=keepdims, **opts)
    ref_val = O.ep_nd(to64(x), axis=axis, keepdims=keepdims, **opts)
    assert_close(value, ref_val, dtype, scale=9)
    cot_np = np.random.default_rng(21).uniform(-2.0, 2.0, ref_val.shape)
    cot = make(xp, device, cot_np, dtype)
    g = pullback(cot)
    assert tuple(g.shape) == tuple(x.shape)
    assert g.dtype == x.dtype
    assert_same_backend(g, x)
    ref = O.ep_grad_nd(to64(x), to64(cot), axis=axis, keepdims=keepdims, **opts)
    assert_close(g, ref, dtype, scale=10)


@pytest.mark.parametrize("opts", OPTS, ids=OPT_IDS)
def test_vjp_1d_scalar_cotangent(xp, device, opts):
    x_np = _rng_data(22, (15,))
    x = make(xp, device, x_np)
    value, pullback = sigreg.epps_pulley_vjp(x, **opts)
    assert tuple(value.shape) == ()
    g = pullback(make(xp, device, np.asarray(-0.75)))
    assert_close(g, -0.75 * O.ep_grad(x_np, **opts))


def test_vjp_grid_options(xp, device):
    x_np = _rng_data(23, (30,), 0.0, 1.7)
    x = make(xp, device, x_np)
    value, pullback = sigreg.epps_pulley_vjp(x, t_max=5.0, n_points=41)
    assert_close(value, O.ep_official(x_np, t_max=5.0, n_points=41))
    assert_close(
        pullback(make(xp, device, np.asarray(1.0))), O.grad_official(x_np, t_max=5.0, n_points=41)
    )


# every option with reduction="mean", every reduction with the default options
SLICED_COMBOS = [(o, "mean") for o in OPTS] + [
    (OPTS[0], "none"),
    (OPTS[0], "sum"),
    (OPTS[3], "none"),
]
SLICED_IDS = [f"{i}-mean" for i in OPT_IDS] + ["trap-none", "trap-sum", "exact-debias-none"]


@pytest.mark.parametrize("opts,reduction", SLICED_COMBOS, ids=SLICED_IDS)
def test_sliced_vjp_matches_formula(xp, device, dtype, engine, opts, reduction):
    rng = np.random.default_rng(24)
    x_np = _rng_data(25, (2, 10, 4))
    a_np = O.unit_directions(rng, 4, 3)
    x = make(xp, device, x_np, dtype)
    a = make(xp, device, a_np, dtype)
    value, pullback = sigreg.sliced_epps_pulley_vjp(
        x, a, reduction=reduction, engine=engine, **opts
    )
    ref_val = O.sliced(to64(x), to64(a), reduction=reduction, **opts)
    assert_close(value, ref_val, dtype, scale=10)
    cot_np = rng.uniform(-1.5, 1.5, ref_val.shape)
    cot = make(xp, device, cot_np, dtype)
    g = pullback(cot)
    assert tuple(g.shape) == tuple(x.shape) and g.dtype == x.dtype
    assert_same_backend(g, x)
    assert_close(
        g, O.sliced_grad(to64(x), to64(a), to64(cot), reduction=reduction, **opts), dtype, scale=10
    )


# --------------------------------------------------------- vs torch autograd of a port
@pytest.mark.parametrize("opts", OPTS, ids=OPT_IDS)
def test_vjp_equals_torch_autograd(opts):
    torch = pytest.importorskip("torch")
    x_np = _rng_data(26, (4, 12))
    x = torch.asarray(x_np, dtype=torch.float64)
    cot = torch.asarray(np.random.default_rng(27).standard_normal(4), dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad((_port(torch, xr, **opts) * cot).sum(), xr)
    value, pullback = sigreg.epps_pulley_vjp(x, axis=-1, **opts)
    g = pullback(cot)
    assert isinstance(g, torch.Tensor)
    np.testing.assert_allclose(to64(g), g_ref.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to64(value), _port(torch, x, **opts).numpy(), rtol=1e-10)


@pytest.mark.parametrize("opts", OPTS, ids=OPT_IDS)
def test_vjp_equals_jax_grad(opts):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x_np = _rng_data(28, (4, 12))
    x = jnp.asarray(x_np, dtype=jnp.float64)
    cot = jnp.asarray(np.random.default_rng(29).standard_normal(4))
    g_ref = jax.jit(jax.grad(lambda z: jnp.sum(_port(jnp, z, **opts) * cot)))(x)
    _, pullback = sigreg.epps_pulley_vjp(x, axis=-1, **opts)
    np.testing.assert_allclose(to64(pullback(cot)), np.asarray(g_ref), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("opts,reduction", SLICED_COMBOS, ids=SLICED_IDS)
@pytest.mark.parametrize("name", ["torch", "jax"])
def test_sliced_vjp_equals_autodiff(name, opts, reduction):
    xp, _ = load_backend(name)
    rng = np.random.default_rng(30)
    x_np = _rng_data(31, (2, 11, 5))
    a_np = O.unit_directions(rng, 5, 4)
    cot_np = rng.standard_normal((2, 4) if reduction == "none" else (2,))
    if name == "torch":
        import torch

        x, a, cot = (torch.asarray(v, dtype=torch.float64) for v in (x_np, a_np, cot_np))
        xr = x.clone().requires_grad_(True)
        (g_ref,) = torch.autograd.grad(
            (_port_sliced(torch, xr, a, reduction, **opts) * cot).sum(), xr
        )
        g_ref = g_ref.numpy()
    else:
        import jax
        import jax.numpy as jnp

        x, a, cot = (jnp.asarray(v) for v in (x_np, a_np, cot_np))
        g_ref = np.asarray(
            jax.jit(jax.grad(lambda z: jnp.sum(_port_sliced(jnp, z, a, reduction, **opts) * cot)))(
                x
            )
        )
    _, pullback = sigreg.sliced_epps_pulley_vjp(x, a, reduction=reduction, **opts)
    np.testing.assert_allclose(to64(pullback(cot)), g_ref, rtol=1e-10, atol=1e-12)


# ------------------------------------------- autodiff THROUGH the public functions
@pytest.mark.parametrize("opts", OPTS, ids=OPT_IDS)
def test_torch_autograd_through_epps_pulley(opts):
    torch = pytest.importorskip("torch")
    x_np = _rng_data(32, (14, 2))
    x = torch.asarray(x_np, dtype=torch.float64).requires_grad_(True)
    w = torch.asarray([0.3, -1.1], dtype=torch.float64)
    (g,) = torch.autograd.grad((sigreg.epps_pulley(x, **opts) * w).sum(), x)
    ref = O.ep_grad_nd(x_np, w.numpy(), axis=0, **opts)
    np.testing.assert_allclose(g.numpy(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("opts", OPTS, ids=OPT_IDS)
def test_jax_grad_through_epps_pulley(opts):
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x_np = _rng_data(33, (14, 2))
    w = jnp.asarray([0.3, -1.1])
    g = jax.grad(lambda z: jnp.sum(sigreg.epps_pulley(z, **opts) * w))(jnp.asarray(x_np))
    ref = O.ep_grad_nd(x_np, np.asarray(w), axis=0, **opts)
    np.testing.assert_allclose(np.asarray(g), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["torch", "jax"])
def test_autodiff_through_sigreg(name):
    xp, _ = load_backend(name)
    x_np = _rng_data(34, (16, 6))
    a_np = to64(sigreg.sample_directions(6, 32, seed=3, step=7, backend="numpy"))
    ref = O.sliced_grad(x_np, a_np, np.asarray(1.0))
    if name == "torch":
        import torch

        x = torch.asarray(x_np).requires_grad_(True)
        (g,) = torch.autograd.grad(sigreg.sigreg(x, num_slices=32, seed=3, step=7), x)
    else:
        import jax

        g = jax.grad(lambda z: sigreg.sigreg(z, num_slices=32, seed=3, step=7))(
            jax.numpy.asarray(x_np)
        )
    np.testing.assert_allclose(to64(g), ref, rtol=1e-10, atol=1e-12)


def test_pullback_reusable_and_linear(xp, device):
    x_np = _rng_data(35, (3, 8))
    x = make(xp, device, x_np)
    _, pb = sigreg.epps_pulley_vjp(x, axis=1)
    c1 = np.array([1.0, -2.0, 0.5])
    c2 = np.array([0.25, 0.0, 3.0])
    g1 = to64(pb(make(xp, device, c1)))
    g2 = to64(pb(make(xp, device, c2)))
    g12 = to64(pb(make(xp, device, c1 + 2 * c2)))
    np.testing.assert_allclose(g12, g1 + 2 * g2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g1, O.ep_grad_nd(x_np, c1, axis=1), rtol=1e-10, atol=1e-12)
