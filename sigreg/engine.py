"""The engine: the Epps-Pulley statistic of samples on the last axis, forward and pullback.

This is the public contract the backend adapters (``backends/``) build on, and what every
public function of ``sigreg`` calls. It assumes validated, finite, float inputs and
performs no host synchronisation, so adapters may call it inside compiled training steps.

* :func:`make_rule` validates the options once and returns a :class:`Rule`;
* :func:`project` gives the projections ``x @ directions`` with samples on the last axis;
* :func:`forward` returns the statistic and the residuals :func:`pullback` needs;
* :func:`statistic_from_sums` and :func:`sums_cotangent` are the two small steps between the
  characteristic-function sums and the statistic, for adapters that compute the sums
  themselves (:func:`ecf_sums`, :func:`ecf_sums_pullback`, or their own kernels);
* :func:`resolve_engine` picks the strategy of ``engine="auto"`` from the device.

Strategies (``engine=``), all with the same values and gradients up to rounding:

``"cache_fused"``
    For CPUs: slices in cache-sized blocks, the Chebyshev recurrence over the knots, and the
    gradient contracted from the knot values while they are in cache.
``"few_kernels"``
    For accelerators (CUDA, MPS, TPU, CuPy, JAX on GPU): all knots of a memory-bounded
    chunk of slices in a few large operations.
``"auto"`` (default)
    ``"few_kernels"`` on an accelerator, ``"cache_fused"`` on a CPU.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import is_cupy_array, is_jax_array, is_torch_array

from sigreg._ecf import (
    CACHE_BLOCK_ELEMENTS,
    MEMORY_BUDGET_BYTES,
    block_rows,
    ecf_sums,
    ecf_sums_pullback,
)
from sigreg._exact import exact_gradient, exact_statistic
from sigreg._namespace import device_of
from sigreg._validation import INTEGRATIONS, check_choice, check_flag, check_quadrature
from sigreg.collective import check_collective, reduce_sums
from sigreg.quadrature import trapezoid_rule

__all__ = [
    "CACHE_BLOCK_ELEMENTS",
    "ENGINES",
    "MEMORY_BUDGET_BYTES",
    "Rule",
    "block_rows",
    "ecf_sums",
    "ecf_sums_pullback",
    "forward",
    "is_accelerator",
    "make_rule",
    "project",
    "pullback",
    "reduce_slices",
    "resolve_engine",
    "statistic_from_sums",
    "sums_cotangent",
]

ENGINES = ("auto", "cache_fused", "few_kernels")
"""The strategies of the core (adapters may add their own, e.g. torch's ``"compiled"``)."""


def is_accelerator(x: Any) -> bool:
    """True when ``x`` lives on a GPU/TPU-like device (CuPy, torch non-CPU, JAX non-CPU).

    Inside ``jax.jit`` (no concrete device) JAX's default backend decides.
    """
    if is_cupy_array(x):
        return True
    if is_torch_array(x):
        return x.device.type != "cpu"
    if is_jax_array(x):
        dev = device_of(x)
        platform = sys.modules["jax"].default_backend() if dev is None else dev.platform
        return platform != "cpu"
    return False


def resolve_engine(engine: Any, like: Any) -> str:
    """Validate ``engine`` and resolve ``"auto"`` from the device of ``like``.

    Parameters
    ----------
    engine : {"auto", "cache_fused", "few_kernels"}
        The requested strategy.
    like : array
        An input of the computation (its device decides ``"auto"``).

    Returns
    -------
    str
        ``"cache_fused"`` or ``"few_kernels"``.
    """
    engine = check_choice(engine, "engine", ENGINES)
    if engine != "auto":
        return engine
    return "few_kernels" if is_accelerator(like) else "cache_fused"


def project(xp: Any, x: Any, directions: Any) -> Any:
    """``(x @ directions)`` transposed to ``(..., M, N)``: samples on the last axis.

    Parameters
    ----------
    xp : namespace
        Array namespace of ``x``.
    x : array, shape (..., N, K)
        Embeddings.
    directions : array, shape (K, M)
        Directions, one per column.

    Returns
    -------
    array, shape (..., M, N)
    """
    return xp.matrix_transpose(directions) @ xp.matrix_transpose(x)


def reduce_slices(xp: Any, values: Any, reduction: str) -> Any:
    """Combine per-slice statistics (last axis): ``"mean"``, ``"sum"`` or ``"none"``."""
    if reduction == "mean":
        return xp.mean(values, axis=-1)
    if reduction == "sum":
        return xp.sum(values, axis=-1)
    return values


@dataclass(frozen=True)
class Rule:
    """How to evaluate the statistic: integration, debiasing and the quadrature grid.

    ``weights`` and ``phi`` hold the knots ``t_k = k * step`` for ``k >= 1`` only; the knot
    ``t = 0`` contributes exactly zero (``C(0) = 1 = phi(0)``, ``S(0) = 0``).
    """

    integration: str
    debias: bool
    step: float
    weights: np.ndarray
    phi: np.ndarray
    engine: str = "auto"


def make_rule(
    *,
    t_max: Any,
    n_points: Any,
    integration: Any,
    debias: Any,
    collective: Any,
    engine: Any = "auto",
) -> Rule:
    """Validate the statistic options and build the :class:`Rule`.

    Parameters
    ----------
    t_max, n_points, integration, debias, collective
        As in :func:`sigreg.epps_pulley`.
    engine : {"auto", "cache_fused", "few_kernels"}, default "auto"
        Strategy for the trapezoid rule (see the module docstring); ``"auto"`` is resolved
        per call from the device of the input.

    Returns
    -------
    Rule
    """
    t_max, n_points = check_quadrature(t_max, n_points)
    integration = check_choice(integration, "integration", INTEGRATIONS)
    debias = check_flag(debias, "debias")
    engine = check_choice(engine, "engine", ENGINES)
    check_collective(collective)
    if integration == "exact" and collective is not None:
        raise ValueError(
            "collective is only supported with integration='trapezoid': the exact statistic "
            "needs every pair of samples, not per-rank sums"
        )
    t, weights = trapezoid_rule(t_max, n_points)
    return Rule(
        integration=integration,
        debias=debias,
        step=t_max / (n_points - 1),
        weights=weights[1:],
        phi=np.exp(-0.5 * t[1:] ** 2),
        engine=engine,
    )


def _constants(xp: Any, rule: Rule, like: Any) -> tuple[Any, Any]:
    dev = device_of(like)
    return (
        xp.asarray(rule.weights, dtype=like.dtype, device=dev),
        xp.asarray(rule.phi, dtype=like.dtype, device=dev),
    )


def statistic_from_sums(
    xp: Any, cos_sums: Any, sin_sums: Any, count: Any, weights: Any, phi: Any, *, debias: bool
) -> tuple[Any, Any, Any]:
    """The quadrature statistic from characteristic-function sums over ``count`` samples.

    Parameters
    ----------
    xp : namespace
        Array namespace.
    cos_sums, sin_sums : array, shape (..., n_knots)
        Sums of ``cos(t_k z_j)`` and ``sin(t_k z_j)`` over the samples.
    count : float or 0-d array
        Number of samples behind the sums.
    weights, phi : array, shape (n_knots,)
        Quadrature weights and ``exp(-t_k^2 / 2)`` of the knots ``t_k > 0``.
    debias : bool
        Use the U-statistic.

    Returns
    -------
    values : array, shape (...)
    c, s : array, shape (..., n_knots)
        The ECF means, the residuals :func:`sums_cotangent` needs.
    """
    c, s = cos_sums / count, sin_sums / count
    err = (c - phi) ** 2 + s * s
    if debias:
        # U-statistic: |phi_hat|^2 -> (N |phi_hat|^2 - 1) / (N - 1)
        err = err - (1.0 - c * c - s * s) / (count - 1.0)
    return count * xp.sum(err * weights, axis=-1), c, s


def sums_cotangent(
    xp: Any, c: Any, s: Any, count: Any, weights: Any, phi: Any, cotangent: Any, *, debias: bool
) -> tuple[Any, Any]:
    """Cotangents of the cosine and sine sums, given the cotangent of the statistic.

    ``dT/d(cos_sum_k) = 2 W_k (C_k - phi_k)`` and ``dT/d(sin_sum_k) = 2 W_k S_k`` (the
    U-statistic scales ``C`` and ``S`` by ``1 + 1/(N - 1)``); ``cotangent`` has shape ``(...)``.
    """
    factor = 1.0 + 1.0 / (count - 1.0) if debias else 1.0
    scale = 2.0 * weights * xp.expand_dims(cotangent, axis=-1)
    return scale * (c * factor - phi), scale * (s * factor)


def forward(
    xp: Any, z: Any, rule: Rule, collective: Any = None, *, with_gradient: bool = False
) -> tuple[Any, Any]:
    """Statistic over the last axis of ``z`` and the residuals its pullback needs.

    Parameters
    ----------
    xp : namespace
        Array namespace of ``z``.
    z : array, shape (..., N)
        Samples on the last axis (e.g. the output of :func:`project`).
    rule : Rule
        From :func:`make_rule`.
    collective : Collective, optional
        Sum the characteristic-function sums and the count over ranks.
    with_gradient : bool, default False
        The caller will call :func:`pullback`. Without a collective the gradient of every
        statistic is then computed here, in the same pass over the knot values (the
        pullback only scales it); with a collective the pullback makes a second pass.

    Returns
    -------
    value : array, shape ``z.shape[:-1]``
    residual : tuple or None
        ``(C, S, count, gradient)`` for the trapezoid rule (``gradient`` is None unless
        computed here), ``None`` for the exact statistic.
    """
    if rule.integration == "exact":
        return exact_statistic(xp, z, debias=rule.debias), None
    engine = resolve_engine(rule.engine, z)
    n_knots = rule.weights.shape[0]
    weights, phi = _constants(xp, rule, z)
    count: Any = float(z.shape[-1])
    cotangents = None
    if with_gradient and collective is None:

        def cotangents(cos_sums: Any, sin_sums: Any) -> tuple[Any, Any]:
            unit = xp.ones(cos_sums.shape[:-1], dtype=z.dtype, device=device_of(z))
            c, s = cos_sums / count, sin_sums / count
            return sums_cotangent(xp, c, s, count, weights, phi, unit, debias=rule.debias)

    cos_sums, sin_sums, gradient = ecf_sums(
        xp, z, rule.step, n_knots, engine=engine, cotangents=cotangents
    )
    if collective is not None:
        (cos_sums, sin_sums), total = reduce_sums(collective, xp, [cos_sums, sin_sums], z.shape[-1])
        count = xp.reshape(total, (-1,))[0]
    value, c, s = statistic_from_sums(
        xp, cos_sums, sin_sums, count, weights, phi, debias=rule.debias
    )
    return value, (c, s, count, gradient)


def pullback(xp: Any, z: Any, rule: Rule, residual: Any, cotangent: Any) -> Any:
    """Gradient of ``sum(cotangent * forward(z))`` with respect to ``z``.

    ``cotangent`` has the shape of the statistic (``z.shape[:-1]``). With a collective the
    result is the derivative of the *global* statistic with respect to the local samples.
    """
    if rule.integration == "exact":
        return xp.expand_dims(cotangent, axis=-1) * exact_gradient(xp, z, debias=rule.debias)
    c, s, count, gradient = residual
    if gradient is not None:
        return xp.expand_dims(cotangent, axis=-1) * gradient
    weights, phi = _constants(xp, rule, z)
    grad_cos, grad_sin = sums_cotangent(
        xp, c, s, count, weights, phi, cotangent, debias=rule.debias
    )
    engine = resolve_engine(rule.engine, z)
    return ecf_sums_pullback(xp, z, rule.step, grad_cos, grad_sin, engine=engine)
