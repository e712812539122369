"""Decoded ``uint8`` batches from a :class:`SampleIndex`, made ahead in worker processes.

``workers`` processes (:class:`~trainers.core.stream.pool.WorkerPool`, started with
``spawn``, so safe next to JAX, PyTorch or CUDA threads) each make every ``workers``-th
batch and keep up to ``prefetch`` finished batches ahead; batches arrive in order. Memory
is therefore bounded by ``workers * prefetch`` batches, whatever the size of the dataset.
``workers=0`` makes the batches in the calling process (no pool; for debugging, tiny data).

A batch is a pure function of its number (:mod:`trainers.core.stream.plan`), so an
iterator's position is one integer: :meth:`BatchIterator.state` returns it with the
settings that fix the batches; :meth:`StreamLoader.restore` checks those against the
current run and returns the batch number to start from. Resuming after a crash thus gives
the very batches an uninterrupted run would have had, with any number of workers.

Bad files (unreadable, truncated, not an image) follow ``bad_files``:

* ``"skip"``: the file is left out; its slot in the batch holds a copy of the batch's first
  good image (label included) and ``indices = -1``, so every batch keeps its shape.
  Each skipped file is named in a :class:`BadImageWarning` and counted
  (:attr:`BatchIterator.skipped`). A batch with no readable file is an error.
* ``"fail"``: the first bad file stops the run with a :class:`BadImageError` naming it.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainers.core.stream.decode import BadImageError, SampleReader
from trainers.core.stream.index import SampleIndex
from trainers.core.stream.plan import EvalPlan, TrainPlan
from trainers.core.stream.pool import WorkerPool

__all__ = ["BadImageWarning", "Batch", "BatchIterator", "StreamLoader", "default_workers"]

BAD_FILE_POLICIES = ("skip", "fail")
_ENDLESS = 2**53


class BadImageWarning(UserWarning):
    """A bad file was skipped (the message names it and says why)."""


def default_workers() -> int:
    """Decoding processes per rank by default: this rank's share of the usable CPUs (divided
    by torchrun's ``LOCAL_WORLD_SIZE``, the ranks on this machine) minus one for training,
    in ``[1, 16]``."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ranks_here = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(16, (usable or 1) // ranks_here - 1))


def shared_memory_fits(size: int) -> bool:
    """Whether ``/dev/shm`` (where it exists) has ``size`` bytes free, with a 10 % margin."""
    try:
        stats = os.statvfs("/dev/shm")
    except OSError:  # no /dev/shm (not Linux): SharedMemory uses other storage
        return True
    return stats.f_bavail * stats.f_frsize >= 1.1 * size


@dataclass(frozen=True)
class Batch:
    """One rank's batch.

    Attributes
    ----------
    number : int
        The batch number (the iterator position after it is ``number + 1``).
    images : numpy.ndarray
        ``uint8`` ``(B, C, S, S)``, values ``0..255``.
    labels : numpy.ndarray or None
        ``int64`` ``(B,)``; ``None`` for unlabelled data.
    indices : numpy.ndarray
        ``int64`` ``(B,)`` sample indices; ``-1`` where a skipped bad file's slot was filled.
    bad : tuple of str
        One message per skipped file of this batch (names the file, says why).
    """

    number: int
    images: np.ndarray
    labels: np.ndarray | None
    indices: np.ndarray
    bad: tuple[str, ...] = ()


class _MakeBatch:
    """Picklable batch maker run in the worker processes.

    ``make(k, out)`` decodes batch ``k`` into ``out`` (a ``uint8`` buffer of at least
    :attr:`max_bytes`; ``None``: a new array) and returns ``(batch, images)``: the
    :class:`Batch` without its images (``images`` is an empty placeholder) and the images,
    ``None`` when they were written into ``out``.
    """

    def __init__(
        self, index: SampleIndex, plan: TrainPlan | EvalPlan, size: int, channels: int, skip: bool
    ) -> None:
        self.index, self.plan, self.size, self.channels = index, plan, size, channels
        self.skip = skip
        self._reader: SampleReader | None = None

    @property
    def max_bytes(self) -> int:
        """Bytes of the images of the largest batch."""
        return self.plan.batch_size * self.channels * self.size**2

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_reader": None}

    def __call__(self, k: int, out: np.ndarray | None = None) -> tuple[Batch, np.ndarray | None]:
        if self._reader is None:
            self._reader = SampleReader(self.index)
        indices = self.plan.indices(int(k))
        shape = (len(indices), self.channels, self.size, self.size)
        images = np.empty(shape, np.uint8) if out is None else out[: np.prod(shape)].reshape(shape)
        good, bad = [], []
        for j, i in enumerate(indices):
            try:
                images[j] = self._reader.image(int(i), self.size, self.channels)
                good.append(j)
            except BadImageError as err:
                if not self.skip:
                    raise
                bad.append(str(err))
        if not good:
            raise BadImageError(
                f"{self.index.source}: batch {k}: none of its {len(indices)} files is "
                f"readable, e.g. {bad[0]}"
            )
        fill = np.full(len(indices), good[0])
        fill[good] = good
        images[fill != np.arange(len(indices))] = images[good[0]]
        labels = self.index.labels
        batch = Batch(
            number=int(k),
            images=np.empty((0, *shape[1:]), np.uint8),
            labels=None if labels is None else labels[indices[fill]],
            indices=np.where(fill == np.arange(len(indices)), indices, -1),
            bad=tuple(bad),
        )
        return batch, (images if out is None else None)


class StreamLoader:
    """Batches of decoded images of ``index`` in the order of ``plan``.

    Parameters
    ----------
    index : SampleIndex
        The samples.
    plan : TrainPlan or EvalPlan
        Which samples this rank reads in batch ``k``.
    image_size : int
        Side ``S`` every image is resized and centre-cropped to.
    channels : {1, 3}, default 3
        Greyscale or RGB output.
    workers : int, optional
        Decoding processes (0: decode in the calling process); default
        :func:`default_workers`.
    prefetch : int, default 2
        Finished batches each worker keeps ready.
    bad_files : {"skip", "fail"}, default "skip"
        What a bad file does (see the module docstring).

    Raises
    ------
    ValueError
        An option out of range.
    """

    def __init__(
        self,
        index: SampleIndex,
        plan: TrainPlan | EvalPlan,
        *,
        image_size: int,
        channels: int = 3,
        workers: int | None = None,
        prefetch: int = 2,
        bad_files: str = "skip",
    ) -> None:
        if plan.num_samples != len(index):
            raise ValueError(f"plan is for {plan.num_samples} samples, index has {len(index)}")
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if bad_files not in BAD_FILE_POLICIES:
            raise ValueError(f"bad_files must be one of {BAD_FILE_POLICIES}, got {bad_files!r}")
        workers = default_workers() if workers is None else workers
        if workers < 0 or prefetch < 1:
            raise ValueError(f"workers must be >= 0 and prefetch >= 1, got {workers}, {prefetch}")
        self.index, self.plan = index, plan
        self.workers, self.prefetch = workers, prefetch
        self._make = _MakeBatch(index, plan, image_size, channels, bad_files == "skip")

    def batches(self, start: int = 0, stop: int | None = None) -> BatchIterator:
        """An iterator over batches ``start, start + 1, ..., stop - 1``.

        ``stop=None`` means the end of an :class:`EvalPlan` and never for a
        :class:`TrainPlan`. Close the iterator (or use it in a ``with`` block) to stop the
        workers early.
        """
        end = getattr(self.plan, "num_batches", _ENDLESS) if stop is None else stop
        if not 0 <= start <= end:
            raise ValueError(f"start must be in [0, {end}], got {start}")
        return BatchIterator(self, start, end)

    def state(self, next_batch: int) -> dict[str, int]:
        """The position ``next_batch`` with what fixes the batches (JSON-serialisable)."""
        return {
            "next_batch": int(next_batch),
            "fingerprint": self.index.fingerprint(),
            **self.plan.settings(),
        }

    def restore(self, state: Mapping[str, Any]) -> int:
        """The batch to resume from, after checking ``state`` belongs to this loader.

        Raises
        ------
        ValueError
            ``state`` was saved with other data or other settings (names the difference).
        """
        expected = self.state(0)
        for key, value in expected.items():
            if key != "next_batch" and state.get(key) != value:
                what = "the data changed" if key == "fingerprint" else f"{key} was {state.get(key)}"
                raise ValueError(
                    f"{self.index.source}: cannot resume the data stream: {what} "
                    f"(now {value}) since the checkpoint"
                )
        return int(state["next_batch"])

    def _items(self, start: int, stop: int) -> Iterator[Batch]:
        """Batches ``start .. stop - 1`` with their images (copied out of the pool's slots)."""
        if self.workers == 0:
            for k in range(start, stop):
                batch, images = self._make(k)
                yield dataclasses.replace(batch, images=images)
            return
        slot_bytes = self._make.max_bytes
        need = self.workers * self.prefetch * slot_bytes
        if not shared_memory_fits(need):
            warnings.warn(
                f"/dev/shm has less than the {need / 2**20:.0f} MiB the decoded batches "
                "need; passing them through pipes instead (slower). "
                "Lower data.workers or data.prefetch, or enlarge /dev/shm (docker --shm-size)",
                ResourceWarning,
                stacklevel=3,
            )
            slot_bytes = 0
        pool = WorkerPool(
            self._make,
            start,
            stop,
            workers=self.workers,
            prefetch=self.prefetch,
            slot_bytes=slot_bytes,
        )
        try:
            for (batch, images), slot in pool:
                if slot is not None:
                    shape = (len(batch.indices), *batch.images.shape[1:])
                    images = slot[: int(np.prod(shape))].reshape(shape).copy()
                yield dataclasses.replace(batch, images=images)
        finally:
            pool.close()


class BatchIterator:
    """Iterator of :class:`Batch` es with its position (:meth:`state`) and counters.

    Attributes
    ----------
    next_batch : int
        Number of the batch the next ``next()`` returns.
    skipped : int
        Bad files skipped so far.
    wait_seconds : float
        Time spent blocked in ``next()`` waiting for a batch.
    """

    def __init__(self, loader: StreamLoader, start: int, stop: int) -> None:
        self.loader, self.next_batch, self.stop = loader, start, stop
        self.skipped, self.wait_seconds = 0, 0.0
        self._it = loader._items(start, stop)

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> Batch:
        began = time.perf_counter()
        try:
            batch = next(self._it)
        except BaseException:
            self.close()
            raise
        finally:
            self.wait_seconds += time.perf_counter() - began
        for message in batch.bad:
            warnings.warn(f"skipped bad image {message}", BadImageWarning, stacklevel=2)
        self.skipped += len(batch.bad)
        self.next_batch = batch.number + 1
        return batch

    def state(self) -> dict[str, int]:
        """The position (the next batch) with the settings that fix the batches."""
        return self.loader.state(self.next_batch)

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        close = getattr(self._it, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> BatchIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
