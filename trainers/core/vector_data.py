"""Datasets as flat vectors for the MLP trainer: feature files, or flattened images.

Framework-free (NumPy). ``data.name`` is read as in :mod:`trainers.core.datasets`, plus one
source: an ``npz:PATH`` file holding ``features`` ``(N, D)`` (floats, e.g. precomputed
embeddings of any other model) and optional ``labels`` ``(N,)``. Any other source is loaded
as images ``(N, C, H, W)`` and kept as images, so that the trainer can crop them before
flattening to ``C * H * W``.

Both kinds carry a standardisation ``(x - mean) / std`` of the flat vectors: per feature
(training split) for feature files, per channel (training split, broadcast over the
pixels) for images.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from trainers.core.datasets import check_labels, load_dataset, read_npz, split_indices

__all__ = ["VectorDataset", "load_vectors"]


@dataclass(frozen=True)
class VectorDataset:
    """Train and test splits as images or feature vectors.

    Attributes
    ----------
    train, test : numpy.ndarray
        ``float32``, shape ``(N, D)`` for feature files or ``(N, C, H, W)`` for images.
    train_labels, test_labels : numpy.ndarray or None
        ``int64`` class indices, ``None`` for unlabelled data.
    num_classes : int
        Number of classes (0 when unlabelled).
    mean, std : numpy.ndarray, shape (D,)
        Standardisation of the flat vectors (``D = C * H * W`` for images).
    """

    train: np.ndarray
    train_labels: np.ndarray | None
    test: np.ndarray
    test_labels: np.ndarray | None
    num_classes: int
    mean: np.ndarray
    std: np.ndarray

    @property
    def is_image(self) -> bool:
        """Whether the samples are images ``(C, H, W)`` (else feature vectors)."""
        return self.train.ndim == 4

    @property
    def dim(self) -> int:
        """Length ``D`` of a flat sample."""
        return int(np.prod(self.train.shape[1:]))


def _features(path: str, test_fraction: float, split_seed: int) -> VectorDataset:
    source = f"npz:{path}"
    data, _ = read_npz(path, source, ("features", "labels"))
    features, labels = data["features"], data.get("labels")
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.floating):
        raise ValueError(
            f"{source}: features must be floats of shape (N, D), got {features.dtype} "
            f"{features.shape}"
        )
    if not np.all(np.isfinite(features)):
        raise ValueError(f"{source}: features must be finite")
    num_classes = 0
    if labels is not None:
        labels, num_classes = check_labels(labels, len(features), source)
    train, test = split_indices(len(features), test_fraction, split_seed)
    x = features.astype(np.float32)
    mean = x[train].mean(axis=0, dtype=np.float64)
    std = np.maximum(x[train].std(axis=0, dtype=np.float64), 1e-6)
    return VectorDataset(
        train=x[train],
        train_labels=None if labels is None else labels[train],
        test=x[test],
        test_labels=None if labels is None else labels[test],
        num_classes=num_classes,
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
    )


def load_vectors(
    name: str,
    *,
    test_fraction: float,
    split_seed: int,
    image_size: int | None = None,
    train_size: int | None = None,
) -> VectorDataset:
    """Load ``name``: a feature file (``npz:PATH`` with ``features``; ``train_size`` not
    supported) or any image source of :func:`trainers.core.datasets.load_dataset` (same
    arguments and errors)."""
    kind, _, path = name.partition(":")
    if kind == "npz" and path:
        _, names = read_npz(os.path.expanduser(path), f"npz:{path}", ())
        if "features" in names:
            if image_size is not None:
                raise ValueError("data.image_size applies to imagefolder data only")
            if train_size is not None:
                raise ValueError("data.train_size applies to image data, not feature files")
            return _features(os.path.expanduser(path), test_fraction, split_seed)
    images = load_dataset(
        name,
        test_fraction=test_fraction,
        split_seed=split_seed,
        image_size=image_size,
        train_size=train_size,
    )
    mean, std = images.channel_stats()
    pixels = int(np.prod(images.train_images.shape[2:]))
    return VectorDataset(
        train=images.train_images,
        train_labels=images.train_labels,
        test=images.test_images,
        test_labels=images.test_labels,
        num_classes=images.num_classes,
        mean=np.repeat(mean, pixels),
        std=np.repeat(std, pixels),
    )
