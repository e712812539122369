"""Argument handling shared by the univariate statistics of :mod:`sigreg.edf` and
:mod:`sigreg.moments`: validate, move the sample axis last, compute, restore the shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sigreg._namespace import pick_namespace, prepare_array
from sigreg._validation import check_axis, check_finite, check_flag
from sigreg.univariate import _finish


def apply_along_samples(
    kernel: Callable[[Any, Any], Any],
    x: Any,
    axis: Any,
    keepdims: Any,
    backend: Any,
    *,
    min_samples: int = 1,
) -> Any:
    """``kernel(xp, z)`` with the samples of ``x`` along ``axis`` on the last axis of ``z``.

    The result has the namespace, dtype and device of ``x`` and, with ``keepdims``, the
    reduced axis kept with length one.
    """
    xp = pick_namespace(x, "x", backend)
    x, out_dtype = prepare_array(x, "x", xp, convert_input=backend is not None)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (the sample axis)")
    axis = check_axis(axis, x.ndim)
    check_flag(keepdims, "keepdims")
    if x.shape[axis] < min_samples:
        raise ValueError(
            f"x needs at least {min_samples} sample(s) along axis {axis}, got {x.shape[axis]}"
        )
    check_finite(xp, x, "x")
    value = kernel(xp, xp.moveaxis(x, axis, -1))
    return _finish(xp, value, axis, keepdims, out_dtype)
