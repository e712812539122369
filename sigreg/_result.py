"""The result type of every test with a p-value (``*_test``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class GoodnessOfFitResult(NamedTuple):
    """Statistic and p-value of a test; unpacks like a tuple, as ``scipy.stats`` results do.

    Both fields have the same kind, shape, dtype and device, those of the input: arrays of
    the input's namespace, one value per tested sample. For a single sample (0-d) of numpy
    input both are numpy scalars (``numpy.float64`` for float64 input, a ``float``
    subclass, as ``scipy.stats`` returns); other namespaces give 0-d arrays.

    Attributes
    ----------
    statistic : array or numpy scalar
        The test statistic.
    pvalue : array or numpy scalar
        The p-value; NaN wherever the statistic is NaN.
    """

    statistic: Any
    pvalue: Any


def _final(xp: Any, value: Any, dtype: Any) -> Any:
    if value.dtype != dtype:
        value = xp.astype(value, dtype)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    return value


def make_result(xp: Any, statistic: Any, pvalue: Any, dtype: Any) -> GoodnessOfFitResult:
    """The result with both arrays cast to ``dtype`` (the input's), numpy 0-d as scalars."""
    return GoodnessOfFitResult(_final(xp, statistic, dtype), _final(xp, pvalue, dtype))
