"""The file index of a streamed image collection: where every sample's bytes are, and its label.

An index is built once per run (:mod:`trainers.core.stream.folder`,
:mod:`trainers.core.stream.shards`) and then only read. It holds a few numbers per sample
(no pixels): names in one UTF-8 buffer with offsets (:class:`Names`), byte ranges inside tar
shards, ``int64`` labels. It pickles cheaply into the decoding worker processes.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Names", "SampleIndex"]


@dataclass(frozen=True)
class Names:
    """Many strings stored as one ``uint8`` UTF-8 buffer and ``int64`` end offsets.

    A Python list of a million paths takes ~100 MB and pickles slowly; this takes the bytes of
    the text plus 8 per name.
    """

    buffer: np.ndarray
    ends: np.ndarray

    @classmethod
    def of(cls, names: Sequence[str]) -> Names:
        """The table of ``names``, in order."""
        encoded = [n.encode("utf-8") for n in names]
        ends = np.cumsum([len(e) for e in encoded], dtype=np.int64)
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), ends)

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, i: int) -> str:
        start = int(self.ends[i - 1]) if i > 0 else 0
        return self.buffer[start : int(self.ends[i])].tobytes().decode("utf-8")

    def take(self, indices: np.ndarray) -> Names:
        """The names at ``indices``, in that order."""
        return Names.of([self[int(i)] for i in indices])


@dataclass(frozen=True)
class SampleIndex:
    """Every sample of one image collection: name, bytes location, label.

    Attributes
    ----------
    source : str
        The ``data.name`` text it was built from (used in messages).
    root : str
        Folder the names of an image folder are relative to; ``""`` for shards.
    names : Names
        Per sample: the path relative to ``root`` (image folder) or the tar member name.
    shards : tuple of str
        Tar files holding the samples (empty for an image folder).
    shard_of, offset, size : numpy.ndarray or None
        Per sample (shards only): index into ``shards``, byte offset and byte count of the
        image member's data.
    labels : numpy.ndarray or None
        ``int64`` class indices, ``None`` for unlabelled data.
    classes : tuple of str
        Class names, position = label (image folders: sub-folder names; shards: the numbers).
    """

    source: str
    root: str
    names: Names
    shards: tuple[str, ...] = ()
    shard_of: np.ndarray | None = None
    offset: np.ndarray | None = None
    size: np.ndarray | None = None
    labels: np.ndarray | None = None
    classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.names)

    @property
    def num_classes(self) -> int:
        """Number of classes (0 when unlabelled)."""
        return len(self.classes)

    def describe(self, i: int) -> str:
        """Where sample ``i`` lives, for messages: its path, or ``shard.tar:member``."""
        if self.shard_of is None:
            return os.path.join(self.root, self.names[i])
        return f"{self.shards[int(self.shard_of[i])]}:{self.names[i]}"

    def fingerprint(self) -> int:
        """CRC-32 of the names, locations and labels: changes when the collection does."""
        crc = zlib.crc32(self.names.buffer.tobytes())
        for part in (self.names.ends, self.shard_of, self.offset, self.size, self.labels):
            if part is not None:
                crc = zlib.crc32(np.ascontiguousarray(part).tobytes(), crc)
        return crc

    def subset(self, indices: np.ndarray) -> SampleIndex:
        """The samples at ``indices`` (same classes), in that order."""
        indices = np.asarray(indices, dtype=np.int64)

        def take(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[indices]

        return dataclasses.replace(
            self,
            names=self.names.take(indices),
            shard_of=take(self.shard_of),
            offset=take(self.offset),
            size=take(self.size),
            labels=take(self.labels),
        )
