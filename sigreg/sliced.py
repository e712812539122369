"""SIGReg: the Epps-Pulley statistic averaged over one-dimensional projections.

By the Cramér-Wold theorem a distribution is N(0, I) iff every projection on a unit
vector is N(0, 1); SIGReg tests ``M`` random projections per step and resamples them
every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sigreg import _statistic
from sigreg._namespace import device_of, pick_namespace, prepare_array
from sigreg._validation import (
    REDUCTIONS,
    as_cotangent,
    check_choice,
    check_finite,
    check_int,
    check_sample_count,
    check_unit_columns,
    poison,
)
from sigreg.directions import sample_directions


def _check_embeddings(x: Any, name: str) -> None:
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (..., N, K), got {x.ndim} dimension(s)")
    if x.shape[-1] < 1:
        raise ValueError(f"{name} has an empty feature axis (K = 0)")


def _project(xp: Any, x: Any, directions: Any) -> Any:
    """``(x @ directions)`` transposed to ``(..., M, N)``: samples on the last axis."""
    return xp.matrix_transpose(directions) @ xp.matrix_transpose(x)


def _reduce(xp: Any, values: Any, reduction: str) -> Any:
    if reduction == "mean":
        return xp.mean(values, axis=-1)
    if reduction == "sum":
        return xp.sum(values, axis=-1)
    return values


def _setup(
    x,
    directions,
    reduction,
    t_max,
    n_points,
    integration,
    debias,
    collective,
    backend,
    check_directions=True,
):
    xp = pick_namespace(x, "x", backend)
    convert = backend is not None
    x, out_dtype = prepare_array(x, "x", xp, convert_input=convert)
    _check_embeddings(x, "x")
    directions, given_dtype = prepare_array(directions, "directions", xp, convert_input=convert)
    if directions.ndim != 2:
        raise ValueError(f"directions must have shape (K, M), got {directions.ndim} dimension(s)")
    if directions.shape[0] != x.shape[-1]:
        raise ValueError(
            f"directions has {directions.shape[0]} rows but x has K={x.shape[-1]} features"
        )
    if directions.dtype != x.dtype:
        directions = xp.astype(directions, x.dtype)
    reduction = check_choice(reduction, "reduction", REDUCTIONS)
    rule = _statistic.make_rule(
        t_max=t_max,
        n_points=n_points,
        integration=integration,
        debias=debias,
        collective=collective,
    )
    check_sample_count(x.shape[-2], "x", debias=rule.debias, distributed=collective is not None)
    check_finite(xp, x, "x")
    check_finite(xp, directions, "directions")
    checks = (
        [check_unit_columns(xp, directions, "directions", given_dtype)] if check_directions else []
    )
    return xp, x, directions, out_dtype, reduction, rule, checks


def _value(xp, x, directions, reduction, rule, collective, checks, out_dtype):
    values, _ = _statistic.forward(xp, _project(xp, x, directions), rule, collective)
    value = poison(xp, _reduce(xp, values, reduction), *checks)
    return value if value.dtype == out_dtype else xp.astype(value, out_dtype)


def sliced_epps_pulley(
    x: Any,
    directions: Any,
    /,
    *,
    reduction: str = "mean",
    t_max: float = 3.0,
    n_points: int = 17,
    integration: str = "trapezoid",
    debias: bool = False,
    collective: Any = None,
    backend: Any = None,
) -> Any:
    """Epps-Pulley statistic of the projections ``x @ directions``, one per column.

    A pure function: the directions are used exactly as given (unit columns required), so
    numerics can be tested apart from randomness. :func:`sigreg` draws the directions.

    Parameters
    ----------
    x : array, shape (..., N, K)
        Embeddings: ``N`` samples of dimension ``K`` (leading axes are batch axes, e.g.
        views).
    directions : array, shape (K, M)
        Unit-norm columns, same namespace as ``x`` (cast to ``x``'s dtype).
    reduction : {"mean", "sum", "none"}, default "mean"
        How to combine the ``M`` per-slice statistics.
    t_max, n_points, integration, debias, collective, backend
        As in :func:`sigreg.epps_pulley`.

    Returns
    -------
    array
        Shape ``x.shape[:-2]`` (``"mean"``, ``"sum"``) or ``x.shape[:-2] + (M,)``
        (``"none"``), in the namespace, dtype and device of ``x``.

    Raises
    ------
    ValueError
        Wrong shapes, non-unit or non-finite directions, non-finite ``x``, bad options.
    TypeError
        ``x`` and ``directions`` from different namespaces, complex input.

    Examples
    --------
    >>> import numpy as np
    >>> from sigreg import sample_directions, sliced_epps_pulley
    >>> x = np.random.default_rng(0).standard_normal((512, 32))
    >>> a = sample_directions(32, 64, seed=0, backend="numpy")
    >>> float(sliced_epps_pulley(x, a)) < 2.0
    True
    >>> sliced_epps_pulley(x, a, reduction="none").shape
    (64,)
    """
    xp, x, directions, out_dtype, reduction, rule, checks = _setup(
        x, directions, reduction, t_max, n_points, integration, debias, collective, backend
    )
    return _value(xp, x, directions, reduction, rule, collective, checks, out_dtype)


def sliced_epps_pulley_vjp(
    x: Any,
    directions: Any,
    /,
    *,
    reduction: str = "mean",
    t_max: float = 3.0,
    n_points: int = 17,
    integration: str = "trapezoid",
    debias: bool = False,
    collective: Any = None,
    backend: Any = None,
) -> tuple[Any, Callable[[Any], Any]]:
    """:func:`sliced_epps_pulley` and its analytic vector-Jacobian product in ``x``.

    The pullback needs the per-slice characteristic-function means (``M x n_points``
    numbers) and one pass over the projections; it never builds an ``(N, M, n_points)``
    array. The directions are treated as constants.

    Parameters
    ----------
    x, directions, reduction, t_max, n_points, integration, debias, collective, backend
        As in :func:`sliced_epps_pulley`.

    Returns
    -------
    value : array
        Same as ``sliced_epps_pulley(x, directions, ...)``.
    pullback : callable
        ``pullback(cotangent)`` returns the gradient of ``sum(cotangent * value)`` with
        respect to ``x``, shape ``x.shape``.

    Examples
    --------
    >>> import numpy as np
    >>> from sigreg import sample_directions, sliced_epps_pulley_vjp
    >>> x = np.random.default_rng(0).standard_normal((256, 8))
    >>> a = sample_directions(8, 16, seed=0, backend="numpy")
    >>> value, pullback = sliced_epps_pulley_vjp(x, a)
    >>> pullback(np.ones(())).shape
    (256, 8)
    """
    xp, x, directions, out_dtype, reduction, rule, checks = _setup(
        x, directions, reduction, t_max, n_points, integration, debias, collective, backend
    )
    z = _project(xp, x, directions)
    values, residual = _statistic.forward(xp, z, rule, collective)
    value = _reduce(xp, values, reduction)
    num_slices = directions.shape[1]

    def pullback(cotangent: Any) -> Any:
        g = xp.broadcast_to(as_cotangent(xp, cotangent, x), value.shape)
        if reduction != "none":
            g = xp.broadcast_to(xp.expand_dims(g, axis=-1), values.shape)
            if reduction == "mean":
                g = g / num_slices
        grad_z = _statistic.pullback(xp, z, rule, residual, g)  # (..., M, N)
        grad = xp.matrix_transpose(grad_z) @ xp.matrix_transpose(directions)
        grad = poison(xp, grad, *checks)
        return grad if grad.dtype == out_dtype else xp.astype(grad, out_dtype)

    value = poison(xp, value, *checks)
    return (value if value.dtype == out_dtype else xp.astype(value, out_dtype)), pullback


def sigreg(
    x: Any,
    /,
    *,
    num_slices: int = 1024,
    seed: int = 0,
    step: int = 0,
    t_max: float = 3.0,
    n_points: int = 17,
    integration: str = "trapezoid",
    debias: bool = False,
    collective: Any = None,
    backend: Any = None,
) -> Any:
    """SIGReg: the mean Epps-Pulley statistic over ``num_slices`` random directions.

    The directions come from :func:`sample_directions` with ``(seed, step)``, so pass the
    training step to get fresh directions every step, identical on every rank.

    Parameters
    ----------
    x : array, shape (..., N, K)
        Embeddings.
    num_slices : int, default 1024
        Number of random unit directions.
    seed : int, default 0
        Seed of the directions.
    step : int, default 0
        Step counter mixed into the seed.
    t_max, n_points, integration, debias, collective, backend
        As in :func:`sigreg.epps_pulley`.

    Returns
    -------
    array
        Shape ``x.shape[:-2]`` (0-d for a single ``(N, K)`` batch), in the namespace,
        dtype and device of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from sigreg import sigreg
    >>> rng = np.random.default_rng(0)
    >>> iso = rng.standard_normal((512, 16))
    >>> float(sigreg(iso, num_slices=256)) < 2.0
    True
    >>> float(sigreg(iso * np.linspace(0.2, 2.0, 16), num_slices=256)) > 10.0
    True
    """
    xp = pick_namespace(x, "x", backend)
    x, out_dtype = prepare_array(x, "x", xp, convert_input=backend is not None)
    _check_embeddings(x, "x")
    num_slices = check_int(num_slices, "num_slices", minimum=1)
    directions = sample_directions(
        x.shape[-1],
        num_slices,
        seed=seed,
        step=step,
        backend=xp,
        dtype=x.dtype,
        device=device_of(x),
    )
    xp, x, directions, _, reduction, rule, checks = _setup(
        x,
        directions,
        "mean",
        t_max,
        n_points,
        integration,
        debias,
        collective,
        None,
        check_directions=False,
    )
    return _value(xp, x, directions, reduction, rule, collective, checks, out_dtype)
