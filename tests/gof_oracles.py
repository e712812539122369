"""Float64 NumPy/scipy oracles of the goodness-of-fit statistics (written from the textbook
formulas, independently of sigreg's array-API code), and a check of sigreg against them."""

from __future__ import annotations

import math

import numpy as np
import oracles as O
import scipy.special as sc
import scipy.stats as st
from helpers import assert_close, assert_same_backend, make, to64

import sigreg

# Asymptotic 99% quantiles under the simple N(0, 1) null (Stephens 1974; chi-squared).
QUANTILE_99 = {
    "cramer_von_mises": 0.743,
    "anderson_darling": 3.857,
    "watson": 0.268,
    "extended_jarque_bera": st.chi2.ppf(0.99, 4),
    "mean_variance": st.chi2.ppf(0.99, 2),
}


def cramer_von_mises(x):
    return st.cramervonmises(np.asarray(x, dtype=np.float64), "norm").statistic


def anderson_darling(x):
    """A^2 = -N - (1/N) sum (2i-1) [log Phi(x_(i)) + log(1 - Phi(x_(N+1-i)))]."""
    s = np.sort(np.asarray(x, dtype=np.float64))
    n = s.size
    i = np.arange(1, n + 1)
    return -n - np.sum((2 * i - 1) * (sc.log_ndtr(s) + sc.log_ndtr(-s[::-1]))) / n


def anderson_darling_scipy(x):
    """scipy's goodness_of_fit with both parameters known is the simple AD test."""
    res = st.goodness_of_fit(
        st.norm,
        np.asarray(x, dtype=np.float64),
        known_params={"loc": 0.0, "scale": 1.0},
        statistic="ad",
        n_mc_samples=1,
        rng=0,
    )
    return res.statistic


def watson(x):
    """Watson (1961): U^2 = sum (u_(i) - (2i-1)/(2N))^2 - N (mean u - 1/2)^2 + 1/(12N)."""
    u = sc.ndtr(np.sort(np.asarray(x, dtype=np.float64)))
    n = u.size
    i = np.arange(1, n + 1)
    return np.sum((u - (2 * i - 1) / (2 * n)) ** 2) - n * (u.mean() - 0.5) ** 2 + 1 / (12 * n)


def mean_variance(x):
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    return n * x.mean() ** 2 + n * (x.var() - 1.0) ** 2 / 2.0


def extended_jarque_bera(x):
    return mean_variance(x) + st.jarque_bera(np.asarray(x, dtype=np.float64)).statistic


def epps_pulley(x):
    return O.ep_official(np.asarray(x, dtype=np.float64))


UNIVARIATE = {
    "epps_pulley": epps_pulley,
    "extended_jarque_bera": extended_jarque_bera,
    "mean_variance": mean_variance,
    "cramer_von_mises": cramer_von_mises,
    "anderson_darling": anderson_darling,
    "watson": watson,
}


def along(name, x, axis=0):
    """Oracle ``name`` applied to every 1-d slice of ``x`` along ``axis``."""
    return np.apply_along_axis(UNIVARIATE[name], axis, np.asarray(x, dtype=np.float64))


def check_along_axis(xp, device, dtype, name, x_np, axis, keepdims):
    """sigreg's statistic ``name`` on ``x_np`` (converted to xp/dtype/device) vs the oracle."""
    x = make(xp, device, x_np, dtype)
    out = getattr(sigreg, name)(x, axis=axis, keepdims=keepdims)
    ref = along(name, to64(x), axis=axis)
    if keepdims:
        ref = np.expand_dims(ref, axis)
    assert out.dtype == x.dtype
    assert_same_backend(out, x)
    assert_close(out, ref, dtype, rtol=1e-12 if dtype == "float64" else 1e-4)


def sliced(name, x, directions):
    """Per-slice statistics of a single (N, K) sample: shape (M,)."""
    return along(name, np.asarray(x) @ np.asarray(directions), axis=0)


def henze_zirkler(x):
    """Direct HZ: symmetric inverse square root of the divisor-N covariance, full N x N."""
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    c = x - x.mean(axis=0)
    w, v = np.linalg.eigh(c.T @ c / n)
    y = c @ (v / np.sqrt(w)) @ v.T
    beta = ((2 * d + 1) * n / 4) ** (1 / (d + 4)) / math.sqrt(2)
    b2 = beta**2
    djk = np.sum((y[:, None, :] - y[None, :, :]) ** 2, axis=-1)
    dj = np.sum(y**2, axis=-1)
    return (
        np.exp(-b2 / 2 * djk).sum() / n
        - 2 * (1 + b2) ** (-d / 2) * np.exp(-b2 / (2 * (1 + b2)) * dj).sum()
        + n * (1 + 2 * b2) ** (-d / 2)
    )


def henze_zirkler_null_mean(n, d):
    """Mean of the lognormal approximation of Henze & Zirkler (1990) (as in pingouin)."""
    b2 = (((2 * d + 1) * n / 4) ** (1 / (d + 4)) / math.sqrt(2)) ** 2
    a = 1 + 2 * b2
    return 1 - a ** (-d / 2) * (1 + d * b2 / a + d * (d + 2) * b2**2 / (2 * a**2))


def henze_zirkler_lognormal_pvalue(stat, n, d):
    """Henze & Zirkler's lognormal p-value, transcribed from pingouin's multivariate_normality."""
    b = ((2 * d + 1) * n / 4) ** (1 / (d + 4)) / math.sqrt(2)
    a = 1 + 2 * b**2
    wb = (1 + b**2) * (1 + 3 * b**2)
    mu = henze_zirkler_null_mean(n, d)
    si2 = (
        2 * (1 + 4 * b**2) ** (-d / 2)
        + 2 * a ** (-d) * (1 + (2 * d * b**4) / a**2 + (3 * d * (d + 2) * b**8) / (4 * a**4))
        - 4 * wb ** (-d / 2) * (1 + (3 * d * b**4) / (2 * wb) + (d * (d + 2) * b**8) / (2 * wb**2))
    )
    pmu = np.log(np.sqrt(mu**4 / (si2 + mu**2)))
    psi = np.sqrt(np.log((si2 + mu**2) / mu**2))
    return st.lognorm.sf(stat, psi, scale=np.exp(pmu))
