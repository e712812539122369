"""henze_zirkler / henze_zirkler_test: values vs a direct float64 oracle, invariances, the
blockwise pair sum, the null mean of Henze & Zirkler (1990), Monte Carlo p-values, validation."""

from __future__ import annotations

import math

import gof_oracles as G
import numpy as np
import pytest
from helpers import assert_close, assert_same_backend, make, to64

import sigreg
from sigreg import multivariate

MIX = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.2], [0.0, 0.0, 2.0]])


def test_matches_direct_oracle(xp, device, dtype):
    x_np = 0.5 + np.random.default_rng(20).standard_t(5, (40, 3)) @ MIX
    x = make(xp, device, x_np, dtype)
    out = sigreg.henze_zirkler(x)
    assert out.dtype == x.dtype and tuple(out.shape) == ()
    assert_same_backend(out, x)
    assert_close(out, G.henze_zirkler(to64(x)), dtype, rtol=1e-11 if dtype == "float64" else 1e-4)


def test_batched(xp, device):
    x_np = np.random.default_rng(21).exponential(size=(2, 3, 25, 2))
    out = sigreg.henze_zirkler(make(xp, device, x_np))
    ref = np.array([[G.henze_zirkler(x_np[i, j]) for j in range(3)] for i in range(2)])
    assert_close(out, ref, rtol=1e-11)


def test_blockwise_pair_sum_equals_one_block(monkeypatch):
    x = np.random.default_rng(22).standard_normal((2, 37, 4))
    whole = sigreg.henze_zirkler(x)
    monkeypatch.setattr(multivariate, "PAIR_BUDGET", 2 * 37 * 5)  # blocks of 5 rows
    np.testing.assert_allclose(sigreg.henze_zirkler(x), whole, rtol=1e-13)


def test_affine_invariance():
    rng = np.random.default_rng(23)
    x = rng.gamma(2.0, size=(60, 3))
    a = rng.standard_normal((3, 3)) + 3 * np.eye(3)
    np.testing.assert_allclose(
        sigreg.henze_zirkler(x @ a.T - 4.0), sigreg.henze_zirkler(x), rtol=1e-10
    )


def test_one_dimension_is_the_composite_bhep_statistic():
    """d = 1: NOTES section 5 with the standardised sample y and beta of Henze-Zirkler."""
    x = np.random.default_rng(24).uniform(size=50)
    y = (x - x.mean()) / x.std()
    b2 = multivariate.henze_zirkler_beta(50, 1) ** 2
    ref = (
        np.exp(-b2 * (y[:, None] - y[None, :]) ** 2 / 2).sum() / 50
        - 2 / math.sqrt(1 + b2) * np.exp(-b2 * y**2 / (2 * (1 + b2))).sum()
        + 50 / math.sqrt(1 + 2 * b2)
    )
    np.testing.assert_allclose(sigreg.henze_zirkler(x[:, None]), ref, rtol=1e-12)
    assert multivariate.henze_zirkler_beta(50, 1) == (3 * 50 / 4) ** 0.2 / math.sqrt(2)


def test_null_mean_matches_henze_zirkler():
    """Mean over 300 null samples vs the moment formula of Henze & Zirkler (1990)."""
    values = sigreg.henze_zirkler(np.random.default_rng(25).standard_normal((300, 100, 2)))
    se = np.std(values) / math.sqrt(values.size)
    assert abs(np.mean(values) - G.henze_zirkler_null_mean(100, 2)) < 4 * se


def test_test_pvalue_is_the_monte_carlo_rank(xp, device):
    """Same draws as the documented recipe: R null samples of N(0, I) from rng, float64."""
    x_np = np.random.default_rng(26).standard_normal((30, 2)) ** 3
    res = sigreg.henze_zirkler_test(
        make(xp, device, x_np), method="montecarlo", n_resamples=40, rng=7
    )
    stat, pvalue = res
    assert_same_backend(pvalue, stat)
    draws = np.random.default_rng(7).standard_normal((40, 30, 2))
    null = np.array([G.henze_zirkler(d) for d in draws])
    assert_close(stat, G.henze_zirkler(x_np), rtol=1e-11)
    assert_close(pvalue, (1 + np.sum(null >= G.henze_zirkler(x_np))) / 41)
    assert float(to64(res.statistic)) == float(to64(stat))


def test_test_detects_heavy_tails_and_accepts_normal():
    rng = np.random.default_rng(27)
    mc = {"method": "montecarlo", "n_resamples": 99, "rng": rng}
    heavy = sigreg.henze_zirkler_test(rng.standard_t(3, (200, 3)), **mc)
    assert float(heavy.pvalue) == pytest.approx(0.01)
    normal = sigreg.henze_zirkler_test(rng.standard_normal((200, 3)) @ MIX, **mc)
    assert float(normal.pvalue) > 0.01
    batch = sigreg.henze_zirkler_test(
        rng.standard_normal((2, 50, 2)), method="montecarlo", n_resamples=9, rng=0
    )
    assert batch.pvalue.shape == (2,) and np.all((batch.pvalue >= 0.1) & (batch.pvalue <= 1))


def test_lognormal_pvalue_matches_oracle(xp, device, dtype):
    x_np = np.random.default_rng(30).standard_normal((3, 40, 2)) ** 3
    stat, p = sigreg.henze_zirkler_test(make(xp, device, x_np, dtype))  # lognormal default
    assert p.dtype == stat.dtype == getattr(xp, dtype) and tuple(p.shape) == (3,)
    ref = G.henze_zirkler_lognormal_pvalue(G.henze_zirkler(x_np[0]), 40, 2)
    assert_close(p[0], ref, dtype, rtol=1e-10 if dtype == "float64" else 1e-3)
    ref_all = [G.henze_zirkler_lognormal_pvalue(G.henze_zirkler(v), 40, 2) for v in x_np]
    assert_close(p, ref_all, dtype, rtol=1e-10 if dtype == "float64" else 1e-3, atol=1e-12)


def test_validation():
    x = np.random.default_rng(28).standard_normal((10, 3))
    with pytest.raises(ValueError, match=r"N > d"):
        sigreg.henze_zirkler(x[:3])
    with pytest.raises(ValueError, match="shape \\(..., N, d\\)"):
        sigreg.henze_zirkler(x[:, 0])
    with pytest.raises(ValueError, match="singular sample covariance"):
        sigreg.henze_zirkler(np.stack([x[:, 0], x[:, 1], x[:, 0] + x[:, 1]], axis=1))
    with pytest.raises(ValueError, match="x contains NaN"):
        sigreg.henze_zirkler(np.where(x > 1.5, np.nan, x))
    with pytest.raises(TypeError, match="rng must be"):
        sigreg.henze_zirkler_test(x, method="montecarlo", rng=0.5)
    with pytest.raises(ValueError, match="rng must be a non-negative"):
        sigreg.henze_zirkler_test(x, method="montecarlo", rng=-1)
    with pytest.raises(ValueError, match="only used with method='montecarlo'"):
        sigreg.henze_zirkler_test(x, rng=0)
    with pytest.raises(ValueError, match="n_resamples must be >= 1"):
        sigreg.henze_zirkler_test(x, method="montecarlo", n_resamples=0, rng=0)
    with pytest.raises(ValueError, match="method must be one of"):
        sigreg.henze_zirkler_test(x, method="lognormal")
    with pytest.raises(ValueError, match=r"d >= 1"):
        sigreg.henze_zirkler(np.zeros((5, 0)))
    with pytest.raises(ValueError, match=r"d >= 1"):
        sigreg.henze_zirkler_test(np.zeros((5, 0)))  # was ZeroDivisionError


def test_singular_covariance_raises_on_torch_and_jax():
    for name in ("torch", "jax.numpy"):
        mod = pytest.importorskip(name)
        col = mod.asarray(np.arange(8.0)[:, None] * np.ones((1, 2)))
        with pytest.raises(ValueError, match="singular sample covariance"):
            sigreg.henze_zirkler(col)


@pytest.mark.slow
def test_monte_carlo_pvalue_is_calibrated():
    """Under the null P(p <= alpha) = alpha (up to the 1/(R+1) grid): 400 tests, R = 99."""
    rng = np.random.default_rng(29)
    p = np.array(
        [
            float(
                sigreg.henze_zirkler_test(
                    rng.standard_normal((50, 3)), method="montecarlo", n_resamples=99, rng=rng
                ).pvalue
            )
            for _ in range(400)
        ]
    )
    for alpha in (0.05, 0.1, 0.5):
        assert abs(np.mean(p <= alpha) - alpha) < 4 * math.sqrt(alpha * (1 - alpha) / 400)


def test_lognormal_pvalue_is_nearly_calibrated():
    """Measured size of the lognormal approximation (docs/statistics.md): within 1.5 points
    of 5% and 0.6 points of 1%, never liberal by more than the Monte Carlo error."""
    rng = np.random.default_rng(31)
    for n, d in ((20, 2), (50, 3)):
        x = rng.standard_normal((4000, n, d))
        p = to64(sigreg.henze_zirkler_test(x).pvalue)
        se5, se1 = math.sqrt(0.05 * 0.95 / 4000), math.sqrt(0.01 * 0.99 / 4000)
        assert 0.035 < np.mean(p <= 0.05) < 0.05 + 3 * se5
        assert 0.004 < np.mean(p <= 0.01) < 0.01 + 3 * se1
