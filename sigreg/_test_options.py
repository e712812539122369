"""The options every ``*_test`` function shares: ``method``, ``n_resamples``, ``rng``,
``nan_policy``, with one spelling, one default and one error type per mistake.

* ``method``: ``"asymptotic"`` (a closed-form or limiting null law, no randomness) or
  ``"montecarlo"`` (simulated null). The old spellings ``"monte-carlo"`` and
  ``"asymptotic-lognormal"`` still work with a ``DeprecationWarning``.
* ``rng``: a ``numpy.random.Generator`` or a non-negative integer seed; ``None`` means the
  fixed seed :data:`DEFAULT_SEED`, so a Monte Carlo p-value is reproducible without global
  random state. A wrong type is a ``TypeError``, a negative seed a ``ValueError``.
* ``n_resamples`` and ``rng`` with ``method="asymptotic"``: ``ValueError`` (they would be
  silently ignored).
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np

from sigreg._validation import check_choice, check_int

METHODS = ("asymptotic", "montecarlo")
NAN_POLICIES = ("propagate", "omit", "raise")
DEFAULT_SEED = 0
_OLD_SPELLINGS = {"monte-carlo": "montecarlo", "asymptotic-lognormal": "asymptotic"}


def check_method(method: Any, available: tuple[str, ...] = METHODS, *, stacklevel: int = 3) -> str:
    """``method`` in the current spelling (old spellings warn ``DeprecationWarning``
    attributed to the frame ``stacklevel`` up: the public function's caller by default)."""
    if isinstance(method, str) and method in _OLD_SPELLINGS:
        new = _OLD_SPELLINGS[method]
        warnings.warn(
            f"method={method!r} is deprecated, use method={new!r}",
            DeprecationWarning,
            stacklevel=stacklevel,
        )
        method = new
    return check_choice(method, "method", available)


def check_rng(rng: Any) -> np.random.Generator:
    """A ``numpy.random.Generator``: ``rng`` itself, a fresh PCG64 from an integer seed, or
    the one of :data:`DEFAULT_SEED` for ``None``."""
    if rng is None:
        return np.random.default_rng(DEFAULT_SEED)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        if int(rng) < 0:
            raise ValueError(f"rng must be a non-negative integer seed, got {rng}")
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be a numpy.random.Generator or an integer seed, got {rng!r}")


def montecarlo_options(
    n_resamples: Any, rng: Any, default_resamples: int
) -> tuple[int, np.random.Generator]:
    """``(n_resamples, generator)`` of a Monte Carlo test (defaults filled in)."""
    resamples = default_resamples if n_resamples is None else n_resamples
    return check_int(resamples, "n_resamples", minimum=1), check_rng(rng)


def resampling(
    method: str, n_resamples: Any, rng: Any, default_resamples: int
) -> tuple[int, np.random.Generator] | None:
    """``(n_resamples, generator)`` for ``method="montecarlo"``, ``None`` otherwise."""
    if method == "montecarlo":
        return montecarlo_options(n_resamples, rng, default_resamples)
    if n_resamples is not None or rng is not None:
        raise ValueError("n_resamples and rng are only used with method='montecarlo'")
    return None


def check_nan_policy(nan_policy: Any) -> str:
    return check_choice(nan_policy, "nan_policy", NAN_POLICIES)
