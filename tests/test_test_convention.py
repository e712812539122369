"""Every public ``*_test`` follows one convention (issue 15): method spellings, working
defaults, error types, result kind, NaN policy, array-likes; plus the scale and NaN
regressions of issue 16 on every backend."""

from __future__ import annotations

import warnings

import array_api_compat
import gof_oracles as G
import numpy as np
import pytest
from helpers import assert_close, assert_same_backend, make, to64

import sigreg
from sigreg import _univariate_test

UNIVARIATE = [
    "epps_pulley_test",
    "cramer_von_mises_test",
    "anderson_darling_test",
    "watson_test",
    "kolmogorov_smirnov_test",
]
DIRECTIONS = sigreg.sample_directions(3, 4, seed=0, backend="numpy")


def _call(name, x, **kwargs):
    if name == "sliced_test":
        a = DIRECTIONS
        if not isinstance(x, (np.ndarray, list, str)):  # directions in x's namespace
            a = array_api_compat.array_namespace(x).asarray(a, device=array_api_compat.device(x))
        return sigreg.sliced_test(x, a, **kwargs)
    return getattr(sigreg, name)(x, **kwargs)


def _sample(name, rng):
    return rng.standard_normal((40, 3) if name in ("henze_zirkler_test", "sliced_test") else 40)


ALL_TESTS = UNIVARIATE + ["henze_zirkler_test", "sliced_test"]


def test_every_public_test_is_walked():
    public = {n for n in sigreg.__all__ if n.endswith("_test")}
    assert public == set(ALL_TESTS) | {"normality_test"}


@pytest.mark.parametrize("name", UNIVARIATE)
def test_normality_test_is_a_thin_front_door(name):
    x = np.random.default_rng(14).standard_t(6, (30, 2))
    short = name.removesuffix("_test")
    ours = sigreg.normality_test(x, test=short, standardize=False, axis=0)
    ref = getattr(sigreg, name)(x, standardize=False, axis=0)
    np.testing.assert_array_equal(ours.pvalue, ref.pvalue)
    with pytest.raises(ValueError, match="test"):
        sigreg.normality_test(x, test="shapiro")


@pytest.mark.parametrize("name", ALL_TESTS)
def test_defaults_work_and_result_kind(name):
    x = _sample(name, np.random.default_rng(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = _call(name, x)
    assert isinstance(res, sigreg.GoodnessOfFitResult)
    statistic, pvalue = res
    assert type(statistic) is type(pvalue) is np.float64  # numpy scalars, as scipy.stats
    assert 0.0 < pvalue <= 1.0
    listed = _call(name, x.tolist())  # array-likes go through numpy
    assert float(listed.statistic) == float(statistic)
    assert float(listed.pvalue) == float(pvalue)


@pytest.mark.parametrize("name", ALL_TESTS)
def test_method_spellings(name):
    x = _sample(name, np.random.default_rng(2))
    mc = _call(name, x, method="montecarlo", n_resamples=19, rng=3)
    with pytest.warns(DeprecationWarning, match="'montecarlo'"):
        old = _call(name, x, method="monte-carlo", n_resamples=19, rng=3)
    assert float(old.pvalue) == float(mc.pvalue)
    assert float(_call(name, x, method="montecarlo", n_resamples=19).pvalue) == float(
        _call(name, x, method="montecarlo", n_resamples=19, rng=0).pvalue
    )  # the default seed is 0
    if name == "sliced_test":
        with pytest.raises(ValueError, match="method"):
            _call(name, x, method="asymptotic")
        return
    asym = _call(name, x, method="asymptotic")
    with pytest.warns(DeprecationWarning, match="'asymptotic'"):
        old = _call(name, x, method="asymptotic-lognormal")
    assert float(old.pvalue) == float(asym.pvalue)


@pytest.mark.parametrize("name", ALL_TESTS)
def test_same_error_types_for_the_same_mistakes(name):
    x = _sample(name, np.random.default_rng(4))
    mc = {"method": "montecarlo"}
    with pytest.raises(ValueError, match="method"):
        _call(name, x, method="bootstrap")
    with pytest.raises(ValueError, match="nan_policy"):
        _call(name, x, nan_policy="ignore")
    with pytest.raises(TypeError, match="rng"):
        _call(name, x, rng=0.5, **mc)
    with pytest.raises(ValueError, match="rng"):
        _call(name, x, rng=-1, **mc)
    with pytest.raises(ValueError, match="n_resamples"):
        _call(name, x, n_resamples=0, **mc)
    with pytest.raises(TypeError, match="n_resamples"):
        _call(name, x, n_resamples=9.0, **mc)
    if name != "sliced_test":
        with pytest.raises(ValueError, match="montecarlo"):
            _call(name, x, rng=0)
    bad = x.copy()
    bad.flat[5] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        _call(name, bad)
    bad.flat[5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _call(name, bad, nan_policy="raise")
    with pytest.raises(TypeError, match=r"\bx\b"):
        _call(name, x.astype(complex))
    with pytest.raises(TypeError, match=r"\bx\b"):
        _call(name, "abc")


@pytest.mark.parametrize("name", ALL_TESTS)
def test_nan_policy(name, xp, device):
    x_np = _sample(name, np.random.default_rng(5))
    x_np[7] = np.nan  # one value (univariate) or one point (multivariate)
    x = make(xp, device, x_np)
    prop = _call(name, x)
    assert_same_backend(prop.pvalue, x)
    assert np.isnan(to64(prop.statistic)) and np.isnan(to64(prop.pvalue))
    omit = _call(name, x, nan_policy="omit")
    clean = _call(name, make(xp, device, np.delete(x_np, 7, axis=0)))
    assert_close(omit.statistic, to64(clean.statistic))
    assert_close(omit.pvalue, to64(clean.pvalue))


@pytest.mark.parametrize("name", UNIVARIATE)
def test_columns_in_one_call_equal_a_loop(name):
    rng = np.random.default_rng(6)
    table = np.stack([rng.standard_normal(30), rng.exponential(size=30), rng.uniform(size=30)])
    res = _call(name, table, axis=1, keepdims=True)
    assert res.statistic.shape == res.pvalue.shape == (3, 1)
    for i, row in enumerate(table):
        one = _call(name, row)
        assert float(res.statistic[i, 0]) == pytest.approx(float(one.statistic), rel=1e-12)
        assert float(res.pvalue[i, 0]) == pytest.approx(float(one.pvalue), rel=1e-9, abs=1e-15)


# --------------------------------------------------------------- issue 16 regressions
@pytest.mark.parametrize("name", UNIVARIATE)
def test_composite_standardisation_is_scale_safe(name, xp, device, monkeypatch):
    """Composite statistics do not depend on the scale, also when computed in float32
    (JAX without x64) at 1e20 (squares overflow) and 1e-19 (squares underflow)."""
    base = np.random.default_rng(7).standard_normal(200)
    ref = float(_call(name, base).statistic)
    for scale in (1e200, 1e-200):  # float64 at the edge of its range
        out = _call(name, make(xp, device, scale * base))
        assert_close(out.statistic, ref, rtol=1e-9)
    monkeypatch.setattr(_univariate_test, "compute_dtype", lambda xp, x: x.dtype)
    for scale in (1e20, 1e-19, 1e-30):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no false "x is constant"
            out = _call(name, make(xp, device, scale * base, "float32"))
        assert out.statistic.dtype == xp.float32
        assert_close(out.statistic, ref, "float32", rtol=2e-3)


def test_extended_jarque_bera_float32_extreme_scales(xp, device):
    """NaN and a false zero-variance error before; now the float64 value, or +inf where it
    exceeds float32 (the mean/variance part grows like the squared variance)."""
    base = np.random.default_rng(8).standard_normal((64, 2))
    for scale in (1e-12, 1e-30, 1e10, 1e20):
        x = make(xp, device, scale * base, "float32")
        out = to64(sigreg.extended_jarque_bera(x))
        ref = np.array([G.extended_jarque_bera(c) for c in to64(x).T])
        assert not np.any(np.isnan(out)), scale
        finite = ref < 3e38
        np.testing.assert_allclose(out[finite], ref[finite], rtol=2e-3)
        assert np.all(np.isposinf(out[~finite]))
    with pytest.raises(ValueError, match="zero variance"):
        sigreg.extended_jarque_bera(make(xp, device, np.full(8, 1e-30), "float32"))
    x = make(xp, device, 1e-30 * base, "float32")  # through the sliced statistic and test
    a = make(xp, device, np.eye(2), "float32")
    value = sigreg.sliced_statistic(x, a, statistic="extended_jarque_bera", reduction="none")
    assert not np.any(np.isnan(to64(value)))
    res = sigreg.sliced_test(x, a, statistic="extended_jarque_bera", n_resamples=9)
    assert float(to64(res.pvalue)) == pytest.approx(0.1)  # N/2 (m2 - 1)^2 ~ 32: rejected


def test_henze_zirkler_float32_extreme_scales(xp, device):
    base = np.random.default_rng(9).standard_normal((60, 3))
    ref = G.henze_zirkler(base)
    for scale in (1e20, 1e-20, np.array([1e20, 1.0, 1e-20])):
        out = sigreg.henze_zirkler_test(make(xp, device, base * scale, "float32"))
        assert_close(out.statistic, ref, "float32", rtol=2e-3)
        assert 0.0 < float(to64(out.pvalue)) <= 1.0


def test_henze_zirkler_needs_a_coordinate(xp, device):
    for f in (sigreg.henze_zirkler, sigreg.henze_zirkler_test):
        with pytest.raises(ValueError, match=r"d >= 1"):
            f(make(xp, device, np.zeros((5, 0))))


def test_nan_statistic_has_nan_pvalue(xp, device):
    """sliced_test on data whose statistic is NaN (NaN input, propagated), and
    henze_zirkler_test: NaN, never the smallest p-value."""
    x_np = np.random.default_rng(10).standard_normal((2, 30, 3))
    x_np[1, 4, 0] = np.nan
    x = make(xp, device, x_np)
    for res in (
        sigreg.sliced_test(x, make(xp, device, DIRECTIONS), n_resamples=19),
        sigreg.henze_zirkler_test(x),
        sigreg.henze_zirkler_test(x, method="montecarlo", n_resamples=19),
    ):
        p = to64(res.pvalue)
        assert np.isnan(to64(res.statistic)[1]) and np.isnan(p[1]) and 0 < p[0] <= 1


def test_nan_statistic_has_nan_pvalue_under_jit():
    jax = pytest.importorskip("jax")
    x_np = np.random.default_rng(11).standard_normal((30, 3))
    x_np[4, 0] = np.nan
    x, a = jax.numpy.asarray(x_np), jax.numpy.asarray(DIRECTIONS)
    sliced = jax.jit(lambda v, d: tuple(sigreg.sliced_test(v, d, n_resamples=9)))(x, a)
    hz = jax.jit(lambda v: tuple(sigreg.henze_zirkler_test(v)))(x)
    for statistic, pvalue in (sliced, hz):
        assert np.isnan(float(statistic)) and np.isnan(float(pvalue))


def test_longdouble_is_computed_and_returned_in_float64():
    x = np.random.default_rng(12).standard_normal(50)
    for f in (sigreg.epps_pulley, sigreg.cramer_von_mises):
        out = f(x.astype(np.longdouble))
        assert out.dtype == np.float64
        assert float(out) == pytest.approx(float(f(x)), rel=1e-14)
    res = sigreg.anderson_darling_test(x.astype(np.longdouble))
    assert res.pvalue.dtype == np.float64


def test_pandas_like_array_objects():
    """Objects with ``__array__`` (pandas Series, xarray, ...) are converted with numpy."""

    class Column:
        def __init__(self, values):
            self.values = values

        def __array__(self, dtype=None, copy=None):
            return np.asarray(self.values, dtype=dtype)

    x = np.random.default_rng(13).standard_normal(25)
    assert float(sigreg.watson_test(Column(x)).pvalue) == float(sigreg.watson_test(x).pvalue)
