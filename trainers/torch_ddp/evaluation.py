"""Frozen-backbone features of the torch trainer's networks, for :mod:`trainers.eval_linear`.

The evaluation interface every trainer package provides (``FORMAT``, :func:`load_data`,
:func:`raw_inputs`, :func:`checkpoint_features`): the features are those of the whole image
resized to the global view size (the evaluation view), computed by the backbone that
:func:`trainers.torch_ddp.models.initial_backbone` builds for the run's configuration.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trainers.core.config import TrainConfig
from trainers.core.datasets import ImageDataset
from trainers.core.probes import flat_pixels
from trainers.core.stream import StreamedDataset, map_images, open_configured
from trainers.distributed import pick_device
from trainers.torch_ddp.checkpoint import TORCH_FORMAT
from trainers.torch_ddp.models import initial_backbone
from trainers.torch_ddp.runtime import configure_torch
from trainers.torch_ddp.views import MultiCrop

__all__ = ["FORMAT", "backbone_features", "checkpoint_features", "load_data", "raw_inputs"]

FORMAT = TORCH_FORMAT


def load_data(cfg: TrainConfig) -> ImageDataset | StreamedDataset:
    """The run's dataset (``data.*``: in memory, or an ``imagefolder:``/``shards:`` stream),
    after applying ``run.threads``/``run.deterministic``."""
    configure_torch(cfg)
    return open_configured(cfg.data)


raw_inputs = flat_pixels
"""The ``raw-pixels`` baseline's inputs of ``(cfg, data)``
(:func:`trainers.core.probes.flat_pixels`)."""


def backbone_features(
    cfg: TrainConfig,
    data: ImageDataset | StreamedDataset,
    state: dict[str, Any] | None,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test features of the configured backbone on the evaluation view.

    Parameters
    ----------
    cfg : TrainConfig
        Backbone, view size, seed and eval batch size.
    data : ImageDataset or StreamedDataset
        The dataset (its channel statistics normalise the views); a streamed one is read
        in batches of ``eval.batch_size`` (features are kept, images are not).
    state : dict, optional
        Backbone ``state_dict``; ``None`` keeps the initial weights of ``run.seed``.
    device : torch.device

    Returns
    -------
    train, test : numpy.ndarray
        ``(N, F)`` float32 features.
    """
    backbone = initial_backbone(cfg, data.channels)  # the trainer's initialisation
    if state is not None:
        backbone.load_state_dict(state)
    backbone = backbone.to(device).eval()
    mean, std = data.channel_stats()
    view = MultiCrop(cfg.views, cfg.augment, mean=mean, std=std).eval_view

    @torch.no_grad()
    def features(images: np.ndarray) -> np.ndarray:
        return backbone(view(torch.from_numpy(images).to(device))).float().cpu().numpy()

    size = cfg.eval.batch_size
    return tuple(
        map_images(data, split, features, batch_size=size, options=cfg.data)
        for split in ("train", "test")
    )


def checkpoint_features(
    cfg: TrainConfig, data: ImageDataset | StreamedDataset, state: dict[str, Any] | None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`backbone_features` of a checkpoint's state (``None``: the initial weights) on
    the device of ``run.device``."""
    backbone = None if state is None else state["backbone"]
    return backbone_features(cfg, data, backbone, pick_device(cfg.run.device))
