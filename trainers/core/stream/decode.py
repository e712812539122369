"""Read one sample's bytes and decode them to a square ``uint8`` image ``(C, S, S)``.

Decoding is Pillow's. The resize is the one of :mod:`trainers.core.datasets`: the shorter side
is scaled to ``S`` (bilinear) and the centre ``S x S`` is cropped. A JPEG is first decoded
at the smallest power-of-two reduction that keeps the shorter side at least ``S``
(``Image.draft``), which makes large JPEGs several times faster to decode.

Everything that can go wrong with one file (unreadable, truncated, not an image, a
decompression bomb) raises :class:`BadImageError`, naming the file, and nothing else does.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from trainers.core.stream.index import SampleIndex

__all__ = ["BadImageError", "SampleReader", "decode_image"]


class BadImageError(ValueError):
    """One sample's file cannot be read or decoded; the message names the file."""


def decode_image(data: bytes, size: int, channels: int) -> np.ndarray:
    """Decode encoded image ``data`` to ``uint8`` ``(channels, size, size)``.

    Parameters
    ----------
    data : bytes
        The encoded file (any format Pillow reads).
    size : int
        Side of the square output.
    channels : {1, 3}
        Greyscale (``L``) or ``RGB``; other modes are converted.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    BadImageError
        Pillow cannot decode ``data`` (the message says why, not which file).
    """
    from PIL import Image, UnidentifiedImageError
    from PIL.Image import DecompressionBombError, DecompressionBombWarning

    mode = "L" if channels == 1 else "RGB"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.draft(mode, (size, size))
                img = img.convert(mode)
                scale = size / min(img.size)
                new = (max(size, round(img.size[0] * scale)), max(size, round(img.size[1] * scale)))
                img = img.resize(new, Image.BILINEAR)
                left, top = (new[0] - size) // 2, (new[1] - size) // 2
                img = img.crop((left, top, left + size, top + size))
                array = np.asarray(img, dtype=np.uint8)
    except UnidentifiedImageError:
        raise BadImageError("not an image format Pillow can read") from None
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        DecompressionBombError,
        DecompressionBombWarning,
    ) as err:
        raise BadImageError(f"{type(err).__name__}: {err}") from None
    return array[None] if channels == 1 else np.ascontiguousarray(array.transpose(2, 0, 1))


class SampleReader:
    """Reads the encoded bytes of samples of a :class:`SampleIndex`.

    Shards stay open between reads (one handle per shard, opened on first use), so a worker
    pays one ``seek`` + ``read`` per image.
    """

    def __init__(self, index: SampleIndex) -> None:
        self.index = index
        self._handles: dict[int, io.BufferedReader] = {}

    def read(self, i: int) -> bytes:
        """The encoded bytes of sample ``i``.

        Raises
        ------
        BadImageError
            The file is gone, unreadable or shorter than indexed (names the file).
        """
        index = self.index
        shard_of, offset, size = index.shard_of, index.offset, index.size
        try:
            if shard_of is None or offset is None or size is None:
                with open(index.describe(i), "rb") as fh:
                    return fh.read()
            shard = int(shard_of[i])
            if shard not in self._handles:
                self._handles[shard] = open(index.shards[shard], "rb")  # noqa: SIM115
            handle = self._handles[shard]
            handle.seek(int(offset[i]))
            data = handle.read(int(size[i]))
        except OSError as err:
            raise BadImageError(f"{index.describe(i)}: {err}") from None
        if len(data) != int(size[i]):
            raise BadImageError(f"{index.describe(i)}: the shard ends inside this member")
        return data

    def image(self, i: int, size: int, channels: int) -> np.ndarray:
        """Sample ``i`` decoded (:func:`decode_image`); a :class:`BadImageError` names it."""
        data = self.read(i)
        try:
            return decode_image(data, size, channels)
        except BadImageError as err:
            raise BadImageError(f"{self.index.describe(i)}: {err}") from None

    def close(self) -> None:
        """Close the open shards."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
