"""The standard normal CDF ``Phi`` and ``log Phi`` in pure array-API operations.

The array API has no ``erf``. These follow W. J. Cody, "Rational Chebyshev approximations for
the error function", Math. Comp. 23 (1969) 631-637 (the CALERF algorithm behind most libm
``erf``), three rational approximations with relative error below ``6e-19``:

* ``|z| <= 0.46875``: ``erf(z) = z P(z^2) / Q(z^2)``;
* ``0.46875 < z <= 4``: ``erfcx(z) = exp(z^2) erfc(z) = P(z) / Q(z)``;
* ``z > 4``: ``erfcx(z) = (1/sqrt(pi) + z^-2 P(z^-2) / Q(z^-2)) / z``.

``Phi(x) = 1/2 + erf(x/sqrt 2)/2`` near zero; in the tails ``Phi(-t) = erfcx(t/sqrt 2)
exp(-t^2/2) / 2`` (and ``Phi(t) = 1 - Phi(-t)``), where ``exp(-t^2/2)`` is evaluated as
``exp(-s^2/2) exp(-(t-s)(t+s)/2)`` with ``s = floor(16 t)/16`` so that rounding of ``t^2``
does not cost relative accuracy far out (Cody's trick). Every branch is evaluated on inputs
clamped to its own range, so the unselected branches stay finite and ``xp.where`` passes
finite gradients under autodiff. Results have the dtype of the input (float32 or float64).
"""

from __future__ import annotations

import math
from typing import Any

_SMALL = 0.46875  # Cody's switch between the erf and erfcx approximations
_MID = 4.0
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_SQRT_HALF = math.sqrt(0.5)
_X_SMALL = _SMALL / _SQRT_HALF  # the switch in the variable x = z * sqrt(2)

_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
      3.20937758913846947e03, 1.85777706184603153e-1)  # fmt: skip
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
      2.84423683343917062e03)  # fmt: skip
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
      2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
      2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)  # fmt: skip
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
      1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
      3.43936767414372164e03, 1.23033935480374942e03)  # fmt: skip
_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
      1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)  # fmt: skip
_Q = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1,
      6.05183413124413191e-2, 2.33520497626869185e-3)  # fmt: skip


def _erf_small(xp: Any, z: Any) -> Any:
    """``erf(z)`` for ``|z| <= 0.46875``."""
    zsq = z * z
    num, den = _A[4] * zsq, zsq
    for a, b in zip(_A[:3], _B[:3], strict=True):
        num, den = (num + a) * zsq, (den + b) * zsq
    return z * (num + _A[3]) / (den + _B[3])


def _erfcx_large(xp: Any, z: Any) -> Any:
    """``exp(z^2) erfc(z)`` for ``z >= 0.46875`` (two of Cody's approximations)."""
    mid = xp.clip(z, min=_SMALL, max=_MID)
    num, den = _C[8] * mid, mid
    for c, d in zip(_C[:7], _D[:7], strict=True):
        num, den = (num + c) * mid, (den + d) * mid
    mid_value = (num + _C[7]) / (den + _D[7])
    far = xp.clip(z, min=_MID)
    inv = 1.0 / (far * far)
    num, den = _P[5] * inv, inv
    for p, q in zip(_P[:4], _Q[:4], strict=True):
        num, den = (num + p) * inv, (den + q) * inv
    far_value = (_INV_SQRT_PI - inv * (num + _P[4]) / (den + _Q[4])) / far
    return xp.where(z <= _MID, mid_value, far_value)


def _gauss_tail_factor(xp: Any, t: Any) -> Any:
    """``exp(-t^2/2)`` for ``t >= 0`` with the rounding of ``t^2`` split off."""
    s = xp.floor(t * 16.0) / 16.0
    return xp.exp(-0.5 * (s * s)) * xp.exp(-0.5 * ((t - s) * (t + s)))


def _parts(xp: Any, x: Any) -> tuple[Any, Any, Any]:
    """``(central, t, erfcx(t / sqrt 2) / 2)`` of :func:`ndtr`."""
    central = 0.5 + 0.5 * _erf_small(xp, _SQRT_HALF * xp.clip(x, min=-_X_SMALL, max=_X_SMALL))
    t = xp.clip(xp.abs(x), min=_X_SMALL)
    return central, t, 0.5 * _erfcx_large(xp, _SQRT_HALF * t)


def ndtr(xp: Any, x: Any) -> Any:
    """Standard normal CDF ``Phi(x)`` elementwise (relative error ~1e-16 in float64)."""
    central, t, half_erfcx = _parts(xp, x)
    lower = half_erfcx * _gauss_tail_factor(xp, t)  # Phi(-t)
    tail = xp.where(x < 0, lower, 1.0 - lower)
    return xp.where(xp.abs(x) <= _X_SMALL, central, tail)


def log_ndtr_pair(xp: Any, x: Any) -> tuple[Any, Any]:
    """``(log Phi(x), log Phi(-x))`` elementwise, sharing the rational approximations
    (both depend on ``|x|`` only, up to the sign of the central ``erf``)."""
    erf = _erf_small(xp, _SQRT_HALF * xp.clip(x, min=-_X_SMALL, max=_X_SMALL))
    t = xp.clip(xp.abs(x), min=_X_SMALL)
    half_erfcx = 0.5 * _erfcx_large(xp, _SQRT_HALF * t)
    log_far = xp.log(half_erfcx) - 0.5 * (t * t)  # log Phi(-|x|)
    log_near = xp.log1p(-half_erfcx * _gauss_tail_factor(xp, t))  # log Phi(|x|)
    small = xp.abs(x) <= _X_SMALL
    negative = x < 0
    lower = xp.where(small, xp.log(0.5 + 0.5 * erf), xp.where(negative, log_far, log_near))
    upper = xp.where(small, xp.log(0.5 - 0.5 * erf), xp.where(negative, log_near, log_far))
    return lower, upper


def log_ndtr(xp: Any, x: Any) -> Any:
    """``log Phi(x)`` elementwise, finite for every finite ``x`` (``log(1 - Phi(x))`` is
    ``log_ndtr(-x)``)."""
    return log_ndtr_pair(xp, x)[0]
