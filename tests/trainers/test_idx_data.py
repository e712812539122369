"""IDX image sets (``data.name=idx:PATH``) and ``fashion_mnist``, on tiny IDX files written here."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import pytest

from trainers.core import datasets, idx
from trainers.core.datasets import load_dataset

_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B}
_CODES.update({np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E})


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``, written independently of the reader."""
    header = bytes([0, 0, _CODES[array.dtype], array.ndim])
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array: np.ndarray) -> str:
    raw = idx_bytes(array)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(raw)
    return str(path)


def write_set(folder, n_train=30, n_test=10, prefix="", gz=True, labels=True, test=True):
    """A tiny MNIST-like set: image (i, r, c) = (7 i + r + c) % 256, label i % 5 (+ 1)."""
    os.makedirs(folder, exist_ok=True)
    ext = ".gz" if gz else ""
    splits = [("train", n_train)] + ([("t10k", n_test)] if test else [])
    for split, n in splits:
        images = (7 * np.arange(n)[:, None, None] + np.arange(6)[:, None] + np.arange(5)) % 256
        write_idx(folder / f"{prefix}{split}-images-idx3-ubyte{ext}", images.astype(np.uint8))
        if labels:
            values = (np.arange(n) % 5 + 1).astype(np.uint8)  # 1..5: renumbered to 0..4
            write_idx(folder / f"{prefix}{split}-labels-idx1-ubyte{ext}", values)
    return folder


@pytest.mark.parametrize("dtype", list(_CODES))
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_every_type(tmp_path, dtype, gz):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / ("a.idx.gz" if gz else "a.idx"), array)
    back = idx.read_idx(path)
    assert back.dtype == dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad magic number"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "bad magic number"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
        (
            b"\x00\x00\x08\x01\x00\x00\x00\x03\x05",
            r"shape \(3,\) \(3 bytes of data\), the file holds 1",
        ),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x05\x06", "the file holds 2"),
    ],
)
def test_read_idx_rejects_damaged_files_naming_them(tmp_path, raw, match):
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=f"^{path}: .*{match}"):
        idx.read_idx(str(path))


def test_read_idx_damaged_gzip_is_named(tmp_path):
    path = tmp_path / "x-images-idx3-ubyte.gz"
    write_idx(path, np.zeros((4, 2, 2), np.uint8))
    path.write_bytes(path.read_bytes()[:-12])  # cut the gzip trailer and some data
    with pytest.raises(ValueError, match=f"^{path}: cannot read IDX file"):
        idx.read_idx(str(path))


@pytest.mark.parametrize("gz", [False, True])
def test_official_split_is_kept(tmp_path, gz):
    write_set(tmp_path / "set", gz=gz)
    for fraction, seed in ((0.2, 0), (0.5, 7)):  # the split options do not apply
        data = load_dataset(f"idx:{tmp_path / 'set'}", test_fraction=fraction, split_seed=seed)
        assert data.train_images.shape == (30, 1, 6, 5) and data.test_images.shape == (10, 1, 6, 5)
        assert data.num_classes == 5 and data.train_labels.dtype == np.int64
        np.testing.assert_array_equal(data.train_labels, np.arange(30) % 5)  # 1..5 -> 0..4
        np.testing.assert_array_equal(data.test_labels, np.arange(10) % 5)
        # image i of the test file, pixel (r, c) = (7 i + r + c) / 255
        assert data.test_images[3, 0, 2, 1] == np.float32((7 * 3 + 2 + 1) / 255.0)


def test_train_file_alone_is_split_by_seed_and_unlabelled_sets_load(tmp_path):
    write_set(tmp_path / "one", test=False)
    a = load_dataset(f"idx:{tmp_path / 'one'}", test_fraction=0.2, split_seed=1)
    b = load_dataset(f"idx:{tmp_path / 'one'}", test_fraction=0.2, split_seed=2)
    assert len(a.train_images) == 24 and len(a.test_images) == 6
    assert not np.array_equal(a.test_images, b.test_images)
    write_set(tmp_path / "bare", labels=False)
    bare = load_dataset(f"idx:{tmp_path / 'bare'}", test_fraction=0.2, split_seed=0)
    assert bare.train_labels is None and bare.test_labels is None and not bare.labelled


def test_prefix_picks_one_set_among_several(tmp_path):
    folder = tmp_path / "emnist"
    write_set(folder, n_train=12, prefix="emnist-letters-", gz=True)
    write_set(folder, n_train=20, prefix="emnist-digits-", gz=True)
    with pytest.raises(ValueError, match="several (train|test) images files.*pass a prefix"):
        load_dataset(f"idx:{folder}", test_fraction=0.2, split_seed=0)
    data = load_dataset(f"idx:{folder}/emnist-digits", test_fraction=0.2, split_seed=0)
    assert len(data.train_images) == 20 and len(data.test_images) == 10


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda d: None, "no such folder"),
        (lambda d: d.mkdir(), r"no '\*images-idx3-ubyte\[.gz\]' file"),
        (
            lambda d: (
                write_set(d, labels=True, n_test=10) and os.remove(d / "t10k-labels-idx1-ubyte.gz")
            ),
            "labels exist for only one",
        ),
        (
            lambda d: (
                write_set(d) and write_idx(d / "train-labels-idx1-ubyte.gz", np.zeros(29, np.uint8))
            ),
            "29 labels for the 30 images",
        ),
        (
            lambda d: (
                d.mkdir() or write_idx(d / "train-images-idx3-ubyte", np.zeros((3, 2), np.uint8))
            ),
            r"expected uint8 images of shape \(N, H, W\)",
        ),
        (
            lambda d: (
                d.mkdir()
                or [
                    write_idx(d / name, np.zeros((3, 2, 2), np.uint8))
                    for name in ("t10k-images-idx3-ubyte", "a-images-idx3-ubyte")
                ]
                and None
            ),
            "cannot tell whether a-images-idx3-ubyte is the train or the test",
        ),
    ],
)
def test_bad_sets_are_named(tmp_path, setup, match):
    folder = tmp_path / "set"
    setup(folder)
    with pytest.raises(ValueError, match=match):
        load_dataset(f"idx:{folder}", test_fraction=0.2, split_seed=0)


def test_fashion_mnist_missing_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(idx, "FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with pytest.raises(ValueError, match="apt-get install dataset-fashion-mnist.*idx:DIR"):
        load_dataset("fashion_mnist", test_fraction=0.2, split_seed=0)
    with pytest.raises(ValueError, match="needs a path: 'idx:PATH'"):
        load_dataset("idx:", test_fraction=0.2, split_seed=0)
    with pytest.raises(ValueError, match="data.name must be"):
        load_dataset("fashion_mnist:/x", test_fraction=0.2, split_seed=0)


def test_fashion_mnist_reads_the_package_location(monkeypatch, tmp_path):
    write_set(tmp_path / "fm")
    monkeypatch.setattr(idx, "FASHION_MNIST_DIR", str(tmp_path / "fm"))
    data = datasets.load_dataset("fashion_mnist", test_fraction=0.2, split_seed=0, train_size=8)
    assert len(data.train_images) == 8 and len(data.test_images) == 10


@pytest.mark.skipif(
    not os.path.isdir(idx.FASHION_MNIST_DIR),
    reason="dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)
def test_installed_fashion_mnist_has_its_official_split():
    data = load_dataset("fashion_mnist", test_fraction=0.2, split_seed=0)
    assert data.train_images.shape == (60000, 1, 28, 28)
    assert data.test_images.shape == (10000, 1, 28, 28)
    assert data.num_classes == 10
    np.testing.assert_array_equal(np.bincount(data.test_labels), np.full(10, 1000))
    # the first training items of Fashion-MNIST: ankle boot, T-shirt, T-shirt, dress, T-shirt
    np.testing.assert_array_equal(data.train_labels[:5], [9, 0, 0, 3, 0])
