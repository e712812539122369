"""Limiting null laws of the EDF statistics of normality (float64 NumPy, on the host).

Each statistic ``W^2``, ``A^2``, ``U^2`` converges under H0 to ``sum_k lam_k chi2_1``
(Durbin 1973; Stephens 1976): the eigenvalues of the covariance of the limiting empirical
process ``Z(u)`` on ``[0, 1]``, weighted ``1/(u (1 - u))`` for Anderson-Darling and centred
(``Z - integral Z``) for Watson. Simple hypothesis (nothing estimated) — the Brownian bridge
``min(s, t) - s t`` — in closed form: ``1/(pi^2 k^2)`` (Cramér-von Mises), ``1/(k (k + 1))``
(Anderson-Darling), ``1/(4 pi^2 k^2)`` twice (Watson). Composite hypothesis (mean and
variance estimated), subtract the projection on the estimated parameters,
``- phi(z_s) phi(z_t) - z_s phi(z_s) z_t phi(z_t) / 2`` with ``z = Phi^{-1}(u)``; its
eigenvalues by Nystrom on ``NYSTROM_NODES`` midpoints (on the closed forms, the same code
is off by at most 3e-5 of the largest eigenvalue over the ten leading ones, 1e-5 on the
largest; p-values move by less than 1e-4).

:func:`spectrum` returns the ``KEEP`` largest eigenvalues and the sum of the others, which
the tail-probability code treats as a constant shift (it is the mean of the remainder,
whose standard deviation is ``< 3e-4`` here).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from array_api_compat import array_namespace

from sigreg._special import ndtr

STATISTICS = ("cramer_von_mises", "anderson_darling", "watson")
NYSTROM_NODES = 600
KEEP = 200
_MEANS = {"cramer_von_mises": 1.0 / 6.0, "anderson_darling": 1.0, "watson": 1.0 / 12.0}


def normal_quantile(u: np.ndarray) -> np.ndarray:
    """``Phi^{-1}(u)`` for ``0 < u < 1`` by bisection on ``[-40, 40]`` (to ~1e-15)."""
    npx = array_namespace(np.empty(0))
    lo, hi = np.full(u.shape, -40.0), np.full(u.shape, 40.0)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        below = np.asarray(ndtr(npx, npx.asarray(mid))) < u
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def _closed_form(statistic: str, k: np.ndarray) -> np.ndarray:
    if statistic == "cramer_von_mises":
        return 1.0 / (math.pi * k) ** 2
    if statistic == "anderson_darling":
        return 1.0 / (k * (k + 1.0))
    return np.repeat(1.0 / (2.0 * math.pi * k) ** 2, 2)[: k.size]


def covariance_eigenvalues(statistic: str, composite: bool, nodes: int) -> np.ndarray:
    """All Nystrom eigenvalues (descending) of the covariance operator on ``nodes`` midpoints."""
    u = (np.arange(nodes) + 0.5) / nodes
    kernel = np.minimum(u[:, None], u[None, :]) - u[:, None] * u[None, :]
    if composite:
        z = normal_quantile(u)
        density = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        kernel -= np.outer(density, density) + 0.5 * np.outer(z * density, z * density)
    if statistic == "watson":
        rows = kernel.mean(axis=1, keepdims=True)
        kernel = kernel - rows - rows.T + kernel.mean()
    if statistic == "anderson_darling":
        weight = 1.0 / np.sqrt(u * (1.0 - u))
        kernel = kernel * weight[:, None] * weight[None, :]
    return np.linalg.eigvalsh(kernel / nodes)[::-1]


@functools.cache
def spectrum(statistic: str, composite: bool) -> tuple[np.ndarray, float]:
    """``(lam, shift)``: the ``KEEP`` largest eigenvalues (read-only) and the sum of the rest."""
    if composite:
        lam = covariance_eigenvalues(statistic, True, NYSTROM_NODES)
        total = float(np.sum(lam))
    else:
        lam = _closed_form(statistic, np.arange(1.0, KEEP + 1.0))
        total = _MEANS[statistic]
    top = np.array(lam[:KEEP])
    top.flags.writeable = False
    return top, total - float(np.sum(top))
