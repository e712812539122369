"""The result type of the goodness-of-fit tests with p-values."""

from __future__ import annotations

from typing import Any, NamedTuple


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
