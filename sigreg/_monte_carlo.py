"""Tests on ``(..., N, K)`` samples (Henze-Zirkler, sliced): the Monte Carlo p-value and the
NaN policy, shared so that both follow the convention of every ``*_test``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sigreg._namespace import device_of, is_traced

DRAW_BUDGET = 1 << 20  # float64 numbers drawn (and converted) per chunk of resamples


def nan_where_nan(xp: Any, observed: Any, pvalue: Any) -> Any:
    """``pvalue`` with NaN wherever ``observed`` is NaN (a NaN statistic is no evidence)."""
    nan = xp.asarray(float("nan"), dtype=pvalue.dtype, device=device_of(pvalue))
    return xp.where(xp.isnan(observed), nan, pvalue)


def monte_carlo_pvalue(
    xp: Any, statistic: Callable[[Any], Any], x: Any, resampling: tuple[int, np.random.Generator]
) -> tuple[Any, Any]:
    """``statistic(x)`` and its p-value ``(1 + #{r : T_r >= T}) / (R + 1)`` against
    ``R`` statistics of standard normal samples of shape ``x.shape[-2:]``.

    ``statistic`` maps arrays of shape ``(..., N, K)`` to shape ``(...)``; the null samples
    are drawn in float64 by the generator of ``resampling = (R, generator)`` in chunks and
    converted to the dtype and device of ``x``. A batch of observed statistics is compared
    with the same null draws. The ``+ 1`` counts the observed sample as a draw from the
    null, which keeps the test valid (``P(p <= alpha) <= alpha``) for every ``R``. A NaN
    statistic gets a NaN p-value (also under ``jax.jit``).
    """
    n_resamples, rng = resampling
    observed = statistic(x)
    sample_shape = tuple(x.shape[-2:])
    dtype, device = x.dtype, device_of(x)
    chunk = max(1, DRAW_BUDGET // max(1, math.prod(sample_shape)))
    expand = (1,) * observed.ndim
    count = xp.zeros(observed.shape, dtype=observed.dtype, device=device)
    for start in range(0, n_resamples, chunk):
        draws = rng.standard_normal((min(chunk, n_resamples - start), *sample_shape))
        sims = statistic(xp.asarray(draws, dtype=dtype, device=device))
        exceed = xp.reshape(sims, (sims.shape[0], *expand)) >= observed
        count = count + xp.sum(xp.astype(exceed, observed.dtype), axis=0)
    return observed, nan_where_nan(xp, observed, (count + 1.0) / (n_resamples + 1.0))


def _nan_row_mask(xp: Any, sample: Any) -> Any:
    return xp.any(xp.isnan(sample), axis=-1)


def with_nan_policy(
    xp: Any, x: Any, nan_policy: str, run: Callable[[Any], tuple[Any, Any]]
) -> tuple[Any, Any]:
    """``run(x) -> (statistic, pvalue)`` over the batch of ``(..., N, K)`` samples under
    ``nan_policy``.

    Infinity raises. Without NaN (or inside ``jax.jit``, where values are unknown and
    NaN propagates into the statistic and so into the p-value) ``run`` sees all of ``x``.
    Otherwise ``"raise"`` raises; ``"propagate"`` gives NaN for each sample holding NaN;
    ``"omit"`` drops the sample rows (points) holding NaN, one batch element at a time.
    """
    if is_traced(x):
        if nan_policy == "omit":
            raise TypeError("nan_policy='omit' needs concrete values; it cannot run in jax.jit")
        return run(x)
    if bool(xp.any(xp.isinf(x))):
        raise ValueError("x contains infinity")
    if not bool(xp.any(xp.isnan(x))):
        return run(x)
    if nan_policy == "raise":
        raise ValueError("x contains NaN (nan_policy='raise')")
    batch = x.shape[:-2]
    flat = xp.reshape(x, (math.prod(batch), *x.shape[-2:]))
    nan = xp.full((), float("nan"), dtype=x.dtype, device=device_of(x))
    stats, pvalues = [], []
    for i in range(flat.shape[0]):
        sample = flat[i, ...]
        bad = _nan_row_mask(xp, sample)
        if nan_policy == "propagate" and bool(xp.any(bad)):
            stat, p = nan, nan
        else:
            stat, p = run(sample[~bad] if bool(xp.any(bad)) else sample)
        stats.append(xp.reshape(stat, (1,)))
        pvalues.append(xp.reshape(p, (1,)))
    return xp.reshape(xp.concat(stats), batch), xp.reshape(xp.concat(pvalues), batch)
