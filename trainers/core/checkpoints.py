"""Checkpoint bookkeeping shared by every trainer: what every checkpoint stores, which one to
resume from, and whether it can continue this run.

Framework-free. A trainer's checkpoint file holds its framework state (weights, optimiser,
RNG states) and one :class:`RunPosition`: the counters, configuration and data identity
that :class:`trainers.core.loop.RunLoop` needs to continue the run. How the file is encoded
is the trainer's :class:`CheckpointFormat` (``.pt``: torch, ``.msgpack``: JAX, ``.npz``:
CuPy/NumPy); reading any of them goes through :func:`read_checkpoint`, so a truncated,
empty or foreign file is reported as a :class:`CheckpointError` naming it, and
``--resume auto`` falls back past it to the newest checkpoint that loads
(:func:`newest_readable`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainers.core import rundir
from trainers.core.config import TrainConfig, config_from_dict, diff_configs

__all__ = [
    "FORMATS",
    "RESUMABLE_CHANGES",
    "CheckpointError",
    "CheckpointFormat",
    "RunPosition",
    "check_checkpoint_path",
    "check_resumable",
    "data_fingerprint",
    "format_of",
    "newest_readable",
    "read_checkpoint",
    "resolve_resume",
]

RESUMABLE_CHANGES = frozenset(
    {
        "run.dir",
        "run.progress",
        "run.threads",
        "run.log_every_steps",
        "data.workers",
        "data.prefetch",
        "eval.batch_size",
        "debug.nan_at_step",
        "debug.nan_rank",
    }
)
"""Options that may differ between a checkpoint's configuration and the resuming command."""

FORMATS = {".pt": "torch_ddp", ".msgpack": "jax_pmap", ".npz": "cupy_nccl"}
"""Checkpoint file extension -> the trainer that writes it."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or that cannot continue this run."""


@dataclass(frozen=True)
class RunPosition:
    """The counters, configuration and data identity every checkpoint stores.

    Attributes
    ----------
    epoch, batch_in_epoch, step : int
        Epochs done, batches done in the current epoch, optimiser steps done.
    train_time : float
        Seconds spent in optimiser steps (over resumes).
    metrics_count : int
        Records of ``metrics.jsonl`` written when the checkpoint was taken.
    world_size : int
        Data-parallel size of the run (ranks or devices).
    config : dict
        The run's configuration (:func:`trainers.core.config.config_to_dict`).
    num_classes : int or None
        Classes of the training data (0: unlabelled; ``None``: not recorded, older files).
    data_fingerprint : str or None
        :func:`data_fingerprint` of the training data (``None``: not recorded).
    data_stream : str or None
        JSON of a streamed source's position
        (:meth:`trainers.core.stream.StreamSampler.state`; ``None``: data in memory).
    """

    epoch: int
    batch_in_epoch: int
    step: int
    train_time: float
    metrics_count: int
    world_size: int
    config: dict
    num_classes: int | None = None
    data_fingerprint: str | None = None
    data_stream: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (JSON-, msgpack- and ``torch.load``-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], path: str) -> RunPosition:
        """The position stored in ``values`` (the checkpoint ``path``, for errors).

        Raises
        ------
        CheckpointError
            A counter is missing.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [n for n in required if n not in values]
        if missing:
            raise CheckpointError(f"{path}: not a trainer checkpoint (no {', '.join(missing)})")
        return cls(**{n: _plain(values[n]) for n in names if n in values})


def _plain(value: Any) -> Any:
    """A NumPy scalar/0-d array (npz checkpoints) as a Python value."""
    return value.item() if isinstance(value, (np.ndarray, np.generic)) else value


@dataclass(frozen=True)
class CheckpointFormat:
    """How one trainer encodes a checkpoint file.

    Attributes
    ----------
    suffix : str
        File extension (``.pt``, ``.msgpack`` or ``.npz``).
    write : callable
        ``write(path, position, state)``: write the :meth:`RunPosition.to_dict` dict and the
        framework state atomically (:func:`trainers.core.rundir.atomic_write`).
    read : callable
        ``read(path) -> (position dict, state)``; may raise anything on a damaged file.
    """

    suffix: str
    write: Callable[[str, dict[str, Any], Any], None]
    read: Callable[[str], tuple[Mapping[str, Any], Any]]


def read_checkpoint(fmt: CheckpointFormat, path: str) -> tuple[RunPosition, Any]:
    """Read ``path`` with ``fmt``: its :class:`RunPosition` and framework state.

    Raises
    ------
    CheckpointError
        The file does not end in ``fmt.suffix``, or cannot be decoded (truncated, empty,
        another format), naming the file.
    """
    if not path.endswith(fmt.suffix):
        raise CheckpointError(
            f"{path}: not a {FORMATS[fmt.suffix]} checkpoint (*{fmt.suffix}); it was "
            f"written by {FORMATS.get(os.path.splitext(path)[1], 'another program')}"
        )
    try:
        values, state = fmt.read(path)
    except Exception as exc:  # noqa: BLE001 (each decoder raises its own errors on bad bytes)
        reason = (str(exc).splitlines() or [""])[0][:120]
        raise CheckpointError(
            f"{path}: cannot read the checkpoint ({type(exc).__name__}: {reason})"
        ) from exc
    if not isinstance(values, Mapping):
        raise CheckpointError(f"{path}: not a trainer checkpoint")
    return RunPosition.from_dict(values, path), state


def newest_readable(fmt: CheckpointFormat, run_dir: str) -> tuple[str, RunPosition, Any] | None:
    """The newest checkpoint of ``run_dir`` that reads, with its position and state.

    A checkpoint that does not read is skipped with a warning on standard error naming it.

    Returns
    -------
    (path, position, state) or None
        ``None`` when ``run_dir`` holds no readable checkpoint.
    """
    for _, path in reversed(rundir.list_checkpoints(run_dir, fmt.suffix)):
        try:
            return (path, *read_checkpoint(fmt, path))
        except CheckpointError as exc:
            print(f"warning: {exc}; trying the previous checkpoint", file=sys.stderr, flush=True)
    return None


def format_of(path: str) -> str:
    """The trainer (``FORMATS`` value) that writes checkpoints named like ``path``.

    Raises
    ------
    CheckpointError
        An extension no trainer writes.
    """
    ext = os.path.splitext(path)[1]
    if ext not in FORMATS:
        raise CheckpointError(
            f"{path}: not a checkpoint (expected one of {', '.join('*' + e for e in FORMATS)})"
        )
    return FORMATS[ext]


def data_fingerprint(*arrays: np.ndarray | None) -> str:
    """A hash of the arrays' shapes, dtypes and bytes (``None`` entries count as absent).

    Linear in the data size, which the trainers hold in memory anyway; it identifies the
    data a checkpoint was trained on so that a resume on changed data is refused.
    """
    digest = hashlib.blake2b(digest_size=16)
    for a in arrays:
        if a is None:
            digest.update(b"none;")
            continue
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape};".encode())
        digest.update(memoryview(a).cast("B"))
    return digest.hexdigest()


def resolve_resume(resume: str | None, latest: str | None, run_dir: str) -> str | None:
    """The checkpoint to resume from, or ``None`` for a new run.

    Parameters
    ----------
    resume : str or None
        ``--resume``: ``"auto"``, a checkpoint path, or ``None``.
    latest : str or None
        The newest readable checkpoint in ``run_dir``.
    run_dir : str
        ``run.dir``.

    Raises
    ------
    ValueError
        No ``--resume`` but ``run_dir`` already holds checkpoints.
    """
    if resume == "auto":
        return latest
    if resume is None and latest is not None:
        raise ValueError(
            f"run.dir {run_dir!r} already holds checkpoints: pass --resume "
            "auto to continue that run, or choose another run.dir"
        )
    return resume


def check_checkpoint_path(path: str, run_dir: str) -> None:
    """Raise ``ValueError`` unless ``path`` is an existing file in ``run_dir``."""
    if not os.path.isfile(path):
        raise ValueError(f"--resume {path!r}: no such checkpoint")
    if os.path.realpath(os.path.dirname(path)) != os.path.realpath(run_dir):
        raise ValueError(f"--resume {path!r}: the checkpoint must be in run.dir {run_dir!r}")


def check_resumable(
    cfg: TrainConfig,
    path: str,
    saved: RunPosition,
    *,
    world_size: int,
    num_classes: int,
    fingerprint: str,
) -> None:
    """Raise :class:`CheckpointError` unless the checkpoint ``path`` can continue this run.

    Parameters
    ----------
    cfg : TrainConfig
        The resuming command's configuration.
    path : str
        The checkpoint.
    saved : RunPosition
        What the checkpoint stores.
    world_size, num_classes : int
        This run's data-parallel size and number of classes.
    fingerprint : str
        :func:`data_fingerprint` of this run's training data.
    """
    changed = set(diff_configs(cfg, config_from_dict(saved.config))) - RESUMABLE_CHANGES
    if changed:
        raise CheckpointError(
            f"{path} was written with a different configuration "
            f"({', '.join(sorted(changed))} differ); "
            "resume with the run's own options (see its config.yaml)"
        )
    if saved.world_size != world_size:
        raise CheckpointError(
            f"{path} was written with world size {saved.world_size}; resume "
            f"with the same world size (now {world_size})"
        )
    if saved.num_classes is not None and saved.num_classes != num_classes:
        raise CheckpointError(
            f"{path} was trained on {saved.num_classes} classes but data.name "
            f"{cfg.data.name!r} now has {num_classes}: the dataset changed; start a new run.dir"
        )
    if saved.data_fingerprint is not None and saved.data_fingerprint != fingerprint:
        raise CheckpointError(
            f"{path} was trained on other data than data.name {cfg.data.name!r} now holds "
            "(same options, different contents): the dataset changed; start a new run.dir"
        )
