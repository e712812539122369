"""``normality_test``: one front door to every univariate test of normality."""

from __future__ import annotations

from typing import Any

from sigreg._result import GoodnessOfFitResult
from sigreg._validation import check_choice
from sigreg.edf_test import (
    anderson_darling_test,
    cramer_von_mises_test,
    kolmogorov_smirnov_test,
    watson_test,
)
from sigreg.gof import epps_pulley_test

TESTS = {
    "epps_pulley": epps_pulley_test,
    "anderson_darling": anderson_darling_test,
    "cramer_von_mises": cramer_von_mises_test,
    "watson": watson_test,
    "kolmogorov_smirnov": kolmogorov_smirnov_test,
}


def normality_test(x: Any, /, *, test: str = "epps_pulley", **options: Any) -> GoodnessOfFitResult:
    """Test normality of the samples along ``axis`` with the test named ``test``.

    ``normality_test(x, test="anderson_darling", **options)`` is
    ``anderson_darling_test(x, **options)``; every test takes the same options (``axis``,
    ``standardize``, ``method``, ``n_resamples``, ``rng``, ``nan_policy``, ``keepdims``,
    ``backend``, see :func:`sigreg.epps_pulley_test`).

    Parameters
    ----------
    x : array or array-like
        Real samples.
    test : {"epps_pulley", "anderson_darling", "cramer_von_mises", "watson", "kolmogorov_smirnov"}
        Which test, default ``"epps_pulley"``.
    **options
        Keyword options of the test.

    Returns
    -------
    GoodnessOfFitResult
        As for the chosen test.

    Raises
    ------
    ValueError
        Unknown ``test``, or as for the chosen test.
    TypeError
        An option the tests do not take, or as for the chosen test.

    Examples
    --------
    >>> import numpy as np
    >>> from sigreg import normality_test
    >>> x = np.random.default_rng(0).exponential(size=100)
    >>> bool(normality_test(x, test="anderson_darling").pvalue < 1e-4)
    True
    """
    check_choice(test, "test", tuple(TESTS))
    return TESTS[test](x, **options)
