"""EDF tests with p-values (sigreg.edf_test): statistics equal scipy's, the limiting laws,
p-values against scipy and R nortest's formulas, Monte Carlo, namespaces, calibration (a
quick check here; the full study is marked slow and printed by benchmarks/calibration.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import assert_close, assert_same_backend, make, to64

import sigreg
from sigreg import _edf_spectra, _null_distribution
from sigreg._univariate_test import null_statistics
from sigreg.edf_test import (
    ANDERSON_DARLING,
    CRAMER_VON_MISES,
    KOLMOGOROV_SMIRNOV,
    WATSON,
    kolmogorov_sf,
)

stats = pytest.importorskip("scipy.stats")
TESTS = {t.name: t for t in (CRAMER_VON_MISES, ANDERSON_DARLING, WATSON, KOLMOGOROV_SMIRNOV)}


def _nortest_ad(a, n):
    """R nortest::ad.test's p-value (Stephens' piecewise fit of the modified A^2)."""
    aa = (1 + 0.75 / n + 2.25 / n**2) * a
    if aa < 0.2:
        return 1 - math.exp(-13.436 + 101.14 * aa - 223.73 * aa**2)
    if aa < 0.34:
        return 1 - math.exp(-8.318 + 42.796 * aa - 59.938 * aa**2)
    if aa < 0.6:
        return math.exp(0.9177 - 4.279 * aa - 1.38 * aa**2)
    return math.exp(1.2937 - 5.709 * aa + 0.0186 * aa**2)


def _nortest_cvm(w, n):
    """R nortest::cvm.test's p-value."""
    ww = (1 + 0.5 / n) * w
    if ww < 0.0275:
        return 1 - math.exp(-13.953 + 775.5 * ww - 12542.61 * ww**2)
    if ww < 0.051:
        return 1 - math.exp(-5.903 + 179.546 * ww - 1515.29 * ww**2)
    if ww < 0.092:
        return math.exp(0.886 - 31.62 * ww + 10.897 * ww**2)
    return math.exp(1.111 - 34.242 * ww + 12.832 * ww**2)


def _samples(n, count, seed):
    rng = np.random.default_rng(seed)
    laws = [
        lambda: rng.standard_normal(n),
        lambda: rng.standard_t(5, n),
        lambda: rng.logistic(size=n),
        lambda: rng.uniform(-2, 2, n),
        lambda: 1.2 * rng.standard_normal(n) + 0.2,
    ]
    return [laws[i % len(laws)]() for i in range(count)]


@pytest.mark.parametrize("statistic", _edf_spectra.STATISTICS)
def test_nystrom_reproduces_the_closed_forms(statistic):
    """The composite eigenvalues come from the same Nystrom code that reproduces the simple
    case's closed forms; the spectrum sums to the null mean."""
    approx = _edf_spectra.covariance_eigenvalues(statistic, False, _edf_spectra.NYSTROM_NODES)
    exact, shift = _edf_spectra.spectrum(statistic, False)
    np.testing.assert_allclose(approx[:10], exact[:10], rtol=0, atol=5e-5 * exact[0])
    assert exact.sum() + shift == pytest.approx(
        {"cramer_von_mises": 1 / 6, "anderson_darling": 1.0, "watson": 1 / 12}[statistic]
    )


@pytest.mark.parametrize(
    "kind,points",
    [  # Stephens' asymptotic percentage points (D'Agostino & Stephens 1986, Tables 4.2, 4.7)
        ("cramer_von_mises/simple", (0.461, 0.743)),
        ("anderson_darling/simple", (2.492, 3.857)),
        ("watson/simple", (0.187, 0.267)),
        ("cramer_von_mises/composite", (0.126, 0.178)),
        ("anderson_darling/composite", (0.752, 1.035)),
        ("watson/composite", (0.117, 0.165)),
    ],
)
def test_limiting_laws_match_stephens_tables(kind, points):
    p = _null_distribution.limit_sf(kind, np.array(points))
    np.testing.assert_allclose(p, [0.05, 0.01], rtol=0.04)


def test_watson_limit_is_the_closed_form_series():
    u = np.array([0.05, 0.1, 0.187, 0.3])
    series = [2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * math.pi**2 * v)
                      for k in range(1, 60)) for v in u]  # fmt: skip
    np.testing.assert_allclose(_null_distribution.limit_sf("watson/simple", u), series, atol=2e-6)


def test_kolmogorov_sf_is_scipys_kolmogorov():
    t = np.linspace(0.1, 3.0, 59)
    np.testing.assert_allclose(kolmogorov_sf(t), stats.kstwobign.sf(t), atol=1e-12)


def test_statistics_are_scipys():
    for x in _samples(30, 10, 1):
        assert float(sigreg.cramer_von_mises_test(x, standardize=False).statistic) == (
            pytest.approx(stats.cramervonmises(x, "norm").statistic, rel=1e-12)
        )
        assert float(sigreg.kolmogorov_smirnov_test(x, standardize=False).statistic) == (
            pytest.approx(stats.kstest(x, "norm").statistic, rel=1e-12)
        )
        ref = stats.anderson(x, "norm", method="interpolate").statistic
        assert float(sigreg.anderson_darling_test(x).statistic) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("n", [10, 50])
def test_pvalues_agree_with_scipy_and_nortest(n):
    """Largest |dp| over 60 samples (benchmarks/edf_agreement.py prints the figures)."""
    for x in _samples(n, 60, n):
        ks = float(sigreg.kolmogorov_smirnov_test(x, standardize=False).pvalue)
        assert ks == pytest.approx(stats.kstest(x, "norm").pvalue, abs=0.025)
        cvm = float(sigreg.cramer_von_mises_test(x, standardize=False).pvalue)
        assert cvm == pytest.approx(stats.cramervonmises(x, "norm").pvalue, abs=0.012)
        ad = sigreg.anderson_darling_test(x)
        assert float(ad.pvalue) == pytest.approx(_nortest_ad(float(ad.statistic), n), abs=0.026)
        cvm = sigreg.cramer_von_mises_test(x)
        ref = _nortest_cvm(float(cvm.statistic), n)
        assert float(cvm.pvalue) == pytest.approx(ref, abs=0.012)


def _nortest_lillie(d, n):
    """R nortest::lillie.test's p-value, written out branch by branch."""
    kd, nd = (d, n) if n <= 100 else (d * (n / 100) ** 0.49, 100)
    p = math.exp(-7.01256 * kd**2 * (nd + 2.78019) + 2.99587 * kd * math.sqrt(nd + 2.78019)
                 - 0.122119 + 0.974598 / math.sqrt(nd) + 1.67997 / nd)  # fmt: skip
    if p <= 0.1:
        return p
    kk = (math.sqrt(n) - 0.01 + 0.85 / math.sqrt(n)) * d
    if kk <= 0.302:
        return 1.0
    if kk <= 0.5:
        return 2.76773 - 19.828315 * kk + 80.709644 * kk**2 - 138.55152 * kk**3 + 81.218052 * kk**4
    if kk <= 0.9:
        return (
            -4.901232 + 40.662806 * kk - 97.490286 * kk**2 + 94.029866 * kk**3 - 32.355711 * kk**4
        )
    if kk <= 1.31:
        return 6.198765 - 19.558097 * kk + 23.186922 * kk**2 - 12.234627 * kk**3 + 2.423045 * kk**4
    return 0.0


@pytest.mark.parametrize("n", [8, 30, 300])
def test_lilliefors_is_nortests_formula(n):
    """Every branch of lillie.test (Dallal-Wilkinson below p = 0.1, Stephens' polynomials
    above, the n > 100 rescaling); statistic from the N - 1 standardisation."""
    for x in _samples(n, 40, 100 + n):
        res = sigreg.kolmogorov_smirnov_test(x)
        u = stats.norm.cdf(np.sort((x - x.mean()) / x.std(ddof=1)))
        i = np.arange(1, n + 1)
        d = max(np.max(i / n - u), np.max(u - (i - 1) / n))
        assert float(res.statistic) == pytest.approx(d, rel=1e-12)
        assert float(res.pvalue) == pytest.approx(_nortest_lillie(d, n), rel=1e-10, abs=1e-15)


@pytest.mark.parametrize("name", sorted(TESTS))
def test_montecarlo_is_the_documented_count(name):
    x = np.random.default_rng(3).standard_t(4, (25, 2))
    res = getattr(sigreg, name)(x, method="montecarlo", n_resamples=300, rng=5)
    null = null_statistics(TESTS[name], 25, 300, np.random.default_rng(5), True)
    expected = [(np.sum(null >= o) + 1) / 301 for o in res.statistic]
    np.testing.assert_array_equal(res.pvalue, expected)


@pytest.mark.parametrize("name", sorted(TESTS))
def test_namespace_dtype_device(name, xp, device, dtype):
    rng = np.random.default_rng(4)
    x64 = np.stack([rng.standard_normal(40), rng.exponential(size=40)], axis=1)
    x = make(xp, device, x64, dtype)
    for standardize in (True, False):
        res = getattr(sigreg, name)(x, standardize=standardize)
        ref = getattr(sigreg, name)(to64(x), standardize=standardize)
        for out, expected in zip(res, ref, strict=True):
            assert_same_backend(out, x)
            assert out.dtype == x.dtype and tuple(out.shape) == (2,)
            assert_close(out, expected, dtype, rtol=1e-10 if dtype == "float64" else 1e-5)
    assert float(to64(res.pvalue)[1]) < 1e-6


@pytest.mark.parametrize("name", sorted(TESTS))
def test_quick_calibration(name):
    """N = 20, 3000 null samples: rejection rate at alpha = 0.05 within 4 SE, both tests."""
    reps, n = 3000, 20
    for standardize in (False, True):
        null = null_statistics(TESTS[name], n, reps, np.random.default_rng(6), standardize)
        p = TESTS[name].asymptotic(null, np.full(reps, float(n)), standardize)
        rate = float(np.mean(p <= 0.05))
        assert abs(rate - 0.05) <= 4 * math.sqrt(0.05 * 0.95 / reps), (standardize, rate)


@pytest.mark.slow
@pytest.mark.parametrize("standardize", [False, True], ids=["simple", "composite"])
@pytest.mark.parametrize("name", sorted(TESTS))
@pytest.mark.parametrize("n", [8, 20, 50, 200])
def test_size_within_three_standard_errors(n, name, standardize):
    """The table in docs/gof.md: 20000 null samples, alpha = 0.05 and 0.01, within 3 SE."""
    reps = 20000
    rng = np.random.default_rng([2026, n, standardize])
    null = null_statistics(TESTS[name], n, reps, rng, standardize)
    p = TESTS[name].asymptotic(null, np.full(reps, float(n)), standardize)
    for alpha in (0.05, 0.01):
        rate = float(np.mean(p <= alpha))
        assert abs(rate - alpha) <= 3 * math.sqrt(alpha * (1 - alpha) / reps), (alpha, rate)


def test_power_sanity():
    rng = np.random.default_rng(7)
    skewed = rng.exponential(size=200)
    for name in TESTS:
        assert float(getattr(sigreg, name)(skewed).pvalue) < 1e-4, name
    shifted = rng.standard_normal(200) + 0.5
    for name in TESTS:
        assert float(getattr(sigreg, name)(shifted).pvalue) > 1e-3, name
        assert float(getattr(sigreg, name)(shifted, standardize=False).pvalue) < 1e-3, name
