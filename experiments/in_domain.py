"""In-domain pretraining against the baselines at CPU scale on MNIST (LeJEPA paper §6.3).

For every architecture (the built-in ``smallcnn`` and timm's ``resnet18``, random init),
on a seeded subset of the MNIST training split (``data.train_size``):

* LeJEPA pretraining with the torch trainer (``trainers.torch_ddp``);
* a supervised model of the same architecture (``trainers.supervised``: backbone + linear
  head, cross-entropy on one augmented global view, same data, optimiser and epochs) — the
  upper bound;
* the same backbone at random init (the trainer's initial weights of ``run.seed``);
* raw pixels (784-d, architecture-free, reported once).

Every method is measured by the same code on the frozen features of the evaluation view
(``trainers.torch_ddp.evaluation.backbone_features``): linear-probe top-1
(``trainers.core.probes.linear_eval``, trained on the labels of the whole training subset),
weighted k-NN top-1 with k = 20 (``trainers.core.metrics.knn_accuracy``) and few-shot linear
probes with 10 and 100 labels per class drawn from the subset (``few_shot_eval``, mean ± std
over the seeds ``--shot-seeds``), all on the 10 000-image MNIST test split.

Scale and budget: the defaults (5000 training images, views 2 x 28 px global + 4 x 14 px
local, smallcnn 20 epochs, resnet18 6 epochs — reduced because it trains ≈ 3x slower, batch
128) take about 30-40 minutes with ``--jobs 2`` (two training runs at a time, one thread
each) on 2 shared CPU cores. Runs whose directory already holds their result are reused, so
an interrupted experiment continues where it stopped. Results go to ``OUT/results.json`` and
``OUT/in_domain.png``; the table is printed as Markdown.

Usage::

    nice -n 19 python experiments/in_domain.py --out runs/in-domain \
        [--archs smallcnn,resnet18] [--train-size 5000] [--epochs smallcnn=20,resnet18=6] \
        [--jobs 2] [--shot-seeds 0,1,2] [section.option=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from experiments.lambda_sweep import train as train_lejepa  # noqa: E402
from trainers.core import rundir  # noqa: E402

CONFIG = "trainers/configs/digits_demo.yaml"
# MNIST at its native 28 px: global views at full size, local views at half size
SCALE = [
    "data.name=mnist",
    "views.global_size=28",
    "views.local_size=14",
    "run.device=cpu",
    "run.threads=1",
]
SHOTS = (10, 100)
METHODS = ("lejepa", "supervised", "random-init")
LABELS = {
    "lejepa": "LeJEPA",
    "supervised": "supervised (upper bound)",
    "random-init": "random init",
    "raw-pixels": "raw pixels",
}


def _epochs(text: str) -> dict[str, int]:
    pairs = (item.split("=") for item in text.split(",") if item.strip())
    return {name.strip(): int(value) for name, value in pairs}


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def train_supervised(run_dir: str, overrides: list[str], config: str = CONFIG) -> float:
    """Train the supervised baseline into ``run_dir`` unless it is there; the wall time."""
    timing = os.path.join(run_dir, "supervised_time.json")
    if os.path.exists(timing):
        with open(timing, encoding="utf-8") as fh:
            return float(json.load(fh)["wall_time"])
    command = [sys.executable, "-m", "trainers.supervised", "--config", config]
    start = time.perf_counter()
    subprocess.run([*command, *overrides, f"run.dir={run_dir}"], cwd=ROOT, check=True)
    wall = time.perf_counter() - start
    rundir.atomic_write_text(timing, json.dumps({"wall_time": wall}) + "\n")
    return wall


def measure(
    features: tuple[np.ndarray, np.ndarray],
    data: Any,
    cfg: Any,
    seeds: list[int],
    shots: tuple[int, ...] = SHOTS,
):
    """Linear-probe, k-NN and few-shot (``shots`` labels per class) top-1 of one set of
    frozen features."""
    from trainers.core.metrics import knn_accuracy
    from trainers.core.probes import few_shot_eval, linear_eval

    train, test = features
    probe = {"cs": cfg.eval.linear_cs, "folds": cfg.eval.linear_folds}
    linear = linear_eval(train, data.train_labels, test, data.test_labels, seed=0, **probe)
    result = {
        "features": int(train.shape[1]),
        "linear": linear.accuracy,
        "linear_c": linear.c,
        "knn": knn_accuracy(
            train,
            data.train_labels,
            test,
            data.test_labels,
            num_classes=data.num_classes,
            k=cfg.eval.knn_k,
            temperature=cfg.eval.knn_temperature,
        ),
    }
    for n in shots:
        few = few_shot_eval(
            train, data.train_labels, test, data.test_labels, shots=n, seeds=seeds, **probe
        )
        result[f"shot{n}"] = {"mean": few.mean, "std": few.std, "runs": list(few.accuracies)}
    return result


def measure_arch(
    out: str,
    arch: str,
    overrides: list[str],
    seeds: list[int],
    config: str = CONFIG,
    shots: tuple[int, ...] = SHOTS,
) -> dict[str, Any]:
    """Every method of one architecture, measured on the same data by the same code."""
    import torch

    from trainers.core.config import load_config
    from trainers.core.datasets import load_configured
    from trainers.supervised import CHECKPOINT_NAME
    from trainers.torch_ddp.checkpoint import load_checkpoint
    from trainers.torch_ddp.evaluation import backbone_features

    cfg = load_config(os.path.join(ROOT, config), overrides)
    data = load_configured(cfg.data)
    states = {
        "lejepa": load_checkpoint(rundir.latest_checkpoint(os.path.join(out, f"{arch}-lejepa"))),
        "supervised": load_checkpoint(os.path.join(out, f"{arch}-supervised", CHECKPOINT_NAME)),
        "random-init": None,
    }
    results = {}
    for method in METHODS:
        state = states[method]
        features = backbone_features(
            cfg, data, None if state is None else state["backbone"], torch.device("cpu")
        )
        results[method] = measure(features, data, cfg, seeds, shots)
        print(f"{arch} {method}: {_row(results[method], shots)}", flush=True)
    return results


def measure_pixels(
    overrides: list[str], seeds: list[int], config: str = CONFIG, shots: tuple[int, ...] = SHOTS
) -> dict[str, Any]:
    """The raw-pixel baseline (784 features of the 28x28 images)."""
    from trainers.core.config import load_config
    from trainers.core.datasets import load_configured

    cfg = load_config(os.path.join(ROOT, config), overrides)
    data = load_configured(cfg.data)

    def flat(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1)

    return measure((flat(data.train_images), flat(data.test_images)), data, cfg, seeds, shots)


def _row(r: dict[str, Any], shots: tuple[int, ...] = SHOTS) -> str:
    few = " | ".join(
        f"{100 * r[f'shot{s}']['mean']:.2f} ± {100 * r[f'shot{s}']['std']:.2f}" for s in shots
    )
    return f"{100 * r['linear']:.2f} | {100 * r['knn']:.2f} | {few}"


def plot(
    results: dict[str, Any],
    out: str,
    dataset: str = "MNIST",
    shots: tuple[int, ...] = SHOTS,
    filename: str = "in_domain.png",
) -> None:
    """Bars of every method's probe accuracies per backbone into ``out/filename``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("linear", "linear probe"), ("knn", "k-NN (k=20)")]
    metrics += [(f"shot{s}", f"{s} labels/class") for s in shots]
    archs = list(results["archs"])
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.6), sharey=True)
    width = 0.8 / (len(METHODS) + 1)
    for ax, (key, title) in zip(axes, metrics, strict=True):
        for i, method in enumerate((*METHODS, "raw-pixels")):
            rows = [
                results["raw_pixels"] if method == "raw-pixels" else results["archs"][a][method]
                for a in archs
            ]
            values = [r[key]["mean"] if isinstance(r[key], dict) else r[key] for r in rows]
            errors = [r[key]["std"] if isinstance(r[key], dict) else 0.0 for r in rows]
            ax.bar(
                np.arange(len(archs)) + (i - 1.5) * width,
                100 * np.asarray(values),
                width,
                yerr=100 * np.asarray(errors),
                label=LABELS[method],
            )
        ax.set_xticks(np.arange(len(archs)), archs)
        ax.set_title(title)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"{dataset} test top-1 (%)")
    axes[-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(out, filename), dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory of the runs and results")
    parser.add_argument("--archs", default="smallcnn,resnet18", help="comma-separated backbones")
    parser.add_argument("--train-size", type=int, default=5000, help="MNIST training images")
    parser.add_argument("--epochs", type=_epochs, default=_epochs("smallcnn=20,resnet18=6"))
    parser.add_argument("--jobs", type=int, default=2, help="training runs at a time")
    parser.add_argument("--shot-seeds", type=_ints, default=_ints("0,1,2"))
    parser.add_argument("overrides", nargs="*", help="section.option=value for every run")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    archs = [a for a in args.archs.split(",") if a]
    missing = [a for a in archs if a not in args.epochs]
    if missing:
        parser.error(f"--epochs gives no epochs for {missing}")
    start, sha = time.perf_counter(), rundir.git_sha(ROOT)  # the code that trains
    common = [*SCALE, f"data.train_size={args.train_size}", *args.overrides]
    arch_overrides = {
        a: [
            *common,
            f"model.backbone={a}",
            f"optim.epochs={args.epochs[a]}",
            f"optim.warmup_epochs={min(2, max(1, args.epochs[a] // 5))}",
            f"eval.every_epochs={args.epochs[a]}",
        ]
        for a in archs
    }
    jobs = [(a, "lejepa") for a in archs] + [(a, "supervised") for a in archs]

    def run(job: tuple[str, str]) -> float:
        arch, method = job
        run_dir = os.path.join(out, f"{arch}-{method}")
        if method == "lejepa":
            return train_lejepa(run_dir, CONFIG, arch_overrides[arch], nproc=1)
        return train_supervised(run_dir, arch_overrides[arch])

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        walls = dict(zip(jobs, pool.map(run, jobs), strict=True))
    for (arch, method), wall in walls.items():
        print(f"trained {arch} {method} in {wall:.0f} s", flush=True)
    results: dict[str, Any] = {
        "git_sha": sha,
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "train_size": args.train_size,
        "epochs": {a: args.epochs[a] for a in archs},
        "overrides": arch_overrides,
        "train_wall_time": {f"{a}-{m}": w for (a, m), w in walls.items()},
        "archs": {a: measure_arch(out, a, arch_overrides[a], args.shot_seeds) for a in archs},
        "raw_pixels": measure_pixels(common, args.shot_seeds),
    }
    results["wall_time"] = time.perf_counter() - start
    rundir.atomic_write_text(
        os.path.join(out, "results.json"), json.dumps(results, indent=1) + "\n"
    )
    plot(results, out)
    print_table(results)
    return 0


def print_table(results: dict[str, Any], shots: tuple[int, ...] = SHOTS) -> None:
    """Every method's probe accuracies per backbone, as Markdown."""
    print(
        "\n| backbone | features | linear top-1 (%) | k-NN top-1 (%) | "
        + " | ".join(f"{s} labels/class (%)" for s in shots)
        + " |"
    )
    print("|---|---|---|---|" + "---|" * len(shots))
    for arch, methods in results["archs"].items():
        for method in METHODS:
            print(f"| {arch} | {LABELS[method]} | {_row(methods[method], shots)} |")
    print(f"| — | raw pixels (784-d) | {_row(results['raw_pixels'], shots)} |")
    print(f"\nwall time {results['wall_time']:.0f} s, git {results['git_sha']}")


if __name__ == "__main__":
    raise SystemExit(main())
