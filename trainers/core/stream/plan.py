"""Which samples each rank reads in each batch: pure functions of the batch number.

:class:`TrainPlan` (training): the samples form one endless *stream*, the concatenation of
a fresh seeded permutation of the dataset per data epoch (``numpy.random.default_rng([seed,
e])``, as :class:`trainers.core.sampler.EpochSampler`). Global batch ``k`` is stream positions
``[k G, (k + 1) G)`` with ``G = batch_size * world_size``, and rank ``r`` takes the
``batch_size`` positions ``[k G + r B, k G + (r + 1) B)``. So every batch is full and the
same size on every rank, and every sample is read exactly once per data epoch across all
ranks: the ``N mod G`` samples that do not fill a last batch open the next batch instead of
being dropped (data epochs then straddle batch boundaries). When ``G`` divides ``N`` the
batches are exactly :class:`~trainers.core.sampler.EpochSampler`'s.

:class:`EvalPlan` (evaluation, feature extraction): every sample once, in index order; rank
``r`` reads a contiguous share (the first ``N mod W`` ranks one sample more, as
:func:`trainers.distributed.shard`) in batches of ``batch_size``, the last one shorter.

A batch depends only on its number and these few integers, so the position of an iterator
is one integer and any worker process can compute any batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainers.core.sampler import ShuffledBatches

__all__ = ["EvalPlan", "TrainPlan"]


class TrainPlan(ShuffledBatches):
    """Full, equal per-rank batches of an endless stream of per-epoch shuffles (parameters
    and errors: :class:`~trainers.core.sampler.ShuffledBatches`; ``batches_per_epoch`` is
    the steps a trainer counts as one epoch)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._permutations: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of data epoch ``epoch`` (the two latest are cached)."""
        if epoch not in self._permutations:
            if len(self._permutations) >= 2:
                del self._permutations[min(self._permutations)]
            self._permutations[epoch] = super().permutation(epoch)
        return self._permutations[epoch]

    def indices(self, k: int) -> np.ndarray:
        """This rank's sample indices of global batch ``k``, ``int64`` ``(batch_size,)``."""
        if k < 0:
            raise ValueError(f"batch number must be >= 0, got {k}")
        global_batch = self.batch_size * self.world_size
        start = k * global_batch + self.rank * self.batch_size
        positions = np.arange(start, start + self.batch_size, dtype=np.int64)
        epochs, within = np.divmod(positions, self.num_samples)
        out = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(epochs):
            here = epochs == epoch
            out[here] = self.permutation(int(epoch))[within[here]]
        return out

    def settings(self) -> dict[str, int]:
        """The integers that fix the global batches (stored with an iterator position). The
        same on all ranks, so one rank's checkpoint serves them all, and under any split
        of the global batch over ranks (rank ``r`` of ``W`` reads its slice)."""
        return {
            "num_samples": self.num_samples,
            "global_batch": self.batch_size * self.world_size,
            "seed": self.seed,
        }

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_permutations": {}}


class EvalPlan:
    """Every sample once, in order, each rank its contiguous share in batches.

    Parameters
    ----------
    num_samples : int
        Size of the dataset ``N``.
    batch_size : int
        Samples per batch (the last batch of a share is shorter).
    rank, world_size : int
        This process and the number of processes.
    """

    def __init__(self, num_samples: int, batch_size: int, *, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size or batch_size < 1:
            raise ValueError(
                f"need 0 <= rank < world_size and batch_size >= 1, got rank {rank}, "
                f"world_size {world_size}, batch_size {batch_size}"
            )
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.world_size = rank, world_size
        base, extra = divmod(num_samples, world_size)
        self.start = rank * base + min(rank, extra)
        self.stop = self.start + base + (rank < extra)

    @property
    def num_batches(self) -> int:
        """Batches in this rank's share (0 for an empty share)."""
        return -(-(self.stop - self.start) // self.batch_size)

    def indices(self, k: int) -> np.ndarray:
        """Sample indices of this rank's batch ``k``, ``int64``."""
        if not 0 <= k < self.num_batches:
            raise ValueError(f"batch number must be in [0, {self.num_batches}), got {k}")
        lo = self.start + k * self.batch_size
        return np.arange(lo, min(lo + self.batch_size, self.stop), dtype=np.int64)

    def settings(self) -> dict[str, int]:
        """The integers that fix every batch."""
        return {
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
        }
