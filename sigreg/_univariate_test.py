"""The machinery every univariate ``*_test`` shares (Epps-Pulley, the EDF tests).

A test is a :class:`UnivariateTest`: a statistic of the rows of a 2-D array (samples on the
last axis) and its asymptotic p-values. :func:`run_test` does the rest the same way for all
of them: argument checks, the sample axis, the float64 compute dtype, NaN policy, small and
constant samples, the Monte Carlo null (exact for these location-scale free nulls) and the
result in the input's namespace, dtype and device. Every column of a table is tested in one
vectorised call; p-values are computed on the host in float64.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from sigreg._namespace import _to_host, device_of, is_traced, pick_namespace, prepare_array
from sigreg._result import GoodnessOfFitResult, make_result
from sigreg._test_options import check_method, check_nan_policy, resampling
from sigreg._validation import check_axis, check_flag

_SIMULATION_BLOCK = 1 << 20  # samples per block of the Monte Carlo null simulation


class SmallSampleWarning(RuntimeWarning):
    """Too few samples along the sample axis for the test: the result is NaN."""


@dataclass(frozen=True)
class UnivariateTest:
    """A univariate test of normality.

    ``statistic(xp, rows, standardize)`` maps finite rows (2-D, samples last) to
    ``(values, constant)``: the statistic of each row and, for the composite test, the mask
    of constant rows (else ``None``). ``asymptotic(observed, counts, standardize)`` maps
    float64 statistics and sample sizes to p-values (NaN stays NaN). ``minimum`` is the
    smallest sample size of the (simple, composite) test; smaller samples give NaN.
    """

    name: str
    statistic: Callable[[Any, Any, bool], tuple[Any, Any]]
    asymptotic: Callable[[np.ndarray, np.ndarray, bool], np.ndarray]
    default_resamples: int = 9999
    minimum: tuple[int, int] = (1, 3)


def compute_dtype(xp: Any, x: Any) -> Any:
    """float64 where the device supports it (p-values need the accuracy), else x's dtype."""
    info = getattr(xp, "__array_namespace_info__", None)
    if info is not None and "float64" in info().dtypes(device=device_of(x), kind="real floating"):
        return xp.float64
    return x.dtype


def standardized(xp: Any, z: Any) -> tuple[Any, Any]:
    """``(z - mean) / s`` along the last axis, ``s^2 = mean((z - mean)^2)``, and the mask
    of constant rows.

    Scale-safe: the rows are divided by their largest magnitude before centring and the
    centred rows by theirs before squaring, so neither overflows nor underflows whatever
    the scale (1e20 or 1e-20 in float32 alike). A row is constant when its centred values
    are at rounding level of its values; its result is finite garbage for the caller to mask.
    """
    eps = xp.finfo(z.dtype).eps
    one = xp.ones((), dtype=z.dtype, device=device_of(z))
    top = xp.max(xp.abs(z), axis=-1, keepdims=True)
    u = z / xp.where(top > 0, top, one)
    centred = u - xp.mean(u, axis=-1, keepdims=True)
    spread = xp.max(xp.abs(centred), axis=-1, keepdims=True)
    constant = spread <= 4.0 * eps * math.sqrt(z.shape[-1])
    v = centred / xp.where(constant, one, spread)
    s = xp.sqrt(xp.mean(v * v, axis=-1, keepdims=True))
    return v / xp.where(constant, one, s), constant[..., 0]


def null_statistics(
    test: UnivariateTest, n: int, n_resamples: int, generator: Any, standardize: bool
) -> np.ndarray:
    """``n_resamples`` statistics of ``n`` standard normal samples (float64 NumPy)."""
    npx = array_namespace(np.empty(0))
    rows = max(1, _SIMULATION_BLOCK // max(1, n))
    parts = []
    for start in range(0, n_resamples, rows):
        draws = generator.standard_normal((min(rows, n_resamples - start), n))
        parts.append(np.asarray(test.statistic(npx, npx.asarray(draws), standardize)[0]))
    return np.concatenate(parts)


def montecarlo_pvalues(
    test: UnivariateTest,
    observed: np.ndarray,
    counts: np.ndarray,
    resampling: tuple[int, Any],
    standardize: bool,
) -> np.ndarray:
    """``(#{null >= observed} + 1) / (R + 1)``, one simulated null per distinct count."""
    n_resamples, generator = resampling
    p = np.full(observed.shape, np.nan)
    for n in np.unique(counts[np.isfinite(observed)]):
        null = np.sort(null_statistics(test, int(n), n_resamples, generator, standardize))
        sel = (counts == n) & np.isfinite(observed)
        exceed = n_resamples - np.searchsorted(null, observed[sel], side="left")
        p[sel] = (exceed + 1.0) / (n_resamples + 1.0)
    return p


def _row_statistics(test: UnivariateTest, xp: Any, rows: Any, standardize: bool) -> Any:
    """Statistics of the rows: NaN for rows holding NaN and for constant rows (which warn)."""
    nan_rows = xp.any(xp.isnan(rows), axis=-1)
    clean = xp.where(nan_rows[:, None], xp.zeros_like(rows), rows)
    value, constant = test.statistic(xp, clean, standardize)
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


def _statistics(test, xp, rows, standardize, minimum, omit):
    """Per-row statistics and sample counts (NaN values dropped per row with ``omit``)."""
    dev, n = device_of(rows), rows.shape[-1]
    if not omit:
        if n < minimum:
            return xp.full((rows.shape[0],), float("nan"), dtype=rows.dtype, device=dev), (
                np.full(rows.shape[0], float(n))
            )
        return _row_statistics(test, xp, rows, standardize), np.full(rows.shape[0], float(n))
    values, counts = [], []
    for i in range(rows.shape[0]):
        row = rows[i, ...]
        row = xp.reshape(row[~xp.isnan(row)], (1, -1))
        counts.append(row.shape[-1])
        if row.shape[-1] < minimum:
            values.append(xp.full((1,), float("nan"), dtype=rows.dtype, device=dev))
        else:
            values.append(_row_statistics(test, xp, row, standardize))
    empty = xp.zeros((0,), dtype=rows.dtype, device=dev)
    return (xp.concat(values) if values else empty), np.asarray(counts, dtype=np.float64)


def _check_values(xp: Any, z: Any, nan_policy: str) -> bool:
    """Raise for infinity (and NaN with ``"raise"``); whether ``z`` holds NaN."""
    if bool(xp.any(xp.isinf(z))):
        raise ValueError("x contains infinity")
    has_nan = bool(xp.any(xp.isnan(z)))
    if has_nan and nan_policy == "raise":
        raise ValueError("x contains NaN (nan_policy='raise')")
    return has_nan


def run_test(test: UnivariateTest, x: Any, options: dict[str, Any]) -> GoodnessOfFitResult:
    """Run ``test`` on the samples of ``x`` along ``options["axis"]`` (the keyword arguments
    of the public ``*_test`` function: axis, standardize, method, n_resamples, rng,
    nan_policy, keepdims, backend)."""
    backend = options["backend"]
    xp = pick_namespace(x, "x", backend)
    x, out_dtype = prepare_array(x, "x", xp, convert_input=backend is not None)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (the sample axis)")
    axis = check_axis(options["axis"], x.ndim)
    standardize = check_flag(options["standardize"], "standardize")
    method = check_method(options["method"], stacklevel=4)
    nan_policy = check_nan_policy(options["nan_policy"])
    keepdims = check_flag(options["keepdims"], "keepdims")
    resample = resampling(method, options["n_resamples"], options["rng"], test.default_resamples)
    if is_traced(x):
        raise TypeError(
            f"{test.name} needs concrete values (p-values are computed on the host); it "
            "cannot run inside jax.jit"
        )
    z = xp.moveaxis(x, axis, -1)
    z = xp.astype(z, compute_dtype(xp, z))
    omit = _check_values(xp, z, nan_policy) and nan_policy == "omit"
    batch, n = z.shape[:-1], z.shape[-1]
    minimum = test.minimum[standardize]
    rows = xp.reshape(z, (math.prod(batch), n))
    statistic, counts = _statistics(test, xp, rows, standardize, minimum, omit)
    if np.any(counts < minimum):
        warnings.warn(
            f"fewer than {minimum} samples along the sample axis: the result is NaN",
            SmallSampleWarning,
            stacklevel=3,
        )
    observed = np.asarray(_to_host(statistic), dtype=np.float64)
    if resample is not None:
        p = montecarlo_pvalues(test, observed, counts, resample, standardize)
    else:
        p = test.asymptotic(observed, counts, standardize)
    pvalue = xp.asarray(np.where(np.isnan(observed), np.nan, p), dtype=z.dtype, device=device_of(z))
    statistic, pvalue = xp.reshape(statistic, batch), xp.reshape(pvalue, batch)
    if keepdims:
        statistic, pvalue = xp.expand_dims(statistic, axis=axis), xp.expand_dims(pvalue, axis=axis)
    return make_result(xp, statistic, pvalue, out_dtype)
