"""Index WebDataset-style tar shards: samples grouped by key, one image member each.

The layout is WebDataset's: a sample is the run of consecutive tar members sharing a *key*
(the member path up to the first ``.`` of its file name); the part after that dot is the
member's *extension*. A sample's image is its first member with an image extension
(``jpg``, ``jpeg``, ``png``, ``webp``, ``bmp``, ``gif``, ``tif``, ``tiff``); its label, if
any, is the integer text of its ``cls`` member; other members are ignored. Either every
sample has a ``cls`` member (labelled, ``num_classes`` = largest label + 1) or none has.

Only the tar headers and the tiny ``cls`` members are read here: the index records each
image's byte offset and size, so a decoding worker reads exactly one image with one seek
(which needs uncompressed ``.tar`` files).
"""

from __future__ import annotations

import os
import re
import tarfile

import numpy as np

from trainers.core.stream.index import Names, SampleIndex

__all__ = ["expand_braces", "index_shards"]

_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(\d+)\.\.(\d+)$")
_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


def expand_braces(pattern: str) -> list[str]:
    """The names a brace pattern stands for, in order.

    ``{000..012}`` is a zero-padded numeric range (the width of the first bound), ``{a,b}``
    a list of alternatives; several groups multiply out left to right.

    Examples
    --------
    >>> expand_braces("train-{00..02}.tar")
    ['train-00.tar', 'train-01.tar', 'train-02.tar']
    >>> expand_braces("{a,b}-{1..2}.tar")
    ['a-1.tar', 'a-2.tar', 'b-1.tar', 'b-2.tar']

    Raises
    ------
    ValueError
        A descending range or an empty group.
    """
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    numeric = _RANGE.match(body)
    if numeric:
        lo, hi = int(numeric.group(1)), int(numeric.group(2))
        if lo > hi:
            raise ValueError(f"shard pattern {pattern!r}: range {{{body}}} is descending")
        width = len(numeric.group(1))
        choices = [str(i).zfill(width) for i in range(lo, hi + 1)]
    elif body:
        choices = body.split(",")
    else:
        raise ValueError(f"shard pattern {pattern!r}: empty braces")
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [head + c + rest for c in choices for rest in expand_braces(tail)]


def _split_name(name: str) -> tuple[str, str]:
    """WebDataset's (key, extension) of a member name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _shard_samples(path: str, source: str) -> list[tuple[str, int, int, int | None]]:
    """``(member name, data offset, size, label or None)`` of every sample of one shard."""
    samples: list[tuple[str, int, int, int | None]] = []
    current_key, image, label = None, None, None

    def close() -> None:
        if current_key is None:
            return
        if image is None:
            raise ValueError(f"{source}: {path}: sample {current_key!r} has no image member")
        samples.append((*image, label))

    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = _split_name(member.name)
                if key != current_key:
                    close()
                    current_key, image, label = key, None, None
                if ext in _IMAGE_EXTENSIONS and image is None:
                    image = (member.name, member.offset_data, member.size)
                elif ext == "cls":
                    label = _read_label(tar, member, f"{source}: {path}")
            close()
    except (tarfile.TarError, OSError) as err:
        raise ValueError(
            f"{source}: {path} is not a readable uncompressed tar file ({err})"
        ) from None
    return samples


def _read_label(tar: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> int:
    handle = tar.extractfile(member)
    text = handle.read(64).decode("utf-8", "replace").strip() if handle else ""
    if not text.isdigit():
        raise ValueError(f"{where}: {member.name} must hold a non-negative integer, got {text!r}")
    return int(text)


def index_shards(pattern: str) -> SampleIndex:
    """The :class:`SampleIndex` of the tar shards ``pattern`` expands to (:func:`expand_braces`).

    Raises
    ------
    ValueError
        A missing or unreadable shard, a sample without an image, a malformed ``cls``
        member, labels on some samples only, or no sample at all.
    """
    source = f"shards:{pattern}"
    paths = [os.path.expanduser(p) for p in expand_braces(pattern)]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"{source}: {len(missing)} shard(s) not found, e.g. {missing[0]}")
    names: list[str] = []
    shard_of, offsets, sizes, labels = [], [], [], []
    for number, path in enumerate(paths):
        for name, offset, size, label in _shard_samples(path, source):
            names.append(name)
            shard_of.append(number)
            offsets.append(offset)
            sizes.append(size)
            labels.append(label)
    if not names:
        raise ValueError(f"{source}: no samples in {len(paths)} shard(s)")
    labelled = [label is not None for label in labels]
    if any(labelled) and not all(labelled):
        first = names[labelled.index(not labelled[0])]
        raise ValueError(
            f"{source}: some samples have a 'cls' label and some do not (e.g. {first!r})"
        )
    label_array = np.asarray(labels, dtype=np.int64) if labelled[0] else None
    num_classes = 0 if label_array is None else int(label_array.max()) + 1
    return SampleIndex(
        source=source,
        root="",
        names=Names.of(names),
        shards=tuple(paths),
        shard_of=np.asarray(shard_of, dtype=np.int32),
        offset=np.asarray(offsets, dtype=np.int64),
        size=np.asarray(sizes, dtype=np.int64),
        labels=label_array,
        classes=tuple(str(c) for c in range(num_classes)),
    )
