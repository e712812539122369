"""Linear evaluation of frozen features: a logistic-regression classifier trained from scratch.

Framework-free (NumPy + scikit-learn), shared by every trainer and by every baseline, so
LeJEPA features, random-init features and raw pixels are measured by the same code.

Protocol: features standardised with the training split's mean and variance; a multinomial
logistic regression (L-BFGS, deterministic) whose inverse L2 strength ``C`` is chosen by
stratified k-fold cross-validation on the training split only; refitted on the whole
training split and scored (top-1) on the test split. Few-shot probes
(:func:`few_shot_eval`) run the same evaluation on ``k`` labelled training samples per class,
drawn with a seed, averaged over several draws.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from trainers.core.stream import map_images

if TYPE_CHECKING:
    from trainers.core.config import TrainConfig
    from trainers.core.datasets import ImageDataset
    from trainers.core.stream import StreamedDataset

__all__ = [
    "FewShotResult",
    "LinearEvalResult",
    "configured_linear_eval",
    "few_shot_eval",
    "few_shot_indices",
    "flat_pixels",
    "linear_eval",
]


class LinearEvalResult(NamedTuple):
    """Outcome of :func:`linear_eval`."""

    accuracy: float
    """Top-1 accuracy on the test split."""
    c: float
    """The selected inverse L2 strength."""
    cv_accuracy: float
    """Mean cross-validated accuracy of that ``C`` on the training split."""


def _fit(x: np.ndarray, y: np.ndarray, c: float, max_iter: int):
    # scikit-learn is imported on first use: only the probes need it, and it is slow to load
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    return model.fit(x, y)


def _cv_scores(
    x: np.ndarray, y: np.ndarray, cs: Sequence[float], folds: int, seed: int, max_iter: int
) -> dict[float, float]:
    """Mean stratified ``folds``-fold validation accuracy of every ``C`` in ``cs``."""
    from sklearn.model_selection import StratifiedKFold  # first use: see _fit

    splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y))
    return {
        c: float(
            np.mean(
                [_fit(x[fit], y[fit], c, max_iter).score(x[val], y[val]) for fit, val in splits]
            )
        )
        for c in cs
    }


def linear_eval(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    cs: Sequence[float] = (0.01, 0.1, 1.0),
    folds: int = 3,
    seed: int = 0,
    max_iter: int = 1000,
    threads: int | None = 1,
) -> LinearEvalResult:
    """Top-1 test accuracy of a linear classifier on frozen features.

    Parameters
    ----------
    train_features : numpy.ndarray, shape (N, F)
    train_labels : numpy.ndarray, shape (N,)
    test_features : numpy.ndarray, shape (M, F)
    test_labels : numpy.ndarray, shape (M,)
    cs : sequence of float, default (0.01, 0.1, 1.0)
        Candidate inverse L2 strengths.
    folds : int, default 3
        Cross-validation folds for choosing ``C`` (a single candidate skips the search).
    seed : int, default 0
        Seed of the fold assignment.
    max_iter : int, default 1000
        L-BFGS iterations per fit.
    threads : int or None, default 1
        BLAS/OpenMP threads during the fits (``threadpoolctl``); 1 keeps the fits
        reproducible and fast on a busy machine, ``None`` leaves the libraries' default.

    Returns
    -------
    LinearEvalResult
    """
    from sklearn.exceptions import ConvergenceWarning  # first use: see _fit
    from threadpoolctl import threadpool_limits

    x_train = np.asarray(train_features, dtype=np.float64).reshape(len(train_features), -1)
    x_test = np.asarray(test_features, dtype=np.float64).reshape(len(test_features), -1)
    with warnings.catch_warnings(), threadpool_limits(limits=threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = _cv_scores(x_train, train_labels, cs, folds, seed, max_iter) if len(cs) > 1 else {}
        best = max(cs, key=lambda c: scores[c]) if scores else cs[0]
        model = _fit(x_train, train_labels, best, max_iter)
        accuracy = float(model.score(x_test, test_labels))
    return LinearEvalResult(accuracy, float(best), scores.get(best, float("nan")))


def configured_linear_eval(
    cfg: TrainConfig, data: ImageDataset, train_features: np.ndarray, test_features: np.ndarray
) -> LinearEvalResult:
    """:func:`linear_eval` of features of ``data``'s splits with the run's options
    (``eval.linear_cs``, ``eval.linear_folds``, ``run.seed``): every trainer and evaluation
    script measures by this one call."""
    return linear_eval(
        train_features,
        data.train_labels,
        test_features,
        data.test_labels,
        cs=cfg.eval.linear_cs,
        folds=cfg.eval.linear_folds,
        seed=cfg.run.seed,
    )


def flat_pixels(
    cfg: TrainConfig, data: ImageDataset | StreamedDataset
) -> tuple[np.ndarray, np.ndarray]:
    """The images' pixels at their native resolution (a streamed source: its decoded size),
    flattened: ``float32`` ``(N, C*H*W)`` per split, in ``[0, 1]`` (the ``raw-pixels``
    baseline; a streamed source is read in batches of ``eval.batch_size`` with the
    ``data`` stream options)."""

    def flat(images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1)

    size = cfg.eval.batch_size
    return (
        map_images(data, "train", flat, batch_size=size, options=cfg.data),
        map_images(data, "test", flat, batch_size=size, options=cfg.data),
    )


def few_shot_indices(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Sorted indices of ``shots`` samples of every class, drawn without replacement.

    Parameters
    ----------
    labels : numpy.ndarray, shape (N,)
        Integer class labels; every class present is sampled.
    shots : int
        Samples per class (>= 1).
    seed : int
        Seed of the draw.

    Returns
    -------
    numpy.ndarray
        ``int64`` indices, ``shots`` times the number of classes present.

    Raises
    ------
    ValueError
        ``shots < 1``, or a class with fewer than ``shots`` samples.
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < shots:
            raise ValueError(f"class {cls} has {len(members)} samples, fewer than shots={shots}")
        picked.append(rng.choice(members, size=shots, replace=False))
    return np.sort(np.concatenate(picked)).astype(np.int64)


class FewShotResult(NamedTuple):
    """Outcome of :func:`few_shot_eval`."""

    mean: float
    """Mean test top-1 over the draws."""
    std: float
    """Standard deviation (``ddof=0``) of the test top-1 over the draws."""
    accuracies: tuple[float, ...]
    """Test top-1 of every draw, in the order of ``seeds``."""


def few_shot_eval(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    shots: int,
    seeds: Sequence[int] = (0, 1, 2),
    cs: Sequence[float] = (0.01, 0.1, 1.0),
    folds: int = 3,
    max_iter: int = 1000,
    threads: int | None = 1,
) -> FewShotResult:
    """:func:`linear_eval` trained on ``shots`` labelled samples per class, over several draws.

    Parameters
    ----------
    train_features : numpy.ndarray, shape (N, F)
    train_labels : numpy.ndarray, shape (N,)
    test_features : numpy.ndarray, shape (M, F)
    test_labels : numpy.ndarray, shape (M,)
    shots : int
        Labelled training samples per class (:func:`few_shot_indices`).
    seeds : sequence of int, default (0, 1, 2)
        One draw per seed (also the seed of that draw's cross-validation folds).
    cs, max_iter, threads
        As in :func:`linear_eval`.
    folds : int, default 3
        As in :func:`linear_eval`, capped at ``shots`` (stratified folds need a sample of
        every class in each; ``shots=1`` needs a single ``cs``).

    Returns
    -------
    FewShotResult

    Raises
    ------
    ValueError
        No seeds, or as :func:`few_shot_indices`.
    """
    if len(seeds) == 0:
        raise ValueError("seeds must not be empty")
    accuracies = []
    for seed in seeds:
        keep = few_shot_indices(train_labels, shots, seed)
        result = linear_eval(
            np.asarray(train_features)[keep],
            np.asarray(train_labels)[keep],
            test_features,
            test_labels,
            cs=cs,
            folds=min(folds, shots),
            seed=seed,
            max_iter=max_iter,
            threads=threads,
        )
        accuracies.append(result.accuracy)
    return FewShotResult(float(np.mean(accuracies)), float(np.std(accuracies)), tuple(accuracies))
