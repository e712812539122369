"""sliced_statistic / sliced_test: per-slice values vs the float64 oracles of every
statistic, reductions, the Epps-Pulley fast path, Monte Carlo p-values, validation."""

from __future__ import annotations

import gof_oracles as G
import numpy as np
import oracles as O
import pytest
from helpers import assert_close, assert_same_backend, make, to64

import sigreg

NAMES = sorted(G.UNIVARIATE)
JITTED = ["watson", "extended_jarque_bera"]  # Cramér-von Mises + Phi, mean_variance


@pytest.mark.parametrize("statistic", NAMES)
def test_sliced_statistic_matches_oracle(xp, device, dtype, statistic):
    rng = np.random.default_rng(30)
    x_np = 0.1 + rng.standard_normal((24, 5)) * np.array([1.0, 0.6, 1.5, 1.0, 1.0])
    a_np = O.unit_directions(rng, 5, 4)
    x, a = make(xp, device, x_np, dtype), make(xp, device, a_np, dtype)
    out = sigreg.sliced_statistic(x, a, statistic=statistic, reduction="none")
    ref = G.sliced(statistic, to64(x), to64(a))
    assert out.dtype == x.dtype and tuple(out.shape) == (4,)
    assert_same_backend(out, x)
    assert_close(out, ref, dtype, rtol=1e-11 if dtype == "float64" else 2e-4, scale=24)


@pytest.mark.parametrize("reduction,tail", [("mean", ()), ("sum", ()), ("none", (3,))])
def test_reductions_and_batches(xp, device, reduction, tail):
    rng = np.random.default_rng(31)
    x_np = rng.standard_normal((2, 20, 4))
    a_np = O.unit_directions(rng, 4, 3)
    out = sigreg.sliced_statistic(
        make(xp, device, x_np), make(xp, device, a_np), statistic="watson", reduction=reduction
    )
    per = np.stack([G.sliced("watson", x_np[i], a_np) for i in range(2)])
    ref = {"mean": per.mean(-1), "sum": per.sum(-1), "none": per}[reduction]
    assert tuple(out.shape) == (2,) + tail
    assert_close(out, ref)


def test_epps_pulley_is_sliced_epps_pulley(xp, device):
    rng = np.random.default_rng(32)
    x = make(xp, device, rng.standard_normal((64, 6)))
    a = sigreg.sample_directions(6, 8, seed=3, step=2, backend=xp, device=device)
    assert_close(sigreg.sliced_statistic(x, a), to64(sigreg.sliced_epps_pulley(x, a)))


def test_sliced_test_pvalue_is_the_monte_carlo_rank(xp, device):
    rng = np.random.default_rng(33)
    x_np = rng.uniform(-1.8, 1.8, (30, 3))
    a_np = O.unit_directions(rng, 3, 5)
    res = sigreg.sliced_test(
        make(xp, device, x_np),
        make(xp, device, a_np),
        statistic="cramer_von_mises",
        n_resamples=30,
        rng=np.random.default_rng(4),
    )
    assert_same_backend(res.pvalue, res.statistic)
    observed = G.sliced("cramer_von_mises", x_np, a_np).mean()
    draws = np.random.default_rng(4).standard_normal((30, 30, 3))
    null = np.array([G.sliced("cramer_von_mises", d, a_np).mean() for d in draws])
    assert_close(res.statistic, observed, rtol=1e-11)
    assert_close(res.pvalue, (1 + np.sum(null >= observed)) / 31)


@pytest.mark.parametrize("statistic", NAMES)
def test_sliced_test_detects_a_uniform_cube(statistic):
    """N = 500 from the standardised uniform cube in 8 dims (mean 0, covariance I), sliced
    on the 8 axes and 8 random directions: flagged at p = 1/(R+1) by every statistic except
    mean_variance (first two moments are those of N(0, I)); N(0, I) is not flagged."""
    rng = np.random.default_rng(34)
    a = np.concatenate([np.eye(8), sigreg.sample_directions(8, 8, seed=0, backend="numpy")], 1)
    cube = rng.uniform(-np.sqrt(3), np.sqrt(3), (500, 8))
    _, p = sigreg.sliced_test(cube, a, statistic=statistic, n_resamples=39, rng=rng)
    if statistic == "mean_variance":
        assert p > 0.025
    else:
        assert p == pytest.approx(0.025)
    _, p_null = sigreg.sliced_test(
        rng.standard_normal((500, 8)), a, statistic=statistic, n_resamples=39, rng=rng
    )
    assert p_null > 0.025


def test_validation():
    x = np.random.default_rng(35).standard_normal((10, 3))
    a = O.unit_directions(np.random.default_rng(36), 3, 2)
    with pytest.raises(ValueError, match="statistic must be one of"):
        sigreg.sliced_statistic(x, a, statistic="shapiro_wilk")
    with pytest.raises(ValueError, match="unit-norm columns"):
        sigreg.sliced_statistic(x, 2 * a, statistic="watson")
    with pytest.raises(ValueError, match="directions has 3 rows but x has K=2"):
        sigreg.sliced_statistic(x[:, :2], a)
    with pytest.raises(ValueError, match="reduction must be one of"):
        sigreg.sliced_statistic(x, a, reduction="max")
    with pytest.raises(ValueError, match="zero variance"):
        sigreg.sliced_statistic(np.ones((5, 3)), a, statistic="extended_jarque_bera")
    with pytest.raises(TypeError, match="rng must be"):
        sigreg.sliced_test(x, a, rng=np.random.RandomState(0))
    with pytest.raises(TypeError, match="n_resamples must be an integer"):
        sigreg.sliced_test(x, a, n_resamples=9.0, rng=0)


def test_non_unit_directions_give_nan_under_jit():
    jax = pytest.importorskip("jax")
    x = jax.numpy.asarray(np.random.default_rng(37).standard_normal((10, 3)))
    a = jax.numpy.asarray(2 * O.unit_directions(np.random.default_rng(38), 3, 2))
    f = jax.jit(lambda x, a: sigreg.sliced_statistic(x, a, statistic="mean_variance"))
    assert np.isnan(float(f(x, a)))


def test_statistics_under_jax_jit():
    """Traced value checks (zero variance, unit directions) and values under jax.jit, for
    the statistics not jitted by test_gof_gradients (compilation costs seconds each)."""
    jax = pytest.importorskip("jax")
    rng = np.random.default_rng(39)
    x_np = rng.standard_normal((16, 3))
    a_np = O.unit_directions(rng, 3, 2)

    @jax.jit
    def every(x, a):
        return [sigreg.sliced_statistic(x, a, statistic=s, reduction="none") for s in JITTED]

    for name, out in zip(
        JITTED, every(jax.numpy.asarray(x_np), jax.numpy.asarray(a_np)), strict=True
    ):
        np.testing.assert_allclose(np.asarray(out), G.sliced(name, x_np, a_np), rtol=1e-11)


@pytest.mark.slow
@pytest.mark.parametrize("statistic", ["extended_jarque_bera", "epps_pulley"])
def test_sliced_test_pvalue_is_calibrated(statistic):
    """Under the null P(p <= alpha) = alpha (up to the 1/(R+1) grid): 400 tests, R = 99."""
    rng = np.random.default_rng(40)
    a = sigreg.sample_directions(4, 8, seed=1, backend="numpy")
    p = np.array(
        [
            float(
                sigreg.sliced_test(
                    rng.standard_normal((100, 4)), a, statistic=statistic, n_resamples=99, rng=rng
                ).pvalue
            )
            for _ in range(400)
        ]
    )
    for alpha in (0.05, 0.1, 0.5):
        assert abs(np.mean(p <= alpha) - alpha) < 4 * np.sqrt(alpha * (1 - alpha) / 400)
