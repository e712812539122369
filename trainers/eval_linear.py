"""Linear evaluation of a checkpoint's frozen backbone, and of the baselines, by the same code.

Usage::

    python -m trainers.eval_linear CHECKPOINT_OR_RUN_DIR [--baseline B ...] [key=value ...]
    python -m trainers.eval_linear --baseline random-init|raw-pixels [--config run.yaml] \
        [--trainer T] [key=value ...]

Works on the runs of every trainer: the checkpoint's file format (``.pt``: torch_ddp,
``.msgpack``: jax_pmap, ``.npz``: cupy_nccl) picks the trainer package whose ``evaluation``
module computes the features, and only that framework is imported. Every method is measured
by :func:`trainers.core.probes.linear_eval` (standardised features, logistic regression
with its L2 strength cross-validated on the training split, top-1 on the test split) on the
same split of the same dataset:

* the checkpoint: backbone features of the evaluation view (the whole image resized to the
  global view size; the MLP trainer: encoder features of the flat inputs), with the
  checkpoint's configuration (overrides apply on top);
* ``random-init``: the same network with the run's initial weights (seeded by ``run.seed``,
  exactly as the trainer initialises it), untrained;
* ``raw-pixels``: the images' pixels at their native resolution (the MLP trainer: its
  standardised flat inputs).

Prints one line per method and, with ``--json PATH``, writes the results as a JSON list;
``--save-features PATH`` writes the checkpoint's features of both splits and their labels to
an npz file (``features``, ``labels``, ``split`` 0 train / 1 test), usable as
``data.name=npz:PATH``. A run directory is evaluated at its newest checkpoint that loads.
``imagefolder:`` and ``shards:`` sources are streamed (:func:`trainers.core.stream.map_images`,
with the ``data`` stream options): features are held, images are not (the ``raw-pixels``
baseline's features are the decoded pixels).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from types import ModuleType
from typing import Any

import numpy as np

from trainers.core import rundir
from trainers.core.checkpoints import (
    FORMATS,
    CheckpointError,
    format_of,
    newest_readable,
    read_checkpoint,
)
from trainers.core.config import TrainConfig, config_parser, load_config
from trainers.core.probes import configured_linear_eval

__all__ = ["BASELINES", "TRAINERS", "evaluate", "evaluation_module", "main", "open_checkpoint"]

BASELINES = ("random-init", "raw-pixels")
TRAINERS = tuple(FORMATS.values())
_LABELS = {
    "checkpoint": "LeJEPA backbone",
    "random-init": "random-init backbone",
    "raw-pixels": "raw pixels",
}


def evaluation_module(trainer: str) -> ModuleType:
    """``trainers.<trainer>.evaluation``, imported on demand so that only the framework of
    the evaluated trainer is loaded."""
    if trainer not in TRAINERS:
        raise ValueError(f"trainer must be one of {list(TRAINERS)}, got {trainer!r}")
    return importlib.import_module(f"trainers.{trainer}.evaluation")


def open_checkpoint(target: str) -> tuple[str, str, Any, Any]:
    """The checkpoint of ``target`` (a file, or a run directory's newest readable one).

    Returns
    -------
    path, trainer, position, state
        The file, the trainer that wrote it, its
        :class:`trainers.core.checkpoints.RunPosition` and framework state.

    Raises
    ------
    ValueError
        No such file or checkpoint, checkpoints of several trainers in one directory, or
        a file that does not read (:class:`trainers.core.checkpoints.CheckpointError`).
    """
    if not os.path.isdir(target):
        if not os.path.isfile(target):
            raise ValueError(f"{target!r}: no such checkpoint")
        trainer = format_of(target)
        return (target, trainer, *read_checkpoint(evaluation_module(trainer).FORMAT, target))
    present = [t for ext, t in FORMATS.items() if rundir.list_checkpoints(target, ext)]
    if not present:
        raise ValueError(f"{target!r} holds no checkpoint")
    if len(present) > 1:
        raise ValueError(f"{target!r} holds checkpoints of several trainers ({present})")
    found = newest_readable(evaluation_module(present[0]).FORMAT, target)
    if found is None:
        raise CheckpointError(f"{target!r}: no checkpoint that reads")
    path, position, state = found
    return path, present[0], position, state


def evaluate(
    cfg: TrainConfig, method: str, trainer: str, data: Any, state: Any = None
) -> dict[str, Any]:
    """Linear-evaluation top-1 of one method.

    Parameters
    ----------
    cfg : TrainConfig
        Configuration (data, model, views, eval, run.seed).
    method : str
        ``"checkpoint"`` (needs ``state``), ``"random-init"`` or ``"raw-pixels"``.
    trainer : str
        One of :data:`TRAINERS`: whose network and dataset form the features.
    data : dataset
        ``evaluation_module(trainer).load_data(cfg)``.
    state : optional
        The checkpoint's framework state for ``"checkpoint"``.

    Returns
    -------
    dict
        ``method``, ``accuracy``, ``c`` (chosen L2 strength), ``cv_accuracy``, ``features``
        (feature dimension), and for ``"checkpoint"`` the features themselves
        (``train_features``, ``test_features``, not JSON).

    Raises
    ------
    ValueError
        An unknown method, or a state given for a baseline.
    """
    module = evaluation_module(trainer)
    if method == "raw-pixels":
        train, test = module.raw_inputs(cfg, data)
    elif method in ("checkpoint", "random-init"):
        if (method == "checkpoint") != (state is not None):
            raise ValueError("a checkpoint state is needed for, and only for, 'checkpoint'")
        train, test = module.checkpoint_features(cfg, data, state)
    else:
        raise ValueError(f"method must be 'checkpoint' or one of {BASELINES}, got {method!r}")
    result = configured_linear_eval(cfg, data, train, test)
    return {
        "method": method,
        "accuracy": result.accuracy,
        "c": result.c,
        "cv_accuracy": result.cv_accuracy,
        "features": int(train.shape[1]),
        "train_features": train,
        "test_features": test,
    }


def _parser() -> argparse.ArgumentParser:
    parser = config_parser(
        "python -m trainers.eval_linear",
        __doc__.split("\n\n")[0] + " CHECKPOINT_OR_RUN_DIR is a checkpoint file or a run "
        "directory (its newest checkpoint that loads), of any trainer, whose configuration is "
        "used with the overrides applied on top; without it, the configuration comes from "
        "--config and the overrides.",
    )
    parser.usage = (
        "python -m trainers.eval_linear [CHECKPOINT_OR_RUN_DIR] "
        "[--baseline {random-init,raw-pixels}] [--config FILE] [--trainer T] [--json PATH] "
        "[--save-features PATH] [section.option=value ...]"
    )
    parser.add_argument(
        "--baseline",
        action="append",
        choices=BASELINES,
        default=[],
        help="also (or only) evaluate this baseline; repeatable",
    )
    parser.add_argument(
        "--trainer",
        choices=TRAINERS,
        help="whose network the baselines use without a checkpoint (default: cupy_nccl for "
        "model.backbone=mlp, else torch_ddp)",
    )
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    parser.add_argument(
        "--save-features", metavar="PATH", help="write the checkpoint's features (npz)"
    )
    return parser


def _resolve(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """The checkpoint (or None), trainer and configuration of the command line."""
    targets = [a for a in args.overrides if "=" not in a]
    overrides = [a for a in args.overrides if "=" in a]
    if len(targets) > 1:
        parser.error(f"at most one checkpoint, got {targets}")
    if not targets and not args.baseline:
        parser.error("give a checkpoint (or run directory), a --baseline, or both")
    if targets and args.config:
        parser.error(
            "--config cannot be combined with a checkpoint (its configuration is used; "
            "overrides still apply)"
        )
    checkpoint = open_checkpoint(targets[0]) if targets else None
    base = checkpoint[2].config if checkpoint else None
    cfg = load_config(args.config, overrides, base=base)
    trainer = checkpoint[1] if checkpoint else args.trainer
    if checkpoint and args.trainer not in (None, trainer):
        raise ValueError(f"{checkpoint[0]} was written by {trainer}, not --trainer {args.trainer}")
    if trainer is None:
        trainer = "cupy_nccl" if cfg.model.backbone == "mlp" else "torch_ddp"
    return checkpoint, trainer, cfg


def _save_features(path: str, result: dict[str, Any], data: Any) -> None:
    train, test = result["train_features"], result["test_features"]
    split = np.concatenate([np.zeros(len(train), np.int64), np.ones(len(test), np.int64)])
    labels = np.concatenate([data.train_labels, data.test_labels])
    features = np.concatenate([train, test])
    rundir.atomic_write(
        path, lambda fh: np.savez(fh, features=features, labels=labels, split=split)
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0, or 2 for bad arguments, an
    unreadable checkpoint or unlabelled data, reported in one line)."""
    parser = _parser()
    args = parser.parse_intermixed_args(argv)
    try:
        checkpoint, trainer, cfg = _resolve(args, parser)
        data = evaluation_module(trainer).load_data(cfg)
        if data.train_labels is None:
            raise ValueError(f"linear evaluation needs labels; {cfg.data.name!r} has none")
        methods = (["checkpoint"] if checkpoint else []) + args.baseline
        results = []
        for method in methods:
            state = checkpoint[3] if method == "checkpoint" else None
            result = evaluate(cfg, method, trainer, data, state)
            if method == "checkpoint":
                result["checkpoint"] = checkpoint[0]
                if args.save_features:
                    _save_features(args.save_features, result, data)
            results.append({k: v for k, v in result.items() if not k.endswith("_features")})
            print(
                f"{_LABELS[method]:>20}: linear-probe top-1 {100 * result['accuracy']:.2f}% "
                f"({result['features']} features, C={result['c']:g})",
                flush=True,
            )
    except (OSError, TypeError, ValueError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    if args.json:
        rundir.atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
