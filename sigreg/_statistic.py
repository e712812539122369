"""The Epps-Pulley statistic of samples on the last axis: forward pass and its pullback.

This is the engine behind every public function. It assumes validated, finite, float
inputs and performs no host synchronisation, so backend adapters may call it directly
inside compiled training steps. ``make_rule``, ``forward`` and ``pullback`` (with
``sigreg.sliced._project``) are the interface ``backends/`` builds on: keep them stable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sigreg._ecf import ecf_sums, ecf_sums_pullback
from sigreg._exact import exact_gradient, exact_statistic
from sigreg._namespace import device_of
from sigreg._validation import INTEGRATIONS, check_choice, check_flag, check_quadrature
from sigreg.collective import check_collective, reduce_sums
from sigreg.quadrature import trapezoid_rule


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


def make_rule(*, t_max: Any, n_points: Any, integration: Any, debias: Any, collective: Any) -> Rule:
    """Validate the statistic options and build the :class:`Rule`."""
    t_max, n_points = check_quadrature(t_max, n_points)
    integration = check_choice(integration, "integration", INTEGRATIONS)
    debias = check_flag(debias, "debias")
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


def forward(xp: Any, z: Any, rule: Rule, collective: Any = None) -> tuple[Any, Any]:
    """Statistic over the last axis of ``z`` and the residuals its pullback needs.

    Returns
    -------
    value : array, shape ``z.shape[:-1]``
    residual : tuple or None
        ``(C, S, count)`` for the trapezoid rule, ``None`` for the exact statistic.
    """
    if rule.integration == "exact":
        return exact_statistic(xp, z, debias=rule.debias), None
    cos_sums, sin_sums = ecf_sums(xp, z, rule.step, rule.weights.shape[0])
    if collective is None:
        count: Any = float(z.shape[-1])
    else:
        (cos_sums, sin_sums), total = reduce_sums(collective, xp, [cos_sums, sin_sums], z.shape[-1])
        count = xp.reshape(total, (-1,))[0]
    weights, phi = _constants(xp, rule, z)
    value, c, s = statistic_from_sums(
        xp, cos_sums, sin_sums, count, weights, phi, debias=rule.debias
    )
    return value, (c, s, count)


def pullback(xp: Any, z: Any, rule: Rule, residual: Any, cotangent: Any) -> Any:
    """Gradient of ``sum(cotangent * forward(z))`` with respect to ``z``.

    ``cotangent`` has the shape of the statistic (``z.shape[:-1]``). With a collective the
    result is the derivative of the *global* statistic with respect to the local samples.
    """
    if rule.integration == "exact":
        return xp.expand_dims(cotangent, axis=-1) * exact_gradient(xp, z, debias=rule.debias)
    c, s, count = residual
    weights, phi = _constants(xp, rule, z)
    grad_cos, grad_sin = sums_cotangent(
        xp, c, s, count, weights, phi, cotangent, debias=rule.debias
    )
    return ecf_sums_pullback(xp, z, rule.step, grad_cos, grad_sin)
