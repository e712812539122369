"""Frozen-encoder features of the MLP trainer's networks, for :mod:`trainers.eval_linear`.

The evaluation interface every trainer package provides (``FORMAT``, :func:`load_data`,
:func:`raw_inputs`, :func:`checkpoint_features`), in NumPy float64: the encoder features of
the standardised flat inputs (no views). A streamed source (``imagefolder:``, ``shards:``)
is read in batches of ``eval.batch_size``: features are kept, images are not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from trainers.core.config import TrainConfig
from trainers.core.stream import StreamedDataset, is_streamed, map_images, open_configured
from trainers.core.vector_data import VectorDataset, load_vectors
from trainers.cupy_nccl.lejepa import build_net, embed
from trainers.cupy_nccl.trainer import ARRAY_FORMAT, initial_params

__all__ = ["FORMAT", "checkpoint_features", "load_data", "raw_inputs"]

FORMAT = ARRAY_FORMAT
_SPLITS = ("train", "test")


def load_data(cfg: TrainConfig) -> VectorDataset | StreamedDataset:
    """The run's data (``data.*``): flat vectors in memory (feature files included), or an
    ``imagefolder:``/``shards:`` stream."""
    if is_streamed(cfg.data.name):
        return open_configured(cfg.data)
    return load_vectors(
        cfg.data.name,
        test_fraction=cfg.data.test_fraction,
        split_seed=cfg.data.split_seed,
        image_size=cfg.data.image_size,
        train_size=cfg.data.train_size,
    )


def _flat(
    cfg: TrainConfig,
    data: VectorDataset | StreamedDataset,
    split: str,
    fn: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """``fn`` of the standardised flat inputs (float64 ``(n, D)``) of ``split``."""
    if isinstance(data, VectorDataset):
        x = data.train if split == "train" else data.test
        return fn((x.reshape(len(x), -1).astype(np.float64) - data.mean) / data.std)
    mean, std = (np.repeat(a, data.image_size**2) for a in data.channel_stats())

    def standardised(images: np.ndarray) -> np.ndarray:
        return fn((images.reshape(len(images), -1).astype(np.float64) - mean) / std)

    return map_images(data, split, standardised, batch_size=cfg.eval.batch_size, options=cfg.data)


def raw_inputs(
    cfg: TrainConfig, data: VectorDataset | StreamedDataset
) -> tuple[np.ndarray, np.ndarray]:
    """The standardised flat inputs (pixels of image data), float64 ``(N, D)`` per split."""
    train, test = (_flat(cfg, data, split, lambda x: x) for split in _SPLITS)
    return train, test


def checkpoint_features(
    cfg: TrainConfig, data: VectorDataset | StreamedDataset, state: dict[str, Any] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test encoder features of a checkpoint's parameters (``None``: the initial
    parameters of ``run.seed``), float64 ``(N, F)``."""
    dim = data.dim if isinstance(data, VectorDataset) else data.channels * data.image_size**2
    net = build_net(dim, cfg.model.encoder_dims, cfg.model.projector_dims, data.num_classes)
    params = initial_params(cfg, net, np, dtype=np.float64)
    if state is not None:
        params = {k: state[f"param/{k}"].astype(np.float64) for k in params}
    train, test = (
        _flat(cfg, data, split, lambda x: embed(np, net, params, x)[0]) for split in _SPLITS
    )
    return train, test
