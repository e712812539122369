"""Every column of a table in one vectorised call vs a Python loop over the columns.

For each univariate ``*_test`` (asymptotic p-values, the default), a 500 x 1000 table of
normal samples is tested along ``axis=0`` in one call and column by column in a Python
loop; the script prints both times (minimum of ``--repeats`` runs) and their ratio. The
target of issue 15 is a ratio of at least 20.

Usage::

    python benchmarks/bench_columns.py                   # 500 rows x 1000 columns
    python benchmarks/bench_columns.py --rows 200 --columns 300 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sigreg  # noqa: E402

TESTS = (
    "epps_pulley_test",
    "cramer_von_mises_test",
    "anderson_darling_test",
    "watson_test",
    "kolmogorov_smirnov_test",
)


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--columns", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    table = np.random.default_rng(0).standard_normal((args.rows, args.columns))
    print(f"{args.rows} rows x {args.columns} columns, numpy float64, min of {args.repeats}")
    print("| test | one call (s) | loop over columns (s) | ratio |")
    print("|---|---|---|---|")
    for name in TESTS:
        test = getattr(sigreg, name)
        test(table[:, :2])  # warm the caches (null-law contours, eigenvalues)
        vectorised = best_time(lambda t=test: t(table), args.repeats)
        columns = [np.ascontiguousarray(table[:, j]) for j in range(args.columns)]
        loop = best_time(lambda t=test, cs=columns: [t(c) for c in cs], args.repeats)
        print(f"| {name} | {vectorised:.3f} | {loop:.3f} | {loop / vectorised:.1f} |", flush=True)


if __name__ == "__main__":
    main()
