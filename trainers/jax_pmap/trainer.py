"""LeJEPA pretraining with JAX across devices and hosts (``jax.pmap`` or ``jax.shard_map``).

Usage::

    python -m trainers.jax_pmap [--config run.yaml] [--resume auto|CKPT] [--parallel pmap|shard_map]
        [--num-cpu-devices N] [--distributed] [--coordinator-address HOST:PORT]
        [--num-processes P] [--process-id I] [section.option=value ...]

The options (``--config``, overrides, ``--resume``) are those of :mod:`trainers.torch_ddp`;
the run directory holds the same ``config.yaml``, ``run_info.json``, ``metrics.jsonl``,
plots and summary, and checkpoints ``ckpt_*.msgpack`` (Flax msgpack, written atomically).

One optimiser step: every device takes its share of the global batch (the process's
:class:`trainers.core.sampler.EpochSampler` batch split over its devices; for
``imagefolder:``/``shards:`` sources the process's decoded batch from
:mod:`trainers.core.stream`), makes the multi-crop
views in jitted ``jax.numpy`` (:mod:`trainers.jax_pmap.views`; every sample's key comes from
``(run.seed, step, dataset index)``), embeds them with the Flax network
(:mod:`trainers.jax_pmap.models`, synchronised batch norm), and computes
``backends.jax.lejepa_loss`` whose characteristic-function sums are reduced over the device
axis (``JaxAxisCollective``), so loss and SIGReg are those of the global batch. The
gradient of the global loss updates optax AdamW (warm-up + cosine of
:func:`trainers.core.schedule.warmup_cosine`). The online probe trains on gradient-stopped
features. A non-finite loss stops every process with status 3.

``--parallel pmap`` (default) or ``shard_map``: see :mod:`trainers.jax_pmap.parallel`.
``--num-cpu-devices N`` simulates N CPU devices. Several processes (hosts) join through
``jax.distributed.initialize``; the run directory must be shared by all of them.

Exit status: 0 done, 2 bad configuration or arguments, 3 non-finite loss.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization
from jax import lax

from backends.jax import JaxAxisCollective, lejepa_loss
from trainers.core.config import TrainConfig
from trainers.core.datasets import ImageDataset
from trainers.core.loop import (
    RunLoop,
    derive_seed,
    load_trainer_config,
    per_worker_batch,
    run_trainer,
    step_stats,
    trainer_parser,
)
from trainers.core.metrics import MetricsLog
from trainers.core.probes import configured_linear_eval
from trainers.core.schedule import warmup_cosine
from trainers.core.stream import Batch, fingerprint_of, open_configured, train_sampler
from trainers.jax_pmap.checkpoint import JAX_FORMAT
from trainers.jax_pmap.evaluation import batched
from trainers.jax_pmap.models import LeJEPANet, configured_net, initial_variables
from trainers.jax_pmap.parallel import KINDS, DataParallel, Placement
from trainers.jax_pmap.views import MultiCrop

__all__ = ["Trainer", "init_jax", "main", "parser"]


R, B, V, S = Placement.REPLICATED, Placement.BATCH, Placement.VIEWS, Placement.SCALAR


def _decay_mask(params: Any) -> Any:
    """AdamW weight-decay mask: matrices and kernels only (no biases, norms, ViT position
    embedding or class token), as the torch trainer's parameter groups."""

    def decay(path, leaf) -> bool:
        name = str(getattr(path[-1], "key", path[-1]))
        return leaf.ndim > 1 and name not in ("pos_embed", "cls_token")

    return jax.tree_util.tree_map_with_path(decay, params)


class Trainer(RunLoop):
    """Everything of one JAX training run: data, network, loss, optimiser, state, logs.

    Parameters
    ----------
    cfg : TrainConfig
        The resolved configuration.
    parallel : trainers.jax_pmap.parallel.DataParallel
        How the step is mapped over the devices.
    resume : str, optional
        ``"auto"`` (newest readable checkpoint in ``run.dir``, or a fresh start) or the path
        of a checkpoint in ``run.dir``.
    argv : list of str
        The command line, recorded in ``run_info.json``.
    dtype : dtype, default float32
        Parameter and compute dtype (float64 needs ``jax_enable_x64``).

    Raises
    ------
    ValueError
        A batch size that does not divide over the devices, an unsupported backbone or
        precision, a run directory that already holds checkpoints (without ``resume``), an
        unreadable checkpoint, or one from another configuration, trainer, world size or
        dataset.
    """

    checkpoint_format = JAX_FORMAT

    def __init__(self, cfg: TrainConfig, parallel: DataParallel, *, resume, argv, dtype=None):
        self.cfg, self.parallel = cfg, parallel
        self.dtype = jnp.float32 if dtype is None else jnp.dtype(dtype)
        if cfg.run.precision not in ("auto", "fp32"):
            raise ValueError(
                f"run.precision {cfg.run.precision!r} is not supported by the JAX trainer "
                "(use 'auto' or 'fp32')"
            )
        if cfg.loss.engine == "compiled":
            raise ValueError("loss.engine='compiled' is torch.compile: trainers.torch_ddp only")
        o = cfg.optim
        per_worker_batch(o.batch_size, parallel.num_devices, o.accum_steps, "devices")
        per_device = o.batch_size // (parallel.num_devices * o.accum_steps)
        self._loss_shapes = (per_device, cfg.model.projector_dims[-1])
        self._loss_probe: Any = None
        self.rank, self.world_size = jax.process_index(), parallel.num_devices
        self.is_main = self.rank == 0
        self._load_data()
        host_state = self._build_model()
        self.metrics = MetricsLog(os.path.join(cfg.run.dir, "metrics.jsonl"))
        self.state = parallel.replicate(host_state)
        self.start_or_resume(resume, self._run_info(argv))
        self._compile_step()
        self._jit_features = jax.jit(self._features_fn, static_argnames="head")

    def _load_data(self) -> None:
        """The dataset (``data.*``, ``train_size`` included; in memory or streamed), its
        views and this process's sampler."""
        cfg = self.cfg
        data = self.data = open_configured(cfg.data)
        self.has_probe, self.num_classes = data.labelled, data.num_classes
        self.data_fingerprint = fingerprint_of(data)
        mean, std = data.channel_stats()
        self.multicrop = MultiCrop(cfg.views, cfg.augment, mean=mean, std=std)
        processes = jax.process_count()
        self.sampler = train_sampler(
            data, cfg, cfg.optim.batch_size // processes, rank=self.rank, world_size=processes
        )

    def _compile_step(self) -> None:
        """The per-device view and update programs; data in memory is replicated on every
        device once, streamed images (and labels) arrive split over the devices each step."""
        parallel, data = self.parallel, self.data
        if isinstance(data, ImageDataset):
            self.images = parallel.replicate(data.train_images.astype(self.dtype))
            labels = data.train_labels
            if labels is None:
                labels = np.zeros(len(data.train_images), int)
            self.labels = parallel.replicate(labels.astype(np.int32))
            self._views = parallel.compile(self._views_fn, args=(R, B, S), outs=(V, V))
            update_args = (R, V, V, R, B, S, S, S)
        else:
            self._views = parallel.compile(self._batch_views_fn, args=(B, B, S), outs=(V, V))
            update_args = (R, V, V, B, B, S, S, S)
        self._update = parallel.compile(self._update_fn, args=update_args, outs=(R, R))

    def _build_model(self) -> dict[str, Any]:
        """Networks (training: synchronised batch norm; evaluation), optimiser and the
        initial host state."""
        cfg, o = self.cfg, self.cfg.optim
        classes = self.data.num_classes
        self.net = configured_net(cfg, classes, axis_name=self.parallel.axis_name, dtype=self.dtype)
        self.eval_net = configured_net(cfg, classes, axis_name=None, dtype=self.dtype)
        variables = initial_variables(self.eval_net, cfg, self.data.channels, self.dtype)

        def make_tx(learning_rate):
            tx = optax.adamw(
                learning_rate, weight_decay=o.weight_decay, mask=_decay_mask(variables["params"])
            )
            if o.grad_clip is not None:
                tx = optax.chain(optax.clip_by_global_norm(o.grad_clip), tx)
            return tx

        self.tx = optax.inject_hyperparams(make_tx)(learning_rate=o.lr)
        host_state = {
            "params": variables["params"],
            # flax keeps running statistics in float32 whatever the parameter dtype
            "batch_stats": jax.tree.map(
                lambda x: x.astype(self.dtype), variables.get("batch_stats", {})
            ),
            "opt_state": jax.jit(self.tx.init)(variables["params"]),
        }
        self.template = jax.tree.map(np.asarray, host_state)
        self.warmup = round(o.warmup_epochs * self.steps_per_epoch)
        return host_state

    def _run_info(self, argv: list[str]) -> dict[str, Any]:
        par = self.parallel
        return {
            "argv": argv,
            "world_size": par.num_devices,
            "processes": jax.process_count(),
            "parallel": par.kind,
            "device": str(par.local_devices[0].platform),
            "jax": jax.__version__,
        }

    # ---------------------------------------------------------- per-device programs
    def _views_fn(self, images, indices, step):
        """Views of this device's samples; keys from ``(seed, step, dataset index)``."""
        return self._batch_views_fn(images[indices], indices, step)

    def _batch_views_fn(self, images, indices, step):
        """Views of ``images`` (this device's samples, dataset ``indices``)."""
        base = jax.random.fold_in(jax.random.key(derive_seed(self.cfg.run.seed, 4)), step)
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(indices)
        g, loc = self.multicrop(images, keys)
        return g, loc

    def _micro_loss(self, params, stats, batch, micro):
        """The loss of micro-batch ``micro`` of this device's views and its aux outputs
        (new batch statistics and the (total, loss, prediction, sigreg, probe) values).
        ``batch``: (global_views, local_views, labels, indices, step)."""
        cfg, axis = self.cfg, self.parallel.axis_name
        global_views, local_views, labels, indices, step = batch
        size = global_views.shape[1] // cfg.optim.accum_steps
        part = slice(micro * size, (micro + 1) * size)
        local = None if local_views is None else local_views[:, part]
        out, new = self.net.apply(
            {"params": params, "batch_stats": stats},
            global_views[:, part],
            local,
            True,
            mutable=["batch_stats"],
        )
        parts = lejepa_loss(
            out.global_embeddings,
            out.local_embeddings,
            lamb=cfg.loss.lamb,
            num_slices=cfg.loss.num_slices,
            seed=cfg.run.seed,
            step=step * cfg.optim.accum_steps + micro,
            prediction=cfg.loss.prediction,
            collective=JaxAxisCollective(axis),
            engine=cfg.loss.engine,
            statistic=cfg.loss.statistic,
        )
        probe = jnp.zeros((), parts.loss.dtype)
        if out.probe_logits is not None:
            target = jnp.tile(labels[indices[part]], cfg.views.n_global)
            logits = out.probe_logits.reshape(-1, out.probe_logits.shape[-1])
            probe = lax.pmean(
                optax.softmax_cross_entropy_with_integer_labels(logits, target).mean(), axis
            )
        total = parts.loss + probe
        return total, (new["batch_stats"], jnp.stack([total, *parts, probe]))

    def _update_fn(self, state, global_views, local_views, labels, indices, step, lr, poison):
        """One optimiser step on this device's views; returns the new state and the step's
        ``(total, loss, prediction, sigreg, probe)`` means over the micro-batches."""
        accum = self.cfg.optim.accum_steps
        batch = (global_views, local_views, labels, indices, step)
        params, stats = state["params"], state["batch_stats"]
        grads = jax.tree.map(jnp.zeros_like, params)
        totals = jnp.zeros(5, self.dtype)
        for micro in range(accum):
            g, (stats, values) = jax.grad(self._micro_loss, has_aux=True)(
                params, stats, batch, micro
            )
            grads = jax.tree.map(lambda a, b: a + b / accum, grads, g)
            totals = totals + values / accum
        grads = self.parallel.reduce_gradients(grads)
        # the reported total carries a debugging NaN of any process to every process
        totals = totals.at[0].set(lax.pmean(totals[0] + poison, self.parallel.axis_name))
        opt_state = state["opt_state"]
        old = opt_state.hyperparams["learning_rate"]  # keep its dtype: no recompilation
        opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, old.dtype)
        updates, opt_state = self.tx.update(grads, opt_state, params)
        new_state = {
            "params": optax.apply_updates(params, updates),
            "batch_stats": stats,
            "opt_state": opt_state,
        }
        return new_state, totals

    def _features_fn(self, variables, images, head):
        method = LeJEPANet.features if head == "backbone" else LeJEPANet.embed
        return self.eval_net.apply(variables, self.multicrop.eval_view(images), method=method)

    # ------------------------------------------------------------------- state
    def host_state(self) -> dict[str, Any]:
        """The train state (params, batch_stats, opt_state) as NumPy arrays."""
        return self.parallel.host(self.state)

    def _checkpoint_state(self) -> dict[str, Any]:
        return self.host_state()

    def _load_checkpoint_state(self, state: Any) -> None:
        host_state = serialization.from_state_dict(self.template, state)
        self.state = self.parallel.replicate(host_state)

    # ---------------------------------------------------------------- training
    def _step_inputs(self, batch: np.ndarray | Batch, step: Any) -> tuple[Any, Any, Any]:
        """``(views, labels, label positions)`` of this process's batch, on the devices: the
        views of the resident images at the batch's indices, or of the streamed batch."""
        par = self.parallel
        if not isinstance(batch, Batch):
            idx = par.split(batch.astype(np.int32))
            return jax.block_until_ready(self._views(self.images, idx, step)), self.labels, idx
        images = par.split(batch.images.astype(self.dtype) / np.asarray(255, self.dtype))
        keys = par.split(batch.indices.astype(np.int32))
        views = jax.block_until_ready(self._views(images, keys, step))
        n = len(batch.indices)
        labels = np.zeros(n, np.int32) if batch.labels is None else batch.labels.astype(np.int32)
        positions = np.tile(np.arange(n // par.num_local, dtype=np.int32), par.num_local)
        return views, par.split(labels), par.split(positions)

    def _train_step(self, batch: np.ndarray | Batch) -> dict[str, Any]:
        cfg, par = self.cfg, self.parallel
        measure = self._logs_next_step()  # then the loss is timed after the step
        start = time.perf_counter()
        step = par.scalar(self.step, np.int32)
        views, labels, idx = self._step_inputs(batch, step)
        data_time = time.perf_counter() - start
        lr = cfg.optim.lr * warmup_cosine(
            self.step,
            total_steps=self.total_steps,
            warmup_steps=self.warmup,
            final_ratio=cfg.optim.final_lr_ratio,
        )
        poison = np.nan if self._inject_nan() else 0.0
        new_state, totals = self._update(
            self.state,
            *views,
            labels,
            idx,
            step,
            par.scalar(lr, self.dtype),
            par.scalar(poison, self.dtype),
        )
        total, *losses = (float(v) for v in par.host(totals))  # loss, prediction, sigreg, probe
        if not np.isfinite(total):
            raise self._nonfinite()
        self.state = new_state
        self.step += 1
        loss_time = self._loss_time() if measure else None
        return step_stats(*losses, lr=lr, data_time=data_time, started=start, loss_time=loss_time)

    def _loss_time(self) -> float:
        """Seconds of the LeJEPA loss's value and gradient in one step, on one device.

        A compiled step cannot be split, so the loss alone is compiled once (on the first
        logged step) and timed on the embedding shapes of a micro-batch, times the
        micro-batches. Values do not change its cost; random embeddings stand in.
        """
        cfg = self.cfg
        n, dim = self._loss_shapes
        if self._loss_probe is None:
            opts = dict(
                lamb=cfg.loss.lamb,
                num_slices=cfg.loss.num_slices,
                prediction=cfg.loss.prediction,
                engine=cfg.loss.engine,
                statistic=cfg.loss.statistic,
            )
            key = jax.random.key(0)
            g = jax.random.normal(key, (cfg.views.n_global, n, dim), self.dtype)
            loc = None
            if cfg.views.n_local:
                loc = jax.random.normal(key, (cfg.views.n_local, n, dim), self.dtype)
            grad = jax.jit(jax.grad(lambda g, loc, s: lejepa_loss(g, loc, step=s, **opts).loss))
            jax.block_until_ready(grad(g, loc, 0))  # compile outside the measurement
            self._loss_probe = (grad, g, loc)
        grad, g, loc = self._loss_probe
        start = time.perf_counter()
        jax.block_until_ready(grad(g, loc, self.step))
        return (time.perf_counter() - start) * cfg.optim.accum_steps

    # -------------------------------------------------------------- evaluation
    def _variables(self) -> dict[str, Any]:
        state = self.host_state()
        return {"params": state["params"], "batch_stats": state["batch_stats"]}

    def _eval_batches(self, split: str) -> Iterator[np.ndarray]:
        """The images of ``split`` (``"train"``/``"test"``) in batches of ``eval.batch_size``:
        slices of the arrays in memory, or streamed and decoded (every process reads all)."""
        cfg, data = self.cfg, self.data
        size = cfg.eval.batch_size
        if isinstance(data, ImageDataset):
            images = data.train_images if split == "train" else data.test_images
            for start in range(0, len(images), size):
                yield images[start : start + size]
            return
        with data.eval_batches(split, cfg.data, size) as batches:
            for batch in batches:
                yield batch.images.astype(np.float32) / np.float32(255)

    def _features(self, variables, split: str, head: str) -> np.ndarray:
        """Backbone features or projector embeddings of the evaluation views of ``split``,
        float32; features are kept, images are not."""
        size, dt = self.cfg.eval.batch_size, self.dtype
        outs = [
            batched(lambda x: self._jit_features(variables, x, head=head), chunk.astype(dt), size)
            for chunk in self._eval_batches(split)
        ]
        return np.concatenate(outs)

    def evaluate(self) -> dict[str, Any]:
        """Test-split metrics: online probe and k-NN accuracy (labelled data), effective rank."""
        variables = self._variables()
        test = self._features(variables, "test", "backbone")
        features = predicted = None
        if self.has_probe:
            train = self._features(variables, "train", "backbone")
            logits = self.eval_net.apply(
                variables, test.astype(self.dtype), method=LeJEPANet.classify
            )
            predicted = np.asarray(jax.device_get(logits)).argmax(axis=1)
            features = (train, test)
        embeddings = self._features(variables, "test", "projector")
        return self._eval_record(embeddings, features, predicted)

    def _test_embeddings(self) -> np.ndarray:
        return self._features(self._variables(), "test", "projector")

    def _summary_extras(self) -> dict[str, Any]:
        """``linear_acc``: :func:`trainers.core.probes.linear_eval` of the final backbone."""
        if not self.has_probe:
            return {}
        variables = self._variables()
        result = configured_linear_eval(
            self.cfg,
            self.data,
            self._features(variables, "train", "backbone"),
            self._features(variables, "test", "backbone"),
        )
        return {"linear_acc": result.accuracy}


# ----------------------------------------------------------------------------- CLI
def parser() -> argparse.ArgumentParser:
    """The command-line parser (config options plus the JAX-specific flags)."""
    p = trainer_parser("jax_pmap", __doc__.split("\n\n")[0])
    p.add_argument(
        "--parallel",
        choices=KINDS,
        default="pmap",
        help="data parallelism: jax.pmap over the local devices (default), or jax.jit + "
        "jax.shard_map over a mesh of all devices (the path JAX recommends; same results)",
    )
    p.add_argument(
        "--num-cpu-devices",
        type=int,
        metavar="N",
        help="simulate N CPU devices (jax_num_cpu_devices; must be set before JAX starts)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-process job with jax.distributed.initialize; without the three "
        "options below JAX auto-detects the cluster (SLURM, Open MPI, Cloud TPU, ...)",
    )
    p.add_argument(
        "--coordinator-address",
        metavar="HOST:PORT",
        help="address of process 0's coordinator (implies --distributed)",
    )
    p.add_argument(
        "--num-processes",
        type=int,
        metavar="P",
        help="processes in the job (implies --distributed)",
    )
    p.add_argument(
        "--process-id",
        type=int,
        metavar="I",
        help="this process's id, 0..P-1 (implies --distributed)",
    )
    return p


def init_jax(args: argparse.Namespace, cfg: TrainConfig) -> None:
    """Configure JAX before its first computation: platform, CPU threads, simulated CPU
    devices, multi-process.

    Parameters
    ----------
    args : argparse.Namespace
        ``num_cpu_devices``, ``distributed``, ``coordinator_address``, ``num_processes``,
        ``process_id`` from :func:`parser`.
    cfg : TrainConfig
        ``run.device`` (``"cpu"``/``"cuda"`` select the JAX platform) and ``run.threads``
        (XLA's CPU intra-op threads).

    Raises
    ------
    ValueError
        A device or process count below 1, or a process id out of range.
    """
    if cfg.run.device != "auto":
        jax.config.update("jax_platforms", cfg.run.device)
    if cfg.run.threads is not None:  # read when the CPU backend starts
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + " --xla_cpu_multi_thread_eigen=false"
            + f" intra_op_parallelism_threads={cfg.run.threads}"
        ).strip()
    if args.num_cpu_devices is not None:
        if args.num_cpu_devices < 1:
            raise ValueError(f"--num-cpu-devices must be >= 1, got {args.num_cpu_devices}")
        jax.config.update("jax_num_cpu_devices", args.num_cpu_devices)
    explicit = (args.coordinator_address, args.num_processes, args.process_id)
    if not (args.distributed or any(v is not None for v in explicit)):
        return
    if args.num_processes is not None and args.num_processes < 1:
        raise ValueError(f"--num-processes must be >= 1, got {args.num_processes}")
    if args.process_id is not None and not (
        0 <= args.process_id < (args.num_processes or args.process_id + 1)
    ):
        raise ValueError(f"--process-id must be in [0, --num-processes), got {args.process_id}")
    if cfg.run.device != "cuda":  # CPU collectives across processes go through gloo
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=args.coordinator_address,
        num_processes=args.num_processes,
        process_id=args.process_id,
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status.

    0 done, 2 bad option or file, 3 non-finite loss, 4 file-system failure.
    """
    p = parser()
    args = p.parse_intermixed_args(argv)
    cfg = load_trainer_config(p, args, "jax_pmap")
    try:
        init_jax(args, cfg)
    except (OSError, TypeError, ValueError) as exc:
        p.error(str(exc))

    def build() -> Trainer:
        return Trainer(
            cfg,
            DataParallel(args.parallel),
            resume=args.resume,
            argv=sys.argv if argv is None else list(argv),
        )

    try:
        return run_trainer(build, jax.process_index(), who="process")
    finally:
        if jax.process_count() > 1:
            jax.distributed.shutdown()
