"""Cost of ``loss.statistic``: the LeJEPA loss's forward + backward for each per-slice statistic,
as a ratio to ``epps_pulley`` measured in the same run.

Rows: ``backends.torch.LeJEPALoss(statistic=...)`` (autograd; Epps-Pulley through its analytic
backward) and ``sigreg.lejepa_loss_vjp`` on numpy (the cupy/numpy trainer's explicit
pullbacks), on the same float32 views. Timing: the statistics are measured in turns, ``--reps``
rounds, and each keeps its minimum, so machine load drifts affect every row alike.

Usage::

    python benchmarks/bench_loss_statistics.py                 # V=10, N=256, D=128, M=1024
    python benchmarks/bench_loss_statistics.py --quick         # small sizes, a smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import sigreg  # noqa: E402
from sigreg.loss_statistics import LOSS_STATISTICS  # noqa: E402


def _torch_step(views, num_slices):
    import torch

    from backends.torch import LeJEPALoss

    g = torch.tensor(views[:2], requires_grad=True)
    loc = torch.tensor(views[2:], requires_grad=True)
    losses = {s: LeJEPALoss(num_slices=num_slices, statistic=s) for s in LOSS_STATISTICS}

    def step(statistic):
        losses[statistic](g, loc).loss.backward()

    return step


def _numpy_step(views, num_slices):
    def step(statistic):
        _, pullback = sigreg.lejepa_loss_vjp(
            views[:2], views[2:], num_slices=num_slices, statistic=statistic
        )
        pullback(1.0)

    return step


def _measure(step, reps):
    best = dict.fromkeys(LOSS_STATISTICS, float("inf"))
    for statistic in LOSS_STATISTICS:  # warm-up
        step(statistic)
    for _ in range(reps):
        for statistic in LOSS_STATISTICS:
            start = time.perf_counter()
            step(statistic)
            best[statistic] = min(best[statistic], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--reps", type=int, default=5, help="rounds (each row keeps its minimum)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    views_n, n, dim, num_slices = (4, 64, 16, 64) if args.quick else (10, 256, 128, 1024)
    views = np.random.default_rng(0).standard_normal((views_n, n, dim)).astype(np.float32)
    print(f"V={views_n} N={n} D={dim} M={num_slices}, float32, load {os.getloadavg()[0]:.1f}")
    rows = {"numpy (lejepa_loss_vjp)": _numpy_step(views, num_slices)}
    try:
        import torch

        torch.set_num_threads(args.threads)
        rows = {"torch (LeJEPALoss)": _torch_step(views, num_slices), **rows}
    except ImportError:
        print("torch not installed: numpy only")
    for name, step in rows.items():
        best = _measure(step, args.reps)
        ref = best["epps_pulley"]
        print(f"\n{name}: forward + backward, minimum of {args.reps}")
        for statistic in LOSS_STATISTICS:
            ms, ratio = 1e3 * best[statistic], best[statistic] / ref
            print(f"  {statistic:22s} {ms:9.1f} ms   x{ratio:5.2f} of epps_pulley")


if __name__ == "__main__":
    main()
