"""Speed and memory of ``sigreg.epps_pulley_test`` against ``scipy.stats.anderson``.

Both run in this process on the same float64 N(0, 1) data (``--n`` samples, default 10^6):
the default (composite, asymptotic) test, the simple test, the exact statistic alone
(``sigreg.epps_pulley(x, integration="exact")``), the default test on heavy-tailed t3 data
(the boxed series path) and ``scipy.stats.anderson(x, method="interpolate")`` as the
reference. Time: median of ``--reps`` runs after one warm-up
run (the warm-up builds the cached null law). The ratio is test time / anderson time
(< 1: faster than anderson).

Memory: peak of Python-traced allocations (``tracemalloc``, NumPy registers its buffers)
of one test call at several N — constant bytes per sample means O(N) memory (an N x N
kernel matrix at N = 10^6 would need 8 TB).

Usage::

    python benchmarks/bench_gof.py            # N = 10^6
    python benchmarks/bench_gof.py --n 100000 --reps 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sigreg  # noqa: E402


def peak_bytes(fn) -> int:
    """Peak of Python-traced allocations (NumPy registers its buffers) while ``fn()`` runs."""
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10**6)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    from scipy import stats

    x = np.random.default_rng(0).standard_normal(args.n)
    heavy = np.random.default_rng(0).standard_t(3, args.n)
    runs = {
        "epps_pulley_test (composite, default)": lambda: sigreg.epps_pulley_test(x),
        "epps_pulley_test (simple)": lambda: sigreg.epps_pulley_test(x, standardize=False),
        "epps_pulley exact statistic": lambda: sigreg.epps_pulley(x, integration="exact"),
        "epps_pulley_test on t3 data (boxed series)": lambda: sigreg.epps_pulley_test(heavy),
        "scipy.stats.anderson": lambda: stats.anderson(x, method="interpolate"),
    }
    # interleave the variants rep by rep so that load changes hit all of them alike
    for fn in runs.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.reps):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    times = {name: statistics.median(t) for name, t in samples.items()}
    ref = times["scipy.stats.anderson"]
    print(f"N = {args.n}, median of {args.reps} interleaved runs (after a warm-up)")
    print("| run | time [ms] | ratio to anderson |")
    print("|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {1e3 * t:.1f} | {t / ref:.2f} |")
    print()
    print("| N | peak traced memory of epps_pulley_test [MB] | bytes per sample |")
    print("|---|---|---|")
    for n in (10**4, 10**5, args.n):
        data = np.random.default_rng(1).standard_normal(n)
        peak = peak_bytes(lambda d=data: sigreg.epps_pulley_test(d))
        print(f"| {n} | {peak / 2**20:.1f} | {peak / n:.0f} |")


if __name__ == "__main__":
    main()
