"""PyTorch adapter: a memory-lean autograd Function, ``nn.Module`` losses, torch.distributed.

What is here, and why:

* :func:`sliced_epps_pulley` runs the sliced Epps-Pulley statistic through a
  ``torch.autograd.Function`` with the analytic gradient of the core's statistic
  (:mod:`sigreg.engine`) and the kernels of :mod:`backends._torch_kernels`, in one of the
  strategies ``engine="cache_fused"`` (CPU), ``"few_kernels"`` (accelerators) or
  ``"compiled"`` (``torch.compile``), ``"auto"`` by device. Without a collective the forward
  computes every slice's gradient in the same pass over the knot values and saves it
  (``N x M`` numbers, the size of the projections) with the directions: the backward is
  one scaling and one matmul. With a collective it saves ``x``, the directions and the
  per-slice means ``C, S`` and makes a second pass. Nothing of size ``N x M x n_points``
  is saved; the few-kernels temporaries are bounded by a memory budget.
* :class:`SIGReg` and :class:`LeJEPALoss` draw fresh directions every call from
  ``(seed, step)`` with :func:`sigreg.sample_directions` and advance a step counter kept in a
  registered buffer (so it is checkpointed) plus a CPU mirror (so reading it never waits on
  the GPU).
* :class:`TorchDistributedCollective` sums across ranks with an autograd-aware all-reduce.

Compile strategy. The directions are drawn by NumPy, which ``torch.compile`` cannot trace.
The draw is therefore wrapped in the custom operator ``sigreg::sample_directions``: an
opaque graph node (its fake implementation only announces the ``(dim, num_slices)`` shape)
that reads the step from the CPU mirror at run time. The modules thus compile with
``fullgraph=True``, draw new directions every step, and do not recompile when the step
changes (tested with ``backend="aot_eager"``, the same graph capture inductor uses).
Nothing on the training path synchronises the host with the device: the only
validation is on shapes, dtypes and options (non-finite inputs give a NaN loss instead of
an exception, unlike the eager core functions).

Precision. float32 and float64 inputs are computed in their own precision; float16 and
bfloat16 inputs (e.g. embeddings produced under ``torch.autocast``) are computed in float32
with autocast disabled, and the results are cast back to the input dtype (the gradient
flows back through the cast). Integer and boolean inputs are promoted to
``torch.get_default_dtype()``.
"""

from __future__ import annotations

import functools
import numbers
import warnings
from typing import Any, NamedTuple

import array_api_compat
import torch
from torch.autograd.function import once_differentiable

from backends import _torch_kernels as _kernels
from sigreg._validation import REDUCTIONS, check_choice, check_flag, check_int
from sigreg.collective import all_reduce_checked, check_collective
from sigreg.directions import sample_directions
from sigreg.engine import (
    MEMORY_BUDGET_BYTES,
    make_rule,
    statistic_from_sums,
    sums_cotangent,
)
from sigreg.lejepa import PREDICTIONS, LeJEPAParts
from sigreg.loss_statistics import check_statistic
from sigreg.loss_statistics import forward as statistic_forward
from sigreg.quadrature import null_expectation

__all__ = [
    "ENGINES",
    "LeJEPALoss",
    "LeJEPAParts",
    "SIGReg",
    "TorchDistributedCollective",
    "draw_directions",
    "sliced_epps_pulley",
]

ENGINES = ("auto", "cache_fused", "few_kernels", "compiled")
"""Strategies of :func:`sliced_epps_pulley` (see the module docstring)."""

_XP = array_api_compat.array_namespace(torch.empty(0))


def __getattr__(name: str) -> Any:
    if name == "LeJEPALossParts":  # the former name of the re-exported sigreg.LeJEPAParts
        warnings.warn(
            "backends.torch.LeJEPALossParts is deprecated: use LeJEPAParts",
            DeprecationWarning,
            stacklevel=2,
        )
        return LeJEPAParts
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_MAX_SEED = 2**63 - 1  # the custom operator passes the seed as a 64-bit integer


# --------------------------------------------------------------------------- the rule
class _Plan(NamedTuple):
    """The quadrature as plain Python numbers (hashable, a compile-time constant)."""

    step: float
    weights: tuple[float, ...]
    phi: tuple[float, ...]
    debias: bool


@torch.compiler.assume_constant_result  # evaluated (not traced) at trace time
def _plan(t_max: float, n_points: int, debias: bool) -> _Plan:
    return _cached_plan(t_max, n_points, debias)


@functools.lru_cache(maxsize=64, typed=True)
def _cached_plan(t_max: float, n_points: int, debias: bool) -> _Plan:
    rule = make_rule(
        t_max=t_max, n_points=n_points, integration="trapezoid", debias=debias, collective=None
    )
    return _Plan(
        step=rule.step,
        weights=tuple(float(w) for w in rule.weights),
        phi=tuple(float(p) for p in rule.phi),
        debias=rule.debias,
    )


def _host_to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a CPU tensor to ``device`` without blocking the host.

    A pageable host-to-CUDA copy waits for every kernel queued on the stream; a copy from
    pinned memory with ``non_blocking=True`` does not (the caching host allocator keeps the
    pinned block alive until the copy has run).
    """
    if device.type == "cpu":
        return t
    if device.type == "cuda" and not torch.compiler.is_compiling():
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _constants(plan: _Plan, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if torch.compiler.is_compiling():  # graph constants, materialised once on the device
        weights = torch.tensor(plan.weights, dtype=like.dtype, device=like.device)
        phi = torch.tensor(plan.phi, dtype=like.dtype, device=like.device)
        return weights, phi
    weights = _host_to_device(torch.tensor(plan.weights, dtype=like.dtype), like.device)
    phi = _host_to_device(torch.tensor(plan.phi, dtype=like.dtype), like.device)
    return weights, phi


def _compute_dtype(dtype: torch.dtype, name: str) -> torch.dtype:
    """float32/float64 stay; half precisions compute in float32; ints/bools in the default."""
    if dtype.is_complex:
        raise TypeError(f"{name} must be real-valued, got complex dtype {dtype}")
    if dtype in (torch.float32, torch.float64):
        return dtype
    if dtype.is_floating_point:
        return torch.float32
    return torch.get_default_dtype()


def _check_tensor(x: Any, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


# ------------------------------------------------------------------ autograd Function
def _resolve_engine(engine: str, x: torch.Tensor) -> str:
    """``"auto"``: few kernels on accelerators and inside a compiled graph, else cache-fused."""
    if engine != "auto":
        return engine
    if torch.compiler.is_compiling() or x.device.type != "cpu":
        return "few_kernels"
    return "cache_fused"


@functools.cache
def _compiled(name: str) -> Any:
    """A ``torch.compile``'d few-kernels function (compiled on first use, per shape)."""
    return torch.compile(getattr(_kernels, name), fullgraph=True, dynamic=False)


def _few_kernel(name: str, engine: str) -> Any:
    if engine == "compiled" and not torch.compiler.is_compiling():
        return _compiled(name)
    return getattr(_kernels, name)


_CONSTANTS: dict[tuple, _kernels.Constants] = {}


def _knot_constants(plan: _Plan, like: torch.Tensor) -> _kernels.Constants:
    """Per-knot constants, cached per (plan, dtype, device) outside compiled graphs."""
    if torch.compiler.is_compiling():
        return _kernels.constants(plan.weights, plan.phi, like)
    key = (plan, like.dtype, like.device)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = _kernels.constants(plan.weights, plan.phi, like)
    return _CONSTANTS[key]


def _chunk_rows(engine: str, chunk_size: int | None, n: int, n_knots: int, like) -> int:
    if chunk_size is not None:
        return chunk_size
    if engine == "cache_fused":
        return _kernels.cache_fused_rows(n)
    # one (rows, N, 2K) array is all the few-kernels pass keeps (its cosine is in place)
    return max(1, MEMORY_BUDGET_BYTES // (2 * n_knots * n * like.element_size()))


def _ecf_pass(theta, const, engine, rows, coefficients):
    """Sums ``(R, 2K)`` (None for given coefficients) and gradient ``(R, N)`` (or None).

    ``coefficients``: None (sums only), ``(scale,)`` (the statistic's own gradient with
    this sine-sum scale) or a ``(R, 2K)`` tensor (gradient for those coefficients).
    """
    n_knots = const.grad_scale.shape[0]
    if engine == "cache_fused":
        unit = None if not isinstance(coefficients, tuple) else (coefficients[0], const.grad_offset)
        workers = 1 if torch.compiler.is_compiling() else torch.get_num_threads()
        return _kernels.cache_fused_threads(theta, n_knots, rows, unit or coefficients, workers)
    sums, grads = [], []
    for start in range(0, theta.shape[0], rows):
        block = theta[start : start + rows]
        if coefficients is None:
            sums.append(_few_kernel("phase_sums", engine)(block, const))
        elif isinstance(coefficients, tuple):
            part, grad = _few_kernel("phase_sums_and_gradient", engine)(
                block, const, coefficients[0]
            )
            sums.append(part)
            grads.append(grad)
        else:
            coef = coefficients[start : start + rows]
            grads.append(_few_kernel("phase_gradient", engine)(block, const, coef))
    return (
        torch.cat(sums) if sums else None,
        torch.cat(grads) if grads else None,
    )


def _reduce_over_ranks(collective, cos_sums, sin_sums, n, like):
    """One reduction of [cos sums, sin sums, local count]; returns the global ones."""
    local = torch.full((1,), float(n), dtype=like.dtype, device=like.device)
    packed = all_reduce_checked(
        collective, torch.cat([cos_sums.reshape(-1), sin_sums.reshape(-1), local])
    )
    size = cos_sums.numel()
    cos_sums = packed[:size].reshape(cos_sums.shape)
    sin_sums = packed[size : 2 * size].reshape(sin_sums.shape)
    return cos_sums, sin_sums, packed[2 * size]


class _SlicedEppsPulley(torch.autograd.Function):
    """Per-slice Epps-Pulley statistics ``(..., M)`` of ``x @ directions`` (see module doc).

    Phases ``theta = x @ (step * directions)`` (one matmul), then one pass of the strategy's
    kernels over the knots. Without a collective, when a gradient is wanted, that pass also
    contracts the knot values into the gradient of every slice's statistic (cotangent 1),
    which is all the backward needs: it scales it by the cotangents and makes one matmul.
    With a collective the statistic depends on every rank's sums, so the forward saves
    ``C``, ``S`` and the backward makes a second pass with the cotangents: the semantics of
    an autograd-aware all-reduce placed on the sums (each rank's gradient is ``world_size``
    times its share of the gradient of the global statistic; DDP's averaging then yields
    the single-process gradient).
    """

    @staticmethod
    def forward(ctx, x, directions, plan, collective, engine, chunk_size, want_grad):
        n, n_knots = x.shape[-2], len(plan.weights)
        with torch.autocast(x.device.type, enabled=False):
            scaled = directions * plan.step
            theta = scaled.mT @ x.mT  # (..., M, N)
            lead = theta.shape[:-1]
            rows = theta.reshape(-1, n)
            const = _knot_constants(plan, x)
            chunk = _chunk_rows(engine, chunk_size, n, n_knots, x)
            in_pass = want_grad and collective is None
            coefficients = None
            if in_pass:  # d value / d sin_sum = 2 W f S, f the U-statistic's factor
                factor = 1.0 + 1.0 / (n - 1.0) if plan.debias else 1.0
                coefficients = (const.grad_scale * (factor / n),)
            sums, grad = _ecf_pass(rows, const, engine, chunk, coefficients)
            cos_sums = sums[:, :n_knots].reshape(lead + (n_knots,))
            sin_sums = sums[:, n_knots:].reshape(lead + (n_knots,))
            if collective is None:
                count = torch.full((), float(n), dtype=x.dtype, device=x.device)
            else:
                cos_sums, sin_sums, count = _reduce_over_ranks(collective, cos_sums, sin_sums, n, x)
            weights, phi = _constants(plan, x)
            values, c, s = statistic_from_sums(
                _XP, cos_sums, sin_sums, count, weights, phi, debias=plan.debias
            )
        if in_pass:
            ctx.save_for_backward(grad.view(lead + (n,)), scaled)  # d value_m / d theta
        else:
            ctx.save_for_backward(x, scaled, c, s, count)
        ctx.plan, ctx.collective, ctx.engine, ctx.chunk = plan, collective, engine, chunk
        ctx.in_pass = in_pass
        return values

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_values):
        if ctx.in_pass:
            grad_theta, scaled = ctx.saved_tensors
            with torch.autocast(grad_theta.device.type, enabled=False):
                grad_theta = grad_theta * grad_values.to(grad_theta.dtype).unsqueeze(-1)
                grad_x = grad_theta.mT @ scaled.mT
            return grad_x, None, None, None, None, None, None
        x, scaled, c, s, count = ctx.saved_tensors
        plan, n_knots = ctx.plan, len(ctx.plan.weights)
        with torch.autocast(x.device.type, enabled=False):
            g = grad_values.to(x.dtype)
            if ctx.collective is not None:  # backward of an all-reduce (SUM) is an all-reduce
                g = all_reduce_checked(ctx.collective, g.contiguous())
            weights, phi = _constants(plan, x)
            grad_cos, grad_sin = sums_cotangent(
                _XP, c, s, count, weights, phi, g, debias=plan.debias
            )
            theta = scaled.mT @ x.mT
            coef = _kernels.given_coefficients(
                grad_cos.reshape(-1, n_knots), grad_sin.reshape(-1, n_knots)
            )
            const = _knot_constants(plan, x)
            _, grad = _ecf_pass(theta.reshape(-1, x.shape[-2]), const, ctx.engine, ctx.chunk, coef)
            grad_x = grad.view(theta.shape).mT @ scaled.mT
        return grad_x, None, None, None, None, None, None


def _sliced_values(
    x: torch.Tensor,
    directions: torch.Tensor,
    plan: _Plan,
    collective: Any,
    engine: str,
    chunk_size: int | None,
) -> torch.Tensor:
    """Shape-checked call of the Function; ``x`` and ``directions`` in the compute dtype."""
    _check_samples(x, "x", plan, collective)
    if directions.ndim != 2 or directions.shape[0] != x.shape[-1]:
        raise ValueError(
            f"directions must have shape (K, M) with K={x.shape[-1]}, got {tuple(directions.shape)}"
        )
    if directions.requires_grad:
        raise ValueError("directions must not require grad: they are treated as constants")
    want_grad = torch.is_grad_enabled() and x.requires_grad
    engine = _resolve_engine(engine, x)
    return _SlicedEppsPulley.apply(x, directions, plan, collective, engine, chunk_size, want_grad)


def _check_samples(x: torch.Tensor, name: str, plan: _Plan, collective: Any) -> None:
    """At least one sample; two for the U-statistic, but with a collective that minimum
    applies to the global batch, which is not known without communication (unchecked)."""
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (..., N, K), got {x.ndim} dimension(s)")
    if x.shape[-2] < (2 if plan.debias and collective is None else 1):
        raise ValueError(
            f"{name} needs at least 2 samples when debias=True"
            if plan.debias
            else f"{name} has no samples"
        )


def _check_chunk_size(chunk_size: Any) -> int | None:
    return None if chunk_size is None else check_int(chunk_size, "chunk_size", minimum=1)


def _check_engine(engine: Any, fused: Any) -> str:
    """The strategy; ``fused=True`` is the deprecated spelling of ``engine="compiled"``."""
    engine = check_choice(engine, "engine", ENGINES)
    if check_flag(fused, "fused"):
        warnings.warn(
            'fused=True is deprecated: use engine="compiled"', DeprecationWarning, stacklevel=3
        )
        return "compiled"
    return engine


def sliced_epps_pulley(
    x: torch.Tensor,
    directions: torch.Tensor,
    /,
    *,
    reduction: str = "mean",
    t_max: float = 3.0,
    n_points: int = 17,
    debias: bool = False,
    collective: Any = None,
    engine: str = "auto",
    chunk_size: int | None = None,
    fused: bool = False,
) -> torch.Tensor:
    """Sliced Epps-Pulley statistic with an analytic, memory-lean backward.

    Same value as :func:`sigreg.sliced_epps_pulley` (trapezoid rule), computed by a
    ``torch.autograd.Function``: the backward evaluates the closed-form gradient of the
    core instead of differentiating through the characteristic-function evaluation. Saved
    for backward: ``x`` (in the compute dtype), ``directions`` and two ``(..., M,
    n_points - 1)`` arrays, i.e. ``O(N K + K M + M n_points)`` numbers instead of
    ``O(N M n_points)``. Inputs are not checked for finiteness (no host synchronisation):
    non-finite inputs give NaN.

    Parameters
    ----------
    x : torch.Tensor, shape (..., N, K)
        Embeddings; leading axes are batch axes (e.g. views).
    directions : torch.Tensor, shape (K, M)
        Unit-norm columns (not checked), same device as ``x``; cast to the compute dtype.
        Treated as constants: they must not require grad.
    reduction : {"mean", "sum", "none"}, default "mean"
        How to combine the ``M`` per-slice statistics.
    t_max : float, default 3.0
        Largest quadrature knot.
    n_points : int, default 17
        Knots on ``[0, t_max]``.
    debias : bool, default False
        U-statistic version (zero mean under the null).
    collective : Collective, optional
        Cross-rank sum (e.g. :class:`TorchDistributedCollective`); the statistic is then the
        one of the global batch, and the backward sums the cotangents over ranks (the
        semantics of an autograd-aware all-reduce). Every rank must call with the same
        directions and shapes except ``N``.
    engine : {"auto", "cache_fused", "few_kernels", "compiled"}, default "auto"
        Evaluation strategy, all with the same values and gradients up to rounding (see
        docs/performance.md, "which strategy when"). ``"few_kernels"``: a handful of large
        operations per chunk of slices (accelerators; about 40 dispatched operations per
        forward + backward). ``"cache_fused"``: cache-sized blocks, one fused multiply-add
        per knot, no multi-threaded element-wise operation (CPUs, robust when the cores
        are shared). ``"compiled"``: the few-kernels functions through ``torch.compile``
        (inductor), never chosen automatically: a one-off compilation per input shape
        (seconds to minutes on a small CPU, cached on disk). ``"auto"``: ``"few_kernels"``
        on a non-CPU device and inside ``torch.compile``, else ``"cache_fused"``.
    chunk_size : int, optional
        Slices (rows of ``x @ directions``, over all leading axes) per chunk or block.
        Default: ``"few_kernels"``/``"compiled"`` chunks the ``(rows, N, 2 (n_points -
        1))`` knot values to :data:`sigreg.engine.MEMORY_BUDGET_BYTES` (256 MiB: one chunk
        at (N, K, M) = (2048, 512, 1024) in float32); ``"cache_fused"`` blocks keep each
        per-knot array below 32768 numbers.
    fused : bool, default False
        Deprecated spelling of ``engine="compiled"`` (warns).

    Returns
    -------
    torch.Tensor
        Shape ``x.shape[:-2]`` (``"mean"``, ``"sum"``) or ``x.shape[:-2] + (M,)``
        (``"none"``), dtype of ``x`` (float16/bfloat16 inputs are computed in float32 and
        cast back).

    Raises
    ------
    TypeError
        Non-tensor or complex input.
    ValueError
        Bad shapes or options, directions requiring grad.

    Examples
    --------
    >>> import torch
    >>> import sigreg
    >>> from backends.torch import sliced_epps_pulley
    >>> x = torch.randn(256, 8, dtype=torch.float64, requires_grad=True)
    >>> a = sigreg.sample_directions(8, 32, seed=0, backend="torch", dtype=torch.float64)
    >>> value = sliced_epps_pulley(x, a)
    >>> bool(torch.allclose(value, sigreg.sliced_epps_pulley(x.detach(), a)))
    True
    >>> value.backward()
    >>> x.grad.shape
    torch.Size([256, 8])
    """
    _check_tensor(x, "x")
    _check_tensor(directions, "directions")
    reduction = check_choice(reduction, "reduction", REDUCTIONS)
    chunk_size = _check_chunk_size(chunk_size)
    engine = _check_engine(engine, fused)
    plan = _plan(t_max, n_points, check_flag(debias, "debias"))
    if not torch.compiler.is_compiling():
        check_collective(collective)
    out_dtype = x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()
    dtype = _compute_dtype(x.dtype, "x")
    values = _sliced_values(x.to(dtype), directions.to(dtype), plan, collective, engine, chunk_size)
    if reduction == "mean":
        values = values.mean(dim=-1)
    elif reduction == "sum":
        values = values.sum(dim=-1)
    return values.to(out_dtype)


# ---------------------------------------------------------------- direction drawing
@torch.library.custom_op("sigreg::sample_directions", mutates_args=())
def _directions_op(
    step: torch.Tensor,
    dim: int,
    num_slices: int,
    seed: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor:
    # ``step`` is a 0-d CPU tensor: reading it does not synchronise with any device. The
    # draw is made on the host and moved without blocking (see _host_to_device).
    directions = sample_directions(
        dim,
        num_slices,
        seed=seed,
        step=int(step),
        backend="torch",
        dtype=dtype,
        device=torch.device("cpu"),
    )
    return _host_to_device(directions, device)


@_directions_op.register_fake
def _directions_fake(step, dim, num_slices, seed, dtype, device):
    return torch.empty((dim, num_slices), dtype=dtype, device=device)


def draw_directions(
    step: torch.Tensor,
    dim: int,
    num_slices: int,
    *,
    seed: int,
    dtype: torch.dtype,
    device: torch.device | str,
) -> torch.Tensor:
    """:func:`sigreg.sample_directions` as a ``torch.compile``-friendly operator.

    The NumPy draw runs inside the custom operator ``sigreg::sample_directions``, which a
    compiled graph keeps as one opaque node: no graph break, and no recompilation when the
    step changes, because the step is a tensor input, not a Python constant.

    Parameters
    ----------
    step : torch.Tensor
        0-d integer tensor ON THE CPU holding the step (a CUDA tensor would cost a device
        synchronisation per call).
    dim, num_slices : int
        Shape of the result ``(dim, num_slices)``.
    seed : int
        Seed of the run, in ``[0, 2**63)``.
    dtype : torch.dtype
        Floating dtype of the result.
    device : torch.device or str
        Device of the result.

    Returns
    -------
    torch.Tensor, shape (dim, num_slices)
        Equal to ``sigreg.sample_directions(dim, num_slices, seed=seed, step=int(step),
        backend="torch", dtype=dtype, device=device)``.

    Examples
    --------
    >>> import torch
    >>> import sigreg
    >>> from backends.torch import draw_directions
    >>> a = draw_directions(torch.tensor(3), 8, 4, seed=0, dtype=torch.float64, device="cpu")
    >>> b = sigreg.sample_directions(8, 4, seed=0, step=3, backend="torch", dtype=torch.float64)
    >>> bool(torch.equal(a, b))
    True
    """
    return _directions_op(step, dim, num_slices, seed, dtype, torch.device(device))


class _SteppedLoss(torch.nn.Module):
    """Base of the loss modules: a step counter in the registered buffer ``step`` (saved in
    ``state_dict``) plus a CPU mirror ``_step_cpu`` that the direction draw reads, so reading
    the step never waits on the device."""

    step: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self._step_cpu = torch.zeros((), dtype=torch.int64)

    def _draw_and_advance(
        self, dim: int, num_slices: int, seed: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        directions = _directions_op(self._step_cpu, dim, num_slices, seed, dtype, device)
        self._step_cpu.add_(1)
        self.step.add_(1)
        return directions

    def set_step(self, step: int) -> None:
        """Set the step counter (buffer and CPU mirror).

        Parameters
        ----------
        step : int
            Non-negative step of the next call.
        """
        step = check_int(step, "step", minimum=0)
        with torch.no_grad():
            self.step.fill_(step)
        self._step_cpu.fill_(step)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # re-sync the mirror: one host read at load time, never per training step
        self._step_cpu.copy_(self.step.detach().to("cpu"))


def _check_options(
    num_slices: Any,
    seed: Any,
    t_max: Any,
    n_points: Any,
    debias: Any,
    collective: Any,
    chunk_size: Any,
) -> tuple[int, int, _Plan, int]:
    num_slices = check_int(num_slices, "num_slices", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    if seed > _MAX_SEED:
        raise ValueError(f"seed must be < 2**63, got {seed}")
    plan = _plan(t_max, n_points, check_flag(debias, "debias"))
    check_collective(collective)
    return num_slices, seed, plan, _check_chunk_size(chunk_size)


# ---------------------------------------------------------------------- the modules
class SIGReg(_SteppedLoss):
    """SIGReg loss module: mean Epps-Pulley statistic over fresh random directions.

    Every call draws ``num_slices`` directions with :func:`sigreg.sample_directions` from
    ``(seed, step)`` and then advances ``step`` by one (in training and evaluation mode
    alike: every call consumes a step). ``step`` is a registered int64 buffer, so it is
    saved in ``state_dict`` and a resumed run draws the same directions; a CPU mirror of it
    is what the draw reads, kept in step by ``forward``, :meth:`set_step` and
    ``load_state_dict``. Mutate the counter only through these. The module works under
    ``torch.compile(fullgraph=True)`` (see the module docstring).

    Parameters
    ----------
    num_slices : int, default 1024
        Number of random unit directions per step.
    seed : int, default 0
        Seed of the directions, in ``[0, 2**63)``; use the same on every rank.
    t_max : float, default 3.0
        Largest quadrature knot.
    n_points : int, default 17
        Quadrature knots on ``[0, t_max]``.
    collective : Collective, optional
        Cross-rank sum, e.g. :class:`TorchDistributedCollective`: the statistic is then the
        one of the global batch (ranks may hold different numbers of samples).
    debias : bool, default False
        U-statistic version of the Epps-Pulley statistic.
    engine : {"auto", "cache_fused", "few_kernels", "compiled"}, default "auto"
        Evaluation strategy (see :func:`sliced_epps_pulley`).
    chunk_size : int, optional
        Slices per chunk or block (see :func:`sliced_epps_pulley`).
    fused : bool, default False
        Deprecated spelling of ``engine="compiled"``.

    Attributes
    ----------
    step : torch.Tensor
        0-d int64 buffer, the number of calls so far (the step of the next call).

    Examples
    --------
    >>> import torch
    >>> import sigreg
    >>> from backends.torch import SIGReg
    >>> loss_fn = SIGReg(num_slices=64)
    >>> x = torch.randn(128, 16, dtype=torch.float64)
    >>> value = loss_fn(x)
    >>> bool(torch.allclose(value, sigreg.sigreg(x, num_slices=64, step=0)))
    True
    >>> int(loss_fn.step)
    1
    """

    def __init__(
        self,
        num_slices: int = 1024,
        seed: int = 0,
        t_max: float = 3.0,
        n_points: int = 17,
        collective: Any = None,
        *,
        debias: bool = False,
        engine: str = "auto",
        chunk_size: int | None = None,
        fused: bool = False,
    ) -> None:
        super().__init__()
        num_slices, seed, rule, chunk_size = _check_options(
            num_slices, seed, t_max, n_points, debias, collective, chunk_size
        )
        self.num_slices: int = num_slices
        self.seed: int = seed
        self.t_max: float = float(t_max)
        self.n_points: int = int(n_points)
        self.debias: bool = debias
        self.chunk_size: int | None = chunk_size
        self.engine: str = _check_engine(engine, fused)
        self.collective: Any = collective
        self._rule: _Plan = rule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """SIGReg of ``x`` with the directions of the current step; advances the step.

        Parameters
        ----------
        x : torch.Tensor, shape (..., N, K)
            Embeddings (leading axes are batch axes, e.g. views).

        Returns
        -------
        torch.Tensor
            Shape ``x.shape[:-2]``, dtype of ``x``; equals ``sigreg.sigreg(x,
            num_slices=..., seed=..., step=step)`` with the step before the call.
        """
        _check_tensor(x, "x")
        # validate before the draw: a failed call does not consume a step
        _check_samples(x, "x", self._rule, self.collective)
        out_dtype = x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()
        dtype = _compute_dtype(x.dtype, "x")
        directions = self._draw_and_advance(
            x.shape[-1], self.num_slices, self.seed, dtype, x.device
        )
        values = _sliced_values(
            x.to(dtype), directions, self._rule, self.collective, self.engine, self.chunk_size
        )
        return values.mean(dim=-1).to(out_dtype)

    def extra_repr(self) -> str:
        return (
            f"num_slices={self.num_slices}, seed={self.seed}, t_max={self.t_max}, "
            f"n_points={self.n_points}, debias={self.debias}"
        )


class LeJEPALoss(_SteppedLoss):
    """LeJEPA loss module: ``(1 - lamb) * prediction + lamb * mean_v SIGReg(z_v)``.

    The values equal :func:`sigreg.lejepa_loss` with ``step`` = the module's step before the
    call; each call then advances the step by one (see :class:`SIGReg` for the counter). The
    SIGReg term uses the memory-lean analytic backward of :func:`sliced_epps_pulley`, the
    prediction term plain autograd; another ``statistic`` is the core's array-API version
    (:mod:`sigreg.loss_statistics`) differentiated by autograd.

    Parameters
    ----------
    lamb : float, default 0.05
        Weight of SIGReg, in ``[0, 1]``.
    num_slices : int, default 1024
        Number of random directions per step (shared by all views).
    seed : int, default 0
        Seed of the directions, in ``[0, 2**63)``.
    prediction : {"center", "pairwise"}, default "center"
        Prediction term, as in :func:`sigreg.lejepa_loss`.
    collective : Collective, optional
        Cross-rank sum, e.g. :class:`TorchDistributedCollective`: both terms are then those
        of the global batch. For correct gradients of the prediction term the collective's
        ``all_reduce_sum`` must be differentiable (it is for
        :class:`TorchDistributedCollective`).
    t_max : float, default 3.0
        Largest quadrature knot.
    n_points : int, default 17
        Quadrature knots on ``[0, t_max]``.
    engine : {"auto", "cache_fused", "few_kernels", "compiled"}, default "auto"
        Evaluation strategy (see :func:`sliced_epps_pulley`); must stay ``"auto"`` with
        another ``statistic``.
    chunk_size : int, optional
        Slices per chunk or block (see :func:`sliced_epps_pulley`).
    fused : bool, default False
        Deprecated spelling of ``engine="compiled"``.
    statistic : str, default "epps_pulley"
        Per-slice statistic of the regulariser, normalised to the Epps-Pulley null mean, as
        in :func:`sigreg.lejepa_loss`. The EDF statistics (``"cramer_von_mises"``,
        ``"anderson_darling"``, ``"watson"``) with a collective need its ``all_gather``
        (:class:`TorchDistributedCollective` has it; equal per-rank batches).

    Attributes
    ----------
    step : torch.Tensor
        0-d int64 buffer, the number of calls so far (the step of the next call).

    Examples
    --------
    >>> import torch
    >>> import sigreg
    >>> from backends.torch import LeJEPALoss
    >>> loss_fn = LeJEPALoss(num_slices=64)
    >>> g = torch.randn(2, 128, 16, dtype=torch.float64)
    >>> out = loss_fn(g, g[:1] + 0.1)
    >>> ref = sigreg.lejepa_loss(g, g[:1] + 0.1, num_slices=64, step=0)
    >>> bool(torch.allclose(out.loss, ref.loss))
    True
    """

    def __init__(
        self,
        lamb: float = 0.05,
        num_slices: int = 1024,
        seed: int = 0,
        prediction: str = "center",
        collective: Any = None,
        *,
        t_max: float = 3.0,
        n_points: int = 17,
        engine: str = "auto",
        chunk_size: int | None = None,
        fused: bool = False,
        statistic: str = "epps_pulley",
    ) -> None:
        super().__init__()
        if isinstance(lamb, bool) or not isinstance(lamb, numbers.Real) or not 0.0 <= lamb <= 1.0:
            raise ValueError(f"lamb must be a number in [0, 1], got {lamb!r}")
        num_slices, seed, rule, chunk_size = _check_options(
            num_slices, seed, t_max, n_points, False, collective, chunk_size
        )
        self.lamb: float = float(lamb)
        self.prediction: str = check_choice(prediction, "prediction", PREDICTIONS)
        self.num_slices: int = num_slices
        self.seed: int = seed
        self.t_max: float = float(t_max)
        self.n_points: int = int(n_points)
        self.chunk_size: int | None = chunk_size
        self.engine: str = _check_engine(engine, fused)
        self.statistic: str = check_statistic(statistic, self.engine)
        self.collective: Any = collective
        self._rule: _Plan = rule

    def forward(
        self, global_views: torch.Tensor, local_views: torch.Tensor | None = None
    ) -> LeJEPAParts:
        """The loss of one step; advances the step.

        Parameters
        ----------
        global_views : torch.Tensor, shape (V_g, N, D)
            Projector outputs of the global views.
        local_views : torch.Tensor, shape (V_l, N, D), optional
            Projector outputs of the local views.

        Returns
        -------
        LeJEPAParts
            The named tuple ``(loss, prediction, sigreg)`` of :func:`sigreg.lejepa_loss`:
            0-d tensors in the dtype of ``global_views``.
        """
        _check_tensor(global_views, "global_views")
        if global_views.ndim != 3 or global_views.shape[0] < 1:
            raise ValueError(
                "global_views must have shape (V, N, D) with V >= 1, "
                f"got {tuple(global_views.shape)}"
            )
        out_dtype = (
            global_views.dtype
            if global_views.dtype.is_floating_point
            else torch.get_default_dtype()
        )
        dtype = _compute_dtype(global_views.dtype, "global_views")
        g = global_views.to(dtype)
        views = g
        if local_views is not None:
            _check_tensor(local_views, "local_views")
            if local_views.ndim != 3 or local_views.shape[0] < 1:
                raise ValueError(
                    f"local_views must have shape (V, N, D) with V >= 1, "
                    f"got {tuple(local_views.shape)}"
                )
            if local_views.shape[1:] != global_views.shape[1:]:
                raise ValueError(
                    f"local_views has (N, D) = {tuple(local_views.shape[1:])} but global_views "
                    f"has {tuple(global_views.shape[1:])}"
                )
            _compute_dtype(local_views.dtype, "local_views")  # rejects complex
            views = torch.cat([g, local_views.to(dtype)], dim=0)
        _check_samples(views, "global_views", self._rule, self.collective)
        n_views, n, dim = views.shape
        directions = self._draw_and_advance(dim, self.num_slices, self.seed, dtype, g.device)

        mu = torch.mean(g, dim=0)
        center_sum = torch.sum((views - mu) ** 2)
        spread_sum = torch.sum((g - mu) ** 2)
        if self.collective is None:
            count: Any = float(n)
        else:
            local = torch.full((1,), float(n), dtype=dtype, device=g.device)
            total = all_reduce_checked(
                self.collective, torch.cat([center_sum[None], spread_sum[None], local])
            )
            center_sum, spread_sum, count = total[0], total[1], total[2]
        pred = center_sum / (n_views * count * dim)
        if self.prediction == "pairwise":
            pred = pred + spread_sum / (g.shape[0] * count * dim)

        per_view = self._per_view(views, directions)
        sig = torch.mean(per_view)
        loss = (1.0 - self.lamb) * pred + self.lamb * sig
        return LeJEPAParts(loss.to(out_dtype), pred.to(out_dtype), sig.to(out_dtype))

    def _per_view(self, views: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        """The regulariser's per-slice statistics of every view, shape ``(V, M)``."""
        if self.statistic == "epps_pulley":
            return _sliced_values(
                views, directions, self._rule, self.collective, self.engine, self.chunk_size
            )
        z = directions.T @ views.transpose(-1, -2)  # (V, M, N): samples on the last axis
        scale = null_expectation(self.t_max, self.n_points)
        return statistic_forward(_XP, z, self.statistic, scale, self.collective)

    def extra_repr(self) -> str:
        return (
            f"lamb={self.lamb}, num_slices={self.num_slices}, seed={self.seed}, "
            f"prediction={self.prediction!r}, t_max={self.t_max}, n_points={self.n_points}, "
            f"statistic={self.statistic!r}"
        )


# ----------------------------------------------------------------------- collective
class TorchDistributedCollective:
    """:class:`sigreg.Collective` over a ``torch.distributed`` process group.

    ``all_reduce_sum`` is the autograd-aware ``torch.distributed.nn.functional.all_reduce``
    with ``ReduceOp.SUM`` (never AVG, which only NCCL has), and its return value, a new
    tensor, is the result. Its backward all-reduces the cotangents, so each rank's input
    gradient is ``world_size`` times its share of the gradient of the global loss and
    DDP's gradient averaging then gives exactly the single-process parameter gradient, also
    for unequal shards. Under ``torch.compile`` (where that function is unsupported) the
    autograd-aware functional collective ``torch.distributed._functional_collectives.
    all_reduce(x, "sum", group)`` is used instead.

    Parameters
    ----------
    group : ProcessGroup, optional
        The group to reduce over; default: the default (world) group, resolved at call time.

    Examples
    --------
    >>> from backends.torch import SIGReg, TorchDistributedCollective
    >>> loss_fn = SIGReg(num_slices=256, collective=TorchDistributedCollective())  # doctest: +SKIP
    """

    def __init__(self, group: Any = None) -> None:
        self.group = group

    def all_reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Return the element-wise sum of ``x`` over the ranks of the group (a new tensor).

        Parameters
        ----------
        x : torch.Tensor
            This rank's contribution.

        Returns
        -------
        torch.Tensor
            The sum, identical on every rank; differentiable (gradient: the sum of the
            cotangents over the ranks).
        """
        import torch.distributed as dist

        group: Any = self.group if self.group is not None else dist.group.WORLD
        if torch.compiler.is_compiling():
            from torch.distributed import _functional_collectives as funcol

            return funcol.wait_tensor(funcol.all_reduce(x, "sum", group))
        from torch.distributed.nn import functional as dist_nn

        with warnings.catch_warnings():  # deprecated in favour of the functional collective
            warnings.simplefilter("ignore", FutureWarning)
            return dist_nn.all_reduce(x, op=dist.ReduceOp.SUM, group=group)

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        """Return every rank's ``x`` stacked in rank order, shape ``(world_size, *x.shape)``.

        The autograd-aware ``torch.distributed.nn.functional.all_gather`` (every rank's
        ``x`` must have the same shape); its backward sums the cotangents of this rank's
        block over the ranks, the same convention as :meth:`all_reduce_sum`.

        Parameters
        ----------
        x : torch.Tensor
            This rank's contribution.

        Returns
        -------
        torch.Tensor
            A new tensor, identical on every rank.
        """
        import torch.distributed as dist
        from torch.distributed.nn import functional as dist_nn

        group: Any = self.group if self.group is not None else dist.group.WORLD
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.stack(dist_nn.all_gather(x, group=group))

    def __repr__(self) -> str:
        return f"TorchDistributedCollective(group={self.group!r})"
