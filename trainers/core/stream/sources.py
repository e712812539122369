"""Streamed sources by name: ``imagefolder:PATH`` and ``shards:PATTERN``, split into train/test.

The test set is either a separate source (``data.test``) or a seeded split of the one file
index (:func:`trainers.core.datasets.split_indices`, the split of the in-memory datasets).
"""

from __future__ import annotations

from trainers.core.datasets import split_indices
from trainers.core.stream.folder import index_folder
from trainers.core.stream.index import SampleIndex
from trainers.core.stream.shards import index_shards

__all__ = ["STREAMED_KINDS", "index_source", "is_streamed", "train_test_indices"]

STREAMED_KINDS = ("imagefolder", "shards")


def is_streamed(name: str) -> bool:
    """Whether ``data.name`` ``name`` is a streamed source (``imagefolder:`` / ``shards:``)."""
    return name.partition(":")[0] in STREAMED_KINDS


def index_source(name: str, *, classes: tuple[str, ...] | None = None) -> SampleIndex:
    """The :class:`SampleIndex` of ``imagefolder:PATH`` or ``shards:PATTERN``.

    Parameters
    ----------
    name : str
        The source.
    classes : tuple of str, optional
        Class names of the training set (an evaluation folder's labels follow them).

    Raises
    ------
    ValueError
        Another kind of name, an empty path, or a source that cannot be indexed.
    """
    kind, _, path = name.partition(":")
    if kind not in STREAMED_KINDS or not path:
        raise ValueError(
            f"a streamed source is 'imagefolder:PATH' or 'shards:PATTERN', got {name!r}"
        )
    if kind == "imagefolder":
        return index_folder(path, classes=classes)
    index = index_shards(path)
    if classes is not None and index.num_classes > len(classes):
        raise ValueError(
            f"{name}: labels go up to {index.num_classes - 1}, the training set has "
            f"{len(classes)} classes"
        )
    return index


def train_test_indices(
    name: str, test: str | None = None, *, test_fraction: float, split_seed: int
) -> tuple[SampleIndex, SampleIndex]:
    """Train and test indices of the streamed source ``name``.

    Parameters
    ----------
    name : str
        Training source.
    test : str, optional
        Separate test source; ``None`` splits ``name`` instead.
    test_fraction : float
        Fraction of ``name`` held out when ``test`` is ``None``.
    split_seed : int
        Seed of that split.

    Returns
    -------
    train, test : SampleIndex
    """
    index = index_source(name)
    if test is not None:
        return index, index_source(test, classes=index.classes or None)
    train, held_out = split_indices(len(index), test_fraction, split_seed)
    return index.subset(train), index.subset(held_out)
