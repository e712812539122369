"""Streamed image input: an image folder or tar shards in exact, resumable ``uint8`` batches.

For collections too large to load into memory (:mod:`trainers.core.datasets` loads whole).
Framework-free (NumPy, Pillow and the standard library; no torch, jax or cupy import), so
every trainer uses the same pipeline:

1. index the files once (:func:`train_test_indices`: ``imagefolder:PATH`` with class
   sub-folders or loose images, ``shards:PATTERN`` WebDataset-style tar shards; a separate
   test source or a seeded split);
2. a plan says which samples each rank reads in batch ``k`` (:class:`TrainPlan`: seeded
   per-epoch shuffles, every sample exactly once per epoch across ranks, full equal batches;
   :class:`EvalPlan`: every sample once in order);
3. worker processes read, decode and resize (:class:`StreamLoader`), handing out ``uint8``
   ``(B, C, S, S)`` batches (the layout the trainers' on-device augmentations take, after
   ``/ 255``) with labels and sample indices;
4. the position is one integer (:meth:`BatchIterator.state`,
   :meth:`StreamLoader.restore`), so a checkpoint resumes to the same batches.

Examples
--------
>>> from trainers.core.stream import StreamLoader, TrainPlan, train_test_indices
>>> train, test = train_test_indices(  # doctest: +SKIP
...     "imagefolder:/data/pets", test_fraction=0.1, split_seed=0)
>>> plan = TrainPlan(len(train), 64, rank=0, world_size=1, seed=0)  # doctest: +SKIP
>>> loader = StreamLoader(train, plan, image_size=96, workers=4)  # doctest: +SKIP
>>> with loader.batches(start=0, stop=plan.batches_per_epoch) as batches:  # doctest: +SKIP
...     for batch in batches:
...         images = batch.images  # uint8 (64, 3, 96, 96)
"""

from trainers.core.stream.decode import BadImageError, SampleReader, decode_image
from trainers.core.stream.folder import index_folder
from trainers.core.stream.index import Names, SampleIndex
from trainers.core.stream.loader import (
    BadImageWarning,
    Batch,
    BatchIterator,
    StreamLoader,
    default_workers,
)
from trainers.core.stream.plan import EvalPlan, TrainPlan
from trainers.core.stream.shards import expand_braces, index_shards
from trainers.core.stream.sources import (
    index_source,
    is_streamed,
    train_test_indices,
)
from trainers.core.stream.training import (
    StreamedDataset,
    StreamSampler,
    fingerprint_of,
    map_images,
    open_configured,
    probe_channels,
    train_sampler,
)

__all__ = [
    "BadImageError",
    "BadImageWarning",
    "Batch",
    "BatchIterator",
    "EvalPlan",
    "Names",
    "SampleIndex",
    "SampleReader",
    "StreamLoader",
    "StreamSampler",
    "StreamedDataset",
    "TrainPlan",
    "decode_image",
    "default_workers",
    "expand_braces",
    "index_folder",
    "index_shards",
    "index_source",
    "is_streamed",
    "fingerprint_of",
    "map_images",
    "open_configured",
    "probe_channels",
    "train_sampler",
    "train_test_indices",
]
