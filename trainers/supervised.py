"""Supervised baseline (PyTorch): the configured backbone trained with labels, for comparison.

Usage::

    python -m trainers.supervised [--config run.yaml] [section.option=value ...]

The same backbone as LeJEPA pretraining (:func:`trainers.torch_ddp.models.initial_backbone`, initial
weights of ``run.seed``) plus a linear head, trained with cross-entropy on one augmented
global view per image (:class:`trainers.torch_ddp.views.MultiCrop` with ``views.n_global=1`` and no
local views), on the same training split (``data.train_size`` included), with the same
optimiser and schedule options (``optim.*``: AdamW, no weight decay on norms and biases,
warm-up then cosine). The frozen backbone is then measured by the same code as the LeJEPA
one (``trainers.eval_linear``, ``trainers.core.probes.few_shot_eval``). Single process.

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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainers.core.config import TrainConfig, config_parser, config_to_dict, load_config
from trainers.core.datasets import ImageDataset, load_configured
from trainers.core.sampler import EpochSampler
from trainers.core.schedule import warmup_cosine
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


def train_supervised(
    cfg: TrainConfig, data: ImageDataset, device: torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Train the configured backbone and a linear head with cross-entropy.

    Parameters
    ----------
    cfg : TrainConfig
        Model, views (global size and scale), augment, optim and ``run.seed``.
    data : ImageDataset
        Labelled data; the training split is used.
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
    sampler = EpochSampler(
        len(data.train_images), o.batch_size, rank=0, world_size=1, seed=cfg.run.seed
    )
    backbone = initial_backbone(cfg, data.channels)  # the LeJEPA trainer's initialisation
    net = Classifier(backbone, data.num_classes).to(device)
    optimizer, scheduler = _optimiser(net, o, sampler.batches_per_epoch)
    mean, std = data.channel_stats()
    views = dataclasses.replace(cfg.views, n_global=1, n_local=0)
    multicrop = MultiCrop(views, cfg.augment, mean=mean, std=std)
    generator = torch.Generator(device=device).manual_seed(cfg.run.seed)
    images = torch.from_numpy(data.train_images).to(device)
    labels = torch.from_numpy(data.train_labels).to(device)
    start = time.perf_counter()
    net.train()
    for epoch in range(o.epochs):
        losses, correct = [], 0
        for batch in sampler.batches(epoch):
            index = torch.from_numpy(batch).to(device)
            view = multicrop(images[index], generator)[0][0]
            logits = net(view)
            loss = F.cross_entropy(logits, labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if o.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), o.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            correct += int((logits.argmax(dim=1) == labels[index]).sum())
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
        data = load_configured(cfg.data)
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
