"""The Epps-Pulley goodness-of-fit test for normality, with calibrated p-values (scipy style).

The statistic is the exact (untruncated) Epps-Pulley integral with weight ``w = phi`` in the
LeJEPA normalisation ``EP = sqrt(2 pi) T`` (``T`` the classical Epps-Pulley / BHEP statistic
with ``beta = 1``), the value ``sigreg.epps_pulley(x, integration="exact")`` returns for the
simple test. See ``docs/gof.md`` for the null laws, the calibration and the power study.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sigreg import _null_distribution
from sigreg._exact import exact_statistic
from sigreg._result import GoodnessOfFitResult
from sigreg._univariate_test import (
    SmallSampleWarning,
    UnivariateTest,
    run_test,
    standardized,
)
from sigreg._univariate_test import null_statistics as _null_statistics

__all__ = ["SmallSampleWarning", "asymptotic_pvalues", "epps_pulley_test", "null_statistics"]

DEFAULT_RESAMPLES = 9999
HENZE_BELOW = 100  # composite test: Henze's approximation below this N, the limit law above


def _statistic(xp: Any, rows: Any, standardize: bool) -> tuple[Any, Any]:
    """``EP`` of each row (finite, samples last) and the mask of constant rows."""
    if standardize:
        y, constant = standardized(xp, rows)
        return exact_statistic(xp, y, debias=False), constant
    return exact_statistic(xp, rows, debias=False), None


def asymptotic_pvalues(observed: np.ndarray, counts: np.ndarray, standardize: bool) -> np.ndarray:
    """p-values of ``method="asymptotic"`` for float64 statistics of samples of size ``counts``.

    Simple test: the limiting weighted chi-square law. Composite test: Henze's (1990)
    finite-``N`` corrected Johnson S_B approximation for ``N < HENZE_BELOW`` (the limiting
    law rejects too rarely at ``N = 8``), the limiting law from there on (Henze's fit
    underestimates its far tail, ``p < 1e-4``). Both measured in ``docs/gof.md``.
    """
    if not standardize:
        return _null_distribution.limit_sf("simple", observed)
    small = counts < HENZE_BELOW
    return np.where(
        small,
        _null_distribution.henze_sf(observed, counts),
        _null_distribution.limit_sf("composite", np.where(small, np.nan, observed)),
    )


EPPS_PULLEY = UnivariateTest("epps_pulley_test", _statistic, asymptotic_pvalues, DEFAULT_RESAMPLES)


def null_statistics(
    n: int, n_resamples: int, generator: np.random.Generator, *, standardize: bool
) -> np.ndarray:
    """``n_resamples`` exact statistics of ``n`` standard normal samples (float64 NumPy)."""
    return _null_statistics(EPPS_PULLEY, n, n_resamples, generator, standardize)


def epps_pulley_test(
    x: Any,
    /,
    *,
    axis: int = 0,
    standardize: bool = True,
    method: str = "asymptotic",
    n_resamples: int | None = None,
    rng: Any = None,
    nan_policy: str = "propagate",
    keepdims: bool = False,
    backend: Any = None,
) -> GoodnessOfFitResult:
    """Epps-Pulley test of normality of the samples along ``axis``.

    The statistic is the exact Epps-Pulley integral
    ``EP = N int |phi_hat(t) - exp(-t^2/2)|^2 exp(-t^2/2) dt`` (LeJEPA normalisation,
    ``EP = sqrt(2 pi) T`` with ``T`` the classical statistic), computed in ``O(N)`` memory.
    Large values reject normality.

    Parameters
    ----------
    x : array or array-like
        Real samples (numpy, torch, jax, cupy or array_api_strict; lists, pandas Series and
        other array-likes are converted with numpy). Computed in float64 where the device
        supports it; integers and booleans are promoted.
    axis : int, default 0
        Axis holding the samples.
    standardize : bool, default True
        ``True``: the composite test of normality with unknown mean and variance (the
        samples are standardised with the mean and the divisor-``N`` standard deviation) —
        what ``scipy.stats.shapiro`` or ``anderson`` test. ``False``: the simple test against
        exactly N(0, 1), the statistic SIGReg uses (it also detects a wrong mean or scale).
    method : {"asymptotic", "montecarlo"}, default "asymptotic"
        ``"asymptotic"``: simple test — the limiting weighted chi-square law (eigenvalues of
        the covariance operator, inverted numerically); composite test — Henze's (1990)
        finite-``N`` corrected approximation for ``N < 100``, the limiting law from there
        on. Both are calibrated from ``N = 8`` on (``docs/gof.md``; below ``N = 8`` the
        approximations are unmeasured, prefer ``"montecarlo"`` there). ``"montecarlo"``:
        ``n_resamples`` exact statistics of simulated N(0, 1) samples of the same size,
        ``p = (#{null >= EP} + 1) / (n_resamples + 1)``.
    n_resamples : int, optional
        Number of simulated null samples (``method="montecarlo"`` only; default 9999).
    rng : numpy.random.Generator or int, optional
        Source of the simulation (``method="montecarlo"`` only); default: the fixed seed 0,
        so the p-value is reproducible. Pass a Generator or another seed for independent
        draws.
    nan_policy : {"propagate", "omit", "raise"}, default "propagate"
        NaN in a sample: NaN results for it, drop the NaN values, or raise ``ValueError``.
    keepdims : bool, default False
        Keep the reduced axis with length one.
    backend : str or namespace, optional
        Convert ``x`` to this namespace first; default: the namespace of ``x``.

    Returns
    -------
    GoodnessOfFitResult
        ``(statistic, pvalue)`` in the namespace, dtype and device of ``x``. Too few samples
        (fewer than 3 for the composite test, none for the simple one, also after
        ``nan_policy="omit"``) give NaN and a :class:`SmallSampleWarning`; constant samples
        give NaN and a ``RuntimeWarning`` in the composite test (as ``scipy.stats`` does).

    Raises
    ------
    ValueError
        Infinite values, NaN with ``nan_policy="raise"``, a bad option, a negative seed,
        ``rng`` or ``n_resamples`` without ``method="montecarlo"``.
    TypeError
        ``x`` is not a real array, ``rng`` is not a Generator or seed, or ``x`` is traced
        (``jax.jit``): the p-value is computed on the host.
    DeprecationWarning
        (warning) ``method="monte-carlo"``, the old spelling of ``"montecarlo"``.

    Examples
    --------
    >>> import numpy as np
    >>> from sigreg import epps_pulley_test
    >>> rng = np.random.default_rng(0)
    >>> statistic, pvalue = epps_pulley_test(rng.standard_normal(200))
    >>> bool(pvalue > 0.01)
    True
    >>> bool(epps_pulley_test(rng.exponential(size=200)).pvalue < 1e-6)
    True
    >>> res = epps_pulley_test(rng.standard_normal(50) + 3.0, standardize=False)
    >>> bool(res.pvalue < 1e-10)  # the simple test rejects a shifted normal
    True
    """
    options = locals()  # exactly the keyword arguments above, checked by run_test
    return run_test(EPPS_PULLEY, options.pop("x"), options)
