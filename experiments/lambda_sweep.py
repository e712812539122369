"""λ stability, loss-predicts-quality and no-collapse at CPU scale (LeJEPA paper Table 1, §6.2).

Pretrains the torch trainer (``trainers.torch_ddp``) once per (λ, batch size) on a dataset
that ships offline, then measures every run by the same code:

* linear-probe top-1 of the frozen backbone (``trainers.core.probes``), k-NN accuracy and the
  effective rank from the run's own evaluation;
* the final training loss (mean over the last epoch's records) and its Spearman correlation
  with the probe accuracy across runs, raw and as ``loss / λ**α`` for α in [0, 1];
* the covariance spectra of the projector embeddings and backbone features of the test split
  (λ = 0, the prediction loss alone, is expected to collapse).

Runs whose run directory already holds a summary are reused, so an interrupted sweep
continues where it stopped. Results go to ``OUT/results.json``, ``OUT/spectra.png`` and
``OUT/rho_alpha.png``; the tables are printed as Markdown.

Usage::

    python experiments/lambda_sweep.py --out runs/lambda-sweep \
        [--lambdas 0,0.01,0.02,0.05,0.1,0.2] [--batch-sizes 64,128] \
        [--config trainers/configs/digits_demo.yaml] [section.option=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from trainers.core import rundir  # noqa: E402
from trainers.core.metrics import covariance_spectrum, effective_rank, read_metrics  # noqa: E402


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def train(run_dir: str, config: str, overrides: list[str], nproc: int) -> float:
    """Pretrain into ``run_dir`` unless it already holds a summary; return the wall time."""
    if os.path.exists(os.path.join(run_dir, "metrics.jsonl")) and any(
        r["kind"] == "summary" for r in read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    ):
        with open(os.path.join(run_dir, "sweep_time.json"), encoding="utf-8") as fh:
            return float(json.load(fh)["wall_time"])
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command = launcher + [
        "-m",
        "trainers.torch_ddp",
        "--config",
        config,
        "--resume",
        "auto",
        *overrides,
        f"run.dir={run_dir}",
        "run.progress=false",
    ]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    wall = time.perf_counter() - start
    rundir.atomic_write_text(
        os.path.join(run_dir, "sweep_time.json"), json.dumps({"wall_time": wall}) + "\n"
    )
    return wall


def measure(run_dir: str) -> dict[str, Any]:
    """Linear probe, spectra and the final training loss of a finished run."""
    import torch

    from trainers.core.config import load_config
    from trainers.core.datasets import load_configured
    from trainers.core.probes import configured_linear_eval
    from trainers.torch_ddp.checkpoint import load_checkpoint
    from trainers.torch_ddp.evaluation import backbone_features
    from trainers.torch_ddp.models import Projector

    state = load_checkpoint(rundir.latest_checkpoint(run_dir))
    cfg = load_config(None, base=state["config"])
    data = load_configured(cfg.data)
    device = torch.device("cpu")
    train_features, test_features = backbone_features(cfg, data, state["backbone"], device)
    probe = configured_linear_eval(cfg, data, train_features, test_features)
    projector = Projector(train_features.shape[1], cfg.model.projector_dims)
    projector.load_state_dict(state["projector"])
    with torch.no_grad():
        embeddings = projector.eval()(torch.from_numpy(test_features)).numpy()
    records = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    train_records = [r for r in records if r["kind"] == "train"]
    last_epoch = max(int(np.ceil(r["epoch"])) for r in train_records)
    final = [r for r in train_records if int(np.ceil(r["epoch"])) == last_epoch]
    summary = [r for r in records if r["kind"] == "summary"][-1]
    embedding_spectrum = covariance_spectrum(embeddings)
    feature_spectrum = covariance_spectrum(test_features)
    return {
        "lamb": cfg.loss.lamb,
        "batch_size": cfg.optim.batch_size,
        "epochs": cfg.optim.epochs,
        "final_loss": float(np.mean([r["loss"] for r in final])),
        "final_prediction": float(np.mean([r["prediction"] for r in final])),
        "final_sigreg": float(np.mean([r["sigreg"] for r in final])),
        "linear_acc": probe.accuracy,
        "knn_acc": summary.get("knn_acc"),
        "embedding_rank": effective_rank(embedding_spectrum),
        "feature_rank": effective_rank(feature_spectrum),
        "embedding_spectrum": embedding_spectrum.tolist(),
        "feature_spectrum": feature_spectrum.tolist(),
        "train_time": summary["train_time"],
    }


def spearman_vs_alpha(runs: list[dict[str, Any]], alphas: np.ndarray, key: str) -> np.ndarray:
    """Spearman ρ between ``-final_loss / λ**α`` and the accuracy ``key`` (λ > 0 runs)."""
    from scipy.stats import spearmanr

    kept = [r for r in runs if r["lamb"] > 0]
    loss = np.array([r["final_loss"] for r in kept])
    lamb = np.array([r["lamb"] for r in kept])
    acc = np.array([r[key] for r in kept])
    # lower loss should mean better features: report the correlation of -loss with accuracy
    return np.array([spearmanr(-loss / lamb**a, acc).statistic for a in alphas])


def plot(
    runs: list[dict[str, Any]], alphas: np.ndarray, rho: dict[str, np.ndarray], out: str
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    batch = max(r["batch_size"] for r in runs)
    for r in sorted((r for r in runs if r["batch_size"] == batch), key=lambda r: r["lamb"]):
        for ax, key in zip(axes, ("embedding_spectrum", "feature_spectrum"), strict=True):
            s = np.maximum(np.asarray(r[key]), 1e-12)
            ax.semilogy(np.arange(1, len(s) + 1), s, label=f"λ={r['lamb']:g}")
    axes[0].set_title(f"projector embeddings (batch {batch})")
    axes[1].set_title(f"backbone features (batch {batch})")
    for ax in axes:
        ax.set_xlabel("eigenvalue index")
        ax.set_ylabel("covariance eigenvalue")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "spectra.png"), dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, values in rho.items():
        ax.plot(alphas, values, marker="o", label=key)
    ax.set_xlabel("α")
    ax.set_ylabel("Spearman ρ(−loss/λ^α, accuracy)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "rho_alpha.png"), dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory of the runs and results")
    parser.add_argument("--config", default="trainers/configs/digits_demo.yaml")
    parser.add_argument("--lambdas", type=_floats, default=_floats("0,0.01,0.02,0.05,0.1,0.2"))
    parser.add_argument("--batch-sizes", type=_ints, default=_ints("64,128"))
    parser.add_argument("--nproc", type=int, default=1, help="training processes per run")
    parser.add_argument("overrides", nargs="*", help="section.option=value for every run")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    sha = rundir.git_sha(ROOT)  # the code that runs, read before it runs
    start = time.perf_counter()
    runs = []
    for batch in args.batch_sizes:
        for lamb in args.lambdas:
            run_dir = os.path.join(out, f"lamb{lamb:g}-batch{batch}")
            wall = train(
                run_dir,
                args.config,
                [*args.overrides, f"loss.lamb={lamb}", f"optim.batch_size={batch}"],
                args.nproc,
            )
            runs.append({**measure(run_dir), "wall_time": wall})
            r = runs[-1]
            print(
                f"λ={lamb:g} batch={batch}: linear {100 * r['linear_acc']:.2f}%  "
                f"loss {r['final_loss']:.4f}  rank {r['embedding_rank']:.1f}  {wall:.0f} s",
                flush=True,
            )
    alphas = np.linspace(0.0, 1.0, 11)
    rho = {key: spearman_vs_alpha(runs, alphas, key) for key in ("linear_acc", "knn_acc")}
    plot(runs, alphas, rho, out)
    results = {
        "git_sha": sha,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "wall_time": time.perf_counter() - start,
        "runs": runs,
        "alphas": alphas.tolist(),
        "spearman": {key: values.tolist() for key, values in rho.items()},
    }
    rundir.atomic_write_text(
        os.path.join(out, "results.json"), json.dumps(results, indent=1) + "\n"
    )
    print_tables(results, args.lambdas, args.batch_sizes)
    return 0


def print_tables(results: dict[str, Any], lambdas: list[float], batch_sizes: list[int]) -> None:
    """The sweep's accuracy table and its Spearman-vs-α table, as Markdown."""
    runs, alphas = results["runs"], results["alphas"]
    print("\nlinear / k-NN top-1 % (effective rank of backbone features / embeddings)")
    print("\n| λ | " + " | ".join(f"batch {b}" for b in batch_sizes) + " |")
    print("|---|" + "---|" * len(batch_sizes))
    for lamb in lambdas:
        cells = [
            f"{100 * r['linear_acc']:.2f} / {100 * r['knn_acc']:.2f}"
            f" (rank {r['feature_rank']:.1f} / {r['embedding_rank']:.1f})"
            for b in batch_sizes
            for r in runs
            if r["lamb"] == lamb and r["batch_size"] == b
        ]
        print(f"| {lamb:g} | " + " | ".join(cells) + " |")
    print("\n| α | " + " | ".join(f"{a:.1f}" for a in alphas) + " |")
    print("|---|" + "---|" * len(alphas))
    for key, values in results["spearman"].items():
        print(f"| ρ vs {key} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    print(f"\nwall time {results['wall_time']:.0f} s, git {results['git_sha']}")


if __name__ == "__main__":
    raise SystemExit(main())
