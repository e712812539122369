"""Calibration study (slow): under H0 the default p-values of both tests reject at rate alpha
within Monte Carlo error, alpha = 0.05 and 0.01, N = 8, 16, 32, 128, 1024.

benchmarks/calibration.py prints the same study as the table in docs/gof.md.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from sigreg.gof import asymptotic_pvalues, null_statistics

REPS = 20000


@pytest.mark.slow
@pytest.mark.parametrize("standardize", [True, False], ids=["composite", "simple"])
@pytest.mark.parametrize("n", [8, 16, 32, 128, 1024])
def test_rejection_rate_is_alpha(n, standardize):
    rng = np.random.default_rng([2026, n, standardize])
    stats = null_statistics(n, REPS, rng, standardize=standardize)
    p = asymptotic_pvalues(stats, np.full(REPS, float(n)), standardize)
    for alpha in (0.05, 0.01):
        rate = float(np.mean(p <= alpha))
        se = math.sqrt(alpha * (1 - alpha) / REPS)
        assert abs(rate - alpha) <= 3.5 * se, (n, alpha, rate)
