"""Where a process stands in a data-parallel launch: rank, world size, device.

Framework-free. A process started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``) joins torch's default process group
through :func:`trainers.distributed.setup`; the torch trainer uses that group for
everything, the CuPy/NumPy trainer as its control plane only, and imports torch only then
(:func:`launched_by_torchrun`). Any other process trains alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["DistEnv", "launched_by_torchrun", "shard", "single_process"]


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands.

    Attributes
    ----------
    rank, world_size, local_rank : int
        Global rank, number of processes, rank on this node.
    device : Any
        The device this process trains on (a ``torch.device`` for the torch trainer).
    distributed : bool
        Whether a process group is active (launched by torchrun).
    """

    rank: int
    world_size: int
    local_rank: int
    device: Any
    distributed: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (the one that logs, plots and writes checkpoints)."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (``RANK`` and ``WORLD_SIZE`` set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def single_process(device: Any) -> DistEnv:
    """The :class:`DistEnv` of a process that trains alone on ``device``."""
    return DistEnv(0, 1, 0, device)


def shard(n: int, env: DistEnv) -> slice:
    """This rank's contiguous block of ``range(n)`` (sizes differ by at most one)."""
    base, extra = divmod(n, env.world_size)
    start = env.rank * base + min(env.rank, extra)
    return slice(start, start + base + (env.rank < extra))
