"""Linear evaluation of a checkpoint's frozen backbone, and of the baselines, by the same code.

Usage::

    python -m trainers.eval_linear CHECKPOINT_OR_RUN_DIR [--baseline B ...] [key=value ...]
    python -m trainers.eval_linear --baseline random-init|raw-pixels [--config run.yaml] \
        [key=value ...]

Every method is measured by :func:`trainers.core.probes.linear_eval` (standardised features,
logistic regression with its L2 strength cross-validated on the training split, top-1 on
the test split) on the same split of the same dataset:

* the checkpoint: backbone features of the whole image resized to the global view size
  (the evaluation view), with the checkpoint's configuration (overrides apply on top);
* ``random-init``: the same backbone with the run's initial weights (seeded by
  ``run.seed``, exactly as the trainer initialises it), untrained;
* ``raw-pixels``: the images' pixels at their native resolution.

Prints one line per method and, with ``--json PATH``, writes the results as a JSON list.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
import torch

from trainers.core import rundir
from trainers.core.config import TrainConfig, config_parser, load_config
from trainers.core.datasets import ImageDataset, load_configured
from trainers.core.probes import configured_linear_eval
from trainers.distributed import DistEnv, pick_device
from trainers.torch_ddp.checkpoint import load_checkpoint
from trainers.torch_ddp.features import extract
from trainers.torch_ddp.models import initial_backbone
from trainers.torch_ddp.trainer import configure_torch
from trainers.torch_ddp.views import MultiCrop

__all__ = ["BASELINES", "backbone_features", "evaluate", "main"]

BASELINES = ("random-init", "raw-pixels")
_LABELS = {
    "checkpoint": "LeJEPA backbone",
    "random-init": "random-init backbone",
    "raw-pixels": "raw pixels",
}


def backbone_features(
    cfg: TrainConfig, data: ImageDataset, state: dict[str, Any] | None, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test features of the configured backbone on the evaluation view.

    Parameters
    ----------
    cfg : TrainConfig
        Backbone, view size, seed and eval batch size.
    data : ImageDataset
        The dataset (its channel statistics normalise the views).
    state : dict, optional
        Backbone ``state_dict``; ``None`` keeps the initial weights of ``run.seed``.
    device : torch.device

    Returns
    -------
    train, test : numpy.ndarray
        ``(N, F)`` float32 features.
    """
    backbone = initial_backbone(cfg, data.channels)  # the trainer's initialisation
    if state is not None:
        backbone.load_state_dict(state)
    backbone = backbone.to(device).eval()
    mean, std = data.channel_stats()
    view = MultiCrop(cfg.views, cfg.augment, mean=mean, std=std).eval_view
    env = DistEnv(0, 1, 0, device)

    def features(images: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(images).to(device)
        return (
            extract(lambda b: backbone(view(b)), tensor, batch_size=cfg.eval.batch_size, env=env)
            .cpu()
            .numpy()
        )

    return features(data.train_images), features(data.test_images)


def evaluate(
    cfg: TrainConfig,
    method: str,
    state: dict[str, Any] | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Linear-evaluation top-1 of one method.

    Parameters
    ----------
    cfg : TrainConfig
        Configuration (data, model, views, eval, run.seed).
    method : str
        ``"checkpoint"`` (needs ``state``), ``"random-init"`` or ``"raw-pixels"``.
    state : dict, optional
        The backbone ``state_dict`` for ``"checkpoint"``.
    device : torch.device, optional
        Default: from ``run.device``.

    Returns
    -------
    dict
        ``method``, ``accuracy``, ``c`` (chosen L2 strength), ``cv_accuracy``, ``features``
        (feature dimension).

    Raises
    ------
    ValueError
        Unlabelled data, or an unknown method.
    """
    data = load_configured(cfg.data)
    if not data.labelled:
        raise ValueError(f"linear evaluation needs labels; {cfg.data.name!r} has none")
    if method == "raw-pixels":
        train = data.train_images.reshape(len(data.train_images), -1)
        test = data.test_images.reshape(len(data.test_images), -1)
    elif method in ("checkpoint", "random-init"):
        if (method == "checkpoint") != (state is not None):
            raise ValueError("a backbone state is needed for, and only for, 'checkpoint'")
        device = device if device is not None else pick_device(cfg.run.device)
        train, test = backbone_features(cfg, data, state, device)
    else:
        raise ValueError(f"method must be 'checkpoint' or one of {BASELINES}, got {method!r}")
    result = configured_linear_eval(cfg, data, train, test)
    return {
        "method": method,
        "accuracy": result.accuracy,
        "c": result.c,
        "cv_accuracy": result.cv_accuracy,
        "features": int(train.shape[1]),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0, or 2 for bad arguments)."""
    parser = config_parser(
        "python -m trainers.eval_linear",
        __doc__.split("\n\n")[0] + " CHECKPOINT_OR_RUN_DIR is a checkpoint file or a run "
        "directory (its latest checkpoint), whose configuration is used with the overrides "
        "applied on top; without it, the configuration comes from --config and the overrides.",
    )
    parser.usage = (
        "python -m trainers.eval_linear [CHECKPOINT_OR_RUN_DIR] "
        "[--baseline {random-init,raw-pixels}] [--config FILE] [--json PATH] "
        "[section.option=value ...]"
    )
    parser.add_argument(
        "--baseline",
        action="append",
        choices=BASELINES,
        default=[],
        help="also (or only) evaluate this baseline; repeatable",
    )
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    args = parser.parse_intermixed_args(argv)
    targets = [a for a in args.overrides if "=" not in a]
    overrides = [a for a in args.overrides if "=" in a]
    if len(targets) > 1:
        parser.error(f"at most one checkpoint, got {targets}")
    if not targets and not args.baseline:
        parser.error("give a checkpoint (or run directory), a --baseline, or both")
    state, path = None, None
    try:
        if targets:
            if args.config:
                raise ValueError(
                    "--config cannot be combined with a checkpoint (its "
                    "configuration is used; overrides still apply)"
                )
            path = targets[0]
            if os.path.isdir(path):
                path = rundir.latest_checkpoint(path)
                if path is None:
                    raise ValueError(f"{targets[0]!r} holds no checkpoint")
            if not os.path.isfile(path):
                raise ValueError(f"{path!r}: no such checkpoint")
            state = load_checkpoint(path)
        cfg = load_config(args.config, overrides, base=state["config"] if state else None)
    except (OSError, TypeError, ValueError) as exc:
        parser.error(str(exc))
    configure_torch(cfg)
    results = []
    for method in (["checkpoint"] if state is not None else []) + args.baseline:
        try:
            result = evaluate(cfg, method, state["backbone"] if method == "checkpoint" else None)
        except ValueError as exc:
            parser.error(str(exc))
        if method == "checkpoint":
            result["checkpoint"] = path
        results.append(result)
        print(
            f"{_LABELS[method]:>20}: linear-probe top-1 {100 * result['accuracy']:.2f}% "
            f"({result['features']} features, C={result['c']:g})",
            flush=True,
        )
    if args.json:
        rundir.atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
