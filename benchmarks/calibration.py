"""Calibration of the univariate tests under H0: rejection rates at alpha = 0.05, 0.01.

For every N, ``--reps`` samples of N(0, 1) (any normal law for the composite test: it is
affine invariant) go through the test's own p-value functions. Rows:

* ``simple / limit``: the simple test (``standardize=False``), the limiting law (its default);
* ``composite / Henze``: the composite test, Henze's finite-N approximation (the default for
  N < 100);
* ``composite / limit``: the composite test against its limiting law (the default from
  N = 100 on).

The ``default`` column marks what ``epps_pulley_test(..., method="asymptotic")`` uses.
With ``--edf`` the rows are the EDF tests instead (``cramer_von_mises_test``,
``anderson_darling_test``, ``watson_test``, ``kolmogorov_smirnov_test``), simple and
composite, each with its default asymptotic p-value.

A calibrated p-value rejects at rate alpha up to the Monte Carlo error
``SE = sqrt(alpha (1 - alpha) / reps)``; the table flags rates beyond 3 SE.

Usage::

    python benchmarks/calibration.py                 # reps = 20000, N = 8 16 32 128 1024
    python benchmarks/calibration.py --reps 2000 --sizes 8 32
    python benchmarks/calibration.py --edf --sizes 8 20 50 200
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sigreg import _null_distribution  # noqa: E402
from sigreg._univariate_test import null_statistics as test_null_statistics  # noqa: E402
from sigreg.edf_test import (  # noqa: E402
    ANDERSON_DARLING,
    CRAMER_VON_MISES,
    KOLMOGOROV_SMIRNOV,
    WATSON,
)
from sigreg.gof import HENZE_BELOW, null_statistics  # noqa: E402

EDF_TESTS = (CRAMER_VON_MISES, ANDERSON_DARLING, WATSON, KOLMOGOROV_SMIRNOV)

ALPHAS = (0.05, 0.01)
SIZES = (8, 16, 32, 128, 1024)


def rejection_rates(n: int, reps: int, seed: int) -> dict[str, tuple[float, float]]:
    """``{row: (rate at 0.05, rate at 0.01)}`` for samples of size ``n``."""
    rng = np.random.default_rng([seed, n])
    simple = null_statistics(n, reps, rng, standardize=False)
    composite = null_statistics(n, reps, rng, standardize=True)
    pvalues = {
        "simple / limit": _null_distribution.limit_sf("simple", simple),
        "composite / Henze": _null_distribution.henze_sf(composite, np.full(reps, float(n))),
        "composite / limit": _null_distribution.limit_sf("composite", composite),
    }
    return {row: tuple(float(np.mean(p <= a)) for a in ALPHAS) for row, p in pvalues.items()}


def edf_rejection_rates(n: int, reps: int, seed: int) -> dict[str, tuple[float, float]]:
    """``{row: (rate at 0.05, rate at 0.01)}`` of the EDF tests' default p-values."""
    rates = {}
    for test in EDF_TESTS:
        for standardize in (False, True):
            rng = np.random.default_rng([seed, n, standardize])
            stats = test_null_statistics(test, n, reps, rng, standardize)
            p = test.asymptotic(stats, np.full(reps, float(n)), standardize)
            row = f"{test.name} / {'composite' if standardize else 'simple'}"
            rates[row] = tuple(float(np.mean(p <= a)) for a in ALPHAS)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20000)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--edf", action="store_true", help="the EDF tests instead")
    args = parser.parse_args()
    se = [math.sqrt(a * (1 - a) / args.reps) for a in ALPHAS]
    print(f"reps = {args.reps}; Monte Carlo SE: {se[0]:.4f} at 0.05, {se[1]:.4f} at 0.01")
    print("| test / null law | N | default | reject @ 0.05 | reject @ 0.01 |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        study = edf_rejection_rates if args.edf else rejection_rates
        for row, rates in study(n, args.reps, args.seed).items():
            cells = [
                f"{r:.4f}" + (" (!)" if abs(r - a) > 3 * s else "")
                for r, a, s in zip(rates, ALPHAS, se, strict=True)
            ]
            henze = (row == "composite / Henze") == (n < HENZE_BELOW)
            default = args.edf or row == "simple / limit" or henze
            mark = "yes" if default else ""
            print(f"| {row} | {n} | {mark} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
