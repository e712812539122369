"""sigreg.epps_pulley_test: scipy-style result, axis/keepdims, namespace/dtype/device, the
Monte Carlo method, nan_policy, small and constant samples, validation, and a quick
calibration check (the full study is tests/test_gof_calibration.py, marked slow)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import oracles as O
import pytest
from helpers import assert_same_backend, make, to64

import sigreg
from sigreg.gof import SmallSampleWarning, asymptotic_pvalues, null_statistics


def _standardized(x, axis=-1):
    c = x - x.mean(axis, keepdims=True)
    return c / np.sqrt((c * c).mean(axis, keepdims=True))


def test_result_unpacks_like_scipy():
    x = np.random.default_rng(50).standard_normal(100)
    res = sigreg.epps_pulley_test(x)
    statistic, pvalue = res
    assert isinstance(res, sigreg.GoodnessOfFitResult)
    assert res.statistic is statistic and res.pvalue is pvalue and res[1] is pvalue
    assert statistic.shape == () and 0.0 <= float(pvalue) <= 1.0


@pytest.mark.parametrize("axis,keepdims", [(0, False), (1, True), (-1, False), (2, True)])
def test_axis_keepdims(axis, keepdims):
    x = np.random.default_rng(51).standard_normal((20, 3, 30))
    res = sigreg.epps_pulley_test(x, axis=axis, keepdims=keepdims)
    y = np.moveaxis(x, axis, -1)
    expected = O.ep_exact(_standardized(y), axis=-1)
    if keepdims:
        expected = np.expand_dims(expected, axis)
    assert res.statistic.shape == expected.shape == res.pvalue.shape
    np.testing.assert_allclose(to64(res.statistic), expected, rtol=0, atol=1e-11)


def test_result_namespace_dtype_device(xp, device, dtype):
    """Statistic and p-value in the input's namespace, dtype and device, equal to the oracle
    (computed in float64 on the device where it exists, so float32 input loses nothing)."""
    rng = np.random.default_rng(52)
    x64 = np.stack([rng.standard_normal(40), rng.exponential(size=40)], axis=1)
    x = make(xp, device, x64, dtype)
    for standardize in (True, False):
        stat, p = sigreg.epps_pulley_test(x, standardize=standardize)
        for out in (stat, p):
            assert_same_backend(out, x)
            assert out.dtype == x.dtype and out.shape == (2,)
        xin = to64(x)
        ref = O.ep_exact(_standardized(xin, axis=0) if standardize else xin, axis=0)
        rtol = 1e-10 if dtype == "float64" else 1e-6
        np.testing.assert_allclose(to64(stat), ref, rtol=rtol)
        ref_p = asymptotic_pvalues(ref, np.full(2, 40.0), standardize)
        np.testing.assert_allclose(to64(p), ref_p, rtol=rtol, atol=1e-12)
    assert float(to64(p)[1]) < 1e-6  # the exponential column is rejected


def test_int_input_and_backend_conversion():
    x = np.arange(30) % 7
    res = sigreg.epps_pulley_test(x)
    assert res.statistic.dtype == np.float64
    torch = pytest.importorskip("torch")
    conv = sigreg.epps_pulley_test(x.astype(np.float64), backend="torch")
    assert isinstance(conv.pvalue, torch.Tensor)
    np.testing.assert_allclose(to64(conv.pvalue), to64(res.pvalue), rtol=1e-12)


def test_montecarlo_is_the_documented_count():
    x = np.random.default_rng(53).standard_t(5, (25, 2))
    res = sigreg.epps_pulley_test(x, method="montecarlo", n_resamples=500, rng=7)
    null = null_statistics(25, 500, np.random.default_rng(7), standardize=True)
    obs = to64(res.statistic)
    expected = [(np.sum(null >= o) + 1) / 501 for o in obs]
    np.testing.assert_array_equal(to64(res.pvalue), expected)
    again = sigreg.epps_pulley_test(
        x, method="montecarlo", n_resamples=500, rng=np.random.default_rng(7)
    )
    np.testing.assert_array_equal(to64(again.pvalue), to64(res.pvalue))


@pytest.mark.parametrize("standardize", [True, False])
def test_montecarlo_agrees_with_asymptotic(standardize):
    x = np.random.default_rng(54).standard_normal((30, 4)) * (1.0 if standardize else 1.3)
    mc = sigreg.epps_pulley_test(
        x, standardize=standardize, method="montecarlo", n_resamples=4000, rng=1
    )
    asym = sigreg.epps_pulley_test(x, standardize=standardize)
    p = to64(asym.pvalue)
    se = np.sqrt(p * (1 - p) / 4000) + 1e-3
    assert np.all(np.abs(to64(mc.pvalue) - p) <= 4 * se + 0.01), (to64(mc.pvalue), p)


def test_nan_policy():
    x = np.random.default_rng(55).standard_normal((12, 2))
    x[3, 0] = np.nan
    prop = sigreg.epps_pulley_test(x)
    assert np.isnan(to64(prop.statistic)[0]) and np.isnan(to64(prop.pvalue)[0])
    assert np.all(np.isfinite(to64(prop.pvalue)[1:]))
    omit = sigreg.epps_pulley_test(x, nan_policy="omit")
    clean = sigreg.epps_pulley_test(np.delete(x[:, 0], 3))
    assert float(to64(omit.statistic)[0]) == pytest.approx(float(to64(clean.statistic)), abs=1e-12)
    assert float(to64(omit.pvalue)[0]) == pytest.approx(float(to64(clean.pvalue)), abs=1e-12)
    assert float(to64(omit.pvalue)[1]) == pytest.approx(float(to64(prop.pvalue)[1]), abs=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        sigreg.epps_pulley_test(x, nan_policy="raise")
    few = np.array([1.0, np.nan, 2.0, np.nan])
    with pytest.warns(SmallSampleWarning):
        res = sigreg.epps_pulley_test(few, nan_policy="omit")
    assert np.isnan(to64(res.pvalue))


def test_small_and_constant_samples():
    with pytest.warns(SmallSampleWarning):
        res = sigreg.epps_pulley_test(np.array([0.3, 1.2]))
    assert np.isnan(to64(res.statistic)) and np.isnan(to64(res.pvalue))
    with pytest.warns(SmallSampleWarning):
        res = sigreg.epps_pulley_test(np.zeros((0, 2)), standardize=False)
    assert res.pvalue.shape == (2,) and np.all(np.isnan(to64(res.pvalue)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = sigreg.epps_pulley_test(np.array([0.4]), standardize=False)
    assert float(to64(one.statistic)) == pytest.approx(float(O.ep_exact(np.array([0.4]))))
    with pytest.warns(RuntimeWarning, match="constant"):
        res = sigreg.epps_pulley_test(np.full((10, 2), 3.0) + np.array([0.0, 1e-9]))
    assert np.isnan(to64(res.pvalue)).all()
    simple = sigreg.epps_pulley_test(np.full(10, 3.0), standardize=False)
    assert float(to64(simple.pvalue)) < 1e-6  # N(3, 0) is far from N(0, 1)


def test_validation():
    x = np.random.default_rng(56).standard_normal(20)
    with pytest.raises(ValueError, match="infinity"):
        sigreg.epps_pulley_test(np.append(x, np.inf))
    with pytest.raises(ValueError, match="method"):
        sigreg.epps_pulley_test(x, method="exact")
    with pytest.raises(ValueError, match="nan_policy"):
        sigreg.epps_pulley_test(x, nan_policy="ignore")
    with pytest.raises(ValueError, match="montecarlo"):
        sigreg.epps_pulley_test(x, rng=0)
    default = sigreg.epps_pulley_test(x, method="montecarlo", n_resamples=99)  # seed 0
    assert float(default.pvalue) == float(
        sigreg.epps_pulley_test(x, method="montecarlo", n_resamples=99, rng=0).pvalue
    )
    with pytest.raises(ValueError, match="rng"):
        sigreg.epps_pulley_test(x, method="montecarlo", rng=-1)
    with pytest.raises(TypeError, match="rng"):
        sigreg.epps_pulley_test(x, method="montecarlo", rng=0.5)
    with pytest.raises(ValueError, match="n_resamples"):
        sigreg.epps_pulley_test(x, method="montecarlo", rng=0, n_resamples=0)
    with pytest.raises(TypeError, match="standardize"):
        sigreg.epps_pulley_test(x, standardize=1)
    with pytest.raises(TypeError, match="complex"):
        sigreg.epps_pulley_test(x.astype(complex))
    with pytest.raises(ValueError, match="dimension"):
        sigreg.epps_pulley_test(np.float64(1.0))
    with pytest.raises(ValueError, match="axis"):
        sigreg.epps_pulley_test(x, axis=1)


def test_jit_raises():
    jax = pytest.importorskip("jax")
    x = jax.numpy.asarray(np.random.default_rng(57).standard_normal(16))
    with pytest.raises(TypeError, match="jit"):
        jax.jit(lambda v: sigreg.epps_pulley_test(v).pvalue)(x)


@pytest.mark.parametrize("standardize", [True, False])
def test_quick_calibration(standardize):
    """N = 16, 4000 null samples: rejection rate at alpha = 0.05 within 4 SE."""
    reps, n = 4000, 16
    stats = null_statistics(n, reps, np.random.default_rng(58), standardize=standardize)
    p = asymptotic_pvalues(stats, np.full(reps, float(n)), standardize)
    rate = np.mean(p <= 0.05)
    assert abs(rate - 0.05) <= 4 * math.sqrt(0.05 * 0.95 / reps), rate


def test_power_sanity():
    rng = np.random.default_rng(59)
    assert float(to64(sigreg.epps_pulley_test(rng.exponential(size=200)).pvalue)) < 1e-6
    shifted = rng.standard_normal(100) + 1.0
    assert float(to64(sigreg.epps_pulley_test(shifted).pvalue)) > 1e-3
    assert float(to64(sigreg.epps_pulley_test(shifted, standardize=False).pvalue)) < 1e-6


def test_composite_pvalue_matches_scipy_goodness_of_fit():
    """SciPy's parametric bootstrap with our statistic as a custom one: an independent Monte
    Carlo p-value of the composite test (fitted normal, simulated nulls)."""
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(60)
    x = np.stack([rng.standard_normal(35), rng.standard_t(6, 35), rng.uniform(size=35)], 1)

    def statistic(dist, data, axis):
        return np.asarray(sigreg.epps_pulley_test(data, axis=axis).statistic)

    for column in x.T:
        ref = stats.goodness_of_fit(
            stats.norm, column, statistic=statistic, n_mc_samples=3000, rng=0
        )
        ours = sigreg.epps_pulley_test(column)
        assert float(ref.statistic) == pytest.approx(float(ours.statistic), rel=1e-12)
        p = float(ours.pvalue)  # here 0.112, 0.0051, 0.021 (SciPy: 0.123, 0.0040, 0.023)
        assert 0.002 < p < 0.5
        assert abs(float(ref.pvalue) - p) <= 4 * math.sqrt(p * (1 - p) / 3000)
