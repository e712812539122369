"""Cramér–Wold with few slices (LeJEPA paper Fig. 6): does a sliced objective unfold an "X"?

``N`` samples in ``D`` dimensions, isotropic Gaussian except the first two coordinates, which
lie on the two diagonals of a square (an "X": each axis marginal is uniform). The samples
themselves are optimised by normalised gradient descent (each step moves the samples by the
learning rate, RMS over samples, along the gradient; cosine schedule) on a sliced objective,
the mean over slices of a univariate N(0, 1) statistic (``sigreg.sliced_statistic``) of the
projections:

* ``M = 16`` directions resampled every step (``sigreg.sample_directions(seed, step)``), or
* one fixed set of ``M = 1024`` directions,

for each per-slice statistic (Epps–Pulley, extended Jarque–Bera, Cramér–von Mises,
Anderson–Darling, mean/variance = VICReg-like). Progress is measured on the X's own plane:
the largest Epps–Pulley statistic over 8 in-plane angles, against its 95% quantile under the
null (simulated at the same ``N``). A run "unfolds the X" once that maximum stays below the
quantile. A Gaussian-looking plane is not a Gaussian joint law: moving the samples can mix
Gaussian coordinates into the plane. So when ``N > D`` the final samples are also tested for
joint normality (``sigreg.henze_zirkler_test``, Monte Carlo p-value). Writes
``OUT/results.json``, ``OUT/marginals.png`` (the 2-D marginal over steps),
``OUT/plane_ep.png`` (the in-plane statistic over steps) and prints a Markdown table.

Usage::

    python experiments/cramer_wold.py --out runs/cramer-wold [--n 256] [--dim 512] [--steps 600]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import sigreg  # noqa: E402
from trainers.core import rundir  # noqa: E402

OBJECTIVES = (
    "epps_pulley",
    "extended_jarque_bera",
    "cramer_von_mises",
    "anderson_darling",
    "mean_variance",
)
SLICINGS = {"resampled-16": (16, True), "fixed-1024": (1024, False)}
ANGLES = np.linspace(0.0, math.pi, 8, endpoint=False)
PLANE = np.stack([np.cos(ANGLES), np.sin(ANGLES)])  # (2, 8) unit directions in the X plane


def x_samples(n: int, dim: int, seed: int) -> np.ndarray:
    """Gaussian ``(n, dim)`` samples whose first two coordinates form an X of unit variance."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    u = rng.uniform(-math.sqrt(3.0), math.sqrt(3.0), n)
    x[:, 0], x[:, 1] = u, rng.choice([-1.0, 1.0], n) * u
    return x


def plane_statistic(x: np.ndarray) -> float:
    """Largest Epps–Pulley statistic of the X plane's marginals over 8 angles."""
    return float(np.max(sigreg.epps_pulley(x[:, :2] @ PLANE, axis=0)))


def null_quantile(n: int, q: float = 0.95, reps: int = 2000, seed: int = 12345) -> float:
    """Quantile of :func:`plane_statistic` for N(0, I_2) samples of size ``n``."""
    rng = np.random.default_rng(seed)
    return float(
        np.quantile([plane_statistic(rng.standard_normal((n, 2))) for _ in range(reps)], q)
    )


def optimise(
    x0: np.ndarray, objective: str, slices: int, resample: bool, steps: int, lr: float, seed: int
) -> dict[str, Any]:
    """Normalised gradient descent on the samples (cosine learning rate); returns the in-plane
    statistic over steps and 2-D snapshots."""
    import torch

    from backends.torch import sliced_epps_pulley

    x = torch.tensor(x0, dtype=torch.float64, requires_grad=True)
    fixed = sigreg.sample_directions(
        x0.shape[1], slices, seed=seed, step=0, backend="torch", dtype=torch.float64
    )
    snapshots = {0: x0[:, :2].copy()}
    curve = [(0, plane_statistic(x0))]
    every = max(steps // 50, 1)
    for step in range(1, steps + 1):
        directions = (
            sigreg.sample_directions(
                x0.shape[1], slices, seed=seed, step=step, backend="torch", dtype=torch.float64
            )
            if resample
            else fixed
        )
        if objective == "epps_pulley":  # same value, analytic memory-lean backward
            loss = sliced_epps_pulley(x, directions)
        else:
            loss = sigreg.sliced_statistic(x, directions, statistic=objective)
        (grad,) = torch.autograd.grad(loss, x)
        # normalised gradient descent: the step moves the samples by lr (RMS over samples)
        # along the gradient; unlike Adam's per-coordinate scaling it keeps the update a
        # function of the objective alone (Adam's sign-like steps diffuse the samples and
        # blur any shape, whatever the objective)
        rate = lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * (step - 1) / steps)))
        with torch.no_grad():
            x -= rate * grad / grad.square().sum(dim=1).mean().sqrt().clamp_min(1e-300)
        if step % every == 0 or step == steps:
            current = x.detach().numpy()
            curve.append((step, plane_statistic(current)))
            if step in (steps // 10, steps // 3, steps):
                snapshots[step] = current[:, :2].copy()
    return {"curve": curve, "snapshots": snapshots, "final": x.detach().numpy()}


def first_unfolded(curve: list[tuple[int, float]], threshold: float) -> int | None:
    """First step from which the in-plane statistic stays below ``threshold``."""
    below = None
    for step, value in curve:
        if value < threshold:
            below = step if below is None else below
        else:
            below = None
    return below


def plot(runs: dict[str, dict[str, Any]], q95: float, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(runs)
    steps = sorted(next(iter(runs.values()))["snapshots"])
    fig, axes = plt.subplots(
        len(names), len(steps), figsize=(2.2 * len(steps), 2.2 * len(names)), squeeze=False
    )
    for i, name in enumerate(names):
        for j, step in enumerate(steps):
            p = runs[name]["snapshots"][step]
            ax = axes[i, j]
            ax.scatter(p[:, 0], p[:, 1], s=1, alpha=0.5)
            ax.set_xlim(-4, 4)
            ax.set_ylim(-4, 4)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"step {step}", fontsize=9)
            if j == 0:
                ax.set_ylabel(name.replace(" / ", "\n"), fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "marginals.png"), dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in names:
        s, v = zip(*runs[name]["curve"], strict=True)
        ax.semilogy(s, v, label=name, ls="-" if "resampled" in name else "--")
    ax.axhline(q95, color="k", lw=0.8, label="null 95% quantile")
    ax.set_xlabel("step")
    ax.set_ylabel("max in-plane EP statistic")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "plane_ep.png"), dpi=120)
    plt.close(fig)


def run_one(args: argparse.Namespace, x0: Any, objective: str, slicing: str, q95: float):
    """Optimise the samples for one (objective, slicing); the run and its table row."""
    slices, resample = SLICINGS[slicing]
    t0 = time.perf_counter()
    run = optimise(x0, objective, slices, resample, args.steps, args.lr, args.seed)
    seconds = time.perf_counter() - t0
    others = run["final"][:, 2:]
    joint = (
        float(
            sigreg.henze_zirkler_test(
                run["final"], method="montecarlo", n_resamples=199, rng=args.seed
            ).pvalue
        )
        if args.n > args.dim
        else None
    )
    row = {
        "objective": objective,
        "slicing": slicing,
        "start": run["curve"][0][1],
        "end": run["curve"][-1][1],
        "unfolded_at": first_unfolded(run["curve"], q95),
        # the Gaussian coordinates must stay Gaussian (no collapse elsewhere)
        "other_dims_std": float(others.std(axis=0).mean()),
        "joint_pvalue": joint,
        "seconds": seconds,
    }
    return run, row


def print_table(results: dict[str, Any]) -> None:
    """The unfolding table, as Markdown."""
    q95 = results["null_q95"]
    print(
        f"\nnull 95% quantile of the in-plane statistic (N={results['settings']['n']}): {q95:.3f}\n"
    )
    print(
        "| objective | slicing | in-plane EP start → end | unfolded from step "
        "| std of other dims | joint HZ p-value |"
    )
    print("|---|---|---|---|---|---|")
    for r in results["rows"]:
        at = "never" if r["unfolded_at"] is None else str(r["unfolded_at"])
        print(
            f"| {r['objective']} | {r['slicing']} | {r['start']:.2f} → {r['end']:.3f} | {at} | "
            f"{r['other_dims_std']:.3f} | "
            + ("n/a (N ≤ D)" if r["joint_pvalue"] is None else f"{r['joint_pvalue']:.3f}")
            + " |"
        )
    print(f"\nwall time {results['wall_time']:.0f} s, git {results['git_sha']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=256, help="samples")
    parser.add_argument("--dim", type=int, default=512, help="dimension D")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=1.0, help="peak step (RMS sample move)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    sha = rundir.git_sha(ROOT)  # the code that runs, read before it runs
    start = time.perf_counter()
    q95 = null_quantile(args.n)
    x0 = x_samples(args.n, args.dim, args.seed)
    runs, rows = {}, []
    for objective in args.objectives.split(","):
        for slicing in SLICINGS:
            name = f"{objective} / {slicing}"
            runs[name], row = run_one(args, x0, objective, slicing, q95)
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
    plot(runs, q95, args.out)
    results = {
        "git_sha": sha,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "wall_time": time.perf_counter() - start,
        "null_q95": q95,
        "settings": vars(args),
        "rows": rows,
        "curves": {k: v["curve"] for k, v in runs.items()},
    }
    rundir.atomic_write_text(os.path.join(args.out, "results.json"), json.dumps(results, indent=1))
    print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
