"""LeJEPA pretraining of an MLP with explicit gradients: CuPy + NCCL on GPUs, NumPy on CPUs.

Usage::

    python -m trainers.cupy_nccl [--config run.yaml] [--resume auto|CKPT] [section.option=value ...]
    torchrun --nproc_per_node=N -m trainers.cupy_nccl [same arguments]

The same code runs on cupy arrays (``run.device=cuda``, or ``auto`` when cupy can allocate
on a GPU) and on numpy arrays (``cpu``). Nothing is differentiated automatically: the loss
gradient with respect to the embeddings is the core's analytic
:func:`sigreg.lejepa_loss_vjp`, the network's is the MLP's hand-written backward pass
(:mod:`trainers.cupy_nccl.mlp`), and AdamW is array-API code (:mod:`trainers.cupy_nccl.adamw`).

Under torchrun every process joins a gloo process group (control plane only, and the only
case in which this trainer imports torch); the data plane is NCCL through ``cupy.cuda.nccl``
on GPUs and gloo on CPUs (:mod:`trainers.cupy_nccl.collective`): SIGReg's C/S sums, the
prediction term's sums and the parameter gradients are summed over the ranks, so a
data-parallel run equals one process on the concatenated batch.

Model: ``model.backbone`` must be ``mlp`` (the default here): an MLP encoder
(``model.encoder_dims``, Linear-LayerNorm-ReLU), an MLP projector (``model.projector_dims``)
and an online linear probe on the detached features (labelled data). Data: any
``data.name`` of the torch trainer (images are flattened after random resized crops and
flips, resampled to the image's own size; ``views.global_size``/``local_size`` and the
photometric ``augment.*`` options other than ``flip_p`` do not apply), or ``npz:PATH`` with a
``features`` array ``(N, D)``: e.g. train an isotropic-Gaussian projector on precomputed
embeddings of another model. The ``vector.*`` options (masking, noise, mixing) apply to both.
``imagefolder:`` and ``shards:`` are streamed (:mod:`trainers.core.stream`: each rank decodes
its share of every epoch in worker processes, the position is in the checkpoint); there a
view's mixing partner is a sample of the rank's own batch, not of the whole training set.

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
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from threadpoolctl import threadpool_limits

from trainers.core.checkpoints import CheckpointFormat, data_fingerprint
from trainers.core.config import TrainConfig
from trainers.core.launch import DistEnv
from trainers.core.loop import (
    LossClock,
    RunLoop,
    derive_seed,
    parse_trainer_args,
    per_worker_batch,
    run_trainer,
    step_stats,
)
from trainers.core.metrics import MetricsLog
from trainers.core.rundir import atomic_write
from trainers.core.sampler import EpochSampler
from trainers.core.schedule import warmup_cosine
from trainers.core.stream import (
    Batch,
    StreamedDataset,
    fingerprint_of,
    is_streamed,
    open_configured,
    train_sampler,
)
from trainers.core.vector_data import load_vectors
from trainers.cupy_nccl.adamw import AdamW, clip_grad_norm
from trainers.cupy_nccl.collective import (
    all_reduce_dict,
    array_backend,
    control_plane,
    gather_objects,
    leave_control_plane,
    make_collective,
)
from trainers.cupy_nccl.lejepa import MLPNet, build_net, embed, loss_and_grads
from trainers.cupy_nccl.mlp import init_params
from trainers.cupy_nccl.views import apply_crops, apply_vector, draw_crops, draw_vector

__all__ = ["ARRAY_FORMAT", "CKPT_EXT", "Trainer", "initial_params", "main"]

T = TypeVar("T")

_DTYPES = {"auto": "float32", "fp32": "float32", "fp64": "float64"}
BASE = {"model": {"backbone": "mlp"}}
"""This trainer's own defaults (on top of :class:`trainers.core.config.TrainConfig`'s)."""
_STATE_PREFIXES = ("param", "exp_avg", "exp_avg_sq")


def _write(path: str, position: dict[str, Any], state: dict[str, np.ndarray]) -> None:
    arrays = dict(state)
    for key, value in position.items():
        if value is not None:
            arrays[key] = np.asarray(json.dumps(value) if key == "config" else value)
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def _read(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    position = {
        k: arrays.pop(k)
        for k in list(arrays)
        if k.partition("/")[0] not in _STATE_PREFIXES and k != "adam_step"
    }
    position["config"] = json.loads(str(position["config"]))
    return position, arrays


ARRAY_FORMAT = CheckpointFormat(".npz", _write, _read)
"""``ckpt_*.npz``: a NumPy archive (no pickle) of ``param/*``, ``exp_avg/*``,
``exp_avg_sq/*``, ``adam_step``, the position counters and ``config`` (JSON text)."""
CKPT_EXT = ARRAY_FORMAT.suffix


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


def _check_options(cfg: TrainConfig) -> None:
    """Raise ``ValueError`` for a backbone, precision, loss engine or test source it lacks."""
    if cfg.data.test is not None and not is_streamed(cfg.data.name):
        raise ValueError("data.test applies to streamed sources (imagefolder:, shards:) only")
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
    if cfg.loss.engine == "compiled":
        raise ValueError("loss.engine='compiled' is torch.compile: trainers.torch_ddp only")


class Trainer(RunLoop):
    """Everything of one training run: data, MLP, optimiser, collective, state, logs.

    Parameters
    ----------
    cfg : TrainConfig
        The resolved configuration.
    env : DistEnv
        Rank and world size (:func:`trainers.cupy_nccl.collective.control_plane`).
    resume : str, optional
        ``"auto"`` or the path of a checkpoint in ``run.dir``.
    argv : list of str
        The command line, recorded in ``run_info.json``.

    Raises
    ------
    ValueError
        A backbone other than ``mlp``, a precision other than fp32/fp64, a batch size that
        does not divide, a run directory that already holds
        checkpoints (without ``resume``), an unreadable checkpoint, or one from another
        configuration, world size or dataset.
    """

    checkpoint_format = ARRAY_FORMAT

    def __init__(self, cfg: TrainConfig, env: DistEnv, *, resume: str | None, argv: list[str]):
        _check_options(cfg)
        self.per_rank = per_worker_batch(cfg.optim.batch_size, env.world_size, 1, "world size")
        self.cfg, self.env = cfg, env
        self.rank, self.world_size, self.is_main = env.rank, env.world_size, env.is_main
        self.xp, self.device = array_backend(cfg.run.device, env.local_rank)
        self.dtype = getattr(self.xp, _DTYPES[cfg.run.precision])
        self.collective = make_collective(self.device, env)
        self._load_data()
        self.net = build_net(
            self.dim, cfg.model.encoder_dims, cfg.model.projector_dims, self.num_classes
        )
        self.has_probe = self.net.probe is not None
        self.params = initial_params(
            cfg, self.net, self.xp, dtype=self.dtype, device=self._xp_device
        )
        self.optimizer = AdamW(self.xp, self.params, weight_decay=cfg.optim.weight_decay)
        self.warmup_steps = round(cfg.optim.warmup_epochs * self.steps_per_epoch)
        self.metrics = MetricsLog(os.path.join(cfg.run.dir, "metrics.jsonl"))
        self.start_or_resume(resume, self._run_info(argv))

    def _load_data(self) -> None:
        """The data and this rank's sampler: streamed (``imagefolder:``, ``shards:``), or
        the flat vectors on the device (standardised copies too)."""
        self.train = self.train_flat = self.test_flat = self.train_labels = None
        if is_streamed(self.cfg.data.name):
            self._open_stream()
        else:
            self._load_resident()
        self.num_classes = self.data.num_classes

    def _open_stream(self) -> None:
        """A streamed source: batches of decoded images arrive from the stream's workers."""
        cfg, env = self.cfg, self.env
        data = self.data = open_configured(cfg.data)
        pixels = data.image_size**2
        self.dim, self.is_image = data.channels * pixels, True
        self.data_fingerprint = fingerprint_of(data)
        mean, std = data.channel_stats()
        self.mean, self.std = self._put(np.repeat(mean, pixels)), self._put(np.repeat(std, pixels))
        self.sampler = train_sampler(
            data, cfg, self.per_rank, rank=env.rank, world_size=env.world_size
        )

    def _load_resident(self) -> None:
        """Data held in memory: samples on the device, batches of indices."""
        cfg, env = self.cfg, self.env
        data = self.data = load_vectors(
            cfg.data.name,
            test_fraction=cfg.data.test_fraction,
            split_seed=cfg.data.split_seed,
            image_size=cfg.data.image_size,
            train_size=cfg.data.train_size,
        )
        self.dim, self.is_image = data.dim, data.is_image
        self.data_fingerprint = data_fingerprint(
            data.train, data.train_labels, data.test, data.test_labels
        )
        self.mean, self.std = self._put(data.mean), self._put(data.std)
        self.train = self._put(data.train)
        self.train_flat = self._standardise(self.train)
        self.test_flat = self._standardise(self._put(data.test))
        if data.train_labels is not None:
            self.train_labels = self.xp.asarray(data.train_labels, device=self._xp_device)
        self.sampler = EpochSampler(
            len(data.train),
            self.per_rank,
            rank=env.rank,
            world_size=env.world_size,
            seed=cfg.run.seed,
        )

    def _run_info(self, argv: list[str]) -> dict[str, Any]:
        info = {
            "argv": argv,
            "world_size": self.env.world_size,
            "device": self.device,
            "collective": type(self.collective).__name__ if self.collective else None,
            "numpy": np.__version__,
        }
        if self.device != "cpu":
            info["cupy"] = importlib.import_module("cupy").__version__
        return info

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
    def _agree(self, choose: Callable[[], T]) -> T:
        """Rank 0's ``choose()`` on every rank (an object broadcast)."""
        return gather_objects(choose() if self.env.is_main else None, self.env)[0]

    def _checkpoint_state(self) -> dict[str, np.ndarray] | None:
        """Parameters, AdamW moments and step (host arrays; the views, directions and
        batches are functions of ``(run.seed, step)``, so there is no RNG state to save)."""
        if not self.env.is_main:
            return None
        state = {"adam_step": np.asarray(self.optimizer.step_count)}
        for prefix, arrays in zip(_STATE_PREFIXES, self._state_dicts(), strict=True):
            state.update({f"{prefix}/{k}": _to_host(v) for k, v in arrays.items()})
        return state

    def _state_dicts(self) -> tuple[dict[str, Any], ...]:
        return self.params, self.optimizer.exp_avg, self.optimizer.exp_avg_sq

    def _load_checkpoint_state(self, state: dict[str, np.ndarray]) -> None:
        for prefix, arrays in zip(_STATE_PREFIXES, self._state_dicts(), strict=True):
            for name in arrays:
                arrays[name] = self._put(state[f"{prefix}/{name}"])
        self.optimizer.step_count = int(state["adam_step"])

    # ------------------------------------------------------------------ training
    def _batch(self, batch: np.ndarray | Batch) -> tuple[Any, Any, Any]:
        """This rank's samples, the pool of mixing partners and the labels (or ``None``) of
        ``batch``: rows of the resident data and the whole training set, or the streamed
        ``uint8`` images / 255 and their own standardised copies."""
        xp = self.xp
        if isinstance(batch, Batch):
            samples = self._put(batch.images) / 255.0
            labels = None
            if batch.labels is not None:
                labels = xp.asarray(batch.labels, device=self._xp_device)
            return samples, self._standardise(samples), labels
        labels = None if self.train_labels is None else self._take(self.train_labels, batch)
        return self._take(self.train, batch), self.train_flat, labels

    def _views(self, samples: Any, pool: Any) -> Any:
        """``(V, n, D)`` views of this rank's ``samples``, mixed with rows of ``pool``
        (standardised flat samples): the random parameters are drawn for the global batch
        and this rank applies its rows."""
        cfg, xp = self.cfg, self.xp
        v, vec = cfg.views, cfg.vector
        n = samples.shape[0]
        total, start = n * self.env.world_size, n * self.env.rank
        rng = np.random.default_rng(derive_seed(cfg.run.seed, self.step, 1))
        flat = None if self.is_image else self._standardise(samples)
        views = []
        for view in range(v.n_global + v.n_local):
            if self.is_image:
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
                x = flat
            params = draw_vector(
                rng,
                total,
                self.dim,
                num_samples=pool.shape[0],
                mask_p=vec.mask_p,
                noise_std=vec.noise_std,
                mix=vec.mix,
            )
            params = _rows(params, start, start + n)
            partners = self._take(pool, params.partner)
            views.append(apply_vector(xp, x, partners, params, noise_std=vec.noise_std))
        return xp.stack(views)

    def _train_step(self, batch: np.ndarray | Batch) -> dict[str, Any]:
        cfg, xp, o = self.cfg, self.xp, self.cfg.optim
        start = time.perf_counter()
        samples, pool, labels = self._batch(batch)
        views = self._views(samples, pool)
        self._sync()
        data_time = time.perf_counter() - start
        clock = LossClock(self._sync) if self._logs_next_step() else None
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
            engine=cfg.loss.engine,
            statistic=cfg.loss.statistic,
            clock=clock,
        )
        probe = xp.reshape(parts["probe_loss"], (1,))
        if self._inject_nan():
            probe = probe + float("nan")
        if self.collective is not None:  # sum the ranks' contributions (probe loss packed in)
            reduced = all_reduce_dict(self.collective, xp, {**grads, "probe_loss": probe})
            probe = reduced.pop("probe_loss")
            grads = reduced
        loss, prediction, sigreg_value = (float(parts[k]) for k in ("loss", "prediction", "sigreg"))
        probe_loss = float(probe[0])
        if not np.isfinite(loss + probe_loss):  # identical on every rank after the reduction
            raise self._nonfinite()
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
        losses = (loss, prediction, sigreg_value, probe_loss)
        loss_time = None if clock is None else clock.seconds
        return step_stats(*losses, lr=lr, data_time=data_time, started=start, loss_time=loss_time)

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

    def _split_features(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """:meth:`features` of ``split`` (``"train"`` or ``"test"``): of the resident
        samples, or of the streamed images (every rank its share, gathered in order)."""
        if not isinstance(self.data, StreamedDataset):
            return self.features(self.train_flat if split == "train" else self.test_flat)
        cfg, env = self.cfg, self.env
        share: list[list[np.ndarray]] = [[], [], []]
        batches = self.data.eval_batches(
            split, cfg.data, cfg.eval.batch_size, rank=env.rank, world_size=env.world_size
        )
        with batches:
            for batch in batches:
                flat = self._standardise(self._put(batch.images) / 255.0)
                for out, value in zip(share, self.features(flat), strict=True):
                    if value is not None:
                        out.append(value)
        ranks = gather_objects([np.concatenate(o) if o else None for o in share], env)
        parts = ([r[i] for r in ranks if r[i] is not None] for i in range(3))
        features, embeddings, logits = (np.concatenate(p) if p else None for p in parts)
        return features, embeddings, logits

    def evaluate(self) -> dict[str, Any]:
        """Test-split probe and k-NN accuracy (labelled data) and embedding effective rank
        (every rank computes it; rank 0 logs it)."""
        test_features, embeddings, logits = self._split_features("test")
        features = predicted = None
        if self.has_probe:
            features = (self._split_features("train")[0], test_features)
            predicted = logits.argmax(axis=1)
        return self._eval_record(embeddings, features, predicted)

    def _test_embeddings(self) -> np.ndarray:
        return self._split_features("test")[1]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status.

    0 done, 2 bad option or file, 3 non-finite loss, 4 file-system failure.
    """
    description = __doc__.split("\n\n")[0]
    _, args, cfg = parse_trainer_args("cupy_nccl", description, argv, base=BASE)
    env = control_plane()  # the arrays go where run.device says
    command = sys.argv if argv is None else list(argv)
    try:
        with threadpool_limits(limits=cfg.run.threads):
            return run_trainer(
                lambda: Trainer(cfg, env, resume=args.resume, argv=command), env.rank
            )
    finally:
        leave_control_plane(env)
