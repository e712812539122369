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
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from trainers.core import loop, rundir
from trainers.core.config import TrainConfig, config_parser, config_to_dict, load_config
from trainers.core.datasets import ImageDataset
from trainers.core.metrics import MetricsLog
from trainers.core.probes import configured_linear_eval
from trainers.core.schedule import warmup_cosine
from trainers.core.stream import (
    Batch,
    StreamSampler,
    open_configured,
    train_sampler,
)
from trainers.jax_pmap.parallel import KINDS

__all__ = ["Trainer", "init_jax", "main", "parser"]

SUFFIX = ".msgpack"


def _decay_mask(params: Any) -> Any:
    """AdamW weight-decay mask: matrices and kernels only (no biases, norms, ViT position
    embedding or class token), as the torch trainer's parameter groups."""
    import jax

    def decay(path, leaf) -> bool:
        name = str(getattr(path[-1], "key", path[-1]))
        return leaf.ndim > 1 and name not in ("pos_embed", "cls_token")

    return jax.tree_util.tree_map_with_path(decay, params)


class Trainer(loop.RunLoop):
    """Everything of one JAX training run: data, network, loss, optimiser, state, logs.

    Parameters
    ----------
    cfg : TrainConfig
        The resolved configuration.
    parallel : trainers.jax_pmap.parallel.DataParallel
        How the step is mapped over the devices.
    resume : str, optional
        ``"auto"`` (latest checkpoint in ``run.dir``, or a fresh start) or the path of a
        checkpoint in ``run.dir``.
    argv : list of str
        The command line, recorded in ``run_info.json``.
    dtype : dtype, default float32
        Parameter and compute dtype (float64 needs ``jax_enable_x64``).

    Raises
    ------
    ValueError
        A batch size that does not divide over the devices, an unsupported backbone or
        precision, a run directory that already holds checkpoints (without ``resume``), a
        checkpoint from another configuration, trainer or world size.
    """

    def __init__(self, cfg: TrainConfig, parallel: Any, *, resume: str | None, argv, dtype=None):
        import jax
        import jax.numpy as jnp
        import optax

        from trainers.jax_pmap.models import LeJEPANet, build_backbone
        from trainers.jax_pmap.views import MultiCrop

        self.cfg, self.parallel = cfg, parallel
        self.dtype = jnp.float32 if dtype is None else jnp.dtype(dtype)
        o = cfg.optim
        if cfg.run.precision not in ("auto", "fp32"):
            raise ValueError(
                f"run.precision {cfg.run.precision!r} is not supported by the JAX trainer "
                "(use 'auto' or 'fp32')"
            )
        n_proc, n_dev = jax.process_count(), parallel.num_devices
        per_device, rem = divmod(o.batch_size, n_dev * o.accum_steps)
        if rem or per_device == 0:
            raise ValueError(
                f"optim.batch_size ({o.batch_size}) must be a positive multiple of "
                f"devices x optim.accum_steps ({n_dev} x {o.accum_steps})"
            )
        self.process = jax.process_index()
        self.is_main = self.process == 0
        run_dir = cfg.run.dir
        checkpoint = loop.resolve_resume(resume, rundir.latest_checkpoint(run_dir, SUFFIX), run_dir)

        data = open_configured(cfg.data)
        self.data, self.has_probe = data, data.labelled
        mean, std = data.channel_stats()
        self.multicrop = MultiCrop(cfg.views, cfg.augment, mean=mean, std=std)
        self.sampler = train_sampler(
            data, cfg, o.batch_size // n_proc, rank=self.process, world_size=n_proc
        )

        def net(axis_name):
            backbone = build_backbone(
                cfg.model.backbone,
                img_size=cfg.views.global_size,
                width=cfg.model.width,
                timm_kwargs=cfg.model.timm_kwargs,
                axis_name=axis_name,
                dtype=self.dtype,
            )
            return LeJEPANet(
                backbone, cfg.model.projector_dims, data.num_classes, axis_name, self.dtype
            )

        self.net, self.eval_net = net(parallel.axis_name), net(None)
        dummy = jnp.zeros(
            (1, 1, data.channels, cfg.views.global_size, cfg.views.global_size), self.dtype
        )
        init = jax.jit(lambda key: self.eval_net.init(key, dummy, None, False))
        variables = init(jax.random.key(cfg.run.seed))

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
        self.metrics = MetricsLog(os.path.join(run_dir, "metrics.jsonl"))
        if checkpoint is None:
            self.state = parallel.replicate(host_state)
            if self.is_main:
                loop.start_run(
                    cfg,
                    self.metrics,
                    {
                        "argv": argv,
                        "world_size": n_dev,
                        "processes": n_proc,
                        "parallel": parallel.kind,
                        "device": str(parallel.local_devices[0].platform),
                        "jax": jax.__version__,
                    },
                )
        else:
            self._restore(checkpoint)
        if isinstance(data, ImageDataset):  # in memory: the images live on every device
            self.images = parallel.replicate(data.train_images.astype(self.dtype))
            labels = data.train_labels if data.labelled else np.zeros(len(data.train_images), int)
            self.labels = parallel.replicate(labels.astype(np.int32))
            self._views = parallel.compile(self._views_fn, "rbs", "vv")
            self._update = parallel.compile(self._update_fn, "rvvrbsss", "rr")
        else:  # streamed: each step's images (and labels) arrive split over the devices
            self._views = parallel.compile(self._batch_views_fn, "bbs", "vv")
            self._update = parallel.compile(self._update_fn, "rvvbbsss", "rr")
        self._jit_features = jax.jit(self._features_fn, static_argnames="head")

    # ---------------------------------------------------------- per-device programs
    def _views_fn(self, images, indices, step):
        """Views of this device's samples; keys from ``(seed, step, dataset index)``."""
        return self._batch_views_fn(images[indices], indices, step)

    def _batch_views_fn(self, images, indices, step):
        """Views of ``images`` (this device's samples, dataset ``indices``)."""
        import jax

        base = jax.random.fold_in(jax.random.key(loop.derive_seed(self.cfg.run.seed, 4)), step)
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(indices)
        g, loc = self.multicrop(images, keys)
        return g, loc

    def _update_fn(self, state, global_views, local_views, labels, indices, step, lr, poison):
        """One optimiser step on this device's views; returns the new state and the step's
        ``(total, loss, prediction, sigreg, probe)`` means over the micro-batches."""
        import jax
        import jax.numpy as jnp
        import optax
        from jax import lax

        from backends.jax import JaxAxisCollective, lejepa_loss

        cfg, axis = self.cfg, self.parallel.axis_name
        accum = cfg.optim.accum_steps
        collective = JaxAxisCollective(axis)
        size = global_views.shape[1] // accum

        def loss_fn(params, stats, micro):
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
                step=step * accum + micro,
                prediction=cfg.loss.prediction,
                collective=collective,
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

        params, stats = state["params"], state["batch_stats"]
        grads = jax.tree.map(jnp.zeros_like, params)
        totals = jnp.zeros(5, self.dtype)
        for micro in range(accum):
            g, (stats, values) = jax.grad(loss_fn, has_aux=True)(params, stats, micro)
            grads = jax.tree.map(lambda a, b: a + b / accum, grads, g)
            totals = totals + values / accum
        grads = self.parallel.reduce_gradients(grads)
        # the reported total carries a debugging NaN of any process to every process
        totals = totals.at[0].set(lax.pmean(totals[0] + poison, axis))
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
        from trainers.jax_pmap.models import LeJEPANet

        method = LeJEPANet.features if head == "backbone" else LeJEPANet.embed
        return self.eval_net.apply(variables, self.multicrop.eval_view(images), method=method)

    # ------------------------------------------------------------------- state
    def _restore(self, path: str) -> None:
        from flax import serialization

        loop.check_checkpoint_path(path, self.cfg.run.dir)
        if not path.endswith(SUFFIX):
            raise ValueError(f"--resume {path!r}: not a JAX trainer checkpoint (*{SUFFIX})")
        with open(path, "rb") as fh:
            saved = serialization.msgpack_restore(fh.read())
        meta = json.loads(saved["meta"])
        loop.check_resumable(
            self.cfg, path, meta["config"], meta["world_size"], self.parallel.num_devices
        )
        host_state = serialization.from_state_dict(self.template, saved["state"])
        self.state = self.parallel.replicate(host_state)
        self.epoch, self.batch_in_epoch = meta["epoch"], meta["batch_in_epoch"]
        self.step, self.train_time = meta["step"], meta["train_time"]
        if isinstance(self.sampler, StreamSampler):
            self.sampler.check(meta["data_stream"], self.epoch, self.batch_in_epoch)
        if self.is_main:
            self.metrics.truncate(meta["metrics_count"])

    def host_state(self) -> dict[str, Any]:
        """The train state (params, batch_stats, opt_state) as NumPy arrays."""
        return self.parallel.host(self.state)

    def save(self) -> None:
        """Checkpoint the state (the main process writes ``ckpt_*.msgpack`` atomically)."""
        from flax import serialization

        state = self.host_state()
        if not self.is_main:
            return
        meta = {
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "train_time": self.train_time,
            "metrics_count": self.metrics.count,
            "world_size": self.parallel.num_devices,
            "config": config_to_dict(self.cfg),
        }
        if isinstance(self.sampler, StreamSampler):
            meta["data_stream"] = self.sampler.state(self.epoch, self.batch_in_epoch)
        payload = serialization.msgpack_serialize(
            {"meta": json.dumps(meta), "state": serialization.to_state_dict(state)}
        )
        run_dir = self.cfg.run.dir
        rundir.atomic_write(
            rundir.checkpoint_path(run_dir, self.step, SUFFIX), lambda fh: fh.write(payload)
        )
        rundir.prune_checkpoints(run_dir, self.cfg.run.keep_checkpoints, SUFFIX)

    # ---------------------------------------------------------------- training
    def _step_inputs(self, batch: np.ndarray | Batch, step: Any) -> tuple[Any, Any, Any]:
        """``(views, labels, label positions)`` of this process's batch, on the devices: the
        views of the resident images at the batch's indices, or of the streamed batch."""
        import jax

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
        poison = (
            np.nan
            if cfg.debug.nan_at_step == self.step + 1 and cfg.debug.nan_rank in (None, self.process)
            else 0.0
        )
        new_state, totals = self._update(
            self.state,
            *views,
            labels,
            idx,
            step,
            par.scalar(lr, self.dtype),
            par.scalar(poison, self.dtype),
        )
        total, loss, prediction, sigreg, probe = (float(v) for v in par.host(totals))
        if not np.isfinite(total):
            raise loop.NonFiniteLoss(
                loop.nonfinite_message(self.step + 1, self.epoch, cfg.run.dir, SUFFIX)
            )
        self.state = new_state
        self.step += 1
        return {
            "loss": loss,
            "prediction": prediction,
            "sigreg": sigreg,
            "probe_loss": probe,
            "lr": lr,
            "data_time": data_time,
            "step_time": time.perf_counter() - start,
        }

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
        size = self.cfg.eval.batch_size
        outs = []
        for chunk in self._eval_batches(split):
            padded = np.zeros((size, *chunk.shape[1:]), chunk.dtype)
            padded[: len(chunk)] = chunk
            out = self._jit_features(variables, padded.astype(self.dtype), head=head)
            outs.append(np.asarray(out, dtype=np.float32)[: len(chunk)])
        return np.concatenate(outs)

    def evaluate(self) -> dict[str, Any]:
        """Test-split metrics: online probe and k-NN accuracy (labelled data), effective rank."""
        import jax

        from trainers.jax_pmap.models import LeJEPANet

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
        return loop.eval_record(
            self.cfg,
            self.data,
            epoch=self.epoch,
            step=self.step,
            embeddings=embeddings,
            features=features,
            probe_predictions=predicted,
        )

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
    p = config_parser("python -m trainers.jax_pmap", __doc__.split("\n\n")[0])
    loop.add_resume_argument(p)
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
    import jax

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
    """Command-line entry point; returns the exit status (0, 2 or 3)."""
    p = parser()
    args = p.parse_intermixed_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        init_jax(args, cfg)
    except (OSError, TypeError, ValueError) as exc:
        p.error(str(exc))
    import jax

    from trainers.jax_pmap.parallel import DataParallel

    def build() -> Trainer:
        return Trainer(
            cfg,
            DataParallel(args.parallel),
            resume=args.resume,
            argv=sys.argv if argv is None else list(argv),
        )

    try:
        return loop.run_trainer(build, jax.process_index(), who="process")
    finally:
        if jax.process_count() > 1:
            jax.distributed.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
