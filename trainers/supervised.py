"""Supervised baseline (PyTorch): the configured backbone trained with labels, for comparison.

Usage::

    python -m trainers.supervised [--config run.yaml] [section.option=value ...]

The same backbone as LeJEPA pretraining (:func:`trainers.torch_ddp.models.initial_backbone`, initial
weights of ``run.seed``) plus a linear head, trained with cross-entropy on one augmented
global view per image (:class:`trainers.torch_ddp.views.MultiCrop` with ``views.n_global=1`` and no
local views), on the same training split (``data.train_size`` included), with the same
optimiser and schedule options (``optim.*``: AdamW, no weight decay on norms and biases,
warm-up then cosine). ``imagefolder:`` and ``shards:`` are streamed (the batches of
:mod:`trainers.core.stream`, ``data.workers`` decoding processes). The frozen backbone is
then measured by the same code as the LeJEPA one (``trainers.eval_linear``,
``trainers.core.probes.few_shot_eval``). Single process.

Writes ``run.dir/supervised.pt`` (atomically): ``backbone`` (``state_dict``), ``config``,
``train_time`` (s), ``final_loss`` (mean cross-entropy of the last epoch) and
``train_accuracy`` (of the last epoch, on the augmented views).

Exit status: 0 done, 2 bad configuration or arguments.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainers.core.config import TrainConfig, config_parser, config_to_dict, load_config
from trainers.core.datasets import ImageDataset
from trainers.core.sampler import EpochSampler
from trainers.core.schedule import warmup_cosine
from trainers.core.stream import (
    Batch,
    StreamedDataset,
    StreamSampler,
    open_configured,
    train_sampler,
)
from trainers.distributed import pick_device
from trainers.torch_ddp.checkpoint import save_checkpoint
from trainers.torch_ddp.models import initial_backbone
from trainers.torch_ddp.runtime import configure_torch, param_groups
from trainers.torch_ddp.views import MultiCrop

__all__ = ["CHECKPOINT_NAME", "Classifier", "main", "train_supervised"]

CHECKPOINT_NAME = "supervised.pt"


class Classifier(nn.Module):
    """A backbone followed by a linear head.

    Parameters
    ----------
    backbone : torch.nn.Module
        With a ``num_features`` attribute.
    num_classes : int
    """

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of images ``(B, C, H, W)``."""
        return self.head(self.backbone(x))


def _optimiser(net: nn.Module, o: Any, steps_per_epoch: int) -> tuple[Any, Any]:
    """AdamW (``optim.*``, no weight decay on norms and biases) and its warm-up + cosine
    schedule, as in the LeJEPA trainer."""
    optimizer = torch.optim.AdamW(param_groups(net, o.weight_decay), lr=o.lr)
    total, warmup = o.epochs * steps_per_epoch, round(o.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: warmup_cosine(
            s, total_steps=total, warmup_steps=warmup, final_ratio=o.final_lr_ratio
        ),
    )
    return optimizer, scheduler


def _labelled_batches(
    sampler: EpochSampler | StreamSampler,
    epoch: int,
    resident: tuple[torch.Tensor, torch.Tensor] | None,
    device: torch.device,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` on ``device`` of every batch of ``epoch``: rows of the
    ``resident`` images and labels, or the streamed ``uint8`` batches / 255."""
    for batch in sampler.batches(epoch):
        if isinstance(batch, Batch):
            images = torch.from_numpy(batch.images).to(device).float().div_(255.0)
            yield images, torch.from_numpy(batch.labels).to(device)
        else:
            index = torch.from_numpy(batch).to(device)
            yield resident[0][index], resident[1][index]


def train_supervised(
    cfg: TrainConfig, data: ImageDataset | StreamedDataset, device: torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Train the configured backbone and a linear head with cross-entropy.

    Parameters
    ----------
    cfg : TrainConfig
        Model, views (global size and scale), augment, optim, ``run.seed`` and the ``data``
        stream options.
    data : ImageDataset or StreamedDataset
        Labelled data; the training split is used (a streamed one is read in the seeded,
        exactly-once-per-epoch batches of :mod:`trainers.core.stream`).
    device : torch.device

    Returns
    -------
    backbone_state : dict
        The trained backbone's ``state_dict`` (on the CPU).
    stats : dict
        ``train_time`` (s), ``final_loss`` and ``train_accuracy`` of the last epoch.

    Raises
    ------
    ValueError
        Unlabelled data, or a batch larger than the training split.
    """
    if not data.labelled:
        raise ValueError(f"supervised training needs labels; {cfg.data.name!r} has none")
    o = cfg.optim
    sampler = train_sampler(data, cfg, o.batch_size, rank=0, world_size=1)
    backbone = initial_backbone(cfg, data.channels)  # the LeJEPA trainer's initialisation
    net = Classifier(backbone, data.num_classes).to(device)
    optimizer, scheduler = _optimiser(net, o, sampler.batches_per_epoch)
    mean, std = data.channel_stats()
    views = dataclasses.replace(cfg.views, n_global=1, n_local=0)
    multicrop = MultiCrop(views, cfg.augment, mean=mean, std=std)
    generator = torch.Generator(device=device).manual_seed(cfg.run.seed)
    resident = None
    if isinstance(data, ImageDataset):  # in memory: moved to the device once
        resident = (
            torch.from_numpy(data.train_images).to(device),
            torch.from_numpy(data.train_labels).to(device),
        )
    start = time.perf_counter()
    net.train()
    for epoch in range(o.epochs):
        losses, correct = [], 0
        for images, labels in _labelled_batches(sampler, epoch, resident, device):
            logits = net(multicrop(images, generator)[0][0])
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if o.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), o.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            correct += int((logits.argmax(dim=1) == labels).sum())
    if isinstance(sampler, StreamSampler):
        sampler.close()
    stats = {
        "train_time": time.perf_counter() - start,
        "final_loss": float(np.mean(losses)),
        "train_accuracy": correct / (len(losses) * o.batch_size),
    }
    state = {k: v.detach().cpu() for k, v in net.backbone.state_dict().items()}
    return state, stats


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0, or 2 for a bad configuration)."""
    prog, description = "python -m trainers.supervised", __doc__.split("\n\n")[0]
    parser = config_parser(prog, description)
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        configure_torch(cfg)
        data = open_configured(cfg.data)
        state, stats = train_supervised(cfg, data, pick_device(cfg.run.device))
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    os.makedirs(cfg.run.dir, exist_ok=True)
    path = os.path.join(cfg.run.dir, CHECKPOINT_NAME)
    checkpoint: dict[str, Any] = {"backbone": state, "config": config_to_dict(cfg), **stats}
    save_checkpoint(path, checkpoint)
    print(
        f"supervised {cfg.model.backbone}: {stats['train_time']:.0f} s, final loss "
        f"{stats['final_loss']:.4f}, train accuracy {100 * stats['train_accuracy']:.2f}% "
        f"-> {path}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
