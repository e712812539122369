"""LeJEPA on Fashion-MNIST against its baselines, and the choice of statistic inside SIGReg.

Two studies on Fashion-MNIST (``data.name=fashion_mnist``: the Debian package
``dataset-fashion-mnist``; 60 000 training and 10 000 test images), both with the torch
trainer (``trainers.torch_ddp``) and ``trainers/configs/fashion_mnist.yaml``, at CPU scale:
a seeded subset of the training split (``data.train_size``) for pretraining and the probes,
the full 10 000-image test split for every accuracy.

``comparison``
    LeJEPA (``epps_pulley``) against raw pixels, the same backbone at random init and a
    supervised model of the same backbone (the upper bound), measured by the same code as
    ``experiments/in_domain.py``: linear probe, weighted k-NN (k = 20) and a 1 %-labels
    linear probe (1 % of the training subset, the same number of labels per class; mean ±
    std over ``--shot-seeds``), plus 10 labels per class.
``ablation``
    The per-slice statistic of SIGReg (``loss.statistic``: the six choices of
    :data:`STATISTICS`) at equal λ-tuning effort: every statistic is trained at every λ of
    ``--lambdas`` with seed 0; its λ with the best linear probe is kept (chosen on the test
    split, equally optimistic for every statistic); the ``--top`` statistics are then
    retrained at their λ with the seeds of ``--extra-seeds``. Each run reports the linear
    probe, the k-NN accuracy of its final evaluation, the final SIGReg value (normalised to
    the Epps-Pulley null mean, so comparable across statistics), the effective rank and the
    covariance spectrum of the projector embeddings; across all runs the Spearman
    correlation of the final training loss with the probe accuracy.

Runs whose directory already holds their result are reused, so an interrupted study
continues where it stopped. Results go to ``OUT/comparison.json`` / ``OUT/ablation.json``
and the plots ``OUT/comparison.png`` / ``OUT/ablation.png``; tables are printed as Markdown.

Usage::

    nice -n 19 python experiments/fashion.py comparison --out runs/fashion \
        [--train-size 20000] [--epochs 10] [--jobs 2] [section.option=value ...]
    nice -n 19 python experiments/fashion.py ablation --out runs/fashion \
        [--train-size 10000] [--epochs 5] [--lambdas 0.02,0.1] [--top 3] [--extra-seeds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from experiments import in_domain, lambda_sweep  # noqa: E402
from sigreg.loss_statistics import LOSS_STATISTICS  # noqa: E402
from trainers.core import rundir  # noqa: E402

CONFIG = "trainers/configs/fashion_mnist.yaml"
STATISTICS = LOSS_STATISTICS


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _scale(train_size: int, epochs: int) -> list[str]:
    """The overrides of one pretraining scale (model and loss come from the config)."""
    return [
        f"data.train_size={train_size}",
        f"optim.epochs={epochs}",
        f"optim.warmup_epochs={min(2, max(1, epochs // 5))}",
        f"eval.every_epochs={epochs}",
    ]


def _save(out: str, name: str, results: dict[str, Any]) -> None:
    rundir.atomic_write_text(os.path.join(out, name), json.dumps(results, indent=1) + "\n")


def comparison(args: argparse.Namespace) -> dict[str, Any]:
    """Train LeJEPA and the supervised model, then measure every method (see the module)."""
    out, arch = args.out, "smallcnn"
    overrides = [*_scale(args.train_size, args.epochs), f"model.backbone={arch}", *args.overrides]
    shots = (max(1, args.train_size // 100 // 10), 10)  # 1 % of the labels, per class; 10
    start, sha = time.perf_counter(), rundir.git_sha(ROOT)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        lejepa = pool.submit(
            lambda_sweep.train, os.path.join(out, f"{arch}-lejepa"), CONFIG, overrides, 1
        )
        supervised = pool.submit(
            in_domain.train_supervised, os.path.join(out, f"{arch}-supervised"), overrides, CONFIG
        )
        walls = {"lejepa": lejepa.result(), "supervised": supervised.result()}
    results = {
        "git_sha": sha,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "train_size": args.train_size,
        "epochs": {arch: args.epochs},
        "shots": list(shots),
        "overrides": overrides,
        "train_wall_time": {f"{arch}-{m}": w for m, w in walls.items()},
        "archs": {
            arch: in_domain.measure_arch(out, arch, overrides, args.shot_seeds, CONFIG, shots)
        },
        "raw_pixels": in_domain.measure_pixels(overrides, args.shot_seeds, CONFIG, shots),
    }
    results["wall_time"] = time.perf_counter() - start
    _save(out, "comparison.json", results)
    in_domain.plot(results, out, "Fashion-MNIST", shots, "comparison.png")
    in_domain.print_table(results, shots)
    results["raw_pixels_full"] = full_pixels(overrides, args.shot_seeds, results["raw_pixels"])
    _save(out, "comparison.json", results)
    return results


def full_pixels(overrides: list[str], seeds: list[int], subset: dict[str, Any]) -> dict[str, Any]:
    """The raw-pixel reference on all 60 000 training images (the usual protocol), with the
    probe's C fixed to the one cross-validated on the subset (one fit instead of nine)."""
    kept = [o for o in overrides if not o.startswith("data.train_size=")]
    kept.append(f"eval.linear_cs=[{subset['linear_c']:g}]")
    shots = (60, 10)  # 1 % of 60 000 labels, per class; 10
    result = in_domain.measure_pixels(kept, seeds, CONFIG, shots)
    print(f"| — | raw pixels, all 60 000 training images | {in_domain._row(result, shots)} |")
    return result


def _ablation_run(args: argparse.Namespace, statistic: str, lamb: float, seed: int):
    """Train (or reuse) one ablation run; its measurements with the run's identity."""
    name = f"{statistic}-lam{lamb:g}-seed{seed}"
    run_dir = os.path.join(args.out, "ablation", name)
    overrides = [*_scale(args.train_size, args.epochs), *args.overrides]
    overrides += [f"loss.lamb={lamb:g}", f"run.seed={seed}"]
    if statistic != "epps_pulley":  # the default: runs of it need no newer option
        overrides.append(f"loss.statistic={statistic}")
    wall = lambda_sweep.train(run_dir, CONFIG, overrides, nproc=1)
    cached = os.path.join(run_dir, "measured.json")  # measuring a run costs minutes
    if os.path.exists(cached):
        with open(cached, encoding="utf-8") as fh:
            result = json.load(fh)
    else:
        result = lambda_sweep.measure(run_dir)
        result.update(statistic=statistic, seed=seed, name=name, wall_time=wall)
        _save(run_dir, "measured.json", result)
    print(
        f"{name}: linear {100 * result['linear_acc']:.2f} %, k-NN "
        f"{100 * result['knn_acc']:.2f} %, final SIGReg {result['final_sigreg']:.3f}",
        flush=True,
    )
    return result


def _run_all(args: argparse.Namespace, grid: list[tuple[str, float, int]]) -> list[dict]:
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        return list(pool.map(lambda g: _ablation_run(args, *g), grid))


def ablation(args: argparse.Namespace) -> dict[str, Any]:
    """The statistic ablation (see the module docstring)."""
    start, sha = time.perf_counter(), rundir.git_sha(ROOT)
    runs = _run_all(args, [(s, lamb, 0) for s in args.statistics for lamb in args.lambdas])
    best = {
        s: max((r for r in runs if r["statistic"] == s), key=lambda r: r["linear_acc"])["lamb"]
        for s in args.statistics
    }
    ranked = sorted(args.statistics, key=lambda s: -_best_run(runs, s, best[s])["linear_acc"])
    top = ranked[: args.top]
    runs += _run_all(args, [(s, best[s], seed) for s in top for seed in args.extra_seeds])
    results = {
        "git_sha": sha,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "train_size": args.train_size,
        "epochs": args.epochs,
        "lambdas": args.lambdas,
        "best_lambda": best,
        "top": top,
        "runs": runs,
        "spearman": _spearman(runs),
        "wall_time": time.perf_counter() - start,
    }
    _save(args.out, "ablation.json", results)
    _plot_ablation(results, args.out)
    _print_ablation(results)
    return results


def _best_run(runs: list[dict], statistic: str, lamb: float) -> dict:
    return next(r for r in runs if (r["statistic"], r["lamb"], r["seed"]) == (statistic, lamb, 0))


def _spearman(runs: list[dict]) -> dict[str, float]:
    """Spearman ρ of −(final loss) with the accuracies, over every run."""
    from scipy.stats import spearmanr

    loss = -np.array([r["final_loss"] for r in runs])
    return {
        key: float(spearmanr(loss, [r[key] for r in runs]).statistic)
        for key in ("linear_acc", "knn_acc")
    }


def _print_ablation(results: dict[str, Any]) -> None:
    print(
        "\n| statistic | λ | seeds | linear top-1 (%) | k-NN top-1 (%) | final SIGReg | "
        "embedding eff. rank |"
    )
    print("|---|---|---|---|---|---|---|")
    for s, lamb in results["best_lambda"].items():
        rows = [r for r in results["runs"] if r["statistic"] == s and r["lamb"] == lamb]

        def stat(key: str, scale: float = 1.0, rows: list = rows) -> str:
            v = scale * np.array([r[key] for r in rows])
            return f"{v.mean():.2f}" + (f" ± {v.std(ddof=1):.2f}" if len(v) > 1 else "")

        print(
            f"| {s} | {lamb:g} | {len(rows)} | {stat('linear_acc', 100)} | "
            f"{stat('knn_acc', 100)} | {stat('final_sigreg')} | {stat('embedding_rank')} |"
        )
    print("\nall runs (λ grid, seed 0 unless noted):")
    for r in results["runs"]:
        print(
            f"  {r['name']}: linear {100 * r['linear_acc']:.2f}, k-NN {100 * r['knn_acc']:.2f},"
            f" final loss {r['final_loss']:.4f}, SIGReg {r['final_sigreg']:.3f}"
        )
    rho = results["spearman"]
    print(
        f"\nSpearman ρ(−final loss, linear) = {rho['linear_acc']:.3f}, "
        f"(−final loss, k-NN) = {rho['knn_acc']:.3f} over {len(results['runs'])} runs"
    )
    print(f"wall time {results['wall_time']:.0f} s, git {results['git_sha']}")


def _plot_ablation(results: dict[str, Any], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    best = results["best_lambda"]
    for s, lamb in best.items():
        r = _best_run(results["runs"], s, lamb)
        spectrum = np.maximum(np.asarray(r["embedding_spectrum"]), 1e-12)
        axes[0].semilogy(np.arange(1, len(spectrum) + 1), spectrum, label=f"{s} (λ={lamb:g})")
    axes[0].set(
        title="projector embeddings, seed 0",
        xlabel="eigenvalue index",
        ylabel="covariance eigenvalue",
    )
    names = list(best)
    for i, s in enumerate(names):
        accs = [
            100 * r["linear_acc"]
            for r in results["runs"]
            if r["statistic"] == s and r["lamb"] == best[s]
        ]
        axes[1].bar(i, np.mean(accs), yerr=np.std(accs) if len(accs) > 1 else 0.0)
    axes[1].set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    axes[1].set(title="linear probe at each statistic's best λ", ylabel="test top-1 (%)")
    low = min(100 * r["linear_acc"] for r in results["runs"])
    axes[1].set_ylim(max(0.0, low - 3), None)
    for s in names:
        rs = [r for r in results["runs"] if r["statistic"] == s]
        axes[2].scatter(
            [r["final_loss"] for r in rs], [100 * r["linear_acc"] for r in rs], label=s, s=18
        )
    axes[2].set(
        title=f"Spearman ρ = {results['spearman']['linear_acc']:.2f} (all runs)",
        xlabel="final training loss",
        ylabel="linear probe top-1 (%)",
    )
    for ax in axes[0], axes[2]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "ablation.png"), dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", choices=("comparison", "ablation"))
    parser.add_argument("--out", required=True, help="directory of the runs and results")
    parser.add_argument("--train-size", type=int, help="training images (default 20000 / 10000)")
    parser.add_argument("--epochs", type=int, help="pretraining epochs (default 10 / 5)")
    parser.add_argument("--jobs", type=int, default=2, help="training runs at a time")
    parser.add_argument("--shot-seeds", type=in_domain._ints, default=in_domain._ints("0,1,2"))
    parser.add_argument("--statistics", type=lambda t: t.split(","), default=list(STATISTICS))
    parser.add_argument("--lambdas", type=_floats, default=_floats("0.02,0.1"))
    parser.add_argument("--top", type=int, default=3, help="statistics retrained with more seeds")
    parser.add_argument("--extra-seeds", type=in_domain._ints, default=in_domain._ints("1"))
    parser.add_argument("overrides", nargs="*", help="section.option=value for every run")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.statistics) - set(STATISTICS))
    if unknown:
        parser.error(f"--statistics: unknown {unknown}; choose from {', '.join(STATISTICS)}")
    comparing = args.study == "comparison"
    args.train_size = args.train_size or (20000 if comparing else 10000)
    args.epochs = args.epochs or (10 if comparing else 5)
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    (comparison if comparing else ablation)(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
