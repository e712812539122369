"""Draft micro-benchmark of the torch adapter (CPU; not part of the test suite).

Times forward + backward of SIGReg on ``(V, N, K)`` float32 embeddings with ``M`` slices for
the analytic-backward Function at several chunk sizes, against plain autograd through the
core (``sigreg.sliced_epps_pulley`` on tensors requiring grad), and reports the bytes saved
for backward. Keep the sizes small on shared machines::

    python benchmarks/bench_torch.py --n 256 --k 64 --m 512 --views 2 --reps 3
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import sigreg  # noqa: E402
from backends.torch import sliced_epps_pulley  # noqa: E402


def _saved_bytes(fn):
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return total[0], out


def _time(fn, x, reps):
    best = float("inf")
    for _ in range(reps):
        x.grad = None
        start = time.perf_counter()
        fn().sum().backward()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--m", type=int, default=512)
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--chunks", type=int, nargs="+", default=[32, 128, 512])
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.views, args.n, args.k, requires_grad=True)
    a = sigreg.sample_directions(args.k, args.m, seed=0, backend="torch", dtype=torch.float32)
    rows = []
    for chunk in args.chunks:
        fn = lambda chunk=chunk: sliced_epps_pulley(x, a, chunk_size=chunk)  # noqa: E731
        rows.append((f"function chunk={chunk}", _time(fn, x, args.reps), _saved_bytes(fn)[0]))
    core = lambda: sigreg.sliced_epps_pulley(x, a)  # noqa: E731
    rows.append(("core autograd", _time(core, x, args.reps), _saved_bytes(core)[0]))
    print(f"V={args.views} N={args.n} K={args.k} M={args.m} float32, best of {args.reps}")
    for name, seconds, saved in rows:
        print(f"{name:>22}: {seconds * 1e3:8.1f} ms fwd+bwd, {saved / 2**20:8.2f} MiB saved")


if __name__ == "__main__":
    main()
