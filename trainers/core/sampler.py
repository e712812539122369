"""Distributed sampling: a fresh seeded shuffle every epoch, sharded over the ranks.

Framework-free, shared by every trainer. The permutation of epoch ``e`` is drawn from
``numpy.random.default_rng([seed, e])``, so it is the same on every rank and after a resume;
each global batch of ``batch_size * world_size`` consecutive indices is split into one
``batch_size`` slice per rank. The last incomplete global batch is dropped, so every rank
takes the same number of steps.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["EpochSampler", "ShuffledBatches", "check_batches"]


def check_batches(num_samples: int, batch_size: int, rank: int, world_size: int) -> None:
    """Raise ``ValueError`` unless ``rank`` is in ``[0, world_size)`` and ``world_size``
    batches of ``batch_size >= 1`` fit in ``num_samples``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size * world_size > num_samples:
        raise ValueError(
            f"the global batch ({batch_size} per rank x {world_size} ranks) exceeds the "
            f"{num_samples} training samples; lower optim.batch_size"
        )


class ShuffledBatches:
    """The settings of per-rank batches drawn from a seeded shuffle of the samples per epoch,
    checked (shared by :class:`EpochSampler` and :class:`trainers.core.stream.TrainPlan`).

    Parameters
    ----------
    num_samples : int
        Size of the dataset.
    batch_size : int
        Samples per rank and batch.
    rank, world_size : int
        This process and the number of processes.
    seed : int
        Seed of the per-epoch shuffles.

    Raises
    ------
    ValueError
        A global batch larger than the dataset, or a rank outside ``[0, world_size)``.
    """

    def __init__(
        self, num_samples: int, batch_size: int, *, rank: int, world_size: int, seed: int
    ) -> None:
        check_batches(num_samples, batch_size, rank, world_size)
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed

    @property
    def batches_per_epoch(self) -> int:
        """Whole global batches in the dataset: the steps of one epoch."""
        return self.num_samples // (self.batch_size * self.world_size)

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of the samples in epoch ``epoch``: ``default_rng([seed, epoch])``."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)


class EpochSampler(ShuffledBatches):
    """Per-rank batches of sample indices for any epoch, from any position; the last
    incomplete global batch of every epoch is dropped (parameters and errors:
    :class:`ShuffledBatches`)."""

    def batches(self, epoch: int, start: int = 0) -> Iterator[np.ndarray]:
        """This rank's batches of epoch ``epoch``, beginning with batch number ``start``.

        Parameters
        ----------
        epoch : int
            Epoch number (selects the shuffle).
        start : int, default 0
            Batches of the epoch already consumed (a resumed position).

        Yields
        ------
        numpy.ndarray
            ``int64`` indices, shape ``(batch_size,)``.
        """
        if not 0 <= start <= self.batches_per_epoch:
            raise ValueError(f"start must be in [0, {self.batches_per_epoch}], got {start}")
        perm = self.permutation(epoch)
        used = self.batches_per_epoch * self.batch_size * self.world_size
        grid = perm[:used].reshape(self.batches_per_epoch, self.world_size, self.batch_size)
        for index in range(start, self.batches_per_epoch):
            yield grid[index, self.rank].astype(np.int64)
