"""Checkpoint files and RNG states (PyTorch): the ``.pt`` :data:`TORCH_FORMAT`.

A checkpoint is one dict: the :class:`trainers.core.checkpoints.RunPosition` fields next to
the state dicts of the network, loss, optimiser, scheduler and scaler and every rank's RNG
states. It holds plain Python values and tensors only, so it loads
with ``torch.load(weights_only=True)``; it is written by :func:`trainers.core.rundir.atomic_write`
(temporary file in the same directory, fsync, ``os.replace``), so a crash never leaves a
truncated checkpoint behind. The global RNG states of torch (CPU and CUDA), NumPy and
Python are stored as tensors and plain containers for the same reason.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from trainers.core.checkpoints import CheckpointFormat
from trainers.core.rundir import atomic_write

__all__ = [
    "TORCH_FORMAT",
    "capture_rng_state",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]


def capture_rng_state() -> dict[str, Any]:
    """This process's global RNG states (torch CPU and CUDA, NumPy, Python), tensor-encoded."""
    _, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    version, py_state, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": version,
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set the global RNG states captured by :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    legacy = (
        "MT19937",
        np_state["keys"].numpy().astype(np.uint32),
        np_state["pos"],
        np_state["has_gauss"],
        np_state["cached_gaussian"],
    )
    np.random.set_state(legacy)  # noqa: NPY002 (the global state is what is restored)
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(path: str, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically with ``torch.save``."""
    atomic_write(path, lambda fh: torch.save(dict(state), fh))


def load_checkpoint(path: str, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(weights_only=True)``."""
    return torch.load(path, map_location=map_location, weights_only=True)


def _write(path: str, position: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    save_checkpoint(path, {**state, **position})


def _read(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    state = load_checkpoint(path)
    return state, state


TORCH_FORMAT = CheckpointFormat(".pt", _write, _read)
"""``ckpt_*.pt``: one ``torch.save`` dict of the position fields and the state dicts."""
