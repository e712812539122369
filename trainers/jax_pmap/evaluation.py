"""Frozen-backbone features of the JAX trainer's networks, for :mod:`trainers.eval_linear`.

The evaluation interface every trainer package provides (``FORMAT``, :func:`load_data`,
:func:`raw_inputs`, :func:`checkpoint_features`); features of the evaluation view (the whole
image resized to the global view size), on the default JAX device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from trainers.core.config import TrainConfig
from trainers.core.datasets import ImageDataset
from trainers.core.probes import flat_pixels
from trainers.core.stream import StreamedDataset, map_images, open_configured
from trainers.jax_pmap.checkpoint import JAX_FORMAT
from trainers.jax_pmap.models import LeJEPANet, configured_net, initial_variables
from trainers.jax_pmap.views import MultiCrop

__all__ = ["FORMAT", "batched", "checkpoint_features", "load_data", "raw_inputs"]

FORMAT = JAX_FORMAT


def batched(fn: Callable[[Any], Any], images: np.ndarray, batch_size: int) -> np.ndarray:
    """``fn`` over ``images`` in batches of ``batch_size`` (the last one zero-padded, so one
    compiled shape serves all), float32 on the host."""
    outs = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        padded = np.zeros((batch_size, *chunk.shape[1:]), chunk.dtype)
        padded[: len(chunk)] = chunk
        outs.append(np.asarray(fn(padded), dtype=np.float32)[: len(chunk)])
    return np.concatenate(outs)


def load_data(cfg: TrainConfig) -> ImageDataset | StreamedDataset:
    """The run's dataset (``data.*``: in memory, or an ``imagefolder:``/``shards:`` stream)."""
    return open_configured(cfg.data)


raw_inputs = flat_pixels
"""The ``raw-pixels`` baseline's inputs of ``(cfg, data)``
(:func:`trainers.core.probes.flat_pixels`)."""


def checkpoint_features(
    cfg: TrainConfig, data: ImageDataset | StreamedDataset, state: dict[str, Any] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test backbone features of a checkpoint's state (``None``: the trainer's
    initial variables for ``run.seed``), float32 ``(N, F)`` (a streamed source is read in
    batches of ``eval.batch_size``; features are kept, images are not)."""
    net = configured_net(cfg, data.num_classes, axis_name=None, dtype=jnp.float32)
    if state is None:
        variables = initial_variables(net, cfg, data.channels, jnp.float32)
    else:
        variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    mean, std = data.channel_stats()
    view = MultiCrop(cfg.views, cfg.augment, mean=mean, std=std).eval_view
    features = jax.jit(lambda v, x: net.apply(v, view(x), method=LeJEPANet.features))
    size = cfg.eval.batch_size

    def fn(images: np.ndarray) -> np.ndarray:
        return batched(lambda x: features(variables, x), images, size)

    return tuple(
        map_images(data, split, fn, batch_size=size, options=cfg.data)
        for split in ("train", "test")
    )
