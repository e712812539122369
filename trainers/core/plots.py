"""PNG plots of a run: loss curves, probe/k-NN accuracy, embedding covariance spectrum.

Framework-free, shared by every trainer. Figures are drawn with matplotlib's Agg canvas
directly (no ``pyplot``, so no global backend state and no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trainers.core.metrics import effective_rank

__all__ = ["plot_accuracy", "plot_losses", "plot_spectrum"]


def _figure(ncols: int):
    # matplotlib is imported on first use (slow to load; only the end-of-run plots need it)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * ncols, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _series(records: Sequence[dict[str, Any]], kind: str, x: str, y: str):
    rows = [r for r in records if r.get("kind") == kind and y in r]
    return [r[x] for r in rows], [r[y] for r in rows]


def plot_losses(records: Sequence[dict[str, Any]], path: str) -> str:
    """Loss, prediction term, SIGReg term and learning rate against the step.

    Parameters
    ----------
    records : sequence of dict
        ``metrics.jsonl`` records; those with ``kind == "train"`` are drawn.
    path : str
        Output PNG.

    Returns
    -------
    str
        ``path``.
    """
    fig, axes = _figure(4)
    for ax, key, title in zip(
        axes,
        ("loss", "prediction", "sigreg", "lr"),
        ("LeJEPA loss", "prediction term", "SIGReg term", "learning rate"),
        strict=True,
    ):
        steps, values = _series(records, "train", "step", key)
        ax.plot(steps, values)
        ax.set_title(title)
        ax.set_xlabel("step")
        if key == "sigreg" and values and min(values) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    return path


def plot_accuracy(records: Sequence[dict[str, Any]], path: str) -> str:
    """Online linear-probe and k-NN test accuracy against the epoch.

    Parameters
    ----------
    records : sequence of dict
        ``metrics.jsonl`` records; those with ``kind == "eval"`` are drawn.
    path : str
        Output PNG.

    Returns
    -------
    str
        ``path``.
    """
    fig, axes = _figure(1)
    ax = axes[0]
    for key, label in (("probe_acc", "online linear probe"), ("knn_acc", "k-NN")):
        epochs, values = _series(records, "eval", "epoch", key)
        ax.plot(epochs, values, marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 accuracy")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    return path


def plot_spectrum(eigenvalues: np.ndarray, path: str) -> str:
    """Eigenvalues of the embedding covariance, descending, on a log scale.

    Parameters
    ----------
    eigenvalues : numpy.ndarray, shape (D,)
        Descending eigenvalues (:func:`trainers.core.metrics.covariance_spectrum`).
    path : str
        Output PNG.

    Returns
    -------
    str
        ``path``.
    """
    fig, axes = _figure(1)
    ax = axes[0]
    values = np.asarray(eigenvalues, dtype=np.float64)
    ax.plot(np.arange(1, len(values) + 1), np.maximum(values, 1e-12))
    ax.set_yscale("log")
    ax.set_xlabel("index")
    ax.set_ylabel("eigenvalue")
    ax.set_title(
        f"embedding covariance spectrum\neffective rank "
        f"{effective_rank(values):.1f} of {len(values)}"
    )
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    return path
