"""The O(N) series pair sum behind the exact statistic, and the composite statistic itself:
against the direct N x N sum (float64 NumPy oracles), incl. outliers, heavy tails and far
clusters (where the series must hand over to the blocked pair sum), on every backend."""

from __future__ import annotations

import math

import numpy as np
import oracles as O
import pytest
from helpers import make, to64

from sigreg import _exact, epps_pulley, epps_pulley_test


def _direct_pairs(x):
    d = x[..., :, None] - x[..., None, :]
    return np.exp(-0.5 * d * d).sum((-1, -2))


def _standardized(x):
    c = x - x.mean(-1, keepdims=True)
    return c / np.sqrt((c * c).mean(-1, keepdims=True))


def _np():
    from array_api_compat import array_namespace

    return array_namespace(np.empty(0))


SERIES_CASES = {
    "normal": lambda r: r.standard_normal(2000),
    "shifted_scaled": lambda r: 40.0 + 2.0 * r.standard_normal(1500),
    "t3": lambda r: r.standard_t(3, 2000),
    "outlier": lambda r: np.append(r.standard_normal(999), 12.0),
    "uniform_wide": lambda r: r.uniform(-9.0, 9.0, 1500),
    "narrow": lambda r: 1e-4 * r.standard_normal(800),
    "ties": lambda r: np.repeat(r.standard_normal(50), 20),
}


@pytest.mark.parametrize("case", list(SERIES_CASES))
def test_series_uses_few_terms_and_equals_direct_sum(case):
    x = SERIES_CASES[case](np.random.default_rng(30))
    a = (x.max() - x.min()) / 2
    terms = _exact.series_terms(a, x.size, float(x.size), np.finfo(np.float64).eps)
    assert terms is not None and terms <= x.size // 4
    got = float(_exact.fast_pair_sum(_np(), x))
    ref = float(_direct_pairs(x))
    assert abs(got - ref) <= 1e-13 * ref, (got, ref)


@pytest.mark.parametrize(
    "case",
    ["far_clusters", "cauchy", "small_n"],
)
def test_fallback_to_blocks_equals_direct_sum(case):
    rng = np.random.default_rng(31)
    x = {
        "far_clusters": np.where(rng.random(1200) < 0.5, -40.0, 35.0) + rng.standard_normal(1200),
        "cauchy": rng.standard_cauchy(1000),
        "small_n": rng.standard_normal(40),
    }[case]
    a = (x.max() - x.min()) / 2
    if case != "small_n":
        assert _exact.series_terms(a, x.size, float(x.size), 2.2e-16) is None or a * a > 708
    got = float(_exact.fast_pair_sum(_np(), x))
    ref = float(_direct_pairs(x))
    assert abs(got - ref) <= 1e-13 * ref


def test_truncation_bound_holds():
    """The terms the bound drops (computed one by one in log space) sum to < eps * N."""
    rng = np.random.default_rng(32)
    for scale in (0.5, 1.0, 2.0, 3.0):
        x = scale * rng.standard_normal(2000)
        x = x - (x.max() + x.min()) / 2
        a = float(np.max(np.abs(x)))
        eps = np.finfo(np.float64).eps
        terms = _exact.series_terms(a, x.size, float(x.size), eps)
        assert terms is not None
        tail = 0.0
        for m in range(terms, terms + 200):
            log_mag = m * np.log(np.abs(x) + 1e-300) - 0.5 * x * x - 0.5 * math.lgamma(m + 1)
            tail += float(np.sum(np.sign(x) ** m * np.exp(log_mag))) ** 2
        assert tail <= eps * x.size, (scale, terms, tail)
        assert tail > 0.0


def test_series_batched_rows_of_different_spread():
    rng = np.random.default_rng(33)
    x = rng.standard_normal((3, 700)) * np.array([[0.3], [1.0], [2.5]]) + np.array([[5], [0], [-3]])
    got = to64(_exact.fast_pair_sum(_np(), x))
    np.testing.assert_allclose(got, _direct_pairs(x), rtol=1e-13)


def test_series_pair_sum_backends(xp, device, dtype):
    rng = np.random.default_rng(34)
    x64 = rng.standard_normal((2, 400)) * 1.3 + 0.2
    x = make(xp, device, x64, dtype)
    got = _exact.fast_pair_sum(xp, x)
    ref = _direct_pairs(to64(x))
    r = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(to64(got), ref, rtol=r)


def test_simple_statistic_is_exact_epps_pulley():
    x = np.random.default_rng(35).standard_normal((300, 2)) * 1.1
    res = epps_pulley_test(x, standardize=False)
    # the closed form cancels terms of size N: compare with an absolute tolerance ~ N eps
    np.testing.assert_allclose(to64(res.statistic), O.ep_exact(x), rtol=0, atol=1e-11)
    np.testing.assert_allclose(
        to64(res.statistic), to64(epps_pulley(x, integration="exact")), rtol=0, atol=1e-11
    )


@pytest.mark.parametrize("n", [5, 40, 500])
def test_composite_statistic_matches_classical_formula(n):
    """NOTES section 5 with beta = 1, in the LeJEPA normalisation sqrt(2 pi) T."""
    x = np.random.default_rng(n).gamma(3.0, size=n) * 4.0 - 7.0
    y = _standardized(x)
    classical = (
        _direct_pairs(y) / n
        - 2.0 / math.sqrt(2.0) * np.exp(-(y**2) / 4.0).sum()
        + n / math.sqrt(3.0)
    )
    got = float(to64(epps_pulley_test(x).statistic))
    assert abs(got - math.sqrt(2.0 * math.pi) * classical) <= 1e-11 * max(1.0, got)


def test_composite_statistic_is_affine_invariant():
    x = np.random.default_rng(36).standard_t(4, 300)
    a = to64(epps_pulley_test(x).statistic)
    b = to64(epps_pulley_test(-3.5 * x + 100.0).statistic)
    np.testing.assert_allclose(a, b, rtol=1e-10)


def test_exact_statistic_memory_is_linear():
    """2e5 samples: peak traced memory stays a few dozen bytes per sample (no N x N)."""
    import tracemalloc

    x = np.random.default_rng(37).standard_normal(200_000)
    tracemalloc.start()
    epps_pulley_test(x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 120 * x.size, peak


BOXED_CASES = {
    "cauchy": lambda r: r.standard_cauchy(2000),
    "t1.5": lambda r: 3.0 * r.standard_t(1.5, 2000),
    "far_clusters": lambda r: np.where(r.random(2000) < 0.5, -40.0, 35.0) + r.standard_normal(2000),
    "spread": lambda r: r.uniform(-500.0, 500.0, 2000),
    "single_box": lambda r: r.standard_normal(300),
}


@pytest.mark.parametrize("case", list(BOXED_CASES))
def test_boxed_pair_sum_equals_direct_sum(case):
    x = BOXED_CASES[case](np.random.default_rng(38))
    got = float(_exact.boxed_pair_sum(_np(), x))
    ref = float(_direct_pairs(x))
    assert abs(got - ref) <= 1e-13 * ref, (got, ref)


def test_heavy_tails_at_large_n_use_the_boxes():
    """N = 5000 Cauchy samples: the single series cannot, the boxes do, and they are exact."""
    x = np.random.default_rng(39).standard_cauchy(5000)
    got = float(_exact.fast_pair_sum(_np(), x))
    assert got == float(_exact.boxed_pair_sum(_np(), x))
    ref = float(_exact.pair_sum(_np(), x))
    assert abs(got - ref) <= 1e-13 * ref


def test_boxed_pair_sum_backends(xp, device, dtype):
    x64 = np.random.default_rng(40).standard_t(1.2, 500) * 4.0
    x = make(xp, device, x64, dtype)
    got = _exact.boxed_pair_sum(xp, x)
    r = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(to64(got), _direct_pairs(to64(x)), rtol=r)
