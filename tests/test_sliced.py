"""sliced_epps_pulley and sigreg: values vs the oracle, shapes, reductions, batched inputs."""

from __future__ import annotations

import numpy as np
import oracles as O
import pytest
from helpers import assert_close, assert_same_backend, make, to64

sigreg = pytest.importorskip("sigreg")


COMBOS = [
    ("none", "trapezoid", False),
    ("mean", "trapezoid", False),
    ("sum", "trapezoid", True),
    ("none", "exact", False),
    ("mean", "exact", True),
]


@pytest.mark.parametrize(
    "reduction,integration,debias", COMBOS, ids=["-".join(map(str, c)) for c in COMBOS]
)
def test_sliced_matches_oracle(xp, device, dtype, engine, reduction, integration, debias):
    rng = np.random.default_rng(40)
    x = make(
        xp, device, 0.3 + rng.standard_normal((12, 5)) * np.array([1.0, 0.5, 2.0, 1.0, 1.0]), dtype
    )
    a = make(xp, device, O.unit_directions(rng, 5, 7), dtype)
    out = sigreg.sliced_epps_pulley(
        x, a, reduction=reduction, integration=integration, debias=debias, engine=engine
    )
    ref = O.sliced(to64(x), to64(a), reduction=reduction, integration=integration, debias=debias)
    assert tuple(out.shape) == ref.shape == ((7,) if reduction == "none" else ())
    assert_close(out, ref, dtype, scale=12)
    assert_same_backend(out, x)
    assert out.dtype == x.dtype


@pytest.mark.parametrize("reduction,tail", [("none", (4,)), ("mean", ()), ("sum", ())])
def test_sliced_batched_shapes(xp, device, reduction, tail):
    rng = np.random.default_rng(41)
    x_np = rng.standard_normal((2, 3, 9, 6))
    a_np = O.unit_directions(rng, 6, 4)
    out = sigreg.sliced_epps_pulley(
        make(xp, device, x_np), make(xp, device, a_np), reduction=reduction
    )
    assert tuple(out.shape) == (2, 3) + tail
    assert_close(out, O.sliced(x_np, a_np, reduction=reduction))


def test_sliced_slice_equals_epps_pulley_of_projection(xp, device):
    """Statistic of slice m == epps_pulley((x @ A)[..., :, m], axis=-2), per the contract."""
    rng = np.random.default_rng(42)
    x_np = rng.standard_normal((3, 10, 4))
    a_np = O.unit_directions(rng, 4, 5)
    out = sigreg.sliced_epps_pulley(
        make(xp, device, x_np), make(xp, device, a_np), reduction="none", t_max=4.0, n_points=9
    )
    ref = O.ep_official(x_np @ a_np, axis=-2, t_max=4.0, n_points=9)
    assert_close(out, ref)


def test_sliced_grid_options(xp, device):
    rng = np.random.default_rng(43)
    x_np = rng.uniform(-2, 2, (30, 3))
    a_np = O.unit_directions(rng, 3, 2)
    out = sigreg.sliced_epps_pulley(
        make(xp, device, x_np), make(xp, device, a_np), t_max=6.0, n_points=25
    )
    assert_close(out, O.sliced(x_np, a_np, t_max=6.0, n_points=25))


@pytest.mark.parametrize("shape", [(20, 8), (2, 20, 8)])
def test_sigreg_matches_oracle_with_sampled_directions(xp, device, dtype, shape):
    rng = np.random.default_rng(44)
    x = make(xp, device, rng.standard_normal(shape) * 0.8, dtype)
    out = sigreg.sigreg(x, num_slices=64, seed=5, step=11)
    # the contract: directions are sample_directions(K, num_slices, seed, step), identical
    # (to rounding) on every backend, so the float64 NumPy ones serve as the reference
    a_np = to64(sigreg.sample_directions(8, 64, seed=5, step=11, backend="numpy"))
    ref = O.sliced(to64(x), a_np)
    assert tuple(out.shape) == shape[:-2]
    assert_close(out, ref, dtype, scale=20)
    assert_same_backend(out, x)
    assert out.dtype == x.dtype


def test_sigreg_default_num_slices_and_exact(xp, device):
    x_np = np.random.default_rng(45).standard_normal((16, 3)) + 0.5
    x = make(xp, device, x_np)
    a_np = to64(sigreg.sample_directions(3, 1024, seed=0, step=0, backend="numpy"))
    assert_close(sigreg.sigreg(x), O.sliced(x_np, a_np))
    assert_close(
        sigreg.sigreg(x, integration="exact", debias=True),
        O.sliced(x_np, a_np, integration="exact", debias=True),
    )


def test_sigreg_step_changes_value():
    x = np.random.default_rng(46).uniform(-1, 1, (50, 10))
    v0 = float(to64(sigreg.sigreg(x, num_slices=8, seed=1, step=0)))
    v1 = float(to64(sigreg.sigreg(x, num_slices=8, seed=1, step=1)))
    assert v0 != v1
    assert v0 == float(to64(sigreg.sigreg(x, num_slices=8, seed=1, step=0)))


def test_sliced_detects_non_gaussian_direction():
    """A distribution Gaussian in every coordinate but not jointly (x2 = sign flip of x1 on
    |x1| > c) is flagged by slicing, while each coordinate alone looks Gaussian."""
    rng = np.random.default_rng(47)
    n = 2000
    z = rng.standard_normal(n)
    c = 1.0
    x = np.stack([z, np.where(np.abs(z) > c, -z, z)], axis=1)
    coords = to64(sigreg.sliced_epps_pulley(x, np.eye(2), reduction="none"))
    diag = to64(
        sigreg.sliced_epps_pulley(x, np.array([[1.0], [1.0]]) / np.sqrt(2), reduction="none")
    )
    assert np.all(coords < 6.0)  # null 99% quantile is ~5
    assert diag[0] > 50.0
