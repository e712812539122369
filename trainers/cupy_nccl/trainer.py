"""LeJEPA pretraining of an MLP with explicit gradients: CuPy + NCCL on GPUs, NumPy on CPUs.

Usage::

    python -m trainers.cupy_nccl [--config run.yaml] [--resume auto|CKPT] [section.option=value ...]
    torchrun --nproc_per_node=N -m trainers.cupy_nccl [same arguments]

The same code runs on cupy arrays (``run.device=cuda``, or ``auto`` when cupy can allocate
on a GPU) and on numpy arrays (``cpu``). Nothing is differentiated automatically: the loss
gradient with respect to the embeddings is the core's analytic
:func:`sigreg.lejepa_loss_vjp`, the network's is the MLP's hand-written backward pass
(:mod:`trainers.cupy_nccl.mlp`), and AdamW is array-API code (:mod:`trainers.cupy_nccl.adamw`).

Under torchrun every process joins a gloo process group (control plane only); the data
plane is NCCL through ``cupy.cuda.nccl`` on GPUs and gloo on CPUs
(:mod:`trainers.cupy_nccl.collective`): SIGReg's C/S sums, the prediction term's sums and the
parameter gradients are summed over the ranks, so a data-parallel run equals one process on
the concatenated batch.

Model: ``model.backbone`` must be ``mlp`` (the default here): an MLP encoder
(``model.encoder_dims``, Linear-LayerNorm-ReLU), an MLP projector (``model.projector_dims``)
and an online linear probe on the detached features (labelled data). Data: any
``data.name`` of the torch trainer (images are flattened after random resized crops and
flips, resampled to the image's own size; ``views.global_size``/``local_size`` and the
photometric ``augment.*`` options other than ``flip_p`` do not apply), or ``npz:PATH`` with a
``features`` array ``(N, D)``: e.g. train an isotropic-Gaussian projector on precomputed
embeddings of another model. The ``vector.*`` options (masking, noise, mixing) apply to both.

Run directory as in :mod:`trainers.torch_ddp` (``metrics.jsonl``, plots, config, run info),
with ``ckpt_*.npz`` checkpoints (numpy archives, no pickle). Exit status: 0 done, 2 bad
configuration or arguments, 3 non-finite loss.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import Any

import numpy as np

from trainers.core import rundir
from trainers.core.config import TrainConfig, config_to_dict
from trainers.core.loop import (
    NonFiniteLoss,
    RunLoop,
    check_checkpoint_path,
    check_resumable,
    derive_seed,
    eval_record,
    nonfinite_message,
    parse_trainer_args,
    resolve_resume,
    run_trainer,
    start_run,
)
from trainers.core.metrics import MetricsLog
from trainers.core.rundir import atomic_write
from trainers.core.sampler import EpochSampler
from trainers.core.schedule import warmup_cosine
from trainers.core.vector_data import load_vectors
from trainers.cupy_nccl.adamw import AdamW, clip_grad_norm
from trainers.cupy_nccl.collective import all_reduce_dict, array_backend, make_collective
from trainers.cupy_nccl.lejepa import MLPNet, build_net, embed, loss_and_grads
from trainers.cupy_nccl.mlp import init_params
from trainers.cupy_nccl.views import apply_crops, apply_vector, draw_crops, draw_vector
from trainers.distributed import DistEnv, gather_objects, setup, shutdown

__all__ = ["CKPT_EXT", "Trainer", "initial_params", "main"]

CKPT_EXT = ".npz"
_DTYPES = {"auto": "float32", "fp32": "float32", "fp64": "float64"}


def _to_host(x: Any) -> np.ndarray:
    """A numpy copy of a numpy or cupy array."""
    return np.asarray(x.get() if hasattr(x, "get") else x)


def _rows(params: Any, start: int, stop: int) -> Any:
    """The rows ``start:stop`` of every field of a view-parameter tuple."""
    return type(params)(*(a[start:stop] for a in params))


def initial_params(
    cfg: TrainConfig, net: MLPNet, xp: Any, *, dtype: Any, device: Any = None
) -> dict[str, Any]:
    """The network's initial parameters for ``run.seed`` (the same on every rank)."""
    layers = net.encoder + net.projector + (net.probe or [])
    rng = np.random.default_rng(derive_seed(cfg.run.seed, 0))
    return init_params(layers, rng, xp, dtype=dtype, device=device)


class Trainer(RunLoop):
    """Everything of one training run: data, MLP, optimiser, collective, state, logs.

    Parameters
    ----------
    cfg : TrainConfig
        The resolved configuration.
    env : DistEnv
        Rank and world size (:func:`trainers.distributed.setup` on ``"cpu"``: the gloo
        control plane).
    resume : str, optional
        ``"auto"`` or the path of a checkpoint in ``run.dir``.
    argv : list of str
        The command line, recorded in ``run_info.json``.

    Raises
    ------
    ValueError
        A backbone other than ``mlp``, a precision other than fp32/fp64, ``accum_steps`` other
        than 1, a batch size that does not divide, a run directory that already holds
        checkpoints (without ``resume``), a checkpoint from another configuration.
    """

    def __init__(self, cfg: TrainConfig, env: DistEnv, *, resume: str | None, argv: list[str]):
        if cfg.model.backbone != "mlp":
            raise ValueError(
                f"model.backbone must be 'mlp' for trainers.cupy_nccl, got "
                f"{cfg.model.backbone!r} (use trainers.torch_ddp for CNNs and timm models)"
            )
        if cfg.run.precision not in _DTYPES:
            raise ValueError(
                f"run.precision must be 'auto', 'fp32' or 'fp64' for trainers.cupy_nccl, got "
                f"{cfg.run.precision!r}"
            )
        o = cfg.optim
        if o.accum_steps != 1:
            raise ValueError("optim.accum_steps must be 1 for trainers.cupy_nccl")
        per_rank, rem = divmod(o.batch_size, env.world_size)
        if rem or per_rank == 0:
            raise ValueError(
                f"optim.batch_size ({o.batch_size}) must be a positive multiple of the world "
                f"size ({env.world_size})"
            )
        self.cfg, self.env, self.per_rank = cfg, env, per_rank
        self.xp, self.device = array_backend(cfg.run.device, env.local_rank)
        checkpoint = self._find_checkpoint(resume)
        xp, device = self.xp, self.device
        self.dtype = getattr(xp, _DTYPES[cfg.run.precision])
        self.collective = make_collective(device, env)

        if cfg.data.name.startswith("shards:") or cfg.data.test is not None:
            raise ValueError(
                "trainers.cupy_nccl holds its data in memory (imagefolder: included): "
                "data.name=shards:... and data.test are for the torch and JAX trainers"
            )
        data = load_vectors(
            cfg.data.name,
            test_fraction=cfg.data.test_fraction,
            split_seed=cfg.data.split_seed,
            image_size=cfg.data.image_size,
            train_size=cfg.data.train_size,
        )
        self.data = data
        self.mean = self._put(data.mean)
        self.std = self._put(data.std)
        self.train = self._put(data.train)
        self.train_flat = self._standardise(self.train)
        self.test_flat = self._standardise(self._put(data.test))
        self.train_labels = None
        if data.train_labels is not None:
            self.train_labels = xp.asarray(data.train_labels, device=self._xp_device)
        self.sampler = EpochSampler(
            len(data.train), per_rank, rank=env.rank, world_size=env.world_size, seed=cfg.run.seed
        )
        self.net = build_net(
            data.dim, cfg.model.encoder_dims, cfg.model.projector_dims, data.num_classes
        )
        self.params = initial_params(cfg, self.net, xp, dtype=self.dtype, device=self._xp_device)
        self.optimizer = AdamW(xp, self.params, weight_decay=o.weight_decay)
        self.warmup_steps = round(o.warmup_epochs * self.steps_per_epoch)

        self.is_main, self.has_probe = env.is_main, self.net.probe is not None
        self.epoch = self.batch_in_epoch = self.step = 0
        self.train_time = 0.0
        self.metrics = MetricsLog(os.path.join(cfg.run.dir, "metrics.jsonl"))
        if checkpoint is None:
            self._start_run(argv)
        else:
            self._restore(checkpoint)

    # --------------------------------------------------------------------- arrays
    @property
    def _xp_device(self) -> Any:
        return None if self.device == "cpu" else self.xp.asarray(0.0).device

    def _put(self, a: np.ndarray) -> Any:
        return self.xp.asarray(a, dtype=self.dtype, device=self._xp_device)

    def _standardise(self, x: Any) -> Any:
        """Flat, standardised samples ``(n, D)``."""
        return (self.xp.reshape(x, (x.shape[0], -1)) - self.mean) / self.std

    def _take(self, x: Any, indices: np.ndarray) -> Any:
        return self.xp.take(x, self.xp.asarray(indices, device=self._xp_device), axis=0)

    def _sync(self) -> None:
        if self.device != "cpu":
            importlib.import_module("cupy").cuda.get_current_stream().synchronize()

    # --------------------------------------------------------------------- state
    def _find_checkpoint(self, resume: str | None) -> str | None:
        """The checkpoint to resume from (rank 0 decides for all), or None for a new run."""
        run_dir = self.cfg.run.dir
        latest = rundir.latest_checkpoint(run_dir, CKPT_EXT) if self.env.is_main else None
        return resolve_resume(resume, gather_objects(latest, self.env)[0], run_dir)

    def _start_run(self, argv: list[str]) -> None:
        if not self.env.is_main:
            return
        info = {
            "argv": argv,
            "world_size": self.env.world_size,
            "device": self.device,
            "collective": type(self.collective).__name__ if self.collective else None,
            "numpy": np.__version__,
        }
        if self.device != "cpu":
            info["cupy"] = importlib.import_module("cupy").__version__
        start_run(self.cfg, self.metrics, info)

    def _state_arrays(self) -> dict[str, np.ndarray]:
        state = {}
        for prefix, arrays in (
            ("param", self.params),
            ("exp_avg", self.optimizer.exp_avg),
            ("exp_avg_sq", self.optimizer.exp_avg_sq),
        ):
            state.update({f"{prefix}/{k}": _to_host(v) for k, v in arrays.items()})
        counters = {
            "adam_step": self.optimizer.step_count,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "train_time": self.train_time,
            "metrics_count": self.metrics.count,
            "world_size": self.env.world_size,
        }
        state.update({k: np.asarray(v) for k, v in counters.items()})
        state["config"] = np.asarray(json.dumps(config_to_dict(self.cfg)))
        return state

    def save(self) -> None:
        """Checkpoint parameters, AdamW moments and counters (rank 0 writes; the views,
        directions and batches are functions of ``(run.seed, step)``, so there is no RNG
        state to save)."""
        if not self.env.is_main:
            return
        state = self._state_arrays()
        path = rundir.checkpoint_path(self.cfg.run.dir, self.step, CKPT_EXT)
        atomic_write(path, lambda fh: np.savez(fh, **state))
        rundir.prune_checkpoints(self.cfg.run.dir, self.cfg.run.keep_checkpoints, CKPT_EXT)

    def _restore(self, path: str) -> None:
        check_checkpoint_path(path, self.cfg.run.dir)
        with np.load(path, allow_pickle=False) as archive:
            state = {k: archive[k] for k in archive.files}
        config = json.loads(str(state["config"]))
        check_resumable(self.cfg, path, config, int(state["world_size"]), self.env.world_size)
        for prefix, arrays in (
            ("param", self.params),
            ("exp_avg", self.optimizer.exp_avg),
            ("exp_avg_sq", self.optimizer.exp_avg_sq),
        ):
            for name in arrays:
                arrays[name] = self._put(state[f"{prefix}/{name}"])
        self.optimizer.step_count = int(state["adam_step"])
        self.epoch, self.batch_in_epoch = int(state["epoch"]), int(state["batch_in_epoch"])
        self.step, self.train_time = int(state["step"]), float(state["train_time"])
        if self.env.is_main:
            self.metrics.truncate(int(state["metrics_count"]))

    # ------------------------------------------------------------------ training
    def _views(self, indices: np.ndarray) -> Any:
        """``(V, n, D)`` views of this rank's samples: the random parameters are drawn for
        the global batch and this rank applies its rows."""
        cfg, xp, data = self.cfg, self.xp, self.data
        v, vec = cfg.views, cfg.vector
        n = len(indices)
        total, start = n * self.env.world_size, n * self.env.rank
        rng = np.random.default_rng(derive_seed(cfg.run.seed, self.step, 1))
        samples = self._take(self.train, indices)
        flat = self.train_flat if not data.is_image else None
        views = []
        for view in range(v.n_global + v.n_local):
            if data.is_image:
                crops = draw_crops(
                    rng,
                    total,
                    samples.shape[2:],
                    scale=v.global_scale if view < v.n_global else v.local_scale,
                    ratio=v.ratio,
                    flip_p=cfg.augment.flip_p,
                )
                x = self._standardise(apply_crops(xp, samples, _rows(crops, start, start + n)))
            else:
                x = self._take(flat, indices)
            params = draw_vector(
                rng,
                total,
                data.dim,
                num_samples=len(data.train),
                mask_p=vec.mask_p,
                noise_std=vec.noise_std,
                mix=vec.mix,
            )
            params = _rows(params, start, start + n)
            partners = self._take(self.train_flat, params.partner)
            views.append(apply_vector(xp, x, partners, params, noise_std=vec.noise_std))
        return xp.stack(views)

    def _train_step(self, indices: np.ndarray) -> dict[str, Any]:
        cfg, env, xp, o = self.cfg, self.env, self.xp, self.cfg.optim
        start = time.perf_counter()
        views = self._views(indices)
        self._sync()
        data_time = time.perf_counter() - start
        labels = None if self.train_labels is None else self._take(self.train_labels, indices)
        parts, grads = loss_and_grads(
            xp,
            self.net,
            self.params,
            views,
            labels,
            n_global=cfg.views.n_global,
            global_batch=o.batch_size,
            collective=self.collective,
            lamb=cfg.loss.lamb,
            num_slices=cfg.loss.num_slices,
            seed=cfg.run.seed,
            step=self.step,
            prediction=cfg.loss.prediction,
        )
        probe = xp.reshape(parts["probe_loss"], (1,))
        if cfg.debug.nan_at_step == self.step + 1 and cfg.debug.nan_rank in (None, env.rank):
            probe = probe + float("nan")
        if self.collective is not None:  # sum the ranks' contributions (probe loss packed in)
            reduced = all_reduce_dict(self.collective, xp, {**grads, "probe_loss": probe})
            probe = reduced.pop("probe_loss")
            grads = reduced
        loss, prediction, sigreg_value = (float(parts[k]) for k in ("loss", "prediction", "sigreg"))
        probe_loss = float(probe[0])
        if not np.isfinite(loss + probe_loss):  # identical on every rank after the reduction
            raise NonFiniteLoss(nonfinite_message(self.step + 1, self.epoch, cfg.run.dir, CKPT_EXT))
        if o.grad_clip is not None:
            grads = clip_grad_norm(xp, grads, o.grad_clip)
        lr = o.lr * warmup_cosine(
            self.step,
            total_steps=self.total_steps,
            warmup_steps=self.warmup_steps,
            final_ratio=o.final_lr_ratio,
        )
        self.params = self.optimizer.step(self.params, grads, lr)
        self.step += 1
        self._sync()
        return {
            "loss": loss,
            "prediction": prediction,
            "sigreg": sigreg_value,
            "probe_loss": probe_loss,
            "lr": lr,
            "data_time": data_time,
            "step_time": time.perf_counter() - start,
        }

    # ---------------------------------------------------------------- evaluation
    def features(self, flat: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Encoder features, projector embeddings and probe logits (host float32) of
        standardised samples ``(n, D)``, in batches of ``eval.batch_size``."""
        size = self.cfg.eval.batch_size
        outs: list[list[np.ndarray]] = [[], [], []]
        for start in range(0, flat.shape[0], size):
            for out, value in zip(
                outs, embed(self.xp, self.net, self.params, flat[start : start + size]), strict=True
            ):
                if value is not None:
                    out.append(_to_host(value).astype(np.float32))
        features, embeddings, logits = (np.concatenate(o) if o else None for o in outs)
        return features, embeddings, logits

    def evaluate(self) -> dict[str, Any]:
        """Test-split probe and k-NN accuracy (labelled data) and embedding effective rank
        (every rank computes it; rank 0 logs it)."""
        test_features, embeddings, logits = self.features(self.test_flat)
        features = predicted = None
        if self.has_probe:
            features = (self.features(self.train_flat)[0], test_features)
            predicted = logits.argmax(axis=1)
        return eval_record(
            self.cfg,
            self.data,
            epoch=self.epoch,
            step=self.step,
            embeddings=embeddings,
            features=features,
            probe_predictions=predicted,
        )

    def _test_embeddings(self) -> np.ndarray:
        return self.features(self.test_flat)[1]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0, 2 or 3)."""
    prog, description = "python -m trainers.cupy_nccl", __doc__.split("\n\n")[0]
    _, args, cfg = parse_trainer_args(prog, description, argv, base={"model": {"backbone": "mlp"}})
    from threadpoolctl import threadpool_limits

    env = setup("cpu")  # the gloo control plane; the arrays go where run.device says
    command = sys.argv if argv is None else list(argv)
    try:
        with threadpool_limits(limits=cfg.run.threads):
            return run_trainer(
                lambda: Trainer(cfg, env, resume=args.resume, argv=command), env.rank
            )
    finally:
        shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
