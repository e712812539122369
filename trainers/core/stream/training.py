"""A streamed source prepared for a training run: the pieces a trainer reads.

:class:`StreamedDataset` stands where :class:`trainers.core.datasets.ImageDataset` stands for the
in-memory sources: labels of both splits, ``num_classes``, ``channels``, ``labelled`` and
``channel_stats()`` (estimated on a seeded sample of the training images, since the whole
set is never decoded at once); its :meth:`~StreamedDataset.loader` makes the batch loaders.
:class:`StreamSampler` gives a run loop the interface of
:class:`trainers.core.sampler.EpochSampler` (``batches_per_epoch``, ``batches(epoch, start)``)
but yields decoded :class:`~trainers.core.stream.loader.Batch` es, from one pool of workers
that runs through epoch boundaries.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainers.core.checkpoints import data_fingerprint
from trainers.core.datasets import ImageDataset, load_configured
from trainers.core.sampler import EpochSampler
from trainers.core.stream.decode import BadImageError, SampleReader
from trainers.core.stream.index import SampleIndex
from trainers.core.stream.loader import Batch, BatchIterator, StreamLoader
from trainers.core.stream.plan import EvalPlan, TrainPlan
from trainers.core.stream.sources import is_streamed, train_test_indices

__all__ = [
    "fingerprint_of",
    "map_images",
    "StreamSampler",
    "StreamedDataset",
    "open_configured",
    "probe_channels",
    "train_sampler",
]

_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def probe_channels(index: SampleIndex, samples: int = 32) -> int:
    """1 if the first ``samples`` readable images of ``index`` are all greyscale, else 3.

    Only image headers are read. A later colour image of a greyscale-looking set is
    converted to grey, so a mixed collection should have colour images among its first
    files (sorted names).
    """
    from PIL import Image

    reader = SampleReader(index)
    modes = set()
    try:
        for i in range(min(samples, len(index))):
            try:
                with Image.open(io.BytesIO(reader.read(i))) as img:
                    modes.add(img.mode)
            except (BadImageError, OSError):
                continue
    finally:
        reader.close()
    return 1 if modes and modes <= _GREY_MODES else 3


@dataclass(frozen=True)
class StreamedDataset:
    """Train and test indices of a streamed source, with what a trainer needs to know.

    Attributes
    ----------
    train, test : SampleIndex
        The two splits.
    image_size : int
        Side every image is decoded to.
    channels : int
        1 (greyscale) or 3 (RGB).
    mean, std : numpy.ndarray
        ``float32`` per-channel statistics in ``[0, 1]`` units (of a sample of ``train``).
    """

    train: SampleIndex
    test: SampleIndex
    image_size: int
    channels: int
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def build(
        cls,
        train: SampleIndex,
        test: SampleIndex,
        *,
        image_size: int,
        seed: int,
        stats_samples: int = 512,
    ) -> StreamedDataset:
        """Probe the channels and estimate the statistics on ``stats_samples`` training
        images drawn with ``seed`` (decoded in this process)."""
        channels = probe_channels(train)
        pick = np.random.default_rng(seed).permutation(len(train))[:stats_samples]
        plan = EvalPlan(len(pick), 64, rank=0, world_size=1)
        loader = StreamLoader(
            train.subset(np.sort(pick)), plan, image_size=image_size, channels=channels, workers=0
        )
        total = np.zeros(channels)
        square = np.zeros(channels)
        count = 0
        with loader.batches() as batches:
            for batch in batches:
                x = batch.images[batch.indices >= 0].astype(np.float64) / 255.0
                total += x.sum(axis=(0, 2, 3))
                square += (x**2).sum(axis=(0, 2, 3))
                count += x.shape[0] * x.shape[2] * x.shape[3]
        mean = total / count
        std = np.sqrt(np.maximum(square / count - mean**2, 0.0))
        return cls(
            train,
            test,
            image_size,
            channels,
            mean.astype(np.float32),
            np.maximum(std, 1e-6).astype(np.float32),
        )

    @property
    def num_classes(self) -> int:
        """Number of classes (0 when unlabelled)."""
        return self.train.num_classes

    @property
    def labelled(self) -> bool:
        """Whether the training split has labels."""
        return self.train.labels is not None

    @property
    def train_labels(self) -> np.ndarray | None:
        """``int64`` labels of the training split, or ``None``."""
        return self.train.labels

    @property
    def test_labels(self) -> np.ndarray | None:
        """``int64`` labels of the test split, or ``None``."""
        return self.test.labels

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and standard deviation (``float32``, estimated)."""
        return self.mean, self.std

    def loader(self, plan: TrainPlan | EvalPlan, options: Any, split: str = "train"):
        """A :class:`StreamLoader` of ``split`` (``"train"`` or ``"test"``) following ``plan``,
        with the ``workers``, ``prefetch`` and ``bad_files`` of ``options`` (a
        :class:`~trainers.core.config.DataConfig`)."""
        return StreamLoader(
            self.train if split == "train" else self.test,
            plan,
            image_size=self.image_size,
            channels=self.channels,
            workers=options.workers,
            prefetch=options.prefetch,
            bad_files=options.bad_files,
        )

    def eval_batches(
        self, split: str, options: Any, batch_size: int, *, rank: int = 0, world_size: int = 1
    ) -> BatchIterator:
        """Every image of ``split`` once, in order: this rank's contiguous share
        (:class:`EvalPlan`) in batches of ``batch_size`` (close it, or use ``with``)."""
        index = self.train if split == "train" else self.test
        plan = EvalPlan(len(index), batch_size, rank=rank, world_size=world_size)
        return self.loader(plan, options, split).batches()


class StreamSampler:
    """A run loop's sampler over streamed batches (the interface of ``EpochSampler``).

    Parameters
    ----------
    loader : StreamLoader
        Its plan must be a :class:`TrainPlan`.
    epochs : int
        Epochs of the run: the workers prepare batches up to its end.
    """

    def __init__(self, loader: StreamLoader, epochs: int) -> None:
        if not isinstance(loader.plan, TrainPlan):
            raise TypeError("StreamSampler needs a loader with a TrainPlan")
        self.loader, self.plan = loader, loader.plan
        self.stop = epochs * self.batches_per_epoch
        self._batches: BatchIterator | None = None

    @property
    def batches_per_epoch(self) -> int:
        """Steps in every epoch."""
        return self.plan.batches_per_epoch

    def batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """This rank's batches of epoch ``epoch``, from batch ``start`` of it."""
        first = epoch * self.batches_per_epoch + start
        if self._batches is None or self._batches.next_batch != first:
            self.close()
            end = max(self.stop, (epoch + 1) * self.batches_per_epoch)
            self._batches = self.loader.batches(first, end)
        for _ in range(self.batches_per_epoch - start):
            yield next(self._batches)

    def state(self, epoch: int, batch_in_epoch: int) -> dict[str, int]:
        """The stream position of ``(epoch, batch_in_epoch)`` for a checkpoint (JSON)."""
        return self.loader.state(epoch * self.batches_per_epoch + batch_in_epoch)

    def check(self, state: Mapping[str, Any], epoch: int, batch_in_epoch: int) -> None:
        """Raise ``ValueError`` unless ``state`` (from :meth:`state`) is this stream's
        position ``(epoch, batch_in_epoch)`` (same data, same settings)."""
        expected = epoch * self.batches_per_epoch + batch_in_epoch
        if self.loader.restore(state) != expected:
            raise ValueError(
                f"the checkpoint's data stream is at batch {state['next_batch']}, "
                f"its counters at batch {expected}"
            )

    @property
    def skipped(self) -> int:
        """Bad files skipped by the current iterator."""
        return 0 if self._batches is None else self._batches.skipped

    def close(self) -> None:
        """Stop the workers."""
        if self._batches is not None:
            self._batches.close()
            self._batches = None


def open_configured(data: Any) -> ImageDataset | StreamedDataset:
    """The dataset a ``data`` configuration section names: in memory or streamed.

    Parameters
    ----------
    data : trainers.core.config.DataConfig

    Returns
    -------
    ImageDataset or StreamedDataset
        :class:`StreamedDataset` for ``imagefolder:`` and ``shards:``; the others load into
        memory (:func:`trainers.core.datasets.load_configured`).

    Raises
    ------
    ValueError
        ``data.test`` with an in-memory source, a streamed source without
        ``data.image_size``, a source that cannot be indexed, ``data.train_size`` larger
        than the training split.
    """
    if not is_streamed(data.name):
        if data.test is not None:
            raise ValueError("data.test applies to streamed sources (imagefolder:, shards:) only")
        return load_configured(data)
    if data.image_size is None:
        raise ValueError(
            f"data.name {data.name!r} is streamed: set data.image_size (the side every image "
            "is resized and centre-cropped to)"
        )
    train, test = train_test_indices(
        data.name, data.test, test_fraction=data.test_fraction, split_seed=data.split_seed
    )
    if data.train_size is not None:
        if not 1 <= data.train_size <= len(train):
            raise ValueError(
                f"data.train_size must be in [1, {len(train)}] (the training split), "
                f"got {data.train_size}"
            )
        keep = np.random.default_rng(data.split_seed).permutation(len(train))[: data.train_size]
        train = train.subset(np.sort(keep))
    return StreamedDataset.build(train, test, image_size=data.image_size, seed=data.split_seed)


def fingerprint_of(data: ImageDataset | StreamedDataset) -> str:
    """:func:`trainers.core.checkpoints.data_fingerprint` of a dataset: its arrays in memory,
    or a streamed source's sample indices (names, locations, labels) and decoded size."""
    if isinstance(data, ImageDataset):
        return data_fingerprint(
            data.train_images, data.train_labels, data.test_images, data.test_labels
        )
    identity = [data.train.fingerprint(), data.test.fingerprint(), data.image_size, data.channels]
    return data_fingerprint(np.array(identity, dtype=np.int64))


def map_images(
    data: ImageDataset | StreamedDataset,
    split: str,
    fn: Callable[[np.ndarray], Any],
    *,
    batch_size: int,
    options: Any,
) -> np.ndarray:
    """``fn`` over every image of ``split`` in order, the results concatenated: only they
    are held, not the images (one process reads all).

    Parameters
    ----------
    data : ImageDataset or StreamedDataset
    split : str
        ``"train"`` or ``"test"``.
    fn : callable
        Maps ``float32`` images ``(b, C, H, W)`` in ``[0, 1]`` (``b <= batch_size``; slices
        of the arrays in memory, or streamed ``uint8`` batches / 255) to an array ``(b, ...)``.
    batch_size : int
    options : trainers.core.config.DataConfig
        The stream's ``workers``, ``prefetch`` and ``bad_files``.
    """
    if isinstance(data, ImageDataset):
        images = data.train_images if split == "train" else data.test_images
        return np.concatenate(
            [np.asarray(fn(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
        )
    with data.eval_batches(split, options, batch_size) as batches:
        return np.concatenate(
            [np.asarray(fn(b.images.astype(np.float32) / np.float32(255))) for b in batches]
        )


def train_sampler(
    data: ImageDataset | StreamedDataset, cfg: Any, batch_size: int, *, rank: int, world_size: int
) -> EpochSampler | StreamSampler:
    """This rank's sampler: indices of in-memory data, decoded batches of streamed data.

    Parameters
    ----------
    data : ImageDataset or StreamedDataset
    cfg : trainers.core.config.TrainConfig
        ``run.seed``, ``optim.epochs`` and the ``data`` stream options.
    batch_size : int
        Samples per rank and step.
    rank, world_size : int
    """
    if isinstance(data, ImageDataset):
        return EpochSampler(
            len(data.train_images), batch_size, rank=rank, world_size=world_size, seed=cfg.run.seed
        )
    plan = TrainPlan(
        len(data.train), batch_size, rank=rank, world_size=world_size, seed=cfg.run.seed
    )
    loader = data.loader(plan, cfg.data)
    return StreamSampler(loader, cfg.optim.epochs)
