"""Empirical characteristic function sums on a uniform grid, and their pullback.

The knots are ``t_k = k * step`` (``k = 1..n_knots``; the knot ``t = 0`` never contributes
to the statistic). Because they are uniform, ``exp(i t_k z) = exp(i step z) ** k``: one
``cos`` and one ``sin`` per element, then a complex-rotation recurrence. Only arrays the
size of ``z`` are live at any time; nothing of size ``z.size * n_knots`` is built.
"""

from __future__ import annotations

from typing import Any


def ecf_sums(xp: Any, z: Any, step: float, n_knots: int) -> tuple[Any, Any]:
    """Sums over the last axis of ``cos(t_k z)`` and ``sin(t_k z)``.

    Parameters
    ----------
    xp : namespace
        Array namespace of ``z``.
    z : array, shape (..., N)
        Samples along the last axis.
    step : float
        Knot spacing.
    n_knots : int
        Number of knots ``t_k = k * step``, ``k = 1..n_knots``.

    Returns
    -------
    cos_sums, sin_sums : array, shape (..., n_knots)
    """
    theta = z * step
    c1, s1 = xp.cos(theta), xp.sin(theta)
    c, s = c1, s1
    cos_sums, sin_sums = [xp.sum(c, axis=-1)], [xp.sum(s, axis=-1)]
    for _ in range(n_knots - 1):
        c, s = c * c1 - s * s1, s * c1 + c * s1
        cos_sums.append(xp.sum(c, axis=-1))
        sin_sums.append(xp.sum(s, axis=-1))
    return xp.stack(cos_sums, axis=-1), xp.stack(sin_sums, axis=-1)


def ecf_sums_pullback(xp: Any, z: Any, step: float, grad_cos: Any, grad_sin: Any) -> Any:
    """Vector-Jacobian product of :func:`ecf_sums` with respect to ``z``.

    ``d cos_sum_k / d z_i = -t_k sin(t_k z_i)`` and ``d sin_sum_k / d z_i = t_k cos(t_k z_i)``.

    Parameters
    ----------
    xp : namespace
        Array namespace of ``z``.
    z : array, shape (..., N)
        The samples :func:`ecf_sums` was called with.
    step : float
        Knot spacing.
    grad_cos, grad_sin : array, shape (..., n_knots)
        Cotangents of the cosine and sine sums.

    Returns
    -------
    array, shape (..., N)
    """
    n_knots = grad_cos.shape[-1]
    theta = z * step
    c1, s1 = xp.cos(theta), xp.sin(theta)
    c, s = c1, s1
    grad = None
    for k in range(n_knots):
        if k:
            c, s = c * c1 - s * s1, s * c1 + c * s1
        t_k = (k + 1) * step
        gc = grad_cos[..., k : k + 1] * t_k
        gs = grad_sin[..., k : k + 1] * t_k
        term = gs * c - gc * s
        grad = term if grad is None else grad + term
    return grad
