"""Linear evaluation of a trainers.cupy_nccl run: the MLP encoder vs its baselines (NumPy).

Usage::

    python -m trainers.eval_mlp RUN_DIR [--json PATH] [--save-features PATH]

Every method is measured by :func:`trainers.core.probes.linear_eval` on the run's own
train/test split (``RUN_DIR/config.yaml``): the encoder features of the latest checkpoint
(``checkpoint``), the same encoder at its initial weights (``random-init``) and the
standardised flat inputs themselves (``raw-inputs``: pixels for image data). With
``--save-features`` the checkpoint's features of both splits and their labels are written
to an npz file (``features``, ``labels``, ``split`` 0 train / 1 test), ready to be used as
``data.name=npz:PATH`` (e.g. to train an isotropic projector on them).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np

from trainers.core import rundir
from trainers.core.config import load_config
from trainers.core.probes import configured_linear_eval
from trainers.core.vector_data import load_vectors
from trainers.cupy_nccl.lejepa import build_net, embed
from trainers.cupy_nccl.trainer import CKPT_EXT, initial_params

__all__ = ["main", "mlp_features"]


def mlp_features(run_dir: str, checkpoint: str | None) -> dict[str, Any]:
    """Flat standardised inputs and encoder features of both splits of a run.

    Parameters
    ----------
    run_dir : str
        A run directory of :mod:`trainers.cupy_nccl`.
    checkpoint : str or None
        Checkpoint whose parameters to use; ``None``: the initial parameters.

    Returns
    -------
    dict
        ``cfg``, ``data`` (:class:`trainers.core.vector_data.VectorDataset`), ``inputs`` and
        ``features``: ``(train, test)`` float64 pairs.
    """
    cfg = load_config(os.path.join(run_dir, "config.yaml"))
    data = load_vectors(
        cfg.data.name,
        test_fraction=cfg.data.test_fraction,
        split_seed=cfg.data.split_seed,
        image_size=cfg.data.image_size,
        train_size=cfg.data.train_size,
    )
    xp = np
    net = build_net(data.dim, cfg.model.encoder_dims, cfg.model.projector_dims, data.num_classes)
    params = initial_params(cfg, net, xp, dtype=np.float64)
    if checkpoint is not None:
        with np.load(checkpoint, allow_pickle=False) as archive:
            params = {k: archive[f"param/{k}"].astype(np.float64) for k in params}
    inputs = tuple(
        (x.reshape(len(x), -1).astype(np.float64) - data.mean) / data.std
        for x in (data.train, data.test)
    )
    features = tuple(embed(xp, net, params, x)[0] for x in inputs)
    return {"cfg": cfg, "data": data, "inputs": inputs, "features": features}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m trainers.eval_mlp", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("run_dir", help="run directory of trainers.cupy_nccl")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--save-features", metavar="PATH", help="write the checkpoint's features")
    args = parser.parse_args(argv)
    checkpoint = rundir.latest_checkpoint(args.run_dir, CKPT_EXT)
    if checkpoint is None:
        parser.error(f"{args.run_dir}: no {CKPT_EXT} checkpoint")
    trained = mlp_features(args.run_dir, checkpoint)
    cfg, data = trained["cfg"], trained["data"]
    if data.train_labels is None:
        parser.error(f"linear evaluation needs labels; {cfg.data.name!r} has none")
    methods = {
        "checkpoint": trained["features"],
        "random-init": mlp_features(args.run_dir, None)["features"],
        "raw-inputs": trained["inputs"],
    }
    results = []
    for method, (train, test) in methods.items():
        result = configured_linear_eval(cfg, data, train, test)
        results.append({"method": method, **result._asdict(), "features": int(train.shape[1])})
        print(
            f"{method:12s} top-1 {result.accuracy:.4f} (C={result.c:g}, "
            f"cv {result.cv_accuracy:.4f}, {train.shape[1]} features)",
            flush=True,
        )
    if args.json:
        rundir.atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")
    if args.save_features:
        train, test = trained["features"]
        split = np.concatenate([np.zeros(len(train), np.int64), np.ones(len(test), np.int64)])
        labels = np.concatenate([data.train_labels, data.test_labels])
        rundir.atomic_write(
            args.save_features,
            lambda fh: np.savez(
                fh, features=np.concatenate([train, test]), labels=labels, split=split
            ),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
