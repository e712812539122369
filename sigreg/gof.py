"""The Epps-Pulley goodness-of-fit test for normality, with calibrated p-values (scipy style).

The statistic is the exact (untruncated) Epps-Pulley integral with weight ``w = phi`` in the
LeJEPA normalisation ``EP = sqrt(2 pi) T`` (``T`` the classical Epps-Pulley / BHEP statistic
with ``beta = 1``), the value ``sigreg.epps_pulley(x, integration="exact")`` returns for the
simple test. See ``docs/gof.md`` for the null laws, the calibration and the power study.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from sigreg import _null_distribution
from sigreg._exact import exact_statistic
from sigreg._namespace import _to_host, device_of, is_traced, pick_namespace, prepare_array
from sigreg._result import GoodnessOfFitResult
from sigreg._validation import check_axis, check_choice, check_flag, check_int

METHODS = ("asymptotic", "montecarlo")
NAN_POLICIES = ("propagate", "omit", "raise")
DEFAULT_RESAMPLES = 9999
HENZE_BELOW = 100  # composite test: Henze's approximation below this N, the limit law above
_SIMULATION_BLOCK = 1 << 20  # samples per block of the Monte Carlo null simulation


class SmallSampleWarning(RuntimeWarning):
    """Too few samples along the sample axis for the test: the result is NaN."""


def _compute_dtype(xp: Any, x: Any) -> Any:
    """float64 where the device supports it (p-values need the accuracy), else x's dtype."""
    info = getattr(xp, "__array_namespace_info__", None)
    if info is not None and "float64" in info().dtypes(device=device_of(x), kind="real floating"):
        return xp.float64
    return x.dtype


def _standardized(xp: Any, z: Any) -> tuple[Any, Any]:
    """``(z - mean) / s`` with ``s^2 = mean((z - mean)^2)`` and a mask of constant rows.

    A row counts as constant when ``s`` is at rounding level of its values; its ``s`` is
    replaced by 1 so that no NaN arises before the caller masks the row.
    """
    centered = z - xp.mean(z, axis=-1, keepdims=True)
    s = xp.sqrt(xp.mean(centered * centered, axis=-1, keepdims=True))
    scale = xp.max(xp.abs(z), axis=-1, keepdims=True)
    constant = s <= 4.0 * xp.finfo(z.dtype).eps * scale
    s = xp.where(constant, xp.ones_like(s), s)
    return centered / s, constant[..., 0]


def _statistic(xp: Any, z: Any, standardize: bool) -> tuple[Any, Any]:
    """``EP`` of each row of ``z`` (finite, last axis) and the mask of constant rows."""
    if standardize:
        y, constant = _standardized(xp, z)
        return exact_statistic(xp, y, debias=False), constant
    return exact_statistic(xp, z, debias=False), None


def _generator(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        if int(rng) < 0:
            raise ValueError(f"rng must be a non-negative integer seed, got {rng}")
        return np.random.default_rng(int(rng))
    raise TypeError(
        "rng must be a numpy.random.Generator or an integer seed for method='montecarlo', "
        f"got {rng!r}"
    )


def null_statistics(
    n: int, n_resamples: int, generator: np.random.Generator, *, standardize: bool
) -> np.ndarray:
    """``n_resamples`` exact statistics of ``n`` standard normal samples (float64 NumPy)."""
    npx = array_namespace(np.empty(0))
    rows = max(1, _SIMULATION_BLOCK // n)
    parts = []
    for start in range(0, n_resamples, rows):
        draws = generator.standard_normal((min(rows, n_resamples - start), n))
        parts.append(np.asarray(_statistic(npx, npx.asarray(draws), standardize)[0]))
    return np.concatenate(parts)


def _montecarlo_pvalues(
    observed: np.ndarray, counts: np.ndarray, n_resamples: int, generator: Any, standardize: bool
) -> np.ndarray:
    """``(#{null >= observed} + 1) / (R + 1)``, one simulated null per distinct count."""
    p = np.full(observed.shape, np.nan)
    for n in np.unique(counts[np.isfinite(observed)]):
        null = np.sort(null_statistics(int(n), n_resamples, generator, standardize=standardize))
        sel = (counts == n) & np.isfinite(observed)
        exceed = n_resamples - np.searchsorted(null, observed[sel], side="left")
        p[sel] = (exceed + 1.0) / (n_resamples + 1.0)
    return p


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


def _row_statistics(xp: Any, rows: Any, standardize: bool, minimum: int) -> Any:
    """Statistics of the rows of a 2-D array: NaN for rows holding NaN and (composite test)
    for constant rows, which also warn; ``None`` when the rows are shorter than ``minimum``.
    """
    n = rows.shape[-1]
    if n < minimum:
        return None
    nan_rows = xp.any(xp.isnan(rows), axis=-1)
    clean = xp.where(xp.isnan(rows), xp.zeros_like(rows), rows)
    value, constant = _statistic(xp, clean, standardize)
    nan = xp.asarray(float("nan"), dtype=value.dtype, device=device_of(value))
    value = xp.where(nan_rows, nan, value)
    if constant is not None:
        if bool(xp.any(constant & ~nan_rows)):
            warnings.warn(
                "x is constant along the sample axis: the standardised test is undefined, "
                "the result is NaN",
                RuntimeWarning,
                stacklevel=4,
            )
        value = xp.where(constant, nan, value)
    return value


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
    x : array
        Real samples (numpy, torch, jax, cupy or array_api_strict). Computed in float64
        where the device supports it; integers and booleans are promoted.
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
        Source of the simulation (``method="montecarlo"`` only, required there).
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
        Infinite values, NaN with ``nan_policy="raise"``, a bad option, ``rng`` or
        ``n_resamples`` without ``method="montecarlo"``.
    TypeError
        ``x`` is not a real array, ``rng`` is not a Generator or seed, or ``x`` is traced
        (``jax.jit``): the p-value is computed on the host.

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
    xp = pick_namespace(x, "x", backend)
    x, out_dtype = prepare_array(x, "x", xp, convert_input=backend is not None)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (the sample axis)")
    axis = check_axis(axis, x.ndim)
    standardize = check_flag(standardize, "standardize")
    method = check_choice(method, "method", METHODS)
    nan_policy = check_choice(nan_policy, "nan_policy", NAN_POLICIES)
    check_flag(keepdims, "keepdims")
    if method == "montecarlo":
        resamples = check_int(
            DEFAULT_RESAMPLES if n_resamples is None else n_resamples, "n_resamples", minimum=1
        )
        if rng is None:
            raise ValueError("method='montecarlo' needs rng (a numpy.random.Generator or seed)")
        generator = _generator(rng)
    elif n_resamples is not None or rng is not None:
        raise ValueError("n_resamples and rng are only used with method='montecarlo'")
    if is_traced(x):
        raise TypeError(
            "epps_pulley_test needs concrete values (p-values are computed on the "
            "host); it cannot run inside jax.jit"
        )
    z = xp.moveaxis(x, axis, -1)
    z = xp.astype(z, _compute_dtype(xp, z))
    if bool(xp.any(xp.isinf(z))):
        raise ValueError("x contains infinity")
    has_nan = bool(xp.any(xp.isnan(z)))
    if has_nan and nan_policy == "raise":
        raise ValueError("x contains NaN (nan_policy='raise')")
    batch, n = z.shape[:-1], z.shape[-1]
    rows = xp.reshape(z, (math.prod(batch), n))
    minimum = 3 if standardize else 1
    dev = device_of(z)
    nan = xp.asarray(float("nan"), dtype=z.dtype, device=dev)
    if has_nan and nan_policy == "omit":
        values, counts = [], []
        for i in range(rows.shape[0]):
            row = rows[i, ...]
            row = xp.reshape(row[~xp.isnan(row)], (1, -1))
            value = _row_statistics(xp, row, standardize, minimum)
            values.append(xp.reshape(nan if value is None else value, (1,)))
            counts.append(row.shape[-1])
        statistic = xp.concat(values) if values else xp.zeros((0,), dtype=z.dtype, device=dev)
        count_array = np.asarray(counts, dtype=np.float64)
    else:
        value = _row_statistics(xp, rows, standardize, minimum)
        if value is None:
            value = xp.full((rows.shape[0],), float("nan"), dtype=z.dtype, device=dev)
        statistic = value
        count_array = np.full(rows.shape[0], float(n))
    if np.any(count_array < minimum):
        warnings.warn(
            f"fewer than {minimum} samples along the sample axis: the result is NaN",
            SmallSampleWarning,
            stacklevel=2,
        )
    observed = np.asarray(_to_host(statistic), dtype=np.float64)
    if method == "montecarlo":
        p = _montecarlo_pvalues(observed, count_array, resamples, generator, standardize)
    else:
        p = asymptotic_pvalues(observed, count_array, standardize)
    pvalue = xp.asarray(p, dtype=z.dtype, device=dev)
    statistic, pvalue = xp.reshape(statistic, batch), xp.reshape(pvalue, batch)
    if keepdims:
        statistic, pvalue = xp.expand_dims(statistic, axis=axis), xp.expand_dims(pvalue, axis=axis)
    return GoodnessOfFitResult(xp.astype(statistic, out_dtype), xp.astype(pvalue, out_dtype))
