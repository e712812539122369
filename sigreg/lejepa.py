"""The LeJEPA objective: view prediction plus SIGReg on every view."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from sigreg import _statistic
from sigreg._namespace import device_of, pick_namespace, prepare_array
from sigreg._validation import (
    as_cotangent,
    check_choice,
    check_finite,
    check_int,
    check_unit_columns,
    check_unit_interval,
    poison,
)
from sigreg.collective import reduce_sums
from sigreg.directions import sample_directions
from sigreg.sliced import _project

PREDICTIONS = ("center", "pairwise")


class LeJEPALoss(NamedTuple):
    """The LeJEPA loss and its two parts (0-d arrays)."""

    loss: Any
    """``(1 - lamb) * prediction + lamb * sigreg``."""
    prediction: Any
    """The view-prediction (invariance) term."""
    sigreg: Any
    """SIGReg averaged over all views."""


def _check_views(x: Any, name: str) -> None:
    if x.ndim != 3:
        raise ValueError(f"{name} must have shape (V, N, D), got {x.ndim} dimension(s)")
    if x.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one view")
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"{name} must hold at least one sample and feature, got {tuple(x.shape)}")


def lejepa_loss(
    global_views: Any,
    local_views: Any = None,
    /,
    *,
    lamb: float = 0.05,
    num_slices: int = 1024,
    seed: int = 0,
    step: int = 0,
    directions: Any = None,
    prediction: str = "center",
    t_max: float = 3.0,
    n_points: int = 17,
    collective: Any = None,
    backend: Any = None,
) -> LeJEPALoss:
    """LeJEPA loss ``(1 - lamb) * prediction + lamb * mean_v SIGReg(z_v)``.

    Parameters
    ----------
    global_views : array, shape (V_g, N, D)
        Embeddings (projector outputs) of the ``V_g`` global views of ``N`` samples.
    local_views : array, shape (V_l, N, D), optional
        Embeddings of the local views.
    lamb : float, default 0.05
        Weight of SIGReg, in ``[0, 1]``.
    num_slices : int, default 1024
        Number of random directions (ignored when ``directions`` is given).
    seed, step : int
        Seed and step counter of the directions (see :func:`sigreg.sample_directions`);
        every view of one step uses the same directions.
    directions : array, shape (D, M), optional
        Unit-norm directions to use instead of drawing them (e.g. inside ``jax.jit``).
    prediction : {"center", "pairwise"}, default "center"
        ``"center"`` (paper Eq. 6-7, the official code): every view predicts the mean
        ``mu`` of the global views, ``mean_{v, n, d} (mu_{n,d} - z_{v,n,d})^2``.
        ``"pairwise"`` (paper Eq. 5): every view predicts every global view,
        ``mean_{g, v, n, d} (z_{g,n,d} - z_{v,n,d})^2``, which equals ``"center"`` plus the
        spread of the global views around ``mu``. Both average over the embedding
        dimension ``d`` like the official code (the paper's squared norm divided by ``D``),
        so the paper's ``lamb`` carries over.
    t_max, n_points, collective, backend
        As in :func:`sigreg.epps_pulley`. With a collective both terms are those of the
        global batch.

    Returns
    -------
    LeJEPALoss
        ``(loss, prediction, sigreg)``, 0-d arrays in the namespace, dtype and device of
        ``global_views``.

    Examples
    --------
    >>> import numpy as np
    >>> from sigreg import lejepa_loss
    >>> rng = np.random.default_rng(0)
    >>> g = rng.standard_normal((2, 128, 16))
    >>> loc = g[:1] + 0.1 * rng.standard_normal((1, 128, 16))
    >>> out = lejepa_loss(g, loc, num_slices=64)
    >>> bool(np.isclose(out.loss, 0.95 * out.prediction + 0.05 * out.sigreg))
    True
    """
    state = _setup(
        global_views,
        local_views,
        lamb,
        num_slices,
        seed,
        step,
        directions,
        prediction,
        t_max,
        n_points,
        collective,
        backend,
    )
    parts, _ = _forward(state, collective)
    return _finish(state, parts)


class _State(NamedTuple):
    xp: Any
    views: Any
    n_global: int
    directions: Any
    rule: Any
    checks: list
    out_dtype: Any
    lamb: float
    prediction: str


def _setup(
    global_views,
    local_views,
    lamb,
    num_slices,
    seed,
    step,
    directions,
    prediction,
    t_max,
    n_points,
    collective,
    backend,
) -> _State:
    xp = pick_namespace(global_views, "global_views", backend)
    convert = backend is not None
    g, out_dtype = prepare_array(global_views, "global_views", xp, convert_input=convert)
    _check_views(g, "global_views")
    check_finite(xp, g, "global_views")
    checks = []
    views = g
    if local_views is not None:
        loc, _ = prepare_array(local_views, "local_views", xp, convert_input=convert)
        _check_views(loc, "local_views")
        if loc.shape[1:] != g.shape[1:]:
            raise ValueError(
                f"local_views has (N, D) = {loc.shape[1:]} but global_views has {g.shape[1:]}"
            )
        check_finite(xp, loc, "local_views")
        views = xp.concat([g, xp.astype(loc, g.dtype)], axis=0)
    lamb = check_unit_interval(lamb, "lamb")
    prediction = check_choice(prediction, "prediction", PREDICTIONS)
    rule = _statistic.make_rule(
        t_max=t_max,
        n_points=n_points,
        integration="trapezoid",
        debias=False,
        collective=collective,
    )
    dim = views.shape[2]
    if directions is None:
        num_slices = check_int(num_slices, "num_slices", minimum=1)
        directions = sample_directions(
            dim,
            num_slices,
            seed=seed,
            step=step,
            backend=xp,
            dtype=g.dtype,
            device=device_of(g),
        )
    else:
        directions, given_dtype = prepare_array(directions, "directions", xp, convert_input=convert)
        if directions.ndim != 2 or directions.shape[0] != dim:
            raise ValueError(f"directions must have shape ({dim}, M), got {directions.shape}")
        directions = xp.astype(directions, g.dtype)
        check_finite(xp, directions, "directions")
        checks.append(check_unit_columns(xp, directions, "directions", given_dtype))
    return _State(
        xp, views, g.shape[0], directions, rule, checks, out_dtype, float(lamb), prediction
    )


def _forward(state: _State, collective: Any) -> tuple[tuple[Any, Any, Any], Any]:
    """The three loss parts and what the pullback needs."""
    xp, views, n_global = state.xp, state.views, state.n_global
    n_views, n, dim = views.shape
    g = views[:n_global, ...]
    mu = xp.mean(g, axis=0)
    center_sum = xp.sum((views - mu) ** 2)
    spread_sum = xp.sum((g - mu) ** 2)
    if collective is None:
        count: Any = float(n)
    else:
        (sums,), total = reduce_sums(collective, xp, [xp.stack([center_sum, spread_sum])], n)
        center_sum, spread_sum, count = sums[0], sums[1], total[0]
    pred = center_sum / (n_views * count * dim)
    if state.prediction == "pairwise":
        pred = pred + spread_sum / (n_global * count * dim)
    z = _project(xp, views, state.directions)
    per_view, residual = _statistic.forward(xp, z, state.rule, collective)
    sig = xp.mean(per_view)
    loss = (1.0 - state.lamb) * pred + state.lamb * sig
    return (loss, pred, sig), (mu, count, z, residual)


def _finish(state: _State, parts: Any) -> LeJEPALoss:
    xp, out_dtype = state.xp, state.out_dtype
    parts = [poison(xp, part, *state.checks) for part in parts]
    return LeJEPALoss(*(p if p.dtype == out_dtype else xp.astype(p, out_dtype) for p in parts))


def lejepa_loss_vjp(
    global_views: Any,
    local_views: Any = None,
    /,
    *,
    lamb: float = 0.05,
    num_slices: int = 1024,
    seed: int = 0,
    step: int = 0,
    directions: Any = None,
    prediction: str = "center",
    t_max: float = 3.0,
    n_points: int = 17,
    collective: Any = None,
    backend: Any = None,
) -> tuple[LeJEPALoss, Callable[[Any], tuple[Any, Any]]]:
    """:func:`lejepa_loss` and the analytic gradient of its total with respect to the views.

    For frameworks without autodiff (numpy, cupy). The SIGReg part uses the pullback of
    :func:`sigreg.sliced_epps_pulley_vjp`; nothing of size ``N * M * n_points`` is built.

    Parameters
    ----------
    global_views, local_views, lamb, num_slices, seed, step, directions, prediction
        As in :func:`lejepa_loss`.
    t_max, n_points, collective, backend
        As in :func:`lejepa_loss`. With a collective the pullback returns the gradient of
        the global loss with respect to this rank's views.

    Returns
    -------
    parts : LeJEPALoss
        Same as ``lejepa_loss(...)``.
    pullback : callable
        ``pullback(cotangent)`` returns ``(grad_global_views, grad_local_views)``, the
        gradient of ``cotangent * loss`` (``grad_local_views`` is ``None`` without local
        views).

    Examples
    --------
    >>> import numpy as np
    >>> from sigreg import lejepa_loss_vjp
    >>> rng = np.random.default_rng(0)
    >>> g, loc = rng.standard_normal((2, 64, 8)), rng.standard_normal((3, 64, 8))
    >>> parts, pullback = lejepa_loss_vjp(g, loc, num_slices=32)
    >>> grad_g, grad_loc = pullback(1.0)
    >>> grad_g.shape, grad_loc.shape
    ((2, 64, 8), (3, 64, 8))
    """
    state = _setup(
        global_views,
        local_views,
        lamb,
        num_slices,
        seed,
        step,
        directions,
        prediction,
        t_max,
        n_points,
        collective,
        backend,
    )
    parts, (mu, count, z, residual) = _forward(state, collective)
    xp, views, n_global, lamb_ = state.xp, state.views, state.n_global, state.lamb

    def pullback(cotangent: Any) -> tuple[Any, Any]:
        n_views, n, dim = views.shape
        c = as_cotangent(xp, cotangent, views)
        # prediction, "center": mean_{v,n,d} (mu - z_v)^2 with mu = mean of the global views
        w_pred = c * (1.0 - lamb_) * 2.0 / (n_views * count * dim)
        diff = views - mu
        grad = w_pred * diff
        correction = -xp.sum(grad, axis=0) / n_global  # through mu, onto the global views
        if state.prediction == "pairwise":
            # + mean_{g,n,d} (z_g - mu)^2: its gradient through mu vanishes (sum_g (z_g - mu) = 0)
            spread = c * (1.0 - lamb_) * 2.0 / (n_global * count * dim) * diff[:n_global, ...]
            correction = correction + spread
        per_slice = z.shape[:-1]  # (V, M): sig is the mean of these statistics
        grad_sig = xp.full(
            per_slice, lamb_ / math.prod(per_slice), dtype=views.dtype, device=device_of(views)
        )
        grad_sig = grad_sig * c
        grad_z = _statistic.pullback(xp, z, state.rule, residual, grad_sig)
        grad = grad + xp.matrix_transpose(grad_z) @ xp.matrix_transpose(state.directions)
        grad_g = grad[:n_global, ...] + correction
        grad_g = poison(xp, grad_g, *state.checks)
        out = state.out_dtype
        grad_g = grad_g if grad_g.dtype == out else xp.astype(grad_g, out)
        if n_global == n_views:
            return grad_g, None
        grad_l = poison(xp, grad[n_global:, ...], *state.checks)
        return grad_g, (grad_l if grad_l.dtype == out else xp.astype(grad_l, out))

    return _finish(state, parts), pullback
