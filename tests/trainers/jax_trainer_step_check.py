"""One JAX trainer step on 2 simulated CPU devices vs 1 device, float64.

Usage: ``python jax_trainer_step_check.py KIND [OVERRIDE ...]`` (``pmap`` or ``shard_map``;
extra ``section.option=value`` overrides, e.g. ``loss.statistic=watson``). Run by
``test_jax_trainer_step.py`` in a subprocess, because the device count must be set before
JAX starts. Builds :class:`trainers.jax_pmap.Trainer` (float64, a tiny smallcnn
configuration) with ``pmap`` on one device and with KIND on two, takes one optimiser step
on the same global batch and prints one JSON object (last line of stdout) of the largest
parameter / optimiser-state / batch-statistic differences and sanity figures.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 2)
jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from trainers.core.config import load_config  # noqa: E402
from trainers.jax_pmap.parallel import DataParallel  # noqa: E402
from trainers.jax_pmap.trainer import Trainer  # noqa: E402

OVERRIDES = [
    "views.n_global=2",
    "views.n_local=2",
    "views.global_size=8",
    "views.local_size=4",
    "model.width=4",
    "model.projector_dims=[16,8]",
    "loss.num_slices=16",
    "optim.batch_size=32",
    "optim.lr=0.05",  # large enough that one step moves the weights visibly
    "optim.warmup_epochs=0",
    "optim.grad_clip=1.0",
    "run.progress=false",
]


def one_step(kind: str, devices) -> tuple[dict, dict, dict]:
    """The host state before and after one step of a fresh trainer, and the step's
    measurements."""
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load_config(overrides=[*OVERRIDES, *sys.argv[2:], f"run.dir={run_dir}"])
        trainer = Trainer(cfg, DataParallel(kind, devices), resume=None, argv=[], dtype=np.float64)
        before = trainer.host_state()
        stats = trainer._train_step(next(trainer.sampler.batches(0)))
        return before, trainer.host_state(), stats


def err(a, b) -> float:
    leaves = jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a, b))
    return max(leaves)


def main() -> None:
    devices = jax.local_devices()
    before, one, one_stats = one_step("pmap", devices[:1])
    _, two, two_stats = one_step(sys.argv[1], devices)
    out = {
        "devices": len(devices),
        "dtype": str(jax.tree.leaves(one["params"])[0].dtype),
        "step_change": err(one["params"], before["params"]),
        "params": err(one["params"], two["params"]),
        "batch_stats": err(one["batch_stats"], two["batch_stats"]),
        "opt_state": err(one["opt_state"], two["opt_state"]),
        "loss_diff": max(
            abs(one_stats[k] - two_stats[k]) for k in ("loss", "prediction", "sigreg", "probe_loss")
        ),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
