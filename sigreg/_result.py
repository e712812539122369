"""The result type of the goodness-of-fit tests with p-values."""

from __future__ import annotations

from typing import Any, NamedTuple

from sigreg.univariate import _finish


class GoodnessOfFitResult(NamedTuple):
    """Statistic and p-value of a test; unpacks like a tuple, as ``scipy.stats`` results do.

    Attributes
    ----------
    statistic : array
        The test statistic, in the namespace, dtype and device of the input.
    pvalue : array
        The p-value, same shape, namespace, dtype and device as ``statistic``.
    """

    statistic: Any
    pvalue: Any


def make_result(xp: Any, statistic: Any, pvalue: Any, dtype: Any) -> GoodnessOfFitResult:
    """The result with both arrays cast to ``dtype`` (the input's dtype)."""
    return GoodnessOfFitResult(
        _finish(xp, statistic, 0, False, dtype), _finish(xp, pvalue, 0, False, dtype)
    )
