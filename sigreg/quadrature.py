"""The trapezoid rule over the characteristic-function argument ``t`` used by SIGReg.

The official LeJEPA grid has ``n_points`` equally spaced knots on ``[0, t_max]`` and
trapezoid weights doubled for the mirror half ``[-t_max, 0]`` (the integrand is even),
multiplied by the weight function ``w(t) = exp(-t**2 / 2)``. With the defaults
(``t_max=3``, ``n_points=17``) that is exactly the 33-node symmetric trapezoid on
``[-3, 3]``.
"""

from __future__ import annotations

import numpy as np

from sigreg._validation import check_quadrature


def trapezoid_rule(t_max: float = 3.0, n_points: int = 17) -> tuple[np.ndarray, np.ndarray]:
    """Knots and weights of the official SIGReg quadrature, in float64.

    Parameters
    ----------
    t_max : float, default 3.0
        Largest knot; must be finite and positive.
    n_points : int, default 17
        Number of knots on ``[0, t_max]`` (at least 2).

    Returns
    -------
    t : numpy.ndarray
        Knots ``k * t_max / (n_points - 1)`` for ``k = 0, ..., n_points - 1``.
    weights : numpy.ndarray
        ``dt * c_k * exp(-t_k**2 / 2)`` with ``c_0 = c_last = 1`` and ``c_k = 2`` otherwise.

    Examples
    --------
    >>> t, w = trapezoid_rule()
    >>> t.shape, round(float(t[1]), 4)
    ((17,), 0.1875)
    >>> round(float(w.sum()), 6)  # ~ integral of exp(-t^2/2) over [-3, 3]
    2.499666
    """
    t_max, n_points = check_quadrature(t_max, n_points)
    t = np.linspace(0.0, t_max, n_points)
    dt = t_max / (n_points - 1)
    c = np.full(n_points, 2.0)
    c[0] = c[-1] = 1.0
    return t, dt * c * np.exp(-0.5 * t * t)


def null_expectation(t_max: float = 3.0, n_points: int = 17) -> float:
    """Expected quadrature statistic under the null, ``sum_k W_k (1 - exp(-t_k**2))``.

    It is the same for every sample size ``N`` (the minibatch bias of the loss is ``c / N``
    per sample). The untruncated statistic has ``sqrt(2 pi) (1 - 1/sqrt(3)) = 1.0594258``.

    Examples
    --------
    >>> round(null_expectation(), 6)
    1.052464
    """
    t, w = trapezoid_rule(t_max, n_points)
    return float(np.sum(w * (1.0 - np.exp(-t * t))))
