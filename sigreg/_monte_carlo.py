"""Monte Carlo p-values: simulate the null with standard normal samples of the data's shape."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from sigreg._validation import check_int

DRAW_BUDGET = 1 << 20  # float64 numbers drawn (and converted) per chunk of resamples


def check_rng(rng: Any) -> np.random.Generator:
    """A ``numpy.random.Generator``, or a non-negative integer seed for a fresh PCG64 one."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy.random.Generator or a non-negative int, got {rng!r}")


def monte_carlo_pvalue(
    xp: Any,
    observed: Any,
    null_statistic: Callable[[Any], Any],
    sample_shape: tuple[int, ...],
    n_resamples: Any,
    rng: Any,
    *,
    dtype: Any,
    device: Any,
) -> Any:
    """``(1 + #{r : T_r >= T}) / (R + 1)`` for ``R = n_resamples`` null statistics ``T_r``.

    ``null_statistic`` maps a stack of ``(chunk, *sample_shape)`` standard normal arrays
    (drawn in float64 by ``rng``, converted to ``dtype`` on ``device``) to ``chunk``
    statistics; ``observed`` may have any shape (a batch of observed statistics). The
    ``+ 1`` counts the observed sample as a draw from the null, which keeps the test
    valid (``P(p <= alpha) <= alpha``) for every ``R``.
    """
    n_resamples = check_int(n_resamples, "n_resamples", minimum=1)
    rng = check_rng(rng)
    chunk = max(1, DRAW_BUDGET // max(1, math.prod(sample_shape)))
    expand = (1,) * observed.ndim
    count = xp.zeros(observed.shape, dtype=observed.dtype, device=device)
    for start in range(0, n_resamples, chunk):
        draws = rng.standard_normal((min(chunk, n_resamples - start), *sample_shape))
        sims = null_statistic(xp.asarray(draws, dtype=dtype, device=device))
        exceed = xp.reshape(sims, (sims.shape[0], *expand)) >= observed
        count = count + xp.sum(xp.astype(exceed, observed.dtype), axis=0)
    return (count + 1.0) / (n_resamples + 1.0)
