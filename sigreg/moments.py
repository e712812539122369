"""Moment-based statistics against N(0, 1): the degenerate mean/variance statistic and the
Extended Jarque-Bera statistic.

With the sample mean ``m = mean(x)`` and the central moments ``m_k = mean((x - m)^k)``
(divisor ``N``), for Gaussian samples ``m`` is independent of ``m_2`` and both are
independent of the standardised shape ``(x - m)/sqrt(m_2)`` (Basu's theorem), so the terms
below are independent and the sums are asymptotically chi-squared under N(0, 1).
"""

from __future__ import annotations

import math
from typing import Any

from sigreg._namespace import device_of, is_traced
from sigreg._samples import apply_along_samples


def _mean_and_central(xp: Any, z: Any) -> tuple[Any, Any]:
    mean = xp.mean(z, axis=-1, keepdims=True)
    return xp.squeeze(mean, axis=-1), z - mean


def _mean_variance(xp: Any, z: Any) -> Any:
    n = z.shape[-1]
    mean, centred = _mean_and_central(xp, z)
    var = xp.mean(centred * centred, axis=-1)
    return n * (mean * mean) + (0.5 * n) * ((var - 1.0) * (var - 1.0))


def _jarque_bera(xp: Any, z: Any, centred: Any) -> Any:
    """``N/6 (S^2 + (K - 3)^2 / 4)`` (``scipy.stats.jarque_bera``) of centred samples.

    Scale-free, so computed on ``centred / max |centred|``: no power overflows or
    underflows at any scale (float32 at 1e20 or 1e-30 alike). A sample is constant when
    its centred values are at rounding level of the values ``z`` themselves.
    """
    n = centred.shape[-1]
    spread = xp.max(xp.abs(centred), axis=-1, keepdims=True)
    size = xp.max(xp.abs(z), axis=-1, keepdims=True)
    varies = spread > 4.0 * xp.finfo(z.dtype).eps * math.sqrt(n) * size
    ok = xp.all(varies)
    if not is_traced(ok) and not bool(ok):
        raise ValueError("x has zero variance along the sample axis (skewness undefined)")
    nan = xp.asarray(float("nan"), dtype=z.dtype, device=device_of(z))
    unit = centred / xp.where(varies, spread, nan)  # NaN for a constant sample under jit
    sq = unit * unit
    m2 = xp.mean(sq, axis=-1)
    skew = xp.mean(sq * unit, axis=-1) / (m2 * xp.sqrt(m2))
    excess = xp.mean(sq * sq, axis=-1) / (m2 * m2) - 3.0
    return (n / 6.0) * (skew * skew + 0.25 * (excess * excess))


def _extended_jarque_bera(xp: Any, z: Any) -> Any:
    _, centred = _mean_and_central(xp, z)
    return _mean_variance(xp, z) + _jarque_bera(xp, z, centred)


def mean_variance(x: Any, /, *, axis: int = 0, keepdims: bool = False, backend: Any = None) -> Any:
    """Degenerate mean/variance statistic of the samples along ``axis`` against N(0, 1).

    ``MV = N m^2 + (N/2) (m_2 - 1)^2`` with the sample mean ``m`` and the variance ``m_2``
    (divisor ``N``). Under N(0, 1) ``N m^2`` is exactly chi-squared(1) and independent of
    ``N (m_2 - 1)^2 / 2``, which tends to chi-squared(1): ``MV`` tends to chi-squared(2).
    It only matches the first two moments, so it cannot see the *shape* of the
    distribution: any distribution with mean 0 and variance 1 (uniform, Rademacher...) looks
    like N(0, 1). Sliced over directions it is a variance/covariance regulariser in the
    style of VICReg (see docs/statistics.md).

    Parameters
    ----------
    x : array
        Real samples, as for :func:`sigreg.cramer_von_mises`.
    axis, keepdims, backend
        As in :func:`sigreg.cramer_von_mises`.

    Returns
    -------
    array
        The statistic for every position of the other axes, in the namespace, dtype and
        device of ``x``.

    Raises
    ------
    ValueError, TypeError
        As for :func:`sigreg.cramer_von_mises`.

    Examples
    --------
    >>> import numpy as np
    >>> from sigreg import mean_variance
    >>> rng = np.random.default_rng(0)
    >>> float(mean_variance(rng.standard_normal(1000))) < 9.21  # chi2(2) 99% quantile
    True
    >>> uniform = rng.uniform(-3 ** 0.5, 3 ** 0.5, 1000)  # mean 0, variance 1
    >>> float(mean_variance(uniform)) < 9.21  # not detected
    True
    """
    return apply_along_samples(_mean_variance, x, axis, keepdims, backend)


def extended_jarque_bera(
    x: Any, /, *, axis: int = 0, keepdims: bool = False, backend: Any = None
) -> Any:
    """Extended Jarque-Bera statistic of the samples along ``axis`` against N(0, 1).

    ``EJB = N m^2 + (N/2) (m_2 - 1)^2 + (N/6) (S^2 + (K - 3)^2 / 4)``: the
    :func:`mean_variance` statistic plus the classical Jarque-Bera statistic with skewness
    ``S = m_3 / m_2^{3/2}`` and kurtosis ``K = m_4 / m_2^2`` (central moments, divisor
    ``N``; the last term equals ``scipy.stats.jarque_bera(x).statistic``). Four
    independent terms, asymptotically chi-squared(4) under N(0, 1). The official LeJEPA
    ``ExtendedJarqueBera`` uses the ``N - 1`` variance ``s^2`` instead
    (``N m^2 / s^2 + (N - 1)(s^2 - 1)^2 / 2`` and moments standardised by ``s``); the two
    differ by ``O(1/N)`` relative.

    Parameters
    ----------
    x : array
        Real samples, as for :func:`mean_variance`; at least 2 along ``axis``.
    axis, keepdims, backend
        As in :func:`mean_variance`.

    Returns
    -------
    array
        The statistic for every position of the other axes, in the namespace, dtype and
        device of ``x``. Under ``jax.jit`` a constant sample gives NaN. The Jarque-Bera part
        is scale-free and computed without overflow at any scale; the mean/variance part
        grows like the squared variance and is ``inf`` where it exceeds the dtype's range
        (float32 data at scale ~1e10 and beyond).

    Raises
    ------
    ValueError
        Non-finite ``x``, fewer than 2 samples, a constant sample (zero variance) or an
        out-of-range ``axis``.
    TypeError
        ``x`` is not a real array.

    Examples
    --------
    >>> import numpy as np
    >>> from sigreg import extended_jarque_bera
    >>> rng = np.random.default_rng(0)
    >>> float(extended_jarque_bera(rng.standard_normal(1000))) < 13.28  # chi2(4) 99%
    True
    >>> float(extended_jarque_bera(rng.standard_t(3, 1000))) > 13.28
    True
    """
    return apply_along_samples(_extended_jarque_bera, x, axis, keepdims, backend, min_samples=2)
