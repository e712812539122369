"""EDF tests of normality with p-values: Cramér-von Mises, Anderson-Darling, Watson and
Kolmogorov-Smirnov (Lilliefors), simple (exactly N(0, 1)) or composite (mean and variance
estimated), in the convention of :func:`sigreg.epps_pulley_test`.

Asymptotic p-values follow Stephens (D'Agostino & Stephens 1986, ch. 4): a *modified*
statistic ``T*`` whose law hardly depends on ``N`` is referred to the limiting law of ``T``.
Stephens fitted the simple-hypothesis ``W^2`` and ``U^2`` modifications to the upper tail;
below it they lower the statistic and overstate ``p`` (0.91 for a true 0.74 at ``N = 10``),
so sigreg uses ``max(T, T*)`` there: the modification where it raises ``T`` (the upper tail,
which sets the size of the test), the unmodified limit elsewhere (within 0.011 of
``scipy.stats.cramervonmises``' finite-``N`` law from ``N = 10`` on).

============================  =====================================  ==========================
statistic                     simple (Table 4.2)                     composite (Table 4.7)
============================  =====================================  ==========================
Cramér-von Mises ``W^2``      ``(W^2 - 0.4/N + 0.6/N^2)(1 + 1/N)``(*)``W^2 (1 + 0.5/N)``
Anderson-Darling ``A^2``      ``A^2``                                ``A^2 (1 + 0.75/N + 2.25/N^2)``
Watson ``U^2``                ``(U^2 - 0.1/N + 0.1/N^2)(1 + 0.8/N)``(*)``U^2 (1 + 0.5/N)``
Kolmogorov-Smirnov ``D``      ``D (sqrt N + 0.12 + 0.11/sqrt N)``    Dallal-Wilkinson (1986)
============================  =====================================  ==========================

(*) used as ``max(T, T*)``, see below.

The limiting laws of ``W^2``, ``A^2``, ``U^2`` are weighted chi-square sums whose weights
are computed in :mod:`sigreg._edf_spectra` and inverted like the Epps-Pulley law; ``D``
(simple) has Kolmogorov's law. The composite Kolmogorov-Smirnov test is Lilliefors' test with
the Dallal-Wilkinson p-value (Stephens' modification above ``p = 0.1``), as R's
``nortest::lillie.test``. The composite tests standardise with the mean and the ``N - 1``
standard deviation, as ``nortest`` and ``scipy.stats.anderson`` do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from sigreg import _null_distribution
from sigreg._result import GoodnessOfFitResult
from sigreg._univariate_test import UnivariateTest, run_test, standardized
from sigreg.edf import _anderson_darling, _cramer_von_mises, _kolmogorov_smirnov, _watson

_MODIFIED: dict[tuple[str, bool], Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    ("cramer_von_mises", False): lambda t, n: np.maximum(
        t, (t - 0.4 / n + 0.6 / n**2) * (1.0 + 1.0 / n)
    ),
    ("cramer_von_mises", True): lambda t, n: t * (1.0 + 0.5 / n),
    ("anderson_darling", False): lambda t, n: t,
    ("anderson_darling", True): lambda t, n: t * (1.0 + 0.75 / n + 2.25 / n**2),
    ("watson", False): lambda t, n: np.maximum(t, (t - 0.1 / n + 0.1 / n**2) * (1.0 + 0.8 / n)),
    ("watson", True): lambda t, n: t * (1.0 + 0.5 / n),
}


def _kernel_statistic(kernel: Callable[[Any, Any], Any]) -> Callable[..., tuple[Any, Any]]:
    """Row statistic of ``kernel`` on the samples (simple) or on the samples standardised
    with the mean and the ``N - 1`` standard deviation (composite)."""

    def statistic(xp: Any, rows: Any, standardize: bool) -> tuple[Any, Any]:
        if not standardize:
            return kernel(xp, rows), None
        y, constant = standardized(xp, rows)
        n = rows.shape[-1]
        return kernel(xp, y * math.sqrt((n - 1) / n)), constant

    return statistic


def _quadratic_pvalues(name: str) -> Callable[[np.ndarray, np.ndarray, bool], np.ndarray]:
    def pvalues(observed: np.ndarray, counts: np.ndarray, standardize: bool) -> np.ndarray:
        kind = f"{name}/{'composite' if standardize else 'simple'}"
        return _null_distribution.limit_sf(kind, _MODIFIED[name, standardize](observed, counts))

    return pvalues


def kolmogorov_sf(t: np.ndarray) -> np.ndarray:
    """Kolmogorov's limiting ``P(sqrt(N) D > t)`` (two series, each where it converges fast)."""
    t = np.asarray(t, dtype=np.float64)
    k = np.arange(1.0, 41.0)
    small = np.maximum(t, 0.05)[..., None]
    near = 1.0 - math.sqrt(2.0 * math.pi) / small[..., 0] * np.sum(
        np.exp(-((2.0 * k - 1.0) ** 2) * math.pi**2 / (8.0 * small**2)), axis=-1
    )
    far = 2.0 * np.sum((-1.0) ** (k - 1.0) * np.exp(-2.0 * k**2 * t[..., None] ** 2), axis=-1)
    p = np.where(t < 1.0, near, far)
    return np.where(np.isnan(t), np.nan, np.clip(np.where(t <= 0.05, 1.0, p), 0.0, 1.0))


def lilliefors_sf(d: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Lilliefors' test p-value: Dallal & Wilkinson (1986), Stephens' polynomial above 0.1."""
    kd = np.where(n <= 100, d, d * (n / 100.0) ** 0.49)
    nd = np.minimum(n, 100.0)
    p = np.exp(
        -7.01256 * kd**2 * (nd + 2.78019)
        + 2.99587 * kd * np.sqrt(nd + 2.78019)
        - 0.122119
        + 0.974598 / np.sqrt(nd)
        + 1.67997 / nd
    )
    kk = (np.sqrt(n) - 0.01 + 0.85 / np.sqrt(n)) * d
    pieces = [
        (kk <= 0.302, (1.0, 0.0, 0.0, 0.0, 0.0)),
        (kk <= 0.5, (2.76773, -19.828315, 80.709644, -138.55152, 81.218052)),
        (kk <= 0.9, (-4.901232, 40.662806, -97.490286, 94.029866, -32.355711)),
        (kk <= 1.31, (6.198765, -19.558097, 23.186922, -12.234627, 2.423045)),
    ]
    upper = np.select([c for c, _ in pieces], [np.polyval(a[::-1], kk) for _, a in pieces], 0.0)
    return np.clip(np.where(p > 0.1, upper, p), 0.0, 1.0)


def _ks_pvalues(observed: np.ndarray, counts: np.ndarray, standardize: bool) -> np.ndarray:
    if standardize:
        return lilliefors_sf(observed, counts)
    root = np.sqrt(counts)
    return kolmogorov_sf(observed * (root + 0.12 + 0.11 / root))


CRAMER_VON_MISES = UnivariateTest(
    "cramer_von_mises_test",
    _kernel_statistic(_cramer_von_mises),
    _quadratic_pvalues("cramer_von_mises"),
)
ANDERSON_DARLING = UnivariateTest(
    "anderson_darling_test",
    _kernel_statistic(_anderson_darling),
    _quadratic_pvalues("anderson_darling"),
)
WATSON = UnivariateTest(
    "watson_test", _kernel_statistic(_watson), _quadratic_pvalues("watson"), minimum=(2, 3)
)
KOLMOGOROV_SMIRNOV = UnivariateTest(
    "kolmogorov_smirnov_test", _kernel_statistic(_kolmogorov_smirnov), _ks_pvalues
)


def cramer_von_mises_test(
    x: Any,
    /,
    *,
    axis: int = 0,
    standardize: bool = True,
    method: str = "asymptotic",
    n_resamples: int | None = None,
    rng: Any = None,
    nan_policy: str = "propagate",
    keepdims: bool = False,
    backend: Any = None,
) -> GoodnessOfFitResult:
    """Cramér-von Mises test of normality of the samples along ``axis``.

    The statistic is :func:`sigreg.cramer_von_mises` of the samples (``standardize=False``)
    or of the samples standardised with their mean and ``N - 1`` standard deviation
    (``standardize=True``, R's ``nortest::cvm.test``). Large values reject normality.

    Parameters
    ----------
    x : array or array-like
        Real samples (numpy, torch, jax, cupy or array_api_strict; lists, pandas Series and
        other array-likes are converted with numpy). Computed in float64 where the device
        supports it.
    axis : int, default 0
        Axis holding the samples; every other position is tested, in one vectorised call.
    standardize : bool, default True
        ``True``: composite test (unknown mean and variance). ``False``: simple test against
        exactly N(0, 1) (``scipy.stats.cramervonmises(x, "norm")``).
    method : {"asymptotic", "montecarlo"}, default "asymptotic"
        ``"asymptotic"``: Stephens' modified statistic referred to the limiting law (module
        docstring); calibrated from ``N = 8`` on (``docs/gof.md``). ``"montecarlo"``:
        ``n_resamples`` statistics of simulated N(0, 1) samples of the same size (the null
        law is the same for every normal law in the composite test),
        ``p = (#{null >= T} + 1) / (n_resamples + 1)``.
    n_resamples : int, optional
        Number of simulated samples (``method="montecarlo"`` only; default 9999).
    rng : numpy.random.Generator or int, optional
        Source of the simulation (``method="montecarlo"`` only); default: the fixed seed 0.
    nan_policy : {"propagate", "omit", "raise"}, default "propagate"
        NaN in a sample: NaN results for it, drop the NaN values, or raise ``ValueError``.
    keepdims : bool, default False
        Keep the reduced axis with length one.
    backend : str or namespace, optional
        Convert ``x`` to this namespace first; default: the namespace of ``x``.

    Returns
    -------
    GoodnessOfFitResult
        ``(statistic, pvalue)`` in the namespace, dtype and device of ``x`` (numpy scalars
        for one numpy sample). Fewer than 3 samples (composite) or none (simple) give NaN
        and a :class:`sigreg.gof.SmallSampleWarning`; a constant sample gives NaN and a
        ``RuntimeWarning`` in the composite test.

    Raises
    ------
    ValueError
        Infinite values, NaN with ``nan_policy="raise"``, a bad option, a negative seed,
        ``rng`` or ``n_resamples`` without ``method="montecarlo"``.
    TypeError
        ``x`` is not real, ``rng`` is not a Generator or seed, or ``x`` is traced
        (``jax.jit``): p-values are computed on the host.

    Examples
    --------
    >>> import numpy as np
    >>> from sigreg import cramer_von_mises_test
    >>> rng = np.random.default_rng(0)
    >>> bool(cramer_von_mises_test(rng.normal(5.0, 2.0, 100)).pvalue > 0.01)
    True
    >>> bool(cramer_von_mises_test(rng.exponential(size=100)).pvalue < 1e-4)
    True
    """
    options = locals()  # exactly the keyword arguments above, checked by run_test
    return run_test(CRAMER_VON_MISES, options.pop("x"), options)


def anderson_darling_test(
    x: Any,
    /,
    *,
    axis: int = 0,
    standardize: bool = True,
    method: str = "asymptotic",
    n_resamples: int | None = None,
    rng: Any = None,
    nan_policy: str = "propagate",
    keepdims: bool = False,
    backend: Any = None,
) -> GoodnessOfFitResult:
    """Anderson-Darling test of normality of the samples along ``axis``.

    The statistic is :func:`sigreg.anderson_darling` of the samples (simple) or of the
    standardised samples (composite: R's ``nortest::ad.test``, the statistic of
    ``scipy.stats.anderson(x, "norm")``).

    Parameters
    ----------
    x, axis, standardize, method, n_resamples, rng, nan_policy, keepdims, backend
        As in :func:`cramer_von_mises_test`.

    Returns
    -------
    GoodnessOfFitResult
        As for :func:`cramer_von_mises_test`.

    Raises
    ------
    ValueError, TypeError
        As for :func:`cramer_von_mises_test`.

    Examples
    --------
    >>> import numpy as np
    >>> from sigreg import anderson_darling_test
    >>> rng = np.random.default_rng(0)
    >>> res = anderson_darling_test(rng.standard_t(3, size=(200, 3)))  # three columns
    >>> res.pvalue.shape, bool(np.all(res.pvalue < 0.05))
    ((3,), True)
    """
    options = locals()  # exactly the keyword arguments above, checked by run_test
    return run_test(ANDERSON_DARLING, options.pop("x"), options)


def watson_test(
    x: Any,
    /,
    *,
    axis: int = 0,
    standardize: bool = True,
    method: str = "asymptotic",
    n_resamples: int | None = None,
    rng: Any = None,
    nan_policy: str = "propagate",
    keepdims: bool = False,
    backend: Any = None,
) -> GoodnessOfFitResult:
    """Watson ``U^2`` test of normality of the samples along ``axis``.

    The statistic is :func:`sigreg.watson` of the samples (simple) or of the standardised
    samples (composite). A one-point sample has ``U^2 = 1/12`` whatever its value (no
    evidence), so the simple test needs 2 samples and the composite test 3; fewer give NaN
    and a :class:`sigreg.gof.SmallSampleWarning`.

    Parameters
    ----------
    x, axis, standardize, method, n_resamples, rng, nan_policy, keepdims, backend
        As in :func:`cramer_von_mises_test`.

    Returns
    -------
    GoodnessOfFitResult
        As for :func:`cramer_von_mises_test`.

    Raises
    ------
    ValueError, TypeError
        As for :func:`cramer_von_mises_test`.

    Examples
    --------
    >>> import numpy as np
    >>> from sigreg import watson_test
    >>> rng = np.random.default_rng(0)
    >>> bool(watson_test(rng.standard_normal(300), standardize=False).pvalue > 0.01)
    True
    >>> bool(watson_test(rng.uniform(-2, 2, 300)).pvalue < 1e-3)
    True
    """
    options = locals()  # exactly the keyword arguments above, checked by run_test
    return run_test(WATSON, options.pop("x"), options)


def kolmogorov_smirnov_test(
    x: Any,
    /,
    *,
    axis: int = 0,
    standardize: bool = True,
    method: str = "asymptotic",
    n_resamples: int | None = None,
    rng: Any = None,
    nan_policy: str = "propagate",
    keepdims: bool = False,
    backend: Any = None,
) -> GoodnessOfFitResult:
    """Kolmogorov-Smirnov test of normality (Lilliefors' test when ``standardize=True``).

    ``D = sup |F_N - Phi|`` of the samples (simple; ``scipy.stats.kstest(x, "norm")``) or
    of the standardised samples (composite: R's ``nortest::lillie.test``).

    Parameters
    ----------
    x, axis, standardize, method, n_resamples, rng, nan_policy, keepdims, backend
        As in :func:`cramer_von_mises_test`; ``"asymptotic"`` is Stephens' modified ``D``
        with Kolmogorov's law (simple) or the Dallal-Wilkinson approximation (composite).

    Returns
    -------
    GoodnessOfFitResult
        As for :func:`cramer_von_mises_test`.

    Raises
    ------
    ValueError, TypeError
        As for :func:`cramer_von_mises_test`.

    Examples
    --------
    >>> import numpy as np
    >>> from sigreg import kolmogorov_smirnov_test
    >>> rng = np.random.default_rng(0)
    >>> bool(kolmogorov_smirnov_test(rng.standard_normal(100) + 0.5).pvalue > 0.01)
    True
    >>> bool(kolmogorov_smirnov_test(rng.standard_normal(100) + 0.5, standardize=False)
    ...      .pvalue < 0.01)
    True
    """
    options = locals()  # exactly the keyword arguments above, checked by run_test
    return run_test(KOLMOGOROV_SMIRNOV, options.pop("x"), options)
