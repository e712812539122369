"""The untruncated Epps-Pulley statistic (weight ``w = phi``) in closed form.

``EP = sqrt(2 pi) [ P / N - sqrt(2) sum_j exp(-x_j^2 / 4) + N / sqrt(3) ]`` with the
Gaussian-kernel pair sum ``P = sum_jk exp(-(x_j - x_k)^2 / 2)``. The pair sum is evaluated
in row blocks, so memory stays ``O(N * block)`` with ``block * N`` capped by
``PAIR_BUDGET`` elements: no ``N x N`` matrix is formed for large ``N``.
"""

from __future__ import annotations

import math
from typing import Any

SQRT_2PI = math.sqrt(2.0 * math.pi)
PAIR_BUDGET = 1 << 22  # elements of one (..., block, N) kernel block


def _block_rows(z: Any) -> int:
    batch = math.prod(z.shape[:-1])
    return max(1, PAIR_BUDGET // max(1, batch * z.shape[-1]))


def pair_sum(xp: Any, z: Any) -> Any:
    """``sum_jk exp(-(z_j - z_k)^2 / 2)`` over the last axis, using the kernel's symmetry."""
    n = z.shape[-1]
    block = _block_rows(z)
    total = None
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = xp.expand_dims(z[..., start:stop], axis=-1)
        cols = xp.expand_dims(z[..., start:], axis=-2)
        d = rows - cols
        kernel = xp.exp(-0.5 * (d * d))
        width = stop - start
        part = xp.sum(kernel[..., :width], axis=(-2, -1))
        if stop < n:
            part = part + 2.0 * xp.sum(kernel[..., width:], axis=(-2, -1))
        total = part if total is None else total + part
    return total


def exact_statistic(xp: Any, z: Any, *, debias: bool) -> Any:
    """Closed-form EP of the samples on the last axis of ``z``; shape ``z.shape[:-1]``."""
    n = z.shape[-1]
    pairs = pair_sum(xp, z)
    first = (pairs - n) / (n - 1) if debias else pairs / n
    second = math.sqrt(2.0) * xp.sum(xp.exp(-0.25 * (z * z)), axis=-1)
    return SQRT_2PI * (first - second + n / math.sqrt(3.0))


def exact_gradient(xp: Any, z: Any, *, debias: bool) -> Any:
    """Gradient of :func:`exact_statistic` with respect to each sample; shape of ``z``.

    ``dEP/dz_i = sqrt(2 pi) [ z_i exp(-z_i^2/4) / sqrt(2)
    - (2/N') sum_k (z_i - z_k) exp(-(z_i - z_k)^2 / 2) ]`` with ``N' = N`` (or ``N - 1``
    for the U-statistic).
    """
    n = z.shape[-1]
    denom = n - 1 if debias else n
    block = _block_rows(z)
    cols = xp.expand_dims(z, axis=-2)
    pieces = []
    for start in range(0, n, block):
        rows = xp.expand_dims(z[..., start : min(start + block, n)], axis=-1)
        d = rows - cols
        pieces.append(xp.sum(d * xp.exp(-0.5 * (d * d)), axis=-1))
    pair_term = pieces[0] if len(pieces) == 1 else xp.concat(pieces, axis=-1)
    own = z * xp.exp(-0.25 * (z * z)) / math.sqrt(2.0)
    return SQRT_2PI * (own - (2.0 / denom) * pair_term)
