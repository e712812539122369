"""EDF (CDF-based) statistics against the fully specified N(0, 1): Cramér-von Mises,
Anderson-Darling and Watson.

All three compare the empirical distribution function of the samples with ``Phi``, through
the probability-integral transforms ``u_i = Phi(x_(i))`` of the sorted samples
``x_(1) <= ... <= x_(N)``. Nothing is estimated from the data (the *simple* hypothesis that
SIGReg needs), so a wrong mean or scale is detected too. The samples are sorted with
``xp.sort``, which torch and JAX differentiate (the gradient of each order statistic flows
back to the sample it came from).
"""

from __future__ import annotations

from typing import Any

from sigreg._namespace import device_of
from sigreg._samples import apply_along_samples
from sigreg._special import log_ndtr_pair, ndtr


def _ranks(xp: Any, z: Any) -> Any:
    """``1, ..., N`` in the dtype and on the device of ``z``."""
    return xp.arange(1, z.shape[-1] + 1, dtype=z.dtype, device=device_of(z))


def _cramer_von_mises_of_u(xp: Any, u: Any) -> Any:
    """``W^2`` from the sorted probability-integral transforms ``u``."""
    n = u.shape[-1]
    gaps = u - (2.0 * _ranks(xp, u) - 1.0) / (2.0 * n)
    return 1.0 / (12.0 * n) + xp.sum(gaps * gaps, axis=-1)


# The kernels take ``cdf`` (``Phi``) and ``log_cdf_pair`` (``log Phi(x), log Phi(-x)``) as
# options so that the LeJEPA loss can pass native ones (sigreg.loss_statistics).
def _cramer_von_mises(xp: Any, z: Any, *, cdf: Any = ndtr) -> Any:
    return _cramer_von_mises_of_u(xp, cdf(xp, xp.sort(z, axis=-1)))


def _watson(xp: Any, z: Any, *, cdf: Any = ndtr) -> Any:
    n = z.shape[-1]
    u = cdf(xp, xp.sort(z, axis=-1))  # the mean of u does not depend on the order
    centre = xp.mean(u, axis=-1) - 0.5
    return _cramer_von_mises_of_u(xp, u) - n * (centre * centre)


def _anderson_darling(xp: Any, z: Any, *, log_cdf_pair: Any = log_ndtr_pair) -> Any:
    n = z.shape[-1]
    s = xp.sort(z, axis=-1)
    i = _ranks(xp, z)
    log_lower, log_upper = log_cdf_pair(xp, s)
    weighted = (2.0 * i - 1.0) * log_lower + (2.0 * (n - i) + 1.0) * log_upper
    return -n - xp.sum(weighted, axis=-1) / n


def _kolmogorov_smirnov(xp: Any, z: Any) -> Any:
    """``D = sup |F_N - Phi| = max_i max(i/N - u_i, u_i - (i - 1)/N)``."""
    n = z.shape[-1]
    u = ndtr(xp, xp.sort(z, axis=-1))
    i = _ranks(xp, z)
    above = xp.max(i / n - u, axis=-1)
    below = xp.max(u - (i - 1.0) / n, axis=-1)
    return xp.maximum(above, below)


def cramer_von_mises(
    x: Any, /, *, axis: int = 0, keepdims: bool = False, backend: Any = None
) -> Any:
    """Cramér-von Mises statistic of the samples along ``axis`` against N(0, 1).

    ``W^2 = N integral (F_N - Phi)^2 dPhi = 1/(12 N) + sum_i (u_i - (2i - 1)/(2N))^2`` with
    ``u_i = Phi(x_(i))`` for the sorted samples. Equals
    ``scipy.stats.cramervonmises(x, "norm").statistic``. Asymptotic null mean ``1/6``.

    Parameters
    ----------
    x : array
        Real samples (numpy, torch, jax, cupy or array_api_strict); integers and booleans
        are promoted to the default float, float16/bfloat16 computed in float32.
    axis : int, default 0
        Axis holding the samples.
    keepdims : bool, default False
        Keep the reduced axis with length one.
    backend : str or namespace, optional
        Convert ``x`` to this namespace first; default: the namespace of ``x``.

    Returns
    -------
    array
        The statistic for every position of the other axes, in the namespace, dtype and
        device of ``x``.

    Raises
    ------
    ValueError
        Non-finite ``x``, an empty sample axis or an out-of-range ``axis``.
    TypeError
        ``x`` is not a real array.

    Examples
    --------
    >>> import numpy as np
    >>> from sigreg import cramer_von_mises
    >>> x = np.random.default_rng(0).standard_normal(1000)
    >>> float(cramer_von_mises(x)) < 0.75  # the null 99% quantile is ~0.74
    True
    >>> float(cramer_von_mises(1.2 * x)) > 0.75
    True
    """
    return apply_along_samples(_cramer_von_mises, x, axis, keepdims, backend)


def anderson_darling(
    x: Any, /, *, axis: int = 0, keepdims: bool = False, backend: Any = None
) -> Any:
    """Anderson-Darling statistic of the samples along ``axis`` against N(0, 1).

    ``A^2 = N integral (F_N - Phi)^2 / (Phi (1 - Phi)) dPhi
    = -N - (1/N) sum_i [(2i - 1) log Phi(x_(i)) + (2N + 1 - 2i) log Phi(-x_(i))]``,
    evaluated with a stable ``log Phi``, so it stays finite for samples far in the tails.
    ``scipy.stats.anderson`` tests the *composite* hypothesis (it standardises with the
    sample mean and the ``N - 1`` standard deviation); applied to standardised samples this
    function returns its statistic. Asymptotic null mean ``1``.

    Parameters
    ----------
    x : array
        Real samples, as for :func:`cramer_von_mises`.
    axis, keepdims, backend
        As in :func:`cramer_von_mises`.

    Returns
    -------
    array
        As for :func:`cramer_von_mises`.

    Raises
    ------
    ValueError, TypeError
        As for :func:`cramer_von_mises`.

    Examples
    --------
    >>> import numpy as np
    >>> from sigreg import anderson_darling
    >>> x = np.random.default_rng(0).standard_normal(1000)
    >>> float(anderson_darling(x)) < 3.9  # the null 99% quantile is ~3.86
    True
    >>> float(anderson_darling(x + 0.2)) > 3.9
    True
    """
    return apply_along_samples(_anderson_darling, x, axis, keepdims, backend)


def watson(x: Any, /, *, axis: int = 0, keepdims: bool = False, backend: Any = None) -> Any:
    """Watson statistic of the samples along ``axis`` against N(0, 1).

    ``U^2 = W^2 - N (mean_i u_i - 1/2)^2`` with ``W^2`` the Cramér-von Mises statistic and
    ``u_i = Phi(x_i)`` (Watson 1961): the Cramér-von Mises integral of ``F_N - Phi`` after
    removing its mean, which makes it invariant to the origin on the circle ``u mod 1``.
    scipy has no Watson statistic. Asymptotic null mean ``1/12``. Needs 2 samples: one
    point gives ``1/12`` whatever its value.

    Parameters
    ----------
    x : array
        Real samples, as for :func:`cramer_von_mises`.
    axis, keepdims, backend
        As in :func:`cramer_von_mises`.

    Returns
    -------
    array
        As for :func:`cramer_von_mises`.

    Raises
    ------
    ValueError, TypeError
        As for :func:`cramer_von_mises`; also fewer than 2 samples.

    Examples
    --------
    >>> import numpy as np
    >>> from sigreg import watson
    >>> x = np.random.default_rng(0).standard_normal(1000)
    >>> float(watson(x)) < 0.27  # the null 99% quantile is ~0.27
    True
    >>> float(watson(0.7 * x)) > 0.27
    True
    """
    return apply_along_samples(_watson, x, axis, keepdims, backend, min_samples=2)
