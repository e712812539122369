"""Image sets in the IDX format (MNIST, Fashion-MNIST, KMNIST, EMNIST), read into NumPy.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian ``uint32`` per dimension, then the values, big-endian, in C
order; it may be gzip-compressed (``.gz``). A set is a folder (or a file-name prefix in a
folder, e.g. ``.../emnist-balanced`` for one EMNIST split among many) holding
``*images-idx3-ubyte[.gz]`` files and, optionally, the ``*labels-idx1-ubyte[.gz]`` file of
the same stem; a name containing ``t10k`` or ``test`` is the test split, one containing
``train`` the training split.

Framework-free; used by :func:`trainers.core.datasets.load_dataset` (``data.name=idx:PATH``
and ``data.name=fashion_mnist``).
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = ["FASHION_MNIST_DIR", "FASHION_MNIST_HINT", "IdxSet", "find_idx_set", "read_idx"]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_HINT = (
    "apt-get install dataset-fashion-mnist (Debian, MIT licence), or point "
    "data.name=idx:DIR at a folder holding the Fashion-MNIST IDX files"
)

# type code -> big-endian dtype (the IDX specification)
_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IMAGES, _LABELS = "images-idx3-ubyte", "labels-idx1-ubyte"


@dataclass(frozen=True)
class IdxSet:
    """The files of one IDX image set: ``train`` and optional ``test`` (images, labels) paths;
    a labels path is ``None`` when the set has no labels file for those images."""

    train: tuple[str, str | None]
    test: tuple[str, str | None] | None


def _open(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_idx(path: str) -> np.ndarray:
    """The array stored in the IDX file ``path`` (gzip-compressed if it ends in ``.gz``).

    Parameters
    ----------
    path : str
        An IDX file.

    Returns
    -------
    numpy.ndarray
        In native byte order, with the file's shape and type.

    Raises
    ------
    ValueError
        The file cannot be read, is not IDX (bad magic number or type code), or holds fewer
        or more bytes than its header declares; the message names ``path``.
    """
    try:
        with _open(path) as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim, dtype = raw[3], np.dtype(_TYPES[raw[2]])
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: header declares shape {shape} ({expected} bytes of data), "
            f"the file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _split_of(name: str) -> str | None:
    low = name.lower()
    if "t10k" in low or "test" in low:
        return "test"
    return "train" if "train" in low else None


def _candidates(path: str) -> tuple[str, list[str]]:
    """The folder of the set and the file names in it that belong to ``path``."""
    if os.path.isdir(path):
        return path, sorted(os.listdir(path))
    folder, prefix = os.path.split(path)
    names = []
    if prefix and os.path.isdir(folder or "."):
        names = sorted(n for n in os.listdir(folder or ".") if n.startswith(prefix))
    if not names:
        raise ValueError(f"data.name idx:{path}: no such folder, nor files with that prefix")
    return folder, names


def _labels_for(folder: str, names: list[str], image_name: str) -> str | None:
    stem = image_name.split(_IMAGES)[0]
    for name in names:
        if name.startswith(stem) and _LABELS in name[len(stem) :]:
            return os.path.join(folder, name)
    return None


def find_idx_set(path: str) -> IdxSet:
    """The train (and test) files of the IDX set at ``path`` (see the module docstring).

    Parameters
    ----------
    path : str
        A folder, or a folder plus a file-name prefix.

    Returns
    -------
    IdxSet

    Raises
    ------
    ValueError
        No such folder; no images file; several images files for one split (the message
        lists them: pass a prefix that picks one); a single images file whose name says
        neither train nor test is taken as the training split.
    """
    folder, names = _candidates(path)
    images = [n for n in names if _IMAGES in n]
    if not images:
        raise ValueError(
            f"data.name idx:{path}: no '*{_IMAGES}[.gz]' file found in {folder or '.'}"
        )
    by_split: dict[str, list[str]] = {}
    for name in images:
        split = _split_of(name) or ("train" if len(images) == 1 else None)
        if split is None:
            raise ValueError(
                f"data.name idx:{path}: cannot tell whether {name} is the train or the test "
                "split (its name has neither 'train' nor 't10k'/'test')"
            )
        by_split.setdefault(split, []).append(name)
    for split, found in by_split.items():
        # the same file both plain and gzipped counts once (the plain one is read)
        stems = {n.removesuffix(".gz") for n in found}
        if len(stems) > 1:
            raise ValueError(
                f"data.name idx:{path}: several {split} images files ({', '.join(found)}); "
                "pass a prefix that picks one, e.g. idx:DIR/emnist-balanced"
            )
        by_split[split] = sorted(found, key=len)[:1]
    if "train" not in by_split:
        raise ValueError(f"data.name idx:{path}: no training images file (only {images})")

    def pair(split: str) -> tuple[str, str | None]:
        name = by_split[split][0]
        return os.path.join(folder, name), _labels_for(folder, names, name)

    return IdxSet(train=pair("train"), test=pair("test") if "test" in by_split else None)


def read_images_labels(files: tuple[str, str | None]) -> tuple[np.ndarray, np.ndarray | None]:
    """The ``uint8`` images ``(N, H, W)`` and raw labels ``(N,)`` (or ``None``) of one split.

    Raises
    ------
    ValueError
        Images that are not 3-D ``uint8``, labels that are not 1-D integers, or counts that
        differ; the message names the file.
    """
    image_path, label_path = files
    images = read_idx(image_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{image_path}: expected uint8 images of shape (N, H, W), got {images.dtype} "
            f"{images.shape}"
        )
    if label_path is None:
        return images, None
    labels = read_idx(label_path)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{label_path}: expected 1-D integer labels, got {labels.dtype} {labels.shape}"
        )
    if len(labels) != len(images):
        raise ValueError(
            f"{label_path}: {len(labels)} labels for the {len(images)} images of {image_path}"
        )
    return images, labels.astype(np.int64)
