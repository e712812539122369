"""sigreg.engine: the public contract of the adapters, strategy choice and agreement, and the
deprecated name ``sigreg.LeJEPALoss``."""

from __future__ import annotations

import warnings

import numpy as np
import oracles as O
import pytest

import sigreg
from sigreg import _ecf, engine

STRATEGIES = ["cache_fused", "few_kernels"]


def test_engine_module_is_public_and_documented():
    assert "engine" in sigreg.__all__
    for name in engine.__all__:
        obj = getattr(engine, name)
        assert not name.startswith("_")
        if callable(obj):
            assert obj.__doc__, name


def test_auto_resolves_from_the_device():
    x = np.zeros((3, 4))
    assert engine.resolve_engine("auto", x) == "cache_fused"
    assert engine.resolve_engine("few_kernels", x) == "few_kernels"
    with pytest.raises(ValueError, match="engine"):
        engine.resolve_engine("fast", x)
    with pytest.raises(ValueError, match="engine"):
        sigreg.sliced_epps_pulley(np.zeros((4, 2)), np.eye(2), engine="gpu")


def _problem(dtype, seed=3, shape=(2, 300, 12), m=37):
    rng = np.random.default_rng(seed)
    x = (0.2 + rng.standard_normal(shape) * np.linspace(0.5, 1.5, shape[-1])).astype(dtype)
    a = O.unit_directions(rng, shape[-1], m).astype(dtype)
    return x, a


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("debias", [False, True])
def test_strategies_agree_across_blocks(monkeypatch, dtype, rtol, debias):
    """Small blocks and budgets force many blocks/chunks; values and gradients agree with
    a float64 single-block reference to the issue's tolerances."""
    x, a = _problem(dtype)
    cot = np.random.default_rng(4).uniform(0.5, 1.5, (2, 37)).astype(dtype)
    ref_v, pb = sigreg.sliced_epps_pulley_vjp(
        x.astype(np.float64),
        a.astype(np.float64),
        reduction="none",
        debias=debias,
        engine="few_kernels",
    )
    ref_g = pb(cot.astype(np.float64))
    monkeypatch.setattr(_ecf, "CACHE_BLOCK_ELEMENTS", 700)
    monkeypatch.setattr(_ecf, "MEMORY_BUDGET_BYTES", 3 * 5 * 16 * 300 * 8 + 5)
    assert _ecf.block_rows(300, 16, 8, "cache_fused") == 2
    assert _ecf.block_rows(300, 16, 8, "few_kernels") == 3
    results = {}
    for strategy in STRATEGIES:
        value, pullback = sigreg.sliced_epps_pulley_vjp(
            x, a, reduction="none", debias=debias, engine=strategy
        )
        results[strategy] = value, pullback(cot)
        assert value.dtype == results[strategy][1].dtype == dtype
    # relative to the largest entry: debiased statistics can be ~0
    v_scale, g_scale = np.max(np.abs(ref_v)), np.max(np.abs(ref_g))
    fused, few = results["cache_fused"], results["few_kernels"]
    np.testing.assert_allclose(fused[0], few[0], rtol=rtol, atol=rtol * v_scale)
    np.testing.assert_allclose(fused[1], few[1], rtol=rtol, atol=rtol * g_scale)
    # the float32 inputs are rounded: against float64 allow the conditioning of the problem
    against = 1e-10 if dtype == np.float64 else 1e-4
    for value, grad in results.values():
        np.testing.assert_allclose(value, ref_v, rtol=against, atol=against * v_scale)
        np.testing.assert_allclose(grad, ref_g, rtol=against, atol=against * g_scale)


def test_gradient_in_forward_equals_second_pass():
    """``with_gradient=True`` (gradient contracted in the forward pass) equals the pullback's
    own pass over the knot values (the path a collective takes)."""
    x, a = _problem(np.float64)
    z = engine.project(np, x, a)
    rule = engine.make_rule(
        t_max=3.0, n_points=17, integration="trapezoid", debias=True, collective=None
    )
    cot = np.random.default_rng(5).standard_normal(z.shape[:-1])
    value_1, res_1 = engine.forward(np, z, rule, with_gradient=True)
    value_2, res_2 = engine.forward(np, z, rule)
    assert res_1[3] is not None and res_2[3] is None
    np.testing.assert_array_equal(value_1, value_2)
    np.testing.assert_allclose(
        engine.pullback(np, z, rule, res_1, cot),
        engine.pullback(np, z, rule, res_2, cot),
        rtol=1e-12,
        atol=1e-14,
    )


def test_lejepa_parts_old_name_warns():
    with pytest.warns(DeprecationWarning, match="LeJEPAParts"):
        old = sigreg.LeJEPALoss
    assert old is sigreg.LeJEPAParts
    with pytest.warns(DeprecationWarning, match="LeJEPAParts"):
        from sigreg import LeJEPALoss  # noqa: F401
    with pytest.warns(DeprecationWarning):
        from sigreg.lejepa import LeJEPALoss as old_module_name  # noqa: F401
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sigreg.LeJEPAParts._fields == ("loss", "prediction", "sigreg")
    with pytest.raises(AttributeError):
        sigreg.NoSuchName  # noqa: B018
