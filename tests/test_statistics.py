"""Statistical behaviour: the O(1/N) minibatch bias under H0 (and its U-statistic removal), the
null variance, Cramér-Wold slicing, and the paper's synthetic "X" unfolding by gradient descent."""

from __future__ import annotations

import math

import numpy as np
import oracles as O
import pytest
from helpers import to64

sigreg = pytest.importorskip("sigreg")

# (N, replicates) for the (R, N) null draws; R * N (* N for exact) kept small for speed
SIZES = [(4, 20000), (16, 12000), (128, 3000)]


@pytest.mark.parametrize("n,reps", SIZES, ids=[f"N{n}" for n, _ in SIZES])
@pytest.mark.parametrize(
    "integration,debias,expected",
    [
        ("trapezoid", False, O.quad_null_mean()),
        ("exact", False, O.EXACT_NULL_MEAN),
        ("trapezoid", True, 0.0),
        ("exact", True, 0.0),
    ],
    ids=["trap", "exact", "trap-debias", "exact-debias"],
)
def test_null_mean(n, reps, integration, debias, expected):
    rng = np.random.default_rng(1000 + n)
    x = rng.standard_normal((reps, n))
    v = to64(sigreg.epps_pulley(x, axis=-1, integration=integration, debias=debias))
    assert v.shape == (reps,)
    se = v.std(ddof=1) / math.sqrt(reps)
    assert abs(v.mean() - expected) < 4 * se, (v.mean(), expected, se)


def test_null_mean_distinguishes_grids():
    """The expected-value test has power: at N = 16 with many replicates the trapezoid mean
    (1.0525) and the exact mean (1.0594) are told apart by the same draws' paired difference."""
    x = np.random.default_rng(7).standard_normal((20000, 16))
    q = to64(sigreg.epps_pulley(x, axis=-1))
    e = to64(sigreg.epps_pulley(x, axis=-1, integration="exact"))
    d = e - q
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert abs(d.mean() - (O.EXACT_NULL_MEAN - O.quad_null_mean())) < 4 * se
    assert d.mean() > 4 * se


@pytest.mark.parametrize("n", [4, 32])
def test_exact_null_variance(n):
    reps = 20000
    x = np.random.default_rng(2000 + n).standard_normal((reps, n))
    v = to64(sigreg.epps_pulley(x, axis=-1, integration="exact"))
    var = v.var(ddof=1)
    m4 = np.mean((v - v.mean()) ** 4)
    se = math.sqrt((m4 - var**2) / reps)
    assert abs(var - O.exact_null_var(n)) < 4 * se, (var, O.exact_null_var(n), se)


def _null_quantile(n, q=0.95, reps=3000, seed=99):
    """Null quantile of the official-grid statistic, simulated with the ORACLE."""
    z = np.random.default_rng(seed).standard_normal((reps, n))
    return float(np.quantile(O.ep_official(z, axis=1), q))


PLANE_DIRS = np.array(
    [[1.0, 0.0, math.sqrt(0.5), math.sqrt(0.5)], [0.0, 1.0, math.sqrt(0.5), -math.sqrt(0.5)]]
)


def test_slicing_flags_x_in_its_plane():
    """Cramér-Wold: SIGReg with M = 16 random directions, resampled every step and averaged over
    steps, flags the 2-D "X" (marginals along the axes are uniform) against a Gaussian baseline.
    (In D = 512 a random direction puts only ~2/512 of its weight on the X plane, so at N = 256 no
    slicing average over a few hundred steps can see it - the D = 512 check is the unfolding test
    below.)"""
    n = 256
    rng = np.random.default_rng(3)
    xs = O.x_shape_2d(rng, n)
    gauss = rng.standard_normal((n, 2))
    q95 = _null_quantile(n)
    vx = np.mean([float(to64(sigreg.sigreg(xs, num_slices=16, seed=1, step=s))) for s in range(20)])
    vg = np.mean(
        [float(to64(sigreg.sigreg(gauss, num_slices=16, seed=1, step=s))) for s in range(20)]
    )
    assert vx > q95 and vx > 3 * vg, (vx, vg, q95)
    assert vg < q95


def _unfold(n, d, steps, lr_max, seed):
    """Gradient descent on SIGReg (M = 16 directions resampled per step via (seed, step)) w.r.t.
    the samples themselves; gradient from sliced_epps_pulley_vjp on NumPy. Cosine lr schedule."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x[:, :2] = O.x_shape_2d(rng, n)
    before = O.ep_official(x[:, :2] @ PLANE_DIRS, axis=0)
    one = np.asarray(1.0)
    for s in range(steps):
        a = to64(
            sigreg.sample_directions(d, 16, seed=seed, step=s, backend="numpy", dtype=np.float64)
        )
        _, pb = sigreg.sliced_epps_pulley_vjp(x, a)
        lr = 1.0 + (lr_max - 1.0) * 0.5 * (1.0 + math.cos(math.pi * s / steps))
        x = x - lr * to64(pb(one))
    after = O.ep_official(x[:, :2] @ PLANE_DIRS, axis=0)
    return x, before, after


def test_gradient_descent_unfolds_x():
    """Paper's synthetic check (N = 256 samples in D = 512, X in the first two dims): optimising
    the samples on SIGReg makes the X-plane marginals (both axes and the two diagonals)
    statistically Gaussian: each below the null 95% quantile (which the X starts well above)."""
    n = 256
    q95 = _null_quantile(n)
    x, before, after = _unfold(n, 512, steps=1500, lr_max=30.0, seed=0)
    assert np.max(before) > 1.5 * q95, before
    assert np.all(np.isfinite(x))
    assert np.max(after) < q95, (after, q95)


@pytest.mark.slow
def test_gradient_descent_unfolds_x_long():
    """Slower, stricter variant: N = 512, 8 in-plane angles, two seeds."""
    n = 512
    q95 = _null_quantile(n)
    ang = np.linspace(0.0, math.pi, 8, endpoint=False)
    dirs = np.stack([np.cos(ang), np.sin(ang)])
    for seed in (1, 2):
        x, before, _ = _unfold(n, 512, steps=3000, lr_max=30.0, seed=seed)
        after = O.ep_official(x[:, :2] @ dirs, axis=0)
        assert np.max(before) > 1.5 * q95
        assert np.max(after) < q95, (seed, after, q95)
