"""Batched, optionally sharded feature extraction for evaluation (PyTorch)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch

from trainers.distributed import DistEnv, gather_rows, shard

__all__ = ["extract"]


@torch.no_grad()
def extract(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    *,
    batch_size: int,
    env: DistEnv,
    context: Callable[[], AbstractContextManager] = nullcontext,
) -> torch.Tensor:
    """``fn`` applied to ``images`` batch by batch, float32, every rank doing its shard.

    Parameters
    ----------
    fn : callable
        Maps a batch of images ``(b, C, H, W)`` to features ``(b, F)`` (include the
        evaluation view and put the network in eval mode beforehand).
    images : torch.Tensor, shape (N, C, H, W)
        On ``env.device``.
    batch_size : int
        Images per call of ``fn``.
    env : DistEnv
        With a process group each rank computes a contiguous shard and the shards are
        gathered, so every rank gets all ``N`` rows.
    context : callable, default contextlib.nullcontext
        Returns a context manager entered around every call (e.g. autocast).

    Returns
    -------
    torch.Tensor, shape (N, F)
        float32, in the order of ``images``.
    """
    part = images[shard(len(images), env)] if env.distributed else images
    outs = []
    # an empty shard still runs one image so that its (0, F) result has the right width
    batch = part if len(part) else images[:1]
    for start in range(0, len(batch), batch_size):
        with context():
            outs.append(fn(batch[start : start + batch_size]).float())
    out = torch.cat(outs)[: len(part)]
    return gather_rows(out, env) if env.distributed else out
