"""The LeJEPA objective: view prediction plus SIGReg on every view."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

from sigreg import engine as _engine
from sigreg import loss_statistics as _statistics
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
from sigreg.quadrature import null_expectation

PREDICTIONS = ("center", "pairwise")


class LeJEPAParts(NamedTuple):
    """The LeJEPA loss and its two parts (0-d arrays)."""

    loss: Any
    """``(1 - lamb) * prediction + lamb * sigreg``."""
    prediction: Any
    """The view-prediction (invariance) term."""
    sigreg: Any
    """SIGReg averaged over all views."""


def __getattr__(name: str) -> Any:
    if name == "LeJEPALoss":
        warnings.warn(
            "sigreg.LeJEPALoss was renamed LeJEPAParts (the name LeJEPALoss is the torch "
            "module backends.torch.LeJEPALoss); the old name will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return LeJEPAParts
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    engine: str = "auto",
    statistic: str = "epps_pulley",
) -> LeJEPAParts:
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
    engine : {"auto", "cache_fused", "few_kernels"}, default "auto"
        Evaluation strategy of SIGReg (see :func:`sigreg.sliced_epps_pulley`); with another
        ``statistic`` it must stay ``"auto"``.
    statistic : str, default "epps_pulley"
        The per-slice statistic of the regulariser: ``"epps_pulley"`` (SIGReg),
        ``"cramer_von_mises"``, ``"anderson_darling"``, ``"watson"``,
        ``"extended_jarque_bera"`` or ``"mean_variance"``, on the same directions. Any
        statistic ``T`` other than Epps-Pulley is normalised to
        ``T * null_expectation(t_max, n_points) / E_0[T; N]`` (its exact null mean at the
        global batch size ``N``: 1/6, 1, 1/12, ``2 - 1/(2N)``, ~4; see
        :mod:`sigreg.loss_statistics` and docs/statistics.md), so ``lamb`` weighs the same
        null level (1.052464 on the official grid) for every choice. The EDF statistics
        need ``collective.all_gather`` (equal per-rank batches).

    Returns
    -------
    LeJEPAParts
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
        engine,
        statistic,
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
    statistic: str
    scale: float


def _directions(xp, g, directions, num_slices, seed, step, convert, checks):
    """The slicing directions (given, checked, or drawn from ``seed`` and ``step``) in the
    dtype and device of ``g``; a unit-norm check of given ones is appended to ``checks``."""
    dim = g.shape[2]
    if directions is None:
        num_slices = check_int(num_slices, "num_slices", minimum=1)
        return sample_directions(
            dim,
            num_slices,
            seed=seed,
            step=step,
            backend=xp,
            dtype=g.dtype,
            device=device_of(g),
        )
    directions, given_dtype = prepare_array(directions, "directions", xp, convert_input=convert)
    if directions.ndim != 2 or directions.shape[0] != dim:
        raise ValueError(f"directions must have shape ({dim}, M), got {directions.shape}")
    directions = xp.astype(directions, g.dtype)
    check_finite(xp, directions, "directions")
    checks.append(check_unit_columns(xp, directions, "directions", given_dtype))
    return directions


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
    engine,
    statistic,
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
    statistic = _statistics.check_statistic(statistic, engine)
    if statistic != "epps_pulley" and collective is None and g.shape[1] < 2:
        raise ValueError(f"statistic={statistic!r} needs at least 2 samples per view")
    rule = _engine.make_rule(
        t_max=t_max,
        n_points=n_points,
        integration="trapezoid",
        debias=False,
        collective=collective,
        engine=engine,
    )
    directions = _directions(xp, g, directions, num_slices, seed, step, convert, checks)
    scale = null_expectation(t_max, n_points)
    return _State(
        xp,
        views,
        g.shape[0],
        directions,
        rule,
        checks,
        out_dtype,
        float(lamb),
        prediction,
        statistic,
        scale,
    )


def _forward(
    state: _State, collective: Any, *, with_gradient: bool = False
) -> tuple[tuple[Any, Any, Any], Any]:
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
    z = _engine.project(xp, views, state.directions)
    if state.statistic == "epps_pulley":
        per_view, residual = _engine.forward(
            xp, z, state.rule, collective, with_gradient=with_gradient
        )
    elif with_gradient:
        per_view, residual = _statistics.forward_vjp(
            xp, z, state.statistic, state.scale, collective
        )
    else:
        per_view = _statistics.forward(xp, z, state.statistic, state.scale, collective)
        residual = None
    sig = xp.mean(per_view)
    loss = (1.0 - state.lamb) * pred + state.lamb * sig
    return (loss, pred, sig), (mu, count, z, residual)


def _finish(state: _State, parts: Any) -> LeJEPAParts:
    xp, out_dtype = state.xp, state.out_dtype
    parts = [poison(xp, part, *state.checks) for part in parts]
    return LeJEPAParts(*(p if p.dtype == out_dtype else xp.astype(p, out_dtype) for p in parts))


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
    engine: str = "auto",
    statistic: str = "epps_pulley",
) -> tuple[LeJEPAParts, Callable[[Any], tuple[Any, Any]]]:
    """:func:`lejepa_loss` and the analytic gradient of its total with respect to the views.

    For frameworks without autodiff (numpy, cupy). The SIGReg part uses the pullback of
    :func:`sigreg.sliced_epps_pulley_vjp`; nothing of size ``N * M * n_points`` is built.

    Parameters
    ----------
    global_views, local_views, lamb, num_slices, seed, step, directions, prediction
        As in :func:`lejepa_loss`.
    t_max, n_points, collective, backend, engine, statistic
        As in :func:`lejepa_loss`. With a collective the pullback returns the gradient of
        the global loss with respect to this rank's views (for an EDF ``statistic`` the
        collective also needs an integer ``rank``).

    Returns
    -------
    parts : LeJEPAParts
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
        engine,
        statistic,
    )
    parts, (mu, count, z, residual) = _forward(state, collective, with_gradient=True)
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
        if state.statistic == "epps_pulley":
            grad_z = _engine.pullback(xp, z, state.rule, residual, grad_sig)
        else:
            grad_z = residual(grad_sig)  # the statistic's own pullback
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
