"""Argument checks that raise ``ValueError``/``TypeError`` naming the offending argument.

Checks on array *values* cannot raise inside a trace such as ``jax.jit``. There a
non-finite input needs no check (NaN and infinity propagate into the statistic, and through
a collective onto every rank), while the unit-norm check of the directions returns a
boolean array that the caller turns into NaN with :func:`poison`.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from sigreg._namespace import device_of, is_traced

INTEGRATIONS = ("trapezoid", "exact")
REDUCTIONS = ("mean", "sum", "none")


def check_int(value: Any, name: str, *, minimum: int) -> int:
    """Return ``value`` as ``int`` if it is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_quadrature(t_max: Any, n_points: Any) -> tuple[float, int]:
    """Validate the trapezoid grid parameters."""
    if isinstance(t_max, bool) or not isinstance(t_max, numbers.Real):
        raise TypeError(f"t_max must be a real number, got {t_max!r}")
    if not math.isfinite(t_max) or t_max <= 0:
        raise ValueError(f"t_max must be finite and > 0, got {t_max}")
    return float(t_max), check_int(n_points, "n_points", minimum=2)


def check_unit_interval(value: Any, name: str) -> float:
    """Return ``value`` as ``float`` if it is a real number in ``[0, 1]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Validate a string option."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_flag(value: Any, name: str) -> bool:
    """Validate a boolean option."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def check_axis(axis: Any, ndim: int, name: str = "axis") -> int:
    """Return ``axis`` normalised to ``0 <= axis < ndim``."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {axis!r}")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array with {ndim} dimension(s)")
    return axis % ndim


def check_sample_count(n: int, name: str, *, debias: bool, distributed: bool = False) -> None:
    """The sample axis must hold at least one sample (two for the U-statistic).

    With a collective only the local count is known without communication, so the
    U-statistic's two-sample minimum then applies to the global batch and is not checked.
    """
    if n < 1:
        raise ValueError(f"{name} has an empty sample axis")
    if debias and not distributed and n < 2:
        raise ValueError(f"{name} needs at least 2 samples along the sample axis when debias=True")


def check_finite(xp: Any, x: Any, name: str) -> None:
    """Raise if ``x`` holds NaN or infinity (inside a trace they propagate to the result)."""
    ok = xp.all(xp.isfinite(x))  # under jax.jit even a constant's check is staged
    if is_traced(ok):
        return
    if not bool(ok):
        raise ValueError(f"{name} contains NaN or infinity")


def unit_norm_tolerance(xp: Any, dtype: Any) -> float:
    """How far from 1 the norm of a unit vector stored in ``dtype`` may be.

    ``1e-6`` in float64, ``1e-3`` in float32 (room for vectors normalised in lower
    precision), and the machine epsilon of coarser dtypes: rounding each entry to relative
    precision ``eps / 2`` moves the norm by at most ``eps / 2`` (bfloat16: ``eps = 2^-7``).
    """
    if dtype == xp.float64:
        return 1e-6
    return max(1e-3, float(xp.finfo(dtype).eps))


def check_unit_columns(xp: Any, directions: Any, name: str, dtype: Any = None) -> Any:
    """Raise unless every column of ``directions`` has unit Euclidean norm (to the accuracy
    of ``dtype``, the dtype the directions were given in; default: their dtype)."""
    norms = xp.sqrt(xp.sum(directions * directions, axis=0))
    tol = unit_norm_tolerance(xp, directions.dtype if dtype is None else dtype)
    ok = xp.all(xp.abs(norms - 1.0) <= tol)
    if is_traced(ok):
        return ok
    if not bool(ok):
        raise ValueError(
            f"{name} must have unit-norm columns (normalise them, or use sample_directions)"
        )
    return None


def as_cotangent(xp: Any, cotangent: Any, like: Any) -> Any:
    """The ``cotangent`` of a pullback as an array of the dtype and device of ``like``.

    ``None`` (which numpy would turn into NaN) raises ``TypeError``, a non-finite cotangent
    ``ValueError`` (eagerly; inside a trace it propagates to the gradient).
    """
    if cotangent is None:
        raise TypeError("cotangent must be a real number or array (e.g. 1.0), got None")
    try:
        g = xp.asarray(cotangent, dtype=like.dtype, device=device_of(like))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cotangent must be a real number or array, got {cotangent!r}") from exc
    check_finite(xp, g, "cotangent")
    return g


def poison(xp: Any, value: Any, *checks: Any) -> Any:
    """Make ``value`` NaN where a deferred (traced) check failed.

    A multiplication rather than a ``where``, so that gradients flowing through the result
    become NaN too instead of silently zero.
    """
    for ok in checks:
        if ok is not None:
            nan = xp.asarray(float("nan"), dtype=value.dtype)
            value = value * xp.where(ok, xp.asarray(1.0, dtype=value.dtype), nan)
    return value
