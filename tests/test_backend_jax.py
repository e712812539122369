"""backends.jax: custom_vjp SIGReg / LeJEPA, in-graph directions, jit, dtypes, validation.

Float64 comparisons run with ``jax_enable_x64`` (set by conftest). Multi-device behaviour
(pmap, shard_map, jax.distributed) is tested in ``tests/distributed/test_jax_*.py``.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import sigreg  # noqa: E402
from backends import jax as bj  # noqa: E402

TIGHT = 1e-10  # float64: custom_vjp vs autodiff, JAX vs numpy core


def _max_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _rel_err(a, b) -> float:
    return _max_err(a, b) / max(1.0, float(np.max(np.abs(np.asarray(b, np.float64)))))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return {
        "x": 0.2 + rng.standard_normal((2, 48, 6)),  # (views, N, K)
        "a": sigreg.sample_directions(6, 12, seed=1, step=2, backend="numpy"),
        "cot": rng.standard_normal((2, 12)),
    }


# ----------------------------------------------------------------- gradient vs autodiff
CASES = {  # reduction, integration, debias
    "mean-trapezoid": ("mean", "trapezoid", False),
    "none-trapezoid-debias": ("none", "trapezoid", True),
    "sum-exact": ("sum", "exact", False),
}


ENGINES = ["cache_fused", "few_kernels"]


@pytest.fixture(scope="module", params=ENGINES)
def grads(data, request):
    """Per case: value and gradient through the custom_vjp (with the strategy under test) and
    through plain autodiff of the core (one compiled program for all cases), plus the
    gradient in the directions."""

    def case(x, a, cot, reduction, integration, debias):
        opts = dict(reduction=reduction, integration=integration, debias=debias)
        custom_opts = dict(opts, engine=request.param)
        cot = cot if reduction == "none" else cot[:, 0]

        def custom(x):
            return jnp.sum(cot * bj.sliced_epps_pulley(x, a, **custom_opts))

        def plain(x):  # jax.grad differentiates the core's forward pass itself
            return jnp.sum(cot * sigreg.sliced_epps_pulley(x, a, **opts))

        raw = bj.sliced_epps_pulley(x, a, **custom_opts)
        return jax.value_and_grad(custom)(x), jax.value_and_grad(plain)(x), raw

    @jax.jit
    def run(x, a, cot):
        out = {name: case(x, a, cot, *opts) for name, opts in CASES.items()}
        out["grad_directions"] = jax.grad(lambda a: jnp.sum(bj.sliced_epps_pulley(x, a)))(a)
        return out

    return run(jnp.asarray(data["x"]), jnp.asarray(data["a"]), jnp.asarray(data["cot"]))


@pytest.mark.parametrize("name", list(CASES))
def test_custom_vjp_grad_equals_autodiff_through_core(data, grads, name):
    (v_c, g_c), (v_p, g_p), raw = grads[name]
    assert float(jnp.linalg.norm(g_p)) > 1e-2  # a non-trivial gradient
    assert _rel_err(v_c, v_p) <= TIGHT
    assert _rel_err(g_c, g_p) <= TIGHT
    reduction, integration, debias = CASES[name]
    opts = dict(reduction=reduction, integration=integration, debias=debias)
    ref = sigreg.sliced_epps_pulley(data["x"], data["a"], **opts)  # numpy core
    assert raw.shape == ref.shape
    assert _rel_err(raw, ref) <= TIGHT


def test_directions_get_no_gradient(grads):
    np.testing.assert_array_equal(np.asarray(grads["grad_directions"]), 0.0)


def test_residuals_are_small(data):
    x, a = jnp.asarray(data["x"]), jnp.asarray(data["a"])
    n_points = 17

    def pullback_of(x):
        return jax.vjp(lambda x: bj.sliced_epps_pulley(x, a, n_points=n_points), x)[1]

    leaves = jax.tree_util.tree_leaves(jax.eval_shape(pullback_of, x))  # abstract: no compile
    views, n, _ = x.shape
    m = a.shape[1]
    shapes = sorted(tuple(leaf.shape) for leaf in leaves if leaf.size > 1)
    # x, the directions and each slice's gradient d value / d theta, (views, M, N), computed
    # in the forward pass; the deferred check flag aside. Nothing of size N * M * knots.
    assert shapes == sorted([x.shape, a.shape, (views, m, n)])
    assert sum(leaf.size for leaf in leaves) < x.size + a.size + views * m * n + 4


# ----------------------------------------------------------------- LeJEPA
LEJEPA_CASES = {"center-local": ("center", True), "pairwise-global-only": ("pairwise", False)}


@pytest.fixture(scope="module", params=ENGINES)
def lejepa_results(data, request):
    """Per case: the numpy core loss, and from one compiled program the JAX loss (with the
    strategy under test) and the view gradients through the custom_vjp and through plain
    autodiff of the core."""
    rng = np.random.default_rng(5)
    g = data["x"]
    loc = g[:1] + 0.3 * rng.standard_normal((1,) + g.shape[1:])

    def case(g, loc, a, prediction):
        opts = dict(lamb=0.3, prediction=prediction, directions=a)
        mine = dict(opts, engine=request.param)
        custom = jax.grad(lambda *v: bj.lejepa_loss(*v, **mine).loss, argnums=(0, 1))
        plain = jax.grad(lambda *v: sigreg.lejepa_loss(*v, **opts).loss, argnums=(0, 1))
        if loc is None:
            custom = jax.grad(lambda g: bj.lejepa_loss(g, **mine).loss, argnums=(0,))
            plain = jax.grad(lambda g: sigreg.lejepa_loss(g, **opts).loss, argnums=(0,))
            return bj.lejepa_loss(g, **mine), custom(g), plain(g)
        return bj.lejepa_loss(g, loc, **mine), custom(g, loc), plain(g, loc)

    @jax.jit
    def run(g, loc, a):
        return {
            name: case(g, loc if local else None, a, prediction)
            for name, (prediction, local) in LEJEPA_CASES.items()
        }

    out = run(jnp.asarray(g), jnp.asarray(loc), jnp.asarray(data["a"]))
    refs = {
        name: sigreg.lejepa_loss(
            g, loc if local else None, lamb=0.3, prediction=prediction, directions=data["a"]
        )
        for name, (prediction, local) in LEJEPA_CASES.items()
    }
    return out, refs


@pytest.mark.parametrize("name", list(LEJEPA_CASES))
def test_lejepa_equals_core_and_autodiff(lejepa_results, name):
    out, refs = lejepa_results
    loss, g_custom, g_plain = out[name]
    assert isinstance(loss, sigreg.LeJEPAParts)
    for part in ("loss", "prediction", "sigreg"):
        assert _rel_err(getattr(loss, part), getattr(refs[name], part)) <= TIGHT, part
    assert len(g_custom) == len(g_plain) == (2 if LEJEPA_CASES[name][1] else 1)
    assert float(jnp.linalg.norm(g_plain[0])) > 1e-3
    for custom, plain in zip(g_custom, g_plain, strict=True):
        assert _rel_err(custom, plain) <= TIGHT


# ----------------------------------------------------------------- jit, steps, dtypes
def test_jit_equals_eager(data):
    x, a = jnp.asarray(data["x"][0]), jnp.asarray(data["a"])

    def value_and_grad(x, a):
        return jax.value_and_grad(lambda x: bj.sliced_epps_pulley(x, a, n_points=3))(x)

    v_e, g_e = value_and_grad(x, a)
    v_j, g_j = jax.jit(value_and_grad)(x, a)
    assert _rel_err(v_j, v_e) <= 1e-12
    assert _rel_err(g_j, g_e) <= 1e-12
    assert float(jnp.linalg.norm(g_e)) > 1e-3


@pytest.mark.parametrize("sampler", ["jax", "numpy"])
def test_one_compilation_serves_every_step(data, sampler):
    traces = []

    @jax.jit
    def loss_and_grad(x, step):
        traces.append(1)  # runs once per trace, never at execution
        return jax.value_and_grad(
            lambda x: bj.sigreg(x, num_slices=8, seed=7, step=step, sampler=sampler, n_points=9)
        )(x)

    x = jnp.asarray(data["x"][0])
    values = [float(loss_and_grad(x, step)[0]) for step in range(5)]
    assert len(traces) == 1
    if hasattr(loss_and_grad, "_cache_size"):
        assert loss_and_grad._cache_size() == 1
    assert len(set(values)) == 5  # fresh directions every step
    if sampler == "numpy":  # the same directions as the numpy core (PCG64)
        ref = [
            float(sigreg.sigreg(data["x"][0], num_slices=8, seed=7, step=s, n_points=9))
            for s in range(5)
        ]
        np.testing.assert_allclose(values, ref, rtol=TIGHT, atol=0)


@pytest.mark.parametrize("dtype,rtol", [(jnp.float64, 1e-10), (jnp.float32, 1e-5)])
def test_strategies_agree(dtype, rtol):
    """The issue's tolerance between strategies, with several cache blocks (padded last)."""
    rng = np.random.default_rng(8)
    x = jnp.asarray(0.1 + rng.standard_normal((2, 600, 10)), dtype)
    a = jnp.asarray(sigreg.sample_directions(10, 70, seed=3, backend="numpy"), dtype)
    out = {}
    for engine in ENGINES:
        fn = jax.jit(
            jax.value_and_grad(lambda x, e=engine: jnp.sum(bj.sliced_epps_pulley(x, a, engine=e)))
        )
        out[engine] = fn(x)
    (v1, g1), (v2, g2) = out["cache_fused"], out["few_kernels"]
    assert _max_err(v1, v2) <= rtol * abs(float(v2))
    assert _max_err(g1, g2) <= rtol * float(jnp.max(jnp.abs(g2)))


@pytest.mark.parametrize("dtype,tol", [(np.float64, 4e-16), (np.float32, 2e-7)])
def test_vectorised_sincos(dtype, tol):
    from backends._jax_kernels import sincos

    theta = np.concatenate([np.linspace(-40.0, 40.0, 20001), [0.0, np.pi / 4, -np.pi / 2]])
    s, c = jax.jit(sincos)(jnp.asarray(theta, dtype))
    exact = np.asarray(theta, dtype).astype(np.float64)
    assert _max_err(s, np.sin(exact)) <= tol
    assert _max_err(c, np.cos(exact)) <= tol


def test_float32(data):
    x64 = jnp.asarray(data["x"])
    x32 = x64.astype(jnp.float32)

    def value_and_grad(g):
        return jax.value_and_grad(
            lambda g: bj.lejepa_loss(g, num_slices=12, step=1, sampler="numpy").loss
        )(g)

    (v32, g32), (v64, g64) = jax.jit(lambda a, b: (value_and_grad(a), value_and_grad(b)))(x32, x64)
    assert v32.dtype == jnp.float32 and g32.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(g32)))
    # the same PCG64 directions in both dtypes, so only rounding differs
    assert abs(float(v32) - float(v64)) <= 1e-4 * abs(float(v64))
    assert _max_err(g32, g64) <= 1e-4 * float(jnp.max(jnp.abs(g64)))


def test_half_precision_input_is_computed_in_float32(data):
    x = jnp.asarray(data["x"][0], dtype=jnp.bfloat16)
    out = jax.jit(lambda x, a: bj.sliced_epps_pulley(x, a, n_points=5))(x, data["a"])
    assert out.dtype == jnp.bfloat16
    ref = sigreg.sliced_epps_pulley(np.asarray(x.astype(jnp.float32)), data["a"], n_points=5)
    assert abs(float(out) - float(ref)) <= 1e-2 * abs(float(ref))


# ----------------------------------------------------------------- directions
def test_random_directions_properties():
    @jax.jit
    def draws(seed, step, key):
        def draw(**kw):
            return bj.random_directions(7, 9, **kw)

        return {
            "a": draw(seed=seed, step=step),
            "step+1": draw(seed=seed, step=step + 1),
            "key": draw(key=key, step=step),
            "float32": draw(seed=seed, step=step, dtype=jnp.float32),
        }

    out = draws(2, 3, jax.random.key(5))
    a = out["a"]
    assert a.shape == (7, 9) and a.dtype == jnp.float64
    np.testing.assert_allclose(np.linalg.norm(np.asarray(a), axis=0), 1.0, rtol=0, atol=1e-14)
    assert _max_err(out["step+1"], a) > 0.1  # another step, other directions
    assert _max_err(out["key"], a) > 0.1  # another base key (seed 5), other directions
    # the Gaussian draws are float32 for every dtype: only the rounding differs
    assert out["float32"].dtype == jnp.float32 and _max_err(out["float32"], a) <= 1e-6
    # jax.random numbers are not the numpy PCG64 ones of sigreg.sample_directions
    assert _max_err(a, sigreg.sample_directions(7, 9, seed=2, step=3, backend="numpy")) > 0.1
    # deterministic: the same (seed, step) gives the same directions again
    np.testing.assert_array_equal(np.asarray(draws(2, 3, jax.random.key(5))["a"]), np.asarray(a))


def test_pcg64_directions_equal_sample_directions():
    ref = sigreg.sample_directions(5, 4, seed=3, step=11, backend="numpy")
    np.testing.assert_array_equal(np.asarray(bj.pcg64_directions(5, 4, seed=3, step=11)), ref)
    traced = jax.jit(lambda s: bj.pcg64_directions(5, 4, seed=3, step=s))(11)
    np.testing.assert_array_equal(np.asarray(traced), ref)
    f32 = bj.pcg64_directions(5, 4, seed=3, step=11, dtype=jnp.float32)
    np.testing.assert_array_equal(np.asarray(f32), ref.astype(np.float32))


# ----------------------------------------------------------------- validation
def test_bad_arguments_raise(data):
    x, a = data["x"][0], data["a"]
    with pytest.raises(ValueError, match="directions"):
        bj.sliced_epps_pulley(x, 2.0 * a)  # non-unit columns
    with pytest.raises(ValueError, match="directions"):
        bj.sliced_epps_pulley(x, a[:-1])
    with pytest.raises(ValueError, match="x must have shape"):
        bj.sliced_epps_pulley(x[0], a)
    with pytest.raises(ValueError, match="contains NaN"):
        bj.sliced_epps_pulley(np.where(x > 1.0, np.nan, x), a)
    with pytest.raises(ValueError, match="reduction"):
        bj.sliced_epps_pulley(x, a, reduction="max")
    with pytest.raises(ValueError, match="key or seed"):
        bj.sigreg(x, key=jax.random.key(0), seed=1)
    with pytest.raises(ValueError, match="directions or key"):
        bj.sigreg(x, directions=a, seed=1)
    with pytest.raises(ValueError, match="sampler"):
        bj.sigreg(x, sampler="torch")
    with pytest.raises(ValueError, match="key is not supported"):
        bj.sigreg(x, sampler="numpy", key=jax.random.key(0))
    with pytest.raises(ValueError, match="step"):
        bj.random_directions(6, 3, step=-1)
    with pytest.raises(TypeError, match="step"):
        bj.random_directions(6, 3, step=1.5)
    with pytest.raises(TypeError, match="JaxAxisCollective"):
        bj.sigreg(x, collective=object())
    with pytest.raises(ValueError, match="collective"):
        bj.sliced_epps_pulley(x, a, integration="exact", collective=bj.JaxAxisCollective("i"))
    with pytest.raises(ValueError, match="lamb"):
        bj.lejepa_loss(data["x"], lamb=1.5, num_slices=4)
    with pytest.raises(ValueError, match="local_views"):
        bj.lejepa_loss(data["x"], data["x"][:, :5], num_slices=4)
    with pytest.raises(ValueError, match="axis_name"):
        bj.JaxAxisCollective(None)


def test_traced_bad_directions_give_nan_value_and_gradient(data):
    x, a = jnp.asarray(data["x"][0]), 2.0 * jnp.asarray(data["a"])
    value, grad = jax.jit(jax.value_and_grad(lambda x: bj.sliced_epps_pulley(x, a, n_points=5)))(x)
    assert bool(jnp.isnan(value)) and bool(jnp.all(jnp.isnan(grad)))


def test_collective_protocol():
    coll = bj.JaxAxisCollective("batch")
    assert isinstance(coll, sigreg.Collective)
    assert coll == bj.JaxAxisCollective("batch") and hash(coll) == hash(
        bj.JaxAxisCollective("batch")
    )


def test_docstring_examples():
    result = doctest.testmod(bj, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 6
    assert result.failed == 0
