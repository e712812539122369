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
from trainers.core.datasets import ImageDataset, load_configured
from trainers.core.launch import single_process
from trainers.core.probes import flat_pixels
from trainers.distributed import pick_device
from trainers.torch_ddp.checkpoint import TORCH_FORMAT
from trainers.torch_ddp.features import extract
from trainers.torch_ddp.models import initial_backbone
from trainers.torch_ddp.runtime import configure_torch
from trainers.torch_ddp.views import MultiCrop

__all__ = ["FORMAT", "backbone_features", "checkpoint_features", "load_data", "raw_inputs"]

FORMAT = TORCH_FORMAT


def load_data(cfg: TrainConfig) -> ImageDataset:
    """The run's dataset (``data.*``), after applying ``run.threads``/``run.deterministic``."""
    configure_torch(cfg)
    return load_configured(cfg.data)


raw_inputs = flat_pixels
"""The ``raw-pixels`` baseline's inputs (:func:`trainers.core.probes.flat_pixels`)."""


def backbone_features(
    cfg: TrainConfig, data: ImageDataset, state: dict[str, Any] | None, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test features of the configured backbone on the evaluation view.

    Parameters
    ----------
    cfg : TrainConfig
        Backbone, view size, seed and eval batch size.
    data : ImageDataset
        The dataset (its channel statistics normalise the views).
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
    env = single_process(device)

    def features(images: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(images).to(device)
        batch_size = cfg.eval.batch_size
        return extract(lambda b: backbone(view(b)), tensor, batch_size=batch_size, env=env)

    return features(data.train_images).cpu().numpy(), features(data.test_images).cpu().numpy()


def checkpoint_features(
    cfg: TrainConfig, data: ImageDataset, state: dict[str, Any] | None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`backbone_features` of a checkpoint's state (``None``: the initial weights) on
    the device of ``run.device``."""
    backbone = None if state is None else state["backbone"]
    return backbone_features(cfg, data, backbone, pick_device(cfg.run.device))
