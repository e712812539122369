"""Frozen-encoder features of the MLP trainer's networks, for :mod:`trainers.eval_linear`.

The evaluation interface every trainer package provides (``FORMAT``, :func:`load_data`,
:func:`raw_inputs`, :func:`checkpoint_features`), in NumPy float64: the encoder features of
the standardised flat inputs (no views).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainers.core.config import TrainConfig
from trainers.core.vector_data import VectorDataset, load_vectors
from trainers.cupy_nccl.lejepa import build_net, embed
from trainers.cupy_nccl.trainer import ARRAY_FORMAT, initial_params

__all__ = ["FORMAT", "checkpoint_features", "load_data", "raw_inputs"]

FORMAT = ARRAY_FORMAT


def load_data(cfg: TrainConfig) -> VectorDataset:
    """The run's flat vectors (``data.*``, feature files included)."""
    return load_vectors(
        cfg.data.name,
        test_fraction=cfg.data.test_fraction,
        split_seed=cfg.data.split_seed,
        image_size=cfg.data.image_size,
        train_size=cfg.data.train_size,
    )


def raw_inputs(data: VectorDataset) -> tuple[np.ndarray, np.ndarray]:
    """The standardised flat inputs (pixels of image data), float64 ``(N, D)`` per split."""
    train, test = (
        (x.reshape(len(x), -1).astype(np.float64) - data.mean) / data.std
        for x in (data.train, data.test)
    )
    return train, test


def checkpoint_features(
    cfg: TrainConfig, data: VectorDataset, state: dict[str, Any] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test encoder features of a checkpoint's parameters (``None``: the initial
    parameters of ``run.seed``), float64 ``(N, F)``."""
    net = build_net(data.dim, cfg.model.encoder_dims, cfg.model.projector_dims, data.num_classes)
    params = initial_params(cfg, net, np, dtype=np.float64)
    if state is not None:
        params = {k: state[f"param/{k}"].astype(np.float64) for k in params}
    train, test = (embed(np, net, params, x)[0] for x in raw_inputs(data))
    return train, test
