"""integration="exact": closed form vs high-precision quadrature and the direct N x N sum,
including N large enough to force chunking, far-out clusters, and the debiased variant."""

from __future__ import annotations

import numpy as np
import oracles as O
import pytest
from helpers import assert_close, make, to64

sigreg = pytest.importorskip("sigreg")

CASES = {
    "n1": lambda r: np.array([0.3]),
    "n2": lambda r: np.array([-1.2, 2.5]),
    "normal50": lambda r: r.standard_normal(50),
    "scaled": lambda r: 2.5 * r.standard_normal(40) - 1.0,
    "narrow": lambda r: 0.05 * r.standard_normal(30),
    "heavy": lambda r: r.standard_t(1.5, 60),
    "duplicates": lambda r: np.repeat(r.standard_normal(4), 5),
}


@pytest.mark.parametrize("case", list(CASES))
def test_exact_equals_high_precision_quadrature(case):
    x = CASES[case](np.random.default_rng(10))
    out = sigreg.epps_pulley(x, integration="exact")
    ref = O.ep_fine_quadrature(x)
    assert abs(float(to64(out)) - ref) <= 1e-10 * abs(ref)


@pytest.mark.parametrize("n", [1, 3, 6])
def test_exact_equals_adaptive_quad(n):
    x = np.random.default_rng(n).standard_normal(n) * 1.5
    out = float(to64(sigreg.epps_pulley(x, integration="exact")))
    assert abs(out - O.ep_scipy_quad(x)) <= 1e-10 * out


@pytest.mark.parametrize("case", ["n2", "normal50", "scaled", "duplicates"])
def test_exact_debias_equals_quadrature(case):
    x = CASES[case](np.random.default_rng(11))
    out = float(to64(sigreg.epps_pulley(x, integration="exact", debias=True)))
    ref = O.ep_fine_quadrature(x, debias=True)
    assert abs(out - ref) <= 1e-10 * max(1.0, abs(ref))
    assert abs(out - float(O.ep_exact(x, debias=True))) <= 1e-10 * max(1.0, abs(ref))


def test_exact_backends(xp, device, dtype):
    rng = np.random.default_rng(12)
    x = make(xp, device, rng.standard_normal((2, 33)) * 1.2 + 0.1, dtype)
    out = sigreg.epps_pulley(x, axis=1, integration="exact")
    n = 33
    # float32: the closed form cancels terms of size ~N; scale the absolute tolerance with N
    assert_close(out, O.ep_exact(to64(x), axis=1), dtype, scale=n)


def test_exact_debias_backends(xp, device, dtype):
    rng = np.random.default_rng(13)
    x = make(xp, device, rng.standard_normal((20, 3)), dtype)
    out = sigreg.epps_pulley(x, integration="exact", debias=True)
    assert_close(out, O.ep_exact(to64(x), debias=True), dtype, scale=20)


@pytest.mark.parametrize("kind", ["normal", "far_cluster", "two_far_clusters"])
def test_exact_large_n_chunked(kind):
    """N = 3000: an implementation has to chunk (or use another O(N) method); it must still
    equal the direct N x N sum — also for far-out clusters where series expansions underflow."""
    rng = np.random.default_rng(14)
    n = 3000
    if kind == "normal":
        x = rng.standard_normal(n)
    elif kind == "far_cluster":
        x = 50.0 + 1e-3 * rng.standard_normal(n)
    else:
        x = np.where(rng.random(n) < 0.5, -40.0, 35.0) + 0.3 * rng.standard_normal(n)
    out = float(to64(sigreg.epps_pulley(x, integration="exact")))
    ref = float(O.ep_exact(x))
    assert abs(out - ref) <= 1e-9 * abs(ref), (out, ref)


def test_exact_large_n_torch_float64():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(15).standard_normal((2, 2500)) * 0.9
    out = sigreg.epps_pulley(torch.asarray(x), axis=-1, integration="exact")
    np.testing.assert_allclose(to64(out), O.ep_exact(x, axis=-1), rtol=1e-9)


def test_fine_trapezoid_converges_to_exact():
    """The implementation's trapezoid on a long fine grid must approach the exact oracle."""
    x = np.random.default_rng(16).standard_normal(80)
    out = float(to64(sigreg.epps_pulley(x, t_max=14.0, n_points=1401)))
    ref = float(O.ep_exact(x))
    assert abs(out - ref) <= 1e-10 * ref


def test_official_grid_vs_exact_under_null_differs():
    """The official trapezoid is ~0.66% below exact in expectation: the two are not equal."""
    x = np.random.default_rng(17).standard_normal((400, 64))
    q = to64(sigreg.epps_pulley(x, axis=1))
    e = to64(sigreg.epps_pulley(x, axis=1, integration="exact"))
    assert not np.allclose(q, e, rtol=1e-4)
    np.testing.assert_allclose(e, O.ep_exact(x, axis=1), rtol=1e-10)
    np.testing.assert_allclose(q, O.ep_official(x, axis=1), rtol=1e-10)


def _blocked_ep_exact(x: np.ndarray) -> float:
    """O(N^2)-time oracle of the closed form that holds only a (256, N) block at a time."""
    n = x.shape[0]
    pairs = sum(
        np.exp(-0.5 * (x[i : i + 256, None] - x[None, :]) ** 2).sum() for i in range(0, n, 256)
    )
    with np.errstate(over="ignore"):
        single = np.sqrt(2.0) * np.exp(-0.25 * x**2).sum()
    return float(np.sqrt(2 * np.pi) * (pairs / n - single + n / np.sqrt(3.0)))


@pytest.mark.parametrize("far", [1e3, 1e9, 1e12, 1e30, -1e30])
def test_exact_far_outlier_linear_memory(far):
    """One far outlier once asked for one box per 12 units of range (1e12: a 621 GiB
    allocation, 1e9: 33 s); only occupied boxes exist now, so it is as fast as without it."""
    rng = np.random.default_rng(18)
    x = np.r_[rng.standard_normal(5000), far, 3.0 * far, 7.5]
    with np.errstate(over="ignore"):
        out = float(to64(sigreg.epps_pulley(x, integration="exact")))
        test = sigreg.epps_pulley_test(x, standardize=False)
    ref = _blocked_ep_exact(x)
    assert abs(out - ref) <= 1e-10 * ref, (out, ref)
    assert float(test.statistic) == pytest.approx(ref, rel=1e-10)


def test_occupied_boxes_at_most_n():
    """However spread out the samples, there are at most N boxes, and only boxes that touch
    (indices k, k + 1) are marked as interacting."""
    from sigreg._exact import occupied_boxes

    s = np.sort(np.r_[-1e300, 0.0, 5.0, 13.0, 30.0, 1e15, 1e15 + 1.0, 1e300])
    cuts, neighbours = occupied_boxes(s)
    assert cuts == [0, 1, 3, 4, 5, 7, 8]
    assert neighbours.tolist() == [False, True, False, False, False]
