"""Null distributions of the exact Epps-Pulley statistic (float64 NumPy, on the host).

Under H0 the statistic ``EP = sqrt(2 pi) T`` (the LeJEPA normalisation of
:func:`sigreg.epps_pulley`) converges to ``sum_k lam_k chi2_1``, with ``lam_k`` the
eigenvalues of the covariance kernel on ``L^2(exp(-t^2/2) dt)``:

* simple test (exactly N(0, 1)): ``K(s, t) = exp(-(s-t)^2/2) - exp(-(s^2+t^2)/2)``;
* composite test (standardised samples): ``K_c = K - exp(-(s^2+t^2)/2) (s t + s^2 t^2 / 2)``.

:func:`eigenvalues` computes them once (Nystrom on Gauss-Hermite nodes, cached) and
:func:`limit_sf` evaluates the tail probability by inverting the characteristic function
(Imhof / Gil-Pelaez) along a steepest-descent contour with a Gauss-Legendre rule written
here (no SciPy). :func:`henze_sf` is Henze's (1990, Metrika 37,
7-18) Johnson S_B approximation with his finite-``N`` correction for the composite test.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from sigreg import _edf_spectra

KINDS = ("simple", "composite")
GAUSS_HERMITE_NODES = 80  # eigenvalues converge to ~1e-16 by 80 nodes (checked in the tests)
_PANEL_NODES, _PANELS, _STRETCH = 16, 120, 30.0  # contour rule: t in [0, 30], 120 panels
_LOWEST_LEVEL = -14  # contours for q_0 = 2^-14 ...; below, P = 1 (error < 1e-9)
_PRUNE = 70.0  # contour terms below exp(-70) of the largest are dropped

# Henze (1990): T* = (T - 0.365/N + 1.34/N^2)(1 + 1.3/N) is approximately Johnson S_B with
# Z = gamma + delta log((T* - xi) / (xi + lam - T*)) standard normal.
_HENZE_GAMMA, _HENZE_DELTA, _HENZE_LAMBDA, _HENZE_XI = 3.55295, 1.23062, 2.26664, -0.020682


def _kernel(kind: str, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    product = np.exp(-0.5 * (s * s + t * t))
    k = np.exp(-0.5 * (s - t) ** 2) - product
    if kind == "composite":
        k = k - product * (s * t + 0.5 * (s * t) ** 2)
    return k


@functools.cache
def eigenvalues(kind: str) -> np.ndarray:
    """Positive eigenvalues (descending) of the null covariance operator of ``kind``.

    Nystrom: with Gauss-Hermite nodes ``t_i`` and weights ``w_i`` for the weight
    ``exp(-t^2/2)``, the eigenvalues of ``sqrt(w_i) K(t_i, t_j) sqrt(w_j)``. Values below
    ``1e-15`` (rounding noise) are dropped. The returned array is read-only.
    """
    t, w = np.polynomial.hermite_e.hermegauss(GAUSS_HERMITE_NODES)
    root = np.sqrt(w)
    matrix = root[:, None] * _kernel(kind, t[:, None], t[None, :]) * root[None, :]
    lam = np.linalg.eigvalsh(matrix)[::-1]
    lam = lam[lam > 1e-15].copy()
    lam.flags.writeable = False
    return lam


def spectrum(kind: str) -> tuple[np.ndarray, float]:
    """``(lam, shift)`` of a limiting law ``sum_k lam_k chi2_1 + shift``.

    ``kind`` is ``"simple"`` or ``"composite"`` (Epps-Pulley, shift 0) or
    ``"<edf statistic>/simple"``, ``"<edf statistic>/composite"`` (:mod:`sigreg._edf_spectra`).
    """
    if kind in KINDS:
        return eigenvalues(kind), 0.0
    statistic, _, hypothesis = kind.partition("/")
    return _edf_spectra.spectrum(statistic, hypothesis == "composite")


def _saddle_point(lam: np.ndarray, q: float) -> float:
    """The root ``c`` in ``(0, 1/(2 lam_1))`` of ``K'(c) - 1/c = q`` (bisection).

    ``K(s) = -(1/2) sum_k log(1 - 2 lam_k s)`` is the cumulant generating function; the left
    side increases from ``-inf`` to ``+inf`` on the interval, so the root exists for every
    ``q > 0``.
    """
    lo, hi = 0.0, 0.5 / lam[0]
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.sum(lam / (1.0 - 2.0 * lam * mid)) - 1.0 / mid < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * hi:
            break
    return 0.5 * (lo + hi)


@functools.cache
def _contour(kind: str, level: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``s_i`` and weights ``g_i`` with ``P(Q > q) = Re sum_i g_i exp(-s_i q)``.

    The tail probability is the Bromwich integral ``(1/2 pi i) int M(s) exp(-s q) ds / s``
    along any path from ``c - i inf`` to ``c + i inf`` with ``0 < c < 1/(2 lam_1)``
    (``M = exp(K)`` the moment generating function). The path used crosses the real axis at
    the saddle point ``c`` of ``q_0 = 2^level`` (vertical there, ``sigma = K''(c)^(-1/2)`` its
    scale) and bends right, ``s(y) = c + a y^2 + i y``, ``a = 1/(4 (1/(2 lam_1) - c))``, where
    ``exp(-s q)`` decays. By conjugate symmetry only ``y > 0`` is integrated, with
    ``y = sigma (e^t - 1)`` and a Gauss-Legendre rule in ``t``. The path is good for ``q``
    within a factor 2 of ``q_0``.
    """
    lam, _ = spectrum(kind)  # the law without its shift: limit_sf subtracts it from q
    c = _saddle_point(lam, 2.0**level)
    second = np.sum(2.0 * lam**2 / (1.0 - 2.0 * lam * c) ** 2) + 1.0 / c**2
    sigma = 1.0 / math.sqrt(second)
    bend = 0.25 / (0.5 / lam[0] - c)
    x, w = np.polynomial.legendre.leggauss(_PANEL_NODES)
    edges = np.linspace(0.0, _STRETCH, _PANELS + 1)
    half = 0.5 * np.diff(edges)
    t = (0.5 * (edges[1:] + edges[:-1])[:, None] + half[:, None] * x[None, :]).ravel()
    dt = (half[:, None] * w[None, :]).ravel()
    y = sigma * np.expm1(t)
    s = c + bend * y * y + 1j * y
    log_m = np.zeros_like(s)
    for value in lam:  # one eigenvalue at a time: O(nodes) memory
        log_m -= 0.5 * np.log(1.0 - 2.0 * value * s)
    g = np.exp(log_m) / s * (1.0 - 2j * bend * y) * (sigma * np.exp(t) * dt) / math.pi
    # Drop the nodes whose terms are below e^-70 of the largest at the smallest q the level
    # serves (2^(level - 1/2)); at larger q they are smaller still. Keeps ~200 of 1920.
    with np.errstate(divide="ignore"):
        log_term = np.log(np.abs(g)) - 2.0 ** (level - 0.5) * s.real
    keep = log_term > np.max(log_term) - _PRUNE
    return s[keep], g[keep]


def limit_sf(kind: str, q: np.ndarray) -> np.ndarray:
    """``P(sum_k lam_k chi2_1 + shift > q)`` for the limiting law of ``kind`` (NaN stays NaN;
    see :func:`spectrum`).

    Gil-Pelaez/Imhof inversion, written as a Bromwich integral on a steepest-descent contour
    (:func:`_contour`): absolute error below ``1e-8`` (``1e-9`` near ``P = 1``), relative error
    about ``1e-7`` or better far into the tail (``P`` down to ``1e-300``); ``1`` for
    ``q <= shift + 2^-14``, ``0`` where ``P`` underflows.
    """
    q = np.asarray(q, dtype=np.float64)
    out = np.full(q.shape, np.nan)
    lam, shift = spectrum(kind)
    top = shift + 1400.0 * lam[0]  # P(Q > top) < exp(-700)
    bottom = shift + 2.0**_LOWEST_LEVEL  # P(Q <= bottom) < 1e-9 (the absolute accuracy)
    out[q <= bottom] = 1.0
    out[q >= top] = 0.0
    inside = (q > bottom) & (q < top)
    values = q[inside] - shift
    levels = np.maximum(_LOWEST_LEVEL, np.round(np.log2(values))).astype(int)
    result = np.empty_like(values)
    for level in np.unique(levels):
        s, g = _contour(kind, int(level))
        where = np.flatnonzero(levels == level)
        for start in range(0, where.size, 256):  # (256, nodes) blocks bound the memory
            idx = where[start : start + 256]
            result[idx] = np.real(np.exp(-values[idx, None] * s[None, :]) @ g)
    out[inside] = result
    return np.clip(out, 0.0, 1.0)


def henze_sf(statistic: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Henze's (1990) approximate p-value of the composite test, from ``EP = sqrt(2 pi) T``.

    ``T* = (T - 0.365/N + 1.34/N^2)(1 + 1.3/N)``, ``Z = gamma + delta log((T* - xi) /
    (xi + lambda - T*))`` standard normal (Johnson S_B), ``p = P(Z' > Z)``; ``p = 1`` below
    the support and ``0`` above it.
    """
    t = np.asarray(statistic, dtype=np.float64) / math.sqrt(2.0 * math.pi)
    n = np.asarray(n, dtype=np.float64)
    corrected = (t - 0.365 / n + 1.34 / n**2) * (1.0 + 1.3 / n)
    lo, hi = _HENZE_XI, _HENZE_XI + _HENZE_LAMBDA
    inside = (corrected > lo) & (corrected < hi)
    ratio = np.where(inside, (corrected - lo) / np.where(inside, hi - corrected, 1.0), 1.0)
    z = _HENZE_GAMMA + _HENZE_DELTA * np.log(ratio)
    p = np.array([0.5 * math.erfc(v / math.sqrt(2.0)) for v in z.ravel()]).reshape(z.shape)
    p = np.where(corrected <= lo, 1.0, np.where(corrected >= hi, 0.0, p))
    return np.where(np.isnan(corrected), np.nan, p)
