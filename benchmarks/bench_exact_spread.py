"""Time and memory of the exact Epps-Pulley statistic however spread out the samples are.

``sigreg.epps_pulley(x, integration="exact")`` on ``--n`` N(0, 1) samples (the reference,
measured in this process) and on the same samples plus far outliers (1e3 ... 1e30 away) or
replaced by Cauchy draws. Before issue 16 an outlier at 1e12 asked for one box per 12 units of
range (a 621 GiB allocation) and 1e9 took 33 s at N = 5001; with boxes only where samples
are, the ratios below should stay near 1 (Cauchy: a few, its wide core needs more series
terms). Time: minimum of ``--reps`` interleaved runs after a warm-up. Memory: peak of
Python-traced allocations (``tracemalloc``; NumPy registers its buffers) divided by N.

Usage::

    python benchmarks/bench_exact_spread.py              # N = 10^5
    python benchmarks/bench_exact_spread.py --n 1000000 --reps 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_gof import peak_bytes  # noqa: E402  (this folder is sys.path[0] for a script)

import sigreg  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10**5)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    base = rng.standard_normal(args.n)
    inputs = {"N(0, 1) (reference)": base}
    for far in (1e3, 1e9, 1e12, 1e30):
        inputs[f"N(0, 1) + outliers at ±{far:g}"] = np.r_[base, far, -far, 3 * far]
    inputs["Cauchy"] = rng.standard_cauchy(args.n)

    def run(x):
        with np.errstate(over="ignore"):
            return sigreg.epps_pulley(x, integration="exact")

    for x in inputs.values():
        run(x)
    samples: dict[str, list[float]] = {name: [] for name in inputs}
    for _ in range(args.reps):
        for name, x in inputs.items():
            start = time.perf_counter()
            run(x)
            samples[name].append(time.perf_counter() - start)
    times = {name: min(t) for name, t in samples.items()}
    ref = times["N(0, 1) (reference)"]
    print(f"N = {args.n}, minimum of {args.reps} interleaved runs (after a warm-up)")
    print("| input | time [ms] | ratio to N(0, 1) | peak traced bytes per sample |")
    print("|---|---|---|---|")
    for name, x in inputs.items():
        per_sample = peak_bytes(lambda x=x: run(x)) / len(x)
        print(f"| {name} | {1e3 * times[name]:.1f} | {times[name] / ref:.2f} | {per_sample:.0f} |")


if __name__ == "__main__":
    main()
