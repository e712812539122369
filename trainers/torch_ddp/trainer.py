"""LeJEPA pretraining with PyTorch on one process or many (DistributedDataParallel).

Usage::

    python -m trainers.torch_ddp [--config run.yaml] [--resume auto|CKPT] [section.option=value ...]
    torchrun --nproc_per_node=N -m trainers.torch_ddp [same arguments]

Started without torchrun it trains in one process; under torchrun every process joins the
default process group (NCCL on CUDA, gloo on CPU, multi-node through torchrun's usual
``--nnodes``/``--rdzv-*`` flags) and the LeJEPA loss reduces over the global batch through
``backends.torch.TorchDistributedCollective``. ``python -m trainers.torch_ddp --help`` lists
every option.

One optimiser step: the rank's batch indices (:mod:`trainers.core.sampler`) select images that
live on the device (for ``imagefolder:``/``shards:`` sources the rank's decoded ``uint8`` batch
arrives from :mod:`trainers.core.stream` worker processes instead);
:class:`trainers.torch_ddp.views.MultiCrop` makes the global and local views in batched tensor
ops; the network (:class:`trainers.torch_ddp.models.LeJEPANet`) embeds them; the loss is
``LeJEPALoss(global, local).loss`` plus the online probe's cross-entropy on detached features.
Every step checks, across all ranks, that the loss is finite; if not, every rank stops, the last
good checkpoint stays, and the process exits with status 3.

Run directory (``run.dir``): ``config.yaml``, ``run_info.json`` (git SHA), ``metrics.jsonl``,
``ckpt_*.pt`` and, at the end, ``loss.png``, ``accuracy.png`` and ``spectrum.png``. The
run directory must be shared by all nodes for checkpoints and ``--resume``.

Exit status: 0 done, 2 bad configuration or arguments, 3 non-finite loss.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from backends.torch import LeJEPALoss, TorchDistributedCollective
from trainers.core import rundir
from trainers.core.config import TrainConfig, config_to_dict
from trainers.core.datasets import ImageDataset
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
from trainers.core.schedule import warmup_cosine
from trainers.core.stream import (
    Batch,
    StreamedDataset,
    StreamSampler,
    open_configured,
    train_sampler,
)
from trainers.distributed import (
    DistEnv,
    any_rank,
    gather_objects,
    gather_rows,
    setup,
    shutdown,
)
from trainers.torch_ddp.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from trainers.torch_ddp.features import extract
from trainers.torch_ddp.models import LeJEPANet, initial_backbone
from trainers.torch_ddp.views import MultiCrop

__all__ = ["NonFiniteLoss", "Trainer", "configure_torch", "main"]


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp64":
        raise ValueError("run.precision 'fp64' is supported by trainers.cupy_nccl only")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _param_groups(net: LeJEPANet, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norm weights and the backbone's declared
    ``no_weight_decay()`` parameters (e.g. ViT position embeddings)."""
    skip = getattr(net.backbone, "no_weight_decay", lambda: set())()
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        if param.ndim <= 1 or name.removeprefix("backbone.") in skip:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class Trainer(RunLoop):
    """Everything of one training run: data, network, loss, optimiser, state, logs.

    Parameters
    ----------
    cfg : TrainConfig
        The resolved configuration.
    env : DistEnv
        This process's rank and device (:func:`trainers.distributed.setup`).
    resume : str, optional
        ``"auto"`` (latest checkpoint in ``run.dir``, or a fresh start if there is none) or
        the path of a checkpoint in ``run.dir``.
    argv : list of str
        The command line, recorded in ``run_info.json``.

    Raises
    ------
    ValueError
        A batch size that does not divide, a run directory that already holds checkpoints
        (without ``resume``), a checkpoint from another configuration or world size.
    """

    def __init__(self, cfg: TrainConfig, env: DistEnv, *, resume: str | None, argv: list[str]):
        self.cfg, self.env = cfg, env
        o, v = cfg.optim, cfg.views
        per_rank, rem = divmod(o.batch_size, env.world_size * o.accum_steps)
        if rem or per_rank == 0:
            raise ValueError(
                f"optim.batch_size ({o.batch_size}) must be a positive multiple of "
                f"world size x optim.accum_steps ({env.world_size} x "
                f"{o.accum_steps})"
            )
        checkpoint = self._find_checkpoint(resume)

        data = open_configured(cfg.data)
        self.data = data
        dev = env.device
        self.train_images = self.test_images = self.train_labels = None
        if isinstance(data, ImageDataset):  # in memory: the images live on the device
            self.train_images = torch.from_numpy(data.train_images).to(dev)
            self.test_images = torch.from_numpy(data.test_images).to(dev)
            if data.train_labels is not None:
                self.train_labels = torch.from_numpy(data.train_labels).to(dev)
        mean, std = data.channel_stats()
        self.multicrop = MultiCrop(v, cfg.augment, mean=mean, std=std)
        self.sampler = train_sampler(
            data, cfg, per_rank * o.accum_steps, rank=env.rank, world_size=env.world_size
        )

        backbone = initial_backbone(cfg, data.channels)  # identical on every rank
        self.net = LeJEPANet(backbone, cfg.model.projector_dims, data.num_classes).to(dev)
        self.model: torch.nn.Module = self.net
        if env.distributed:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[dev] if dev.type == "cuda" else None
            )
        self.loss_fn = LeJEPALoss(
            cfg.loss.lamb,
            cfg.loss.num_slices,
            cfg.run.seed,
            cfg.loss.prediction,
            TorchDistributedCollective() if env.distributed else None,
        ).to(dev)
        self.optimizer = torch.optim.AdamW(_param_groups(self.net, o.weight_decay), lr=o.lr)
        warmup = round(o.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: warmup_cosine(
                s, total_steps=self.total_steps, warmup_steps=warmup, final_ratio=o.final_lr_ratio
            ),
        )
        self.amp_dtype = _autocast_dtype(cfg.run.precision, dev)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.amp_dtype == torch.float16)
        self.generator = torch.Generator(device=dev)

        self.is_main, self.has_probe = env.is_main, self.net.probe is not None
        self.metrics = MetricsLog(os.path.join(cfg.run.dir, "metrics.jsonl"))
        # the global RNGs are not used by this trainer's own randomness (explicit seeds and
        # generators); they are seeded per rank for any library code that draws from them
        torch.manual_seed(derive_seed(cfg.run.seed, env.rank, 1))
        np.random.seed(derive_seed(cfg.run.seed, env.rank, 2))  # noqa: NPY002
        random.seed(derive_seed(cfg.run.seed, env.rank, 3))
        if checkpoint is None:
            self._start_run(argv)
        else:
            self._restore(checkpoint)

    # --------------------------------------------------------------------- state
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=self.amp_dtype)

    def _find_checkpoint(self, resume: str | None) -> str | None:
        """The checkpoint to resume from (rank 0 decides for all), or None for a new run."""
        run_dir = self.cfg.run.dir
        latest = rundir.latest_checkpoint(run_dir) if self.env.is_main else None
        return resolve_resume(resume, gather_objects(latest, self.env)[0], run_dir)

    def _start_run(self, argv: list[str]) -> None:
        """Create the run directory's config, provenance and empty metrics (rank 0)."""
        if self.env.is_main:
            start_run(
                self.cfg,
                self.metrics,
                {
                    "argv": argv,
                    "world_size": self.env.world_size,
                    "device": str(self.env.device),
                    "backend": torch.distributed.get_backend() if self.env.distributed else None,
                    "torch": torch.__version__,
                },
            )

    def _restore(self, path: str) -> None:
        check_checkpoint_path(path, self.cfg.run.dir)
        state = load_checkpoint(path, self.env.device)
        check_resumable(self.cfg, path, state["config"], state["world_size"], self.env.world_size)
        self.net.backbone.load_state_dict(state["backbone"])
        self.net.projector.load_state_dict(state["projector"])
        if self.net.probe is not None:
            self.net.probe.load_state_dict(state["probe"])
        self.loss_fn.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.batch_in_epoch = state["epoch"], state["batch_in_epoch"]
        self.step, self.train_time = state["step"], state["train_time"]
        if isinstance(self.sampler, StreamSampler):
            self.sampler.check(json.loads(state["data_stream"]), self.epoch, self.batch_in_epoch)
        restore_rng_state(state["rng"][self.env.rank])
        if self.env.is_main:
            self.metrics.truncate(state["metrics_count"])

    def save(self) -> None:
        """Checkpoint the whole state (a collective: every rank must call)."""
        rng = gather_objects(capture_rng_state(), self.env)
        if not self.env.is_main:
            return
        state = {
            "backbone": self.net.backbone.state_dict(),
            "projector": self.net.projector.state_dict(),
            "probe": None if self.net.probe is None else self.net.probe.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "train_time": self.train_time,
            "metrics_count": self.metrics.count,
            "world_size": self.env.world_size,
            "rng": rng,
            "config": config_to_dict(self.cfg),
        }
        if isinstance(self.sampler, StreamSampler):
            position = self.sampler.state(self.epoch, self.batch_in_epoch)
            state["data_stream"] = json.dumps(position)
        save_checkpoint(rundir.checkpoint_path(self.cfg.run.dir, self.step), state)
        rundir.prune_checkpoints(self.cfg.run.dir, self.cfg.run.keep_checkpoints)

    # ------------------------------------------------------------------ training
    def _sync(self) -> None:
        if self.env.device.type == "cuda":
            torch.cuda.synchronize(self.env.device)

    def _micro_batches(self, batch: np.ndarray | Batch) -> Iterator[tuple[torch.Tensor, Any]]:
        """``optim.accum_steps`` chunks ``(images, labels)`` of this rank's batch, on the
        device: gathered from the resident images, or the streamed ``uint8`` batch / 255."""
        accum, dev = self.cfg.optim.accum_steps, self.env.device
        if isinstance(batch, Batch):
            images = torch.from_numpy(batch.images).to(dev).float().div_(255.0)
            labels = None if batch.labels is None else torch.from_numpy(batch.labels).to(dev)
            size = len(images) // accum
            for micro in range(accum):
                part = slice(micro * size, (micro + 1) * size)
                yield images[part], None if labels is None else labels[part]
            return
        for chunk in np.split(batch, accum):
            index = torch.from_numpy(chunk).to(dev)
            labels = None if self.train_labels is None else self.train_labels[index]
            yield self.train_images[index], labels

    def _train_step(self, batch: np.ndarray | Batch) -> dict[str, Any]:
        """One optimiser step on this rank's ``batch``; returns the step's measurements."""
        cfg, env = self.cfg, self.env
        accum = cfg.optim.accum_steps
        start = time.perf_counter()
        data_time = 0.0
        totals = torch.zeros(5, device=env.device)  # total, loss, prediction, sigreg, probe
        chunks = self._micro_batches(batch)
        for micro in range(accum):
            t0 = time.perf_counter()
            images, chunk_labels = next(chunks)
            self.generator.manual_seed(derive_seed(cfg.run.seed, self.step, env.rank, micro))
            global_views, local_views = self.multicrop(images, self.generator)
            self._sync()
            data_time += time.perf_counter() - t0
            last = micro == accum - 1
            no_sync = (
                self.model.no_sync() if env.distributed and not last else contextlib.nullcontext()
            )
            with no_sync:
                with self._autocast():
                    out = self.model(global_views, local_views)
                    parts = self.loss_fn(out.global_embeddings, out.local_embeddings)
                    probe_loss = torch.zeros((), device=env.device)
                    if out.probe_logits is not None:
                        labels = chunk_labels.repeat(cfg.views.n_global)
                        probe_loss = F.cross_entropy(out.probe_logits.flatten(0, 1).float(), labels)
                total = parts.loss.float() + probe_loss
                if cfg.debug.nan_at_step == self.step + 1 and cfg.debug.nan_rank in (
                    None,
                    env.rank,
                ):
                    total = total + float("nan")
                self.scaler.scale(total / accum).backward()
            totals += (
                torch.stack(
                    [total.detach(), *(p.detach().float() for p in parts), probe_loss.detach()]
                )
                / accum
            )
        if any_rank(not bool(torch.isfinite(totals[0])), env):
            raise NonFiniteLoss(nonfinite_message(self.step + 1, self.epoch, cfg.run.dir))
        lr = self.scheduler.get_last_lr()[0]
        if cfg.optim.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        self._sync()
        _, loss, prediction, sigreg, probe = totals.tolist()
        return {
            "loss": loss,
            "prediction": prediction,
            "sigreg": sigreg,
            "probe_loss": probe,
            "lr": lr,
            "data_time": data_time,
            "step_time": time.perf_counter() - start,
        }

    # ---------------------------------------------------------------- evaluation
    def _features(self, split: str, head: str) -> torch.Tensor:
        """Backbone features (``head="backbone"``) or projector embeddings of the eval views
        of ``split`` (``"train"`` or ``"test"``), every rank its share, gathered."""
        net = self.net

        def fn(batch: torch.Tensor) -> torch.Tensor:
            features = net.backbone(self.multicrop.eval_view(batch))
            return features if head == "backbone" else net.projector(features)

        if isinstance(self.data, StreamedDataset):
            return self._streamed_features(fn, self.data, split)
        images = self.train_images if split == "train" else self.test_images
        return extract(
            fn, images, batch_size=self.cfg.eval.batch_size, env=self.env, context=self._autocast
        )

    def _streamed_features(self, fn: Any, data: StreamedDataset, split: str) -> torch.Tensor:
        """``fn`` over the streamed ``split``: features are kept, images are not."""
        cfg, env = self.cfg, self.env
        outs = []
        batches = data.eval_batches(
            split, cfg.data, cfg.eval.batch_size, rank=env.rank, world_size=env.world_size
        )
        with batches:
            for batch in batches:
                images = torch.from_numpy(batch.images).to(env.device).float().div_(255.0)
                with self._autocast():
                    outs.append(fn(images).float())
        if not outs:  # an empty share (more ranks than samples) still has the feature width
            probe = torch.zeros((1, data.channels, 8, 8), device=env.device)
            with self._autocast():
                outs.append(fn(probe).float()[:0])
        out = torch.cat(outs)
        return gather_rows(out, env) if env.distributed else out

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Test-split metrics: online probe and k-NN accuracy (labelled data), effective rank
        of the embedding covariance. A collective: every rank must call."""
        self.net.eval()
        test_features = self._features("test", "backbone")
        features = predicted = None
        if self.net.probe is not None:
            train_features = self._features("train", "backbone")
            predicted = self.net.probe(test_features).argmax(dim=1).cpu().numpy()
            features = (train_features.cpu().numpy(), test_features.cpu().numpy())
        embeddings = self.net.projector(test_features).float().cpu().numpy()
        self.net.train()
        return eval_record(
            self.cfg,
            self.data,
            epoch=self.epoch,
            step=self.step,
            embeddings=embeddings,
            features=features,
            probe_predictions=predicted,
        )

    @torch.no_grad()
    def _test_embeddings(self) -> np.ndarray:
        self.net.eval()
        return self._features("test", "projector").cpu().numpy()


def configure_torch(cfg: TrainConfig) -> None:
    """Apply run.threads and run.deterministic to torch."""
    if cfg.run.threads is not None:
        torch.set_num_threads(cfg.run.threads)
    if cfg.run.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0, 2 or 3)."""
    prog, description = "python -m trainers.torch_ddp", __doc__.split("\n\n")[0]
    parser, args, cfg = parse_trainer_args(prog, description, argv)
    configure_torch(cfg)
    try:
        env = setup(cfg.run.device)
    except ValueError as exc:
        parser.error(str(exc))
    command = sys.argv if argv is None else list(argv)
    try:
        return run_trainer(
            lambda: Trainer(cfg, env, resume=args.resume, argv=command),
            env.rank,
            # every rank has reported before any of them exits
            torch.distributed.barrier if env.distributed else None,
        )
    finally:
        shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
