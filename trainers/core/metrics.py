"""Metrics shared by every trainer: the ``metrics.jsonl`` log, k-NN accuracy, spectra.

Framework-free: inputs are NumPy arrays and plain Python values.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from trainers.core.rundir import atomic_write_text

__all__ = [
    "MetricsLog",
    "covariance_spectrum",
    "effective_rank",
    "knn_accuracy",
    "read_metrics",
]


def read_metrics(path: str) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, in order (``[]`` if it does not exist).

    A last line without its newline that is not valid JSON (an append interrupted by a crash
    or a full disk) is ignored with a warning naming the file; a resumed run drops it.

    Raises
    ------
    ValueError
        Any other line is not a JSON record.
    """
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.read().split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):  # no newline after it: a torn append
                print(
                    f"warning: {path}: ignoring a partial last line (an interrupted write)",
                    file=sys.stderr,
                    flush=True,
                )
                break
            raise ValueError(f"{path}: line {number} is not a JSON record ({exc})") from None
    return records


class MetricsLog:
    """Append-only JSON-lines log of training records, one dict per line.

    Each line is flushed and fsynced as it is written. :meth:`truncate` cuts the file back
    to the records covered by a checkpoint, so that a resumed run continues the file
    exactly where the checkpoint left it.

    Parameters
    ----------
    path : str
        The ``metrics.jsonl`` file; created if missing.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = len(read_metrics(path))

    def truncate(self, count: int) -> None:
        """Keep only the first ``count`` records (atomically rewrites the file)."""
        records = read_metrics(self.path)
        if count > len(records):
            raise ValueError(f"{self.path} holds {len(records)} records, cannot keep {count}")
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in records[:count]))
        self.count = count

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record (numbers must be finite: JSON has no NaN)."""
        for key, value in record.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"metric {key!r} is not finite: {value}")
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(record), allow_nan=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.count += 1


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> float:
    """Top-1 accuracy of a weighted k-NN classifier on cosine similarity.

    Each test sample takes its ``k`` most similar training samples; neighbour ``j`` votes
    for its class with weight ``exp(cos_j / temperature)`` (the protocol of DINO).

    Parameters
    ----------
    train_features : numpy.ndarray, shape (N, F)
    train_labels : numpy.ndarray, shape (N,)
    test_features : numpy.ndarray, shape (M, F)
    test_labels : numpy.ndarray, shape (M,)
    num_classes : int
        Number of classes (labels in ``[0, num_classes)``).
    k : int, default 20
        Neighbours (capped at ``N``).
    temperature : float, default 0.07
        Vote temperature.
    chunk_size : int, default 1024
        Test samples compared at once (bounds memory to ``chunk_size x N``).

    Returns
    -------
    float
        Fraction of test samples classified correctly.
    """
    train = _unit_rows(train_features)
    test = _unit_rows(test_features)
    k = min(k, len(train))
    labels = np.asarray(train_labels, dtype=np.int64)
    correct = 0
    for start in range(0, len(test), chunk_size):
        sims = test[start : start + chunk_size] @ train.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        weights = np.exp(np.take_along_axis(sims, top, axis=1) / temperature)
        votes = np.zeros((len(sims), num_classes))
        np.add.at(votes, (np.arange(len(sims))[:, None], labels[top]), weights)
        correct += int(np.sum(votes.argmax(axis=1) == test_labels[start : start + chunk_size]))
    return correct / len(test)


def covariance_spectrum(embeddings: np.ndarray) -> np.ndarray:
    """Eigenvalues of the covariance of ``embeddings`` ``(N, D)``, descending (float64)."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = x - x.mean(axis=0)
    cov = x.T @ x / max(len(x) - 1, 1)
    return np.clip(np.linalg.eigvalsh(cov)[::-1], 0.0, None)


def effective_rank(eigenvalues: np.ndarray) -> float:
    """``exp`` of the entropy of the normalised eigenvalues (``D`` for a flat spectrum)."""
    p = np.asarray(eigenvalues, dtype=np.float64)
    p = p[p > 0] / p.sum()
    return float(np.exp(-np.sum(p * np.log(p))))
