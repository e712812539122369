"""JAX: results under jax.jit equal eager; NaN input under jit gives NaN (no exception)."""

from __future__ import annotations

import numpy as np
import oracles as O
import pytest
from helpers import to64

sigreg = pytest.importorskip("sigreg")
jax = pytest.importorskip("jax")
jnp = jax.numpy

OPTS = [
    dict(integration="trapezoid"),
    dict(integration="trapezoid", debias=True),
    dict(integration="exact"),
    dict(integration="exact", debias=True),
]
IDS = ["trap", "trap-debias", "exact", "exact-debias"]


def _x(shape=(12, 3), seed=90):
    return jnp.asarray(0.1 + np.random.default_rng(seed).standard_normal(shape))


@pytest.mark.parametrize("opts", OPTS, ids=IDS)
def test_epps_pulley_jit_equals_eager(opts):
    x = _x()
    eager = sigreg.epps_pulley(x, **opts)
    jitted = jax.jit(lambda z: sigreg.epps_pulley(z, **opts))(x)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.asarray(jitted), O.ep_nd(np.asarray(x), **opts), rtol=1e-10)


@pytest.mark.parametrize("opts", OPTS, ids=IDS)
def test_vjp_jit_equals_eager(opts):
    x = _x()
    cot = jnp.asarray([1.0, -2.0, 0.5])

    def f(z, c):
        v, pb = sigreg.epps_pulley_vjp(z, **opts)
        return v, pb(c)

    v_e, g_e = f(x, cot)
    v_j, g_j = jax.jit(f)(x, cot)
    np.testing.assert_allclose(np.asarray(v_j), np.asarray(v_e), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.asarray(g_j), np.asarray(g_e), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(
        np.asarray(g_j),
        O.ep_grad_nd(np.asarray(x), np.asarray(cot), **opts),
        rtol=1e-10,
        atol=1e-12,
    )


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_sliced_and_vjp_jit(reduction):
    x = _x((2, 10, 4))
    a = jnp.asarray(O.unit_directions(np.random.default_rng(91), 4, 3))

    def f(z, d):
        v, pb = sigreg.sliced_epps_pulley_vjp(z, d, reduction=reduction)
        return sigreg.sliced_epps_pulley(z, d, reduction=reduction), v, pb(jnp.ones_like(v))

    e = f(x, a)
    j = jax.jit(f)(x, a)
    for ee, jj in zip(e, j, strict=True):
        np.testing.assert_allclose(np.asarray(jj), np.asarray(ee), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(
        np.asarray(j[0]), O.sliced(np.asarray(x), np.asarray(a), reduction=reduction), rtol=1e-10
    )


def test_sigreg_jit_static_seed():
    x = _x((20, 6))
    eager = sigreg.sigreg(x, num_slices=16, seed=3, step=4)
    jitted = jax.jit(lambda z: sigreg.sigreg(z, num_slices=16, seed=3, step=4))(x)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-12)
    a = to64(sigreg.sample_directions(6, 16, seed=3, step=4, backend="numpy"))
    np.testing.assert_allclose(np.asarray(jitted), O.sliced(np.asarray(x), a), rtol=1e-10)


@pytest.mark.parametrize("prediction", ["center", "pairwise"])
def test_lejepa_jit(prediction):
    rng = np.random.default_rng(92)
    g = jnp.asarray(rng.standard_normal((2, 8, 5)))
    loc = jnp.asarray(rng.standard_normal((3, 8, 5)))
    eager = sigreg.lejepa_loss(g, loc, num_slices=8, seed=1, step=2, prediction=prediction)
    jitted = jax.jit(
        lambda a, b: sigreg.lejepa_loss(a, b, num_slices=8, seed=1, step=2, prediction=prediction)
    )(g, loc)
    for e, j in zip(eager, jitted, strict=True):
        np.testing.assert_allclose(np.asarray(j), np.asarray(e), rtol=1e-12)


def test_jit_grad_through_sigreg():
    x = _x((16, 4))
    g = jax.jit(jax.grad(lambda z: sigreg.sigreg(z, num_slices=8, seed=0, step=1)))(x)
    a = to64(sigreg.sample_directions(4, 8, seed=0, step=1, backend="numpy"))
    np.testing.assert_allclose(
        np.asarray(g), O.sliced_grad(np.asarray(x), a, np.asarray(1.0)), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize(
    "fn",
    [
        lambda z: sigreg.epps_pulley(z),
        lambda z: sigreg.epps_pulley(z, integration="exact"),
        lambda z: sigreg.epps_pulley_vjp(z)[1](jnp.ones(3)),
        lambda z: sigreg.sigreg(z, num_slices=4),
        lambda z: sigreg.sliced_epps_pulley(z, jnp.eye(3)),
        lambda z: sigreg.lejepa_loss(z[None], None, num_slices=4).loss,
    ],
    ids=["epps_pulley", "exact", "vjp", "sigreg", "sliced", "lejepa"],
)
def test_nonfinite_under_jit_gives_nan(fn, bad):
    x = np.array(_x())
    x[3, 0] = bad
    out = np.asarray(jax.jit(fn)(jnp.asarray(x)))
    # the reduced column (or the whole scalar) is NaN; nothing raised
    assert np.isnan(out.reshape(-1)[0]) or np.isnan(out).any()
