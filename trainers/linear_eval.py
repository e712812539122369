"""Linear evaluation of frozen features: a logistic-regression classifier trained from scratch.

Framework-free (NumPy + scikit-learn), shared by every trainer and by every baseline, so
LeJEPA features, random-init features and raw pixels are measured by the same code.

Protocol: features standardised with the training split's mean and variance; a multinomial
logistic regression (L-BFGS, deterministic) whose inverse L2 strength ``C`` is chosen by
stratified k-fold cross-validation on the training split only; refitted on the whole
training split and scored (top-1) on the test split.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["LinearEvalResult", "linear_eval"]


class LinearEvalResult(NamedTuple):
    """Outcome of :func:`linear_eval`."""

    accuracy: float
    """Top-1 accuracy on the test split."""
    c: float
    """The selected inverse L2 strength."""
    cv_accuracy: float
    """Mean cross-validated accuracy of that ``C`` on the training split."""


def _fit(x: np.ndarray, y: np.ndarray, c: float, max_iter: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    return model.fit(x, y)


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
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    x_train = np.asarray(train_features, dtype=np.float64).reshape(len(train_features), -1)
    x_test = np.asarray(test_features, dtype=np.float64).reshape(len(test_features), -1)
    with warnings.catch_warnings(), threadpool_limits(limits=threads):
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = {}
        if len(cs) > 1:
            splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            splits = list(splitter.split(x_train, train_labels))
            for c in cs:
                scores[c] = float(
                    np.mean(
                        [
                            _fit(x_train[fit], train_labels[fit], c, max_iter).score(
                                x_train[val], train_labels[val]
                            )
                            for fit, val in splits
                        ]
                    )
                )
            best = max(cs, key=lambda c: scores[c])
        else:
            best = cs[0]
        model = _fit(x_train, train_labels, best, max_iter)
        accuracy = float(model.score(x_test, test_labels))
    return LinearEvalResult(accuracy, float(best), scores.get(best, float("nan")))
