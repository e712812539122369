"""The JAX kernels of the sliced Epps-Pulley statistic: knot sums and gradients of phases.

Rows are slices, the last axis the samples, in *phase* units ``theta = z * step``: knot ``k``
is ``cos(k theta)``, ``sin(k theta)`` (``k = 1..K``). Given per-row coefficients ``[a, b]``
the gradient is ``sum_k a_k cos(k theta) + b_k sin(k theta)``.

``"cache_fused"`` (CPU)
    ``lax.map`` over blocks of rows whose ``(rows, N, K)`` phases stay in cache: XLA fuses
    the phases, sines, cosines and the reductions of a block into a few loops. XLA's CPU
    ``sin``/``cos`` are scalar library calls (about 20 ns each), so :func:`sincos` evaluates
    them with a Cody-Waite range reduction and Taylor polynomials that XLA vectorises
    (within 1 ulp-level error of ``numpy``: about 1e-7 in float32, 1e-16 in float64).
``"few_kernels"`` (GPU/TPU)
    The ``(rows, N, K)`` phases of a memory-bounded chunk through the native ``jnp.sin`` and
    ``jnp.cos`` in one fused computation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jax import lax

from sigreg.engine import MEMORY_BUDGET_BYTES

CACHE_BLOCK_ELEMENTS = 2**18
"""``"cache_fused"``: phases (rows x samples x knots) per block."""

# pi/2 split so that q * part is exact for |q| < 2**20 (float64, fdlibm) / 2**8 (float32)
_PIO2 = {
    8: (1.57079632673412561417e00, 6.07710050630396597660e-11, 2.02226624879595063154e-21),
    4: (1.5703125, 4.837512969970703125e-4, 7.54978995489188216e-8),
}
_TERMS = {8: (9, 10), 4: (5, 6)}  # Taylor terms of sin and cos on |r| <= pi/4


def _taylor(r2: Any, n_terms: int, first: int) -> Any:
    """``sum_j (-1)^j r^(2j) / (2j + first)! * first!`` by Horner in ``r2 = r * r``."""
    coefs = [
        (-1) ** j * math.factorial(first) / math.factorial(2 * j + first) for j in range(n_terms)
    ]
    out = jnp.full_like(r2, coefs[-1])
    for c in reversed(coefs[:-1]):
        out = out * r2 + c
    return out


def sincos(theta: Any) -> tuple[Any, Any]:
    """``(sin(theta), cos(theta))`` in element-wise arithmetic that XLA vectorises.

    Accurate for ``|theta| < 2**20`` (float64) or ``2**8 * pi / 2`` (float32); beyond, the
    reduction loses digits as any argument reduction with a short ``pi`` does.
    """
    size = jnp.dtype(theta.dtype).itemsize
    p1, p2, p3 = _PIO2[8 if size == 8 else 4]
    n_sin, n_cos = _TERMS[8 if size == 8 else 4]
    q = jnp.round(theta * (2.0 / math.pi))
    r = ((theta - q * p1) - q * p2) - q * p3
    r2 = r * r
    s, c = r * _taylor(r2, n_sin, 1), _taylor(r2, n_cos, 0)
    quadrant = q.astype(jnp.int32)
    swap = (quadrant & 1) == 1
    sin_out, cos_out = jnp.where(swap, c, s), jnp.where(swap, s, c)
    sin_out = jnp.where((quadrant & 2) == 2, -sin_out, sin_out)
    cos_out = jnp.where(((quadrant + 1) & 2) == 2, -cos_out, cos_out)
    return sin_out, cos_out


def _block(theta: Any, n_knots: int, trig: Callable, coefficients: Any) -> tuple[Any, Any]:
    """Sums ``(rows, 2K)`` and, when ``coefficients`` is given, the gradient ``(rows, N)``.

    ``coefficients``: None, a function of the block's sums, or a ``(rows, 2K)`` array.
    """
    k = jnp.arange(1, n_knots + 1, dtype=theta.dtype)
    sin_k, cos_k = trig(theta[..., None] * k)  # (rows, N, K)
    sums = jnp.concatenate([jnp.sum(cos_k, axis=-2), jnp.sum(sin_k, axis=-2)], axis=-1)
    if coefficients is None:
        return sums, None
    coef = coefficients(sums) if callable(coefficients) else coefficients
    grad = jnp.sum(cos_k * coef[:, None, :n_knots] + sin_k * coef[:, None, n_knots:], axis=-1)
    return sums, grad


def _native(phase: Any) -> tuple[Any, Any]:
    return jnp.sin(phase), jnp.cos(phase)


def knot_pass(theta: Any, n_knots: int, engine: str, coefficients: Any) -> tuple[Any, Any]:
    """Sums ``(R, 2K)`` and optionally the gradient ``(R, N)`` for phases ``theta`` ``(R, N)``.

    ``coefficients`` as in :func:`_block` (a callable is applied per block).
    """
    rows, n = theta.shape
    per_row = n * n_knots
    if engine == "few_kernels":
        size = max(1, MEMORY_BUDGET_BYTES // (4 * per_row * jnp.dtype(theta.dtype).itemsize))
        parts = [
            _block(
                theta[start : start + size],
                n_knots,
                _native,
                coefficients
                if coefficients is None or callable(coefficients)
                else coefficients[start : start + size],
            )
            for start in range(0, rows, size)
        ]
        sums = jnp.concatenate([p[0] for p in parts])
        grad = None if coefficients is None else jnp.concatenate([p[1] for p in parts])
        return sums, grad
    size = max(1, min(rows, CACHE_BLOCK_ELEMENTS // per_row))
    n_blocks = -(-rows // size)
    pad = n_blocks * size - rows
    blocks = jnp.pad(theta, ((0, pad), (0, 0))).reshape(n_blocks, size, n)
    given = coefficients is not None and not callable(coefficients)
    if given:
        coef_blocks = jnp.pad(coefficients, ((0, pad), (0, 0))).reshape(n_blocks, size, -1)
        _, grad = lax.map(lambda a: _block(a[0], n_knots, sincos, a[1]), (blocks, coef_blocks))
        return None, grad.reshape(-1, n)[:rows]
    sums, grad = lax.map(lambda b: _block(b, n_knots, sincos, coefficients), blocks)
    sums = sums.reshape(-1, 2 * n_knots)[:rows]
    return sums, None if grad is None else grad.reshape(-1, n)[:rows]
