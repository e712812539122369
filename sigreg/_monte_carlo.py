"""Monte Carlo tests: simulate the null with standard normal samples of the data's shape."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from sigreg._namespace import device_of
from sigreg._result import GoodnessOfFitResult, make_result
from sigreg._validation import check_int

DRAW_BUDGET = 1 << 20  # float64 numbers drawn (and converted) per chunk of resamples


def check_rng(rng: Any) -> np.random.Generator:
    """A ``numpy.random.Generator``, or a non-negative integer seed for a fresh PCG64 one."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool) and int(rng) >= 0:
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy.random.Generator or a non-negative int, got {rng!r}")


def monte_carlo_test(
    xp: Any,
    statistic: Callable[[Any], Any],
    x: Any,
    n_resamples: Any,
    rng: Any,
    out_dtype: Any,
) -> GoodnessOfFitResult:
    """``statistic(x)`` and its p-value ``(1 + #{r : T_r >= T}) / (R + 1)`` against
    ``R = n_resamples`` statistics of standard normal samples of shape ``x.shape[-2:]``.

    ``statistic`` maps arrays of shape ``(..., N, K)`` to shape ``(...)``; the null samples
    are drawn in float64 by ``rng`` in chunks and converted to the dtype and device of
    ``x``. A batch of observed statistics is compared with the same null draws. The ``+ 1``
    counts the observed sample as a draw from the null, which keeps the test valid
    (``P(p <= alpha) <= alpha``) for every ``R``. Both results are cast to ``out_dtype``.
    """
    n_resamples = check_int(n_resamples, "n_resamples", minimum=1)
    rng = check_rng(rng)
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
    pvalue = (count + 1.0) / (n_resamples + 1.0)
    return make_result(xp, observed, pvalue, out_dtype)
