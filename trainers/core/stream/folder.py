"""Index an image folder: class sub-folders (labels = sorted folder names) or loose images.

The layout is the one :mod:`trainers.core.datasets` reads into memory: either every image sits in
a sub-folder of ``PATH`` named after its class, or every image sits directly in ``PATH``
(unlabelled). Only the names are read here (no image is opened); hidden entries (a leading
``.``) are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from trainers.core.datasets import IMAGE_EXTENSIONS
from trainers.core.stream.index import Names, SampleIndex

__all__ = ["index_folder"]


def _entries(folder: str) -> tuple[list[str], list[str]]:
    """Sorted sub-folder names and image file names of ``folder`` (hidden ones skipped)."""
    folders, images = [], []
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                folders.append(entry.name)
            elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                images.append(entry.name)
    return sorted(folders), sorted(images)


def index_folder(path: str, *, classes: Sequence[str] | None = None) -> SampleIndex:
    """The :class:`SampleIndex` of the image folder ``path``.

    Parameters
    ----------
    path : str
        The folder (``~`` is expanded).
    classes : sequence of str, optional
        Class names of the training set this folder is evaluated against: its sub-folders
        must be among them and take their labels. ``None``: the sorted sub-folders.

    Returns
    -------
    SampleIndex
        Names relative to ``path``; labels ``None`` for a folder of loose images.

    Raises
    ------
    ValueError
        ``path`` is not a folder, holds both images and sub-folders, holds no image, or has
        a class sub-folder not in ``classes``.
    """
    source = f"imagefolder:{path}"
    root = os.path.expanduser(path)
    if not os.path.isdir(root):
        raise ValueError(f"{source}: not a directory")
    folders, loose = _entries(root)
    if folders and loose:
        raise ValueError(
            f"{source}: holds both images and sub-folders; use class sub-folders only "
            "(labelled) or images only (unlabelled)"
        )
    if not folders:
        if not loose:
            raise ValueError(f"{source}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
        return SampleIndex(source=source, root=root, names=Names.of(loose))
    known = list(folders if classes is None else classes)
    unknown = sorted(set(folders) - set(known))
    if unknown:
        raise ValueError(
            f"{source}: class folders {unknown[:5]} are not classes of the training set"
        )
    names: list[str] = []
    labels: list[int] = []
    for folder in folders:
        found = _entries(os.path.join(root, folder))[1]
        names += [f"{folder}/{name}" for name in found]
        labels += [known.index(folder)] * len(found)
    if not names:
        raise ValueError(f"{source}: no image files in its class sub-folders")
    return SampleIndex(
        source=source,
        root=root,
        names=Names.of(names),
        labels=np.asarray(labels, dtype=np.int64),
        classes=tuple(known),
    )
