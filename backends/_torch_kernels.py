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
def _chebyshev_values(theta: torch.Tensor, n_knots: int, out: torch.Tensor) -> torch.Tensor:
    """Fill ``out`` (``(K, 2, rows, N)``) with ``s_k [cos(k theta), sin(k theta)]``."""
    torch.cos(theta, out=out[0, 0])
    torch.sin(theta, out=out[0, 1])
    if n_knots == 1:
        return out
    c = out[0, 0]
    base = torch.tensor([1.0, 0.0], dtype=theta.dtype, device=theta.device).view(2, 1, 1)
    torch.addcmul(base, c, out[0], value=-2.0, out=out[1])  # V_2 = Y_0 - 2 c Y_1
    s = signs(n_knots + 1)
    for k in range(2, n_knots):  # knot k + 1 from knots k and k - 1
        torch.addcmul(out[k - 2], c, out[k - 1], value=2.0 * s[k] * s[k - 1], out=out[k])
    return out


def cache_fused_rows(n_samples: int) -> int:
    """Rows per block: one knot array of ``2 rows N`` numbers stays below :data:`GRAIN`."""
    return max(1, GRAIN // (2 * max(n_samples, 1)))


def cache_fused_pass(
    theta: torch.Tensor, n_knots: int, block: int, coefficients: Any
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sums ``(R, 2K)`` and optionally the gradient ``(R, N)`` of ``theta`` ``(R, N)``.

    ``coefficients`` is None (sums only), a ``(R, 2K)`` tensor (gradient for these
    coefficients, no sums) or a ``(scale, offset)`` pair of :func:`unit_coefficients` (the
    statistic's own gradient, from each block's sums while the block is in cache).
    """
    rows, n = theta.shape
    sign = torch.tensor(signs(n_knots), dtype=theta.dtype, device=theta.device)
    sign2 = sign.repeat_interleave(2).unsqueeze(1)  # (2K, 1) in the buffer's (k, cos/sin) order
    storage = torch.empty(n_knots * 2 * block * n, dtype=theta.dtype, device=theta.device)
    ones = torch.ones(n, dtype=theta.dtype, device=theta.device)
    given = isinstance(coefficients, torch.Tensor)
    if given:  # [a..., b...] -> buffer order, signed, rows last
        coef_all = coefficients.view(rows, 2, n_knots).transpose(1, 2).reshape(rows, -1).T * sign2
    elif coefficients is not None:
        mix, shift = signed_matrix(*coefficients, sign)
    grad = None if coefficients is None else torch.empty_like(theta)
    sums = []
    for start in range(0, rows, block):
        stop = min(start + block, rows)
        buffer = storage[: n_knots * 2 * (stop - start) * n].view(n_knots, 2, stop - start, n)
        values = _chebyshev_values(theta[start:stop], n_knots, buffer)
        flat = values.view(2 * n_knots, stop - start, n)
        if not given:
            sums.append(torch.mv(flat.view(-1, n), ones).view(2 * n_knots, -1))
        if coefficients is None:
            continue
        coef = coef_all[:, start:stop] if given else torch.addmm(shift, mix, sums[-1])
        torch.bmm(coef.T.unsqueeze(1), flat.transpose(0, 1), out=grad[start:stop].unsqueeze(1))
    if given:
        return None, grad
    total = torch.cat(sums, dim=1) * sign2  # (2K, R), true sums in (k, cos/sin) order
    return total.view(n_knots, 2, rows).permute(2, 1, 0).reshape(rows, 2 * n_knots), grad


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
