"""The torch kernels of the sliced Epps-Pulley statistic: three strategies, one contract.

Everything here works in *phase* units: ``theta = x @ (step * directions)``, so knot ``k``
is ``cos(k theta)``, ``sin(k theta)`` (``k = 1..K``) and the derivative of a knot value
carries the integer ``k`` instead of ``t_k``. Rows are slices (``(..., M, N)`` flattened to
``(R, N)``), the last axis is the samples.

The gradient is ``d/d theta = sum_k a_k cos(k theta) + b_k sin(k theta)`` with per-row
coefficients ``[a, b]``: either those of the statistic itself (cotangent 1 per slice, a
function of the row's own sums, so known in the forward pass: :func:`unit_coefficients`),
or given (the second pass of a collective run: :func:`given_coefficients`).

``few_kernels`` (accelerators; also the body of the ``compiled`` strategy)
    A chunk's phases as one ``(rows, N, 2K)`` array: ``addcmul`` of the phases and a
    ``-pi/2`` offset (``sin u = cos(u - pi/2)``), one in-place ``cos``, one ``sum`` over the
    samples, one batched matmul for the gradient: a handful of kernel launches per chunk.
``cache_fused`` (CPUs)
    Blocks of ``rows`` slices whose per-knot arrays (``2 rows N`` numbers) stay in cache and
    below ATen's parallel grain size (no OpenMP region per operation, which collapses when
    the cores are shared). One ``cos`` and one ``sin`` per block, then the Chebyshev
    recurrence with stored signs so every knot is ONE ``addcmul`` (see :func:`signs`); the
    sums are one matrix-vector product, the gradient one batched matmul, both reading the
    block while it is in cache.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import torch

GRAIN = 32768
"""ATen's ``at::internal::GRAIN_SIZE``: element-wise operations below it run on one thread."""


def signs(n_knots: int) -> list[float]:
    """Signs ``s_k`` (``k = 1..n_knots``) of the stored knot values ``V_k = s_k Y_k``.

    With the pattern ``+, -, -, +, +, -, -, ...`` (``s_0 = +1``, ``s_{k+1} s_{k-1} = -1``)
    the recurrence ``Y_{k+1} = 2 c Y_k - Y_{k-1}`` (``c = cos theta``) becomes
    ``V_{k+1} = V_{k-1} + (2 s_{k+1} s_k) c V_k``: one fused multiply-add per knot.
    """
    pattern = (1.0, 1.0, -1.0, -1.0)
    return [pattern[k % 4] for k in range(1, n_knots + 1)]


class Constants(NamedTuple):
    """Per-knot constants of one quadrature in one dtype/device (see :func:`constants`)."""

    freq2: torch.Tensor  # (2K,) [1..K, 1..K]
    offset: torch.Tensor  # (2K,) [0..., -pi/2...]
    grad_scale: torch.Tensor  # (K,) 2 W_k k: times f / N gives the sine-sum coefficient
    grad_offset: torch.Tensor  # (K,) 2 W_k k phi_k


def constants(weights, phi, like: torch.Tensor) -> Constants:
    """The constants of :class:`Constants` for ``like``'s dtype and device."""
    n_knots = len(weights)
    k = torch.arange(1, n_knots + 1, dtype=torch.float64)
    w = torch.tensor(weights, dtype=torch.float64)
    p = torch.tensor(phi, dtype=torch.float64)
    offset = torch.full((2 * n_knots,), -0.5 * math.pi, dtype=torch.float64)
    offset[:n_knots] = 0.0
    host = (k.repeat(2), offset, 2.0 * w * k, 2.0 * w * k * p)
    return Constants(*(t.to(dtype=like.dtype, device=like.device) for t in host))


def unit_coefficients(sums: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> Any:
    """``(rows, 2K)`` gradient coefficients ``[a, b]`` for cotangent 1 per row.

    ``sums`` is ``(rows, 2K)`` [cos sums, sin sums]; ``scale = 2 W_k k f / N`` and
    ``offset = 2 W_k k phi_k``: ``a_k = scale_k sin_sum_k``, ``b_k = offset_k - scale_k
    cos_sum_k`` (``d value / d cos_sum = 2 W (f C - phi)``, ``d value / d sin_sum = 2 W f S``).
    """
    n_knots = scale.shape[0]
    return torch.cat(
        [sums[:, n_knots:] * scale, torch.addcmul(offset, sums[:, :n_knots], scale, value=-1.0)],
        dim=1,
    )


def given_coefficients(grad_cos: torch.Tensor, grad_sin: torch.Tensor) -> torch.Tensor:
    """``(rows, 2K)`` coefficients ``[k g_s, -k g_c]`` from the cotangents of the sums."""
    k = torch.arange(1, grad_cos.shape[-1] + 1, dtype=grad_cos.dtype, device=grad_cos.device)
    return torch.cat([grad_sin * k, grad_cos * -k], dim=1)


# ----------------------------------------------------------------------- few kernels
def _phase_values(theta: torch.Tensor, const: Constants) -> torch.Tensor:
    """``(rows, N, 2K)``: ``cos(k theta)`` then ``sin(k theta)``, in two operations."""
    return torch.addcmul(const.offset, theta.unsqueeze(-1), const.freq2).cos_()


def phase_sums(theta: torch.Tensor, const: Constants) -> torch.Tensor:
    """``(rows, 2K)`` sums over the samples of ``theta`` ``(rows, N)``."""
    return _phase_values(theta, const).sum(dim=-2)


def phase_sums_and_gradient(
    theta: torch.Tensor, const: Constants, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums and the gradient of the statistic (cotangent 1 per row), one pass."""
    values = _phase_values(theta, const)
    sums = values.sum(dim=-2)
    coef = unit_coefficients(sums, scale, const.grad_offset)
    return sums, torch.bmm(values, coef.unsqueeze(-1)).squeeze(-1)


def phase_gradient(theta: torch.Tensor, const: Constants, coef: torch.Tensor) -> torch.Tensor:
    """``(rows, N)`` gradient for given ``(rows, 2K)`` coefficients."""
    return torch.bmm(_phase_values(theta, const), coef.unsqueeze(-1)).squeeze(-1)


# ------------------------------------------------------------------------ cache fused
class _Block:
    """A ``(K, 2, rows, N)`` buffer and the views the recurrence writes, made once per size."""

    def __init__(self, n_knots: int, rows: int, n: int, like: torch.Tensor) -> None:
        self.values = torch.empty(n_knots, 2, rows, n, dtype=like.dtype, device=like.device)
        self.knots = self.values.unbind(0)  # (2, rows, N) each: [cos, sin] of one knot
        self.cos1, self.sin1 = self.knots[0].unbind(0)
        self.flat = self.values.view(-1, n)  # (2K rows, N): one matrix-vector product sums it
        self.by_row = self.values.view(2 * n_knots, rows, n).transpose(0, 1)  # (rows, 2K, N)
        self.base = torch.tensor([1.0, 0.0], dtype=like.dtype, device=like.device).view(2, 1, 1)
        s = signs(n_knots + 1)
        self.factors = [2.0 * s[k] * s[k - 1] for k in range(n_knots)]

    def fill(self, theta: torch.Tensor) -> None:
        """``s_k [cos(k theta), sin(k theta)]`` for ``theta`` ``(rows, N)``: 2 + K-1 operations."""
        torch.cos(theta, out=self.cos1)
        torch.sin(theta, out=self.sin1)
        knots, c = self.knots, self.cos1
        if len(knots) > 1:
            torch.addcmul(self.base, c, knots[0], value=-2.0, out=knots[1])  # V_2 = Y_0 - 2cY_1
        for k in range(2, len(knots)):  # knot k + 1 from knots k and k - 1
            torch.addcmul(knots[k - 2], c, knots[k - 1], value=self.factors[k], out=knots[k])


def cache_fused_rows(n_samples: int) -> int:
    """Rows per block: one knot array of ``2 rows N`` numbers stays below :data:`GRAIN`."""
    return max(1, GRAIN // (2 * max(n_samples, 1)))


def cache_fused_pass(
    theta: torch.Tensor, n_knots: int, block: int, coefficients: Any
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Sums ``(R, 2K)`` and optionally the gradient ``(R, N)`` of ``theta`` ``(R, N)``.

    ``coefficients`` is None (sums only), a ``(R, 2K)`` tensor (gradient for these
    coefficients; the sums are not returned) or a ``(scale, offset)`` pair of
    :func:`unit_coefficients` (the statistic's own gradient, from each block's sums while
    the block is in cache).
    """
    rows, n = theta.shape
    sign = torch.tensor(signs(n_knots), dtype=theta.dtype, device=theta.device)
    sign2 = sign.repeat_interleave(2).unsqueeze(1)  # (2K, 1) in the buffer's (k, cos/sin) order
    ones = torch.ones(n, dtype=theta.dtype, device=theta.device)
    given = isinstance(coefficients, torch.Tensor)
    if given:  # [a..., b...] -> buffer order, signed, one (1, 2K) row per slice
        signed = coefficients.view(rows, 2, n_knots).transpose(1, 2).reshape(rows, -1)
        coef_blocks = (signed * sign2.T).unsqueeze(1).split(block)
    elif coefficients is not None:
        mix, shift = signed_matrix(*coefficients, sign)
    grad = None if coefficients is None else torch.empty_like(theta)
    grad_blocks = () if grad is None else grad.unsqueeze(1).split(block)
    buffers: dict[int, _Block] = {}
    sums = []
    for i, theta_block in enumerate(theta.split(block)):
        size = theta_block.shape[0]
        if size not in buffers:
            buffers[size] = _Block(n_knots, size, n, theta)
        buf = buffers[size]
        buf.fill(theta_block)
        if not given:
            sums.append(torch.mv(buf.flat, ones).view(2 * n_knots, size))
        if coefficients is None:
            continue
        coef = coef_blocks[i] if given else torch.addmm(shift, mix, sums[-1]).T.unsqueeze(1)
        torch.bmm(coef, buf.by_row, out=grad_blocks[i])
    if given:
        return None, grad
    total = torch.cat(sums, dim=1) * sign2  # (2K, R), true sums in (k, cos/sin) order
    return total.view(n_knots, 2, rows).permute(2, 1, 0).reshape(rows, 2 * n_knots), grad


def cache_fused_threads(
    theta: torch.Tensor, n_knots: int, block: int, coefficients: Any, workers: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """:func:`cache_fused_pass` over ``workers`` contiguous groups of blocks in threads.

    The kernels are single-threaded (below the grain size) and release the GIL, so Python
    threads give the parallelism that OpenMP would, without its barriers: when another
    process takes a core, a thread simply waits its turn instead of spinning.
    """
    rows = theta.shape[0]
    workers = min(workers, -(-rows // block))
    if workers <= 1:
        return cache_fused_pass(theta, n_knots, block, coefficients)
    per = -(-rows // (workers * block)) * block
    given = isinstance(coefficients, torch.Tensor)
    parts = [(start, min(start + per, rows)) for start in range(0, rows, per)]
    jobs = [
        _pool(len(parts)).submit(
            cache_fused_pass,
            theta[a:b],
            n_knots,
            block,
            coefficients[a:b] if given else coefficients,
        )
        for a, b in parts
    ]
    results = [job.result() for job in jobs]
    sums = None if given else torch.cat([r[0] for r in results])
    grads = None if coefficients is None else torch.cat([r[1] for r in results])
    return sums, grads


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="sigreg-cache-fused")
    return _POOLS[workers]


def signed_matrix(
    scale: torch.Tensor, offset: torch.Tensor, sign: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P, q)``: :func:`unit_coefficients` as ``P @ sums + q`` in the buffer's order.

    The buffer holds ``s_k Y_k`` in ``(k, cos/sin)`` order and its sums are signed alike; the
    coefficient of a stored value is ``s_k`` times the true one, so ``s_k^2 = 1`` cancels
    in ``P`` and only ``q`` carries the sign.
    """
    n = scale.shape[0]
    idx = torch.arange(n, device=scale.device)
    mix = torch.zeros(2 * n, 2 * n, dtype=scale.dtype, device=scale.device)
    mix[2 * idx, 2 * idx + 1] = scale
    mix[2 * idx + 1, 2 * idx] = -scale
    shift = torch.zeros(2 * n, 1, dtype=scale.dtype, device=scale.device)
    shift[2 * idx + 1, 0] = sign * offset
    return mix, shift
