"""Small generated image collections on disk for the streamed-trainer tests: a class folder
tree of PNGs and WebDataset tar shards of JPEGs, each image's colour giving its class."""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np
from PIL import Image

CLASSES, PER_CLASS = 3, 40  # 120 images; test_fraction 0.2 leaves 96 to train on


def image_bytes(label: int, rng: np.random.Generator, fmt: str = "PNG") -> bytes:
    """A 12x12 image whose colour says its class (so a k-NN can learn it)."""
    pixels = np.zeros((12, 12, 3))
    pixels[..., label % 3] = 200
    pixels = np.clip(pixels + rng.normal(0, 30, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def make_folder(root, per_class: int = PER_CLASS, seed: int = 0, prefix: str = "class") -> str:
    rng = np.random.default_rng(seed)
    for c in range(CLASSES):
        os.makedirs(os.path.join(root, f"{prefix}{c}"), exist_ok=True)
        for i in range(per_class):
            with open(os.path.join(root, f"{prefix}{c}", f"{i:03d}.png"), "wb") as fh:
                fh.write(image_bytes(c, rng))
    return f"imagefolder:{root}"


def make_shards(root, sizes: list[int]) -> str:
    rng = np.random.default_rng(1)
    os.makedirs(root, exist_ok=True)
    n = 0
    for number, size in enumerate(sizes):
        with tarfile.open(os.path.join(root, f"part-{number:02d}.tar"), "w") as tar:
            for _ in range(size):
                for name, data in (
                    (f"{n:05d}.jpg", image_bytes(n % CLASSES, rng, "JPEG")),
                    (f"{n:05d}.cls", str(n % CLASSES).encode()),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                n += 1
    return f"shards:{root}/part-{{00..{len(sizes) - 1:02d}}}.tar"
