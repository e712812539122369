"""Empirical characteristic function sums on a uniform grid, and their gradient: two strategies.

The knots are ``t_k = k * step`` (``k = 1..n_knots``; the knot ``t = 0`` never contributes
to the statistic). For samples ``z`` on the last axis both strategies return the sums
``sum_j cos(t_k z_j)`` and ``sum_j sin(t_k z_j)`` and, given the cotangents ``(g_c, g_s)``
of those sums, the gradient ``t_k (g_s cos(t_k z) - g_c sin(t_k z))`` summed over ``k``.

``"cache_fused"`` (CPUs)
    Rows of ``z`` (slices) are processed in blocks of about :data:`CACHE_BLOCK_ELEMENTS`
    numbers per knot. A block takes one ``cos`` and one ``sin``; every further knot follows
    from the Chebyshev recurrence ``Y_{k+1} = 2 cos(theta) Y_k - Y_{k-1}`` (which cosines and
    sines obey alike), so each knot costs one multiply and one subtract. The block's knot
    values, ``2 n_knots`` cache-resident rows, are then reduced over the samples and, when
    the cotangents are known (a function of the block's own sums), contracted into the
    gradient while they are still in cache.
``"few_kernels"`` (accelerators)
    All knots at once: the knot values as one ``(rows, 2 n_knots, N)`` array per chunk,
    chunks sized so that their temporaries fit :data:`MEMORY_BUDGET_BYTES`, so a few large
    operations (one kernel launch each on a GPU) do the work.

Temporaries are bounded by the block or chunk size; nothing of size ``z.size * n_knots`` is
built unless it fits the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sigreg._namespace import device_of

CACHE_BLOCK_ELEMENTS = 32768
"""``"cache_fused"``: samples times slices per knot array in one block (256 KiB in float64)."""

MEMORY_BUDGET_BYTES = 256 * 2**20
"""``"few_kernels"``: bytes of the temporaries of one chunk of slices (256 MiB)."""

Cotangents = Callable[[Any, Any], tuple[Any, Any]]


def _rows(z: Any, xp: Any) -> Any:
    return xp.reshape(z, (-1, z.shape[-1]))


def _itemsize(xp: Any, dtype: Any) -> int:
    return 8 if dtype == xp.float64 else 4


def block_rows(n_samples: int, n_knots: int, itemsize: int, engine: str) -> int:
    """Rows (slices) per block: cache-sized for ``"cache_fused"``, budget-sized otherwise."""
    if engine == "cache_fused":
        return max(1, CACHE_BLOCK_ELEMENTS // max(n_samples, 1))
    # phases, cosines, sines (n_knots each) and their concatenation (2 n_knots) are live
    return max(1, MEMORY_BUDGET_BYTES // max(5 * n_knots * n_samples * itemsize, 1))


def _chebyshev_block(xp: Any, theta: Any, n_knots: int) -> Any:
    """``(rows, 2 n_knots, N)``: ``cos(k theta)`` for ``k = 1..n_knots``, then the sines."""
    c1, s1 = xp.cos(theta), xp.sin(theta)
    two_c = 2.0 * c1
    cos_k, sin_k = [c1], [s1]
    prev_c, prev_s = xp.ones_like(c1), xp.zeros_like(s1)
    for _ in range(n_knots - 1):
        new_c, new_s = two_c * cos_k[-1] - prev_c, two_c * sin_k[-1] - prev_s
        prev_c, prev_s = cos_k[-1], sin_k[-1]
        cos_k.append(new_c)
        sin_k.append(new_s)
    return xp.stack(cos_k + sin_k, axis=-2)


def _broadcast_block(xp: Any, z: Any, t: Any) -> Any:
    """``(rows, 2 n_knots, N)`` by broadcasting the phases ``z t_k`` (few large operations)."""
    phase = xp.expand_dims(t, axis=-1) * xp.expand_dims(z, axis=-2)
    return xp.concat([xp.cos(phase), xp.sin(phase)], axis=-2)


def _knots(xp: Any, step: float, n_knots: int, like: Any) -> Any:
    return step * xp.arange(1, n_knots + 1, dtype=like.dtype, device=device_of(like))


def _knot_values(xp: Any, zb: Any, step: float, t: Any, engine: str) -> Any:
    if engine == "cache_fused":
        return _chebyshev_block(xp, zb * step, t.shape[0])
    return _broadcast_block(xp, zb, t)


def _gradient(xp: Any, values: Any, t: Any, grad_cos: Any, grad_sin: Any) -> Any:
    """``sum_k t_k (g_s cos - g_c sin)`` as one batched product with the knot values."""
    coef = xp.concat([t * grad_sin, -t * grad_cos], axis=-1)  # (rows, 2 n_knots)
    return (xp.expand_dims(coef, axis=-2) @ values)[:, 0, :]


def ecf_sums(
    xp: Any,
    z: Any,
    step: float,
    n_knots: int,
    *,
    engine: str = "cache_fused",
    cotangents: Cotangents | None = None,
) -> tuple[Any, Any, Any]:
    """Sums over the last axis of ``cos(t_k z)`` and ``sin(t_k z)``, and optionally the gradient.

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
    engine : {"cache_fused", "few_kernels"}
        Strategy (see the module docstring).
    cotangents : callable, optional
        ``cotangents(cos_sums, sin_sums) -> (grad_cos, grad_sin)`` for a block of rows (all
        arrays ``(rows, n_knots)``). When given, the gradient of ``sum(grad_cos * cos_sums
        + grad_sin * sin_sums)`` with respect to ``z`` is returned as well, computed from
        the knot values while they are in cache.

    Returns
    -------
    cos_sums, sin_sums : array, shape (..., n_knots)
    grad : array of the shape of ``z``, or None
    """
    lead, n = z.shape[:-1], z.shape[-1]
    rows = _rows(z, xp)
    t = _knots(xp, step, n_knots, z)
    size = block_rows(n, n_knots, _itemsize(xp, z.dtype), engine)
    sums, grads = [], []
    for start in range(0, rows.shape[0], size):
        stop = min(start + size, rows.shape[0])
        values = _knot_values(xp, rows[start:stop, :], step, t, engine)
        block_sums = xp.sum(values, axis=-1)
        sums.append(block_sums)
        if cotangents is not None:
            grad_cos, grad_sin = cotangents(block_sums[:, :n_knots], block_sums[:, n_knots:])
            grads.append(_gradient(xp, values, t, grad_cos, grad_sin))
    total = xp.reshape(xp.concat(sums, axis=0), lead + (2 * n_knots,))
    grad = None if cotangents is None else xp.reshape(xp.concat(grads, axis=0), z.shape)
    return total[..., :n_knots], total[..., n_knots:], grad


def ecf_sums_pullback(
    xp: Any, z: Any, step: float, grad_cos: Any, grad_sin: Any, *, engine: str = "cache_fused"
) -> Any:
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
    engine : {"cache_fused", "few_kernels"}
        Strategy (see the module docstring).

    Returns
    -------
    array, shape of ``z``
    """
    n_knots = grad_cos.shape[-1]
    rows = _rows(z, xp)
    gc = xp.reshape(xp.broadcast_to(grad_cos, z.shape[:-1] + (n_knots,)), (-1, n_knots))
    gs = xp.reshape(xp.broadcast_to(grad_sin, z.shape[:-1] + (n_knots,)), (-1, n_knots))
    t = _knots(xp, step, n_knots, z)
    size = block_rows(z.shape[-1], n_knots, _itemsize(xp, z.dtype), engine)
    grads = []
    for start in range(0, rows.shape[0], size):
        stop = min(start + size, rows.shape[0])
        values = _knot_values(xp, rows[start:stop, :], step, t, engine)
        grads.append(_gradient(xp, values, t, gc[start:stop, :], gs[start:stop, :]))
    return xp.reshape(xp.concat(grads, axis=0), z.shape)
