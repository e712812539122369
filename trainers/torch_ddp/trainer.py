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
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from backends.torch import LeJEPALoss, TorchDistributedCollective
from trainers.core.config import TrainConfig
from trainers.core.datasets import ImageDataset
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
from trainers.core.schedule import warmup_cosine
from trainers.core.stream import (
    Batch,
    StreamedDataset,
    fingerprint_of,
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
from trainers.torch_ddp.checkpoint import TORCH_FORMAT, capture_rng_state, restore_rng_state
from trainers.torch_ddp.features import extract
from trainers.torch_ddp.models import LeJEPANet, initial_backbone
from trainers.torch_ddp.runtime import autocast_dtype, configure_torch, param_groups
from trainers.torch_ddp.views import MultiCrop

__all__ = ["Trainer", "main"]

T = TypeVar("T")


def _time_loss_backward(clock: LossClock, *embeddings: torch.Tensor | None) -> None:
    """Start ``clock`` now; stop it when the gradients of all ``embeddings`` exist (hooks)."""
    tensors = [t for t in embeddings if t is not None and t.requires_grad]
    pending = [len(tensors)]

    def arrived(grad: torch.Tensor) -> None:
        pending[0] -= 1
        if pending[0] == 0:
            clock.stop()

    for t in tensors:
        t.register_hook(arrived)
    clock.start()


class Trainer(RunLoop):
    """Everything of one training run: data, network, loss, optimiser, state, logs.

    Parameters
    ----------
    cfg : TrainConfig
        The resolved configuration.
    env : DistEnv
        This process's rank and device (:func:`trainers.distributed.setup`).
    resume : str, optional
        ``"auto"`` (newest readable checkpoint in ``run.dir``, or a fresh start if there is
        none) or the path of a checkpoint in ``run.dir``.
    argv : list of str
        The command line, recorded in ``run_info.json``.

    Raises
    ------
    ValueError
        A batch size that does not divide, a run directory that already holds checkpoints
        (without ``resume``), an unreadable checkpoint, or one from another configuration,
        world size or dataset.
    """

    checkpoint_format = TORCH_FORMAT

    def __init__(self, cfg: TrainConfig, env: DistEnv, *, resume: str | None, argv: list[str]):
        self.cfg, self.env = cfg, env
        self.rank, self.world_size, self.is_main = env.rank, env.world_size, env.is_main
        o = cfg.optim
        per_rank = per_worker_batch(o.batch_size, env.world_size, o.accum_steps, "world size")
        self._load_data(per_rank * o.accum_steps)
        self._build_model()
        self.metrics = MetricsLog(os.path.join(cfg.run.dir, "metrics.jsonl"))
        # the global RNGs are not used by this trainer's own randomness (explicit seeds and
        # generators); they are seeded per rank for any library code that draws from them
        torch.manual_seed(derive_seed(cfg.run.seed, env.rank, 1))
        np.random.seed(derive_seed(cfg.run.seed, env.rank, 2))  # noqa: NPY002
        random.seed(derive_seed(cfg.run.seed, env.rank, 3))
        self.start_or_resume(resume, self._run_info(argv))

    def _load_data(self, rank_batch: int) -> None:
        """The dataset (in memory: on the device), its multi-crop views and this rank's
        sampler (in memory: sample indices; streamed: decoded batches)."""
        cfg, env = self.cfg, self.env
        data = self.data = open_configured(cfg.data)
        self.num_classes = data.num_classes
        self.data_fingerprint = fingerprint_of(data)
        self.train_images = self.test_images = self.train_labels = None
        if isinstance(data, ImageDataset):  # in memory: the images live on the device
            self.train_images = torch.from_numpy(data.train_images).to(env.device)
            self.test_images = torch.from_numpy(data.test_images).to(env.device)
            if data.train_labels is not None:
                self.train_labels = torch.from_numpy(data.train_labels).to(env.device)
        mean, std = data.channel_stats()
        self.multicrop = MultiCrop(cfg.views, cfg.augment, mean=mean, std=std)
        self.sampler = train_sampler(
            data, cfg, rank_batch, rank=env.rank, world_size=env.world_size
        )

    def _build_model(self) -> None:
        """Network (DDP-wrapped under torchrun), loss, optimiser, schedule and scaler."""
        cfg, env, o = self.cfg, self.env, self.cfg.optim
        dev = env.device
        backbone = initial_backbone(cfg, self.data.channels)  # identical on every rank
        self.net = LeJEPANet(backbone, cfg.model.projector_dims, self.data.num_classes).to(dev)
        self.has_probe = self.net.probe is not None
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
            engine=cfg.loss.engine,
            statistic=cfg.loss.statistic,
        ).to(dev)
        self.optimizer = torch.optim.AdamW(param_groups(self.net, o.weight_decay), lr=o.lr)
        warmup = round(o.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: warmup_cosine(
                s, total_steps=self.total_steps, warmup_steps=warmup, final_ratio=o.final_lr_ratio
            ),
        )
        self.amp_dtype = autocast_dtype(cfg.run.precision, dev)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.amp_dtype == torch.float16)
        self.generator = torch.Generator(device=dev)

    def _run_info(self, argv: list[str]) -> dict[str, Any]:
        env = self.env
        return {
            "argv": argv,
            "world_size": env.world_size,
            "device": str(env.device),
            "backend": torch.distributed.get_backend() if env.distributed else None,
            "torch": torch.__version__,
        }

    # --------------------------------------------------------------------- state
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=self.amp_dtype)

    def _agree(self, choose: Callable[[], T]) -> T:
        """Rank 0's ``choose()`` on every rank (an object broadcast)."""
        return gather_objects(choose() if self.env.is_main else None, self.env)[0]

    def _checkpoint_state(self) -> dict[str, Any]:
        """The state dicts and every rank's RNG states (a collective: every rank calls)."""
        rng = gather_objects(capture_rng_state(), self.env)
        return {
            "backbone": self.net.backbone.state_dict(),
            "projector": self.net.projector.state_dict(),
            "probe": None if self.net.probe is None else self.net.probe.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng,
        }

    def _load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.net.backbone.load_state_dict(state["backbone"])
        self.net.projector.load_state_dict(state["projector"])
        if self.net.probe is not None:
            self.net.probe.load_state_dict(state["probe"])
        self.loss_fn.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"][self.env.rank])

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

    def _views(self, images: torch.Tensor, micro: int) -> tuple[Any, Any]:
        """The (global, local) views of one micro-batch's ``images``."""
        cfg, env = self.cfg, self.env
        self.generator.manual_seed(derive_seed(cfg.run.seed, self.step, env.rank, micro))
        global_views, local_views = self.multicrop(images, self.generator)
        self._sync()
        return global_views, local_views

    def _forward_backward(
        self,
        labels: torch.Tensor | None,
        global_views: Any,
        local_views: Any,
        *,
        last: bool,
        clock: LossClock | None,
    ) -> torch.Tensor:
        """Loss and backward pass of one micro-batch (gradients synchronised on the ``last``
        one; the LeJEPA loss's forward and backward timed by ``clock`` unless it is None);
        returns its (total, loss, prediction, sigreg, probe) losses."""
        cfg, env = self.cfg, self.env
        no_sync = self.model.no_sync() if env.distributed and not last else contextlib.nullcontext()
        with no_sync:
            with self._autocast():
                out = self.model(global_views, local_views)
                with clock or contextlib.nullcontext():
                    parts = self.loss_fn(out.global_embeddings, out.local_embeddings)
                probe_loss = torch.zeros((), device=env.device)
                if out.probe_logits is not None:
                    targets = labels.repeat(cfg.views.n_global)
                    probe_loss = F.cross_entropy(out.probe_logits.flatten(0, 1).float(), targets)
            total = parts.loss.float() + probe_loss
            if self._inject_nan():
                total = total + float("nan")
            if clock is not None:  # the loss's backward ends when the embeddings' grads do
                _time_loss_backward(clock, out.global_embeddings, out.local_embeddings)
            self.scaler.scale(total / cfg.optim.accum_steps).backward()
        losses = [total.detach(), *(p.detach().float() for p in parts), probe_loss.detach()]
        return torch.stack(losses)

    def _train_step(self, batch: np.ndarray | Batch) -> dict[str, Any]:
        """One optimiser step on this rank's ``batch`` (indices of the resident images, or a
        decoded streamed batch); returns the step's measurements."""
        cfg = self.cfg
        accum = cfg.optim.accum_steps
        start = time.perf_counter()
        data_time = 0.0
        totals = torch.zeros(5, device=self.env.device)  # total, loss, prediction, sigreg, probe
        clock = LossClock(self._sync) if self._logs_next_step() else None
        chunks = self._micro_batches(batch)
        for micro in range(accum):
            t0 = time.perf_counter()
            images, labels = next(chunks)
            global_views, local_views = self._views(images, micro)
            data_time += time.perf_counter() - t0
            last = micro == accum - 1
            totals += (
                self._forward_backward(labels, global_views, local_views, last=last, clock=clock)
                / accum
            )
        if any_rank(not bool(torch.isfinite(totals[0])), self.env):
            raise self._nonfinite()
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
        losses = totals.tolist()[1:]  # loss, prediction, sigreg, probe
        loss_time = None if clock is None else clock.seconds
        return step_stats(*losses, lr=lr, data_time=data_time, started=start, loss_time=loss_time)

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
        return self._eval_record(embeddings, features, predicted)

    @torch.no_grad()
    def _test_embeddings(self) -> np.ndarray:
        self.net.eval()
        return self._features("test", "projector").cpu().numpy()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status.

    0 done, 2 bad option or file, 3 non-finite loss, 4 file-system failure.
    """
    description = __doc__.split("\n\n")[0]
    parser, args, cfg = parse_trainer_args("torch_ddp", description, argv)
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
