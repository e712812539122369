"""Torch's process group, shared by the torch trainer and the CuPy/NumPy trainer's control plane.

A process started by ``torchrun`` joins the default process group (:func:`setup`): NCCL when
it trains on CUDA, gloo on the CPU. Any other process trains alone without a process group.
The collectives below (:func:`any_rank`, :func:`gather_rows`, :func:`gather_objects`) are
what the trainers need beyond the loss's own reductions; every rank must call them.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from trainers.core.launch import DistEnv, launched_by_torchrun, shard, single_process

__all__ = [
    "DistEnv",
    "any_rank",
    "gather_objects",
    "gather_rows",
    "pick_device",
    "setup",
    "shard",
    "shutdown",
]


def pick_device(device: str, local_rank: int = 0) -> torch.device:
    """``cuda:local_rank`` or ``cpu`` for ``run.device`` (``"auto"``, ``"cpu"``, ``"cuda"``).

    Raises
    ------
    ValueError
        ``device="cuda"`` without a CUDA device.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise ValueError("run.device is 'cuda' but no CUDA device is available")
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def setup(device: str) -> DistEnv:
    """Pick the device and, under torchrun, join the process group.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}
        ``"auto"`` takes CUDA when available. Under torchrun each process uses
        ``cuda:LOCAL_RANK``.

    Returns
    -------
    DistEnv

    Raises
    ------
    ValueError
        ``device="cuda"`` without a CUDA device.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    use_cuda = dev.type == "cuda"
    if use_cuda:
        torch.cuda.set_device(dev)
    if launched_by_torchrun():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None
        )
        return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, dev, distributed=True)
    return single_process(dev)


def shutdown() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, env: DistEnv) -> bool:
    """Whether ``flag`` is true on at least one rank (an all-reduce: every rank must call)."""
    if not env.distributed:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=env.device)
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return bool(value.item() > 0)


def gather_rows(x: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Concatenate every rank's ``x`` along dim 0 in rank order (shapes may differ in dim 0).

    Parameters
    ----------
    x : torch.Tensor, shape (n_r, ...)
        This rank's rows, on ``env.device``.
    env : DistEnv

    Returns
    -------
    torch.Tensor, shape (sum_r n_r, ...)
        The same on every rank.
    """
    if not env.distributed:
        return x
    sizes = [torch.zeros(1, dtype=torch.int64, device=x.device) for _ in range(env.world_size)]
    dist.all_gather(sizes, torch.tensor([len(x)], dtype=torch.int64, device=x.device))
    counts = [int(s.item()) for s in sizes]
    padded = x.new_zeros((max(counts), *x.shape[1:]))
    padded[: len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(env.world_size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order (every rank must call)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out
