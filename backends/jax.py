"""JAX adapter: ``jax.custom_vjp`` SIGReg and LeJEPA loss, in-graph directions, ``lax.psum``.

Everything here is a pure function that works eagerly, under ``jax.jit``, ``jax.grad``,
``jax.pmap`` and ``jax.shard_map``.

Gradients
    :func:`sliced_epps_pulley` (and :func:`sigreg`, :func:`lejepa_loss`, which call it) is a
    ``jax.custom_vjp`` whose backward pass is the core's analytic pullback
    (:mod:`sigreg.engine`), evaluated by :mod:`backends._jax_kernels` with ``engine=``
    ``"cache_fused"`` (CPU: cache-sized blocks under ``lax.map``, vectorised sines and
    cosines), ``"few_kernels"`` (GPU/TPU: memory-bounded chunks, native trigonometry) or
    ``"auto"`` (by the device, or JAX's default backend under ``jit``). Without a collective
    the forward pass computes each slice's gradient in the same pass and saves it (``N x M``
    numbers, the size of the projections) with the inputs; with a collective it saves the
    per-slice means ``C``, ``S`` and the count, and the backward pass makes a second pass.
    No ``(N, M, n_points)`` array is saved. The directions are treated as constants (zero
    cotangent), as in :func:`sigreg.sliced_epps_pulley_vjp`.

Directions
    Either pass ``directions=`` (shape ``(K, M)``, unit columns), or let the function draw
    them from ``(seed, step)`` where ``step`` (and ``seed``) may be traced integers, so one
    compiled training step serves every step:

    * ``sampler="jax"`` (default): ``jax.random.normal`` with the key
      ``fold_in(key(seed), step)`` (or ``fold_in(key, step)`` for a given ``key``), drawn on
      the device without a host round trip. The numbers are NOT those of
      :func:`sigreg.sample_directions`.
    * ``sampler="numpy"``: exactly :func:`sigreg.sample_directions` (numpy PCG64 seeded with
      ``SeedSequence([seed, step])``), the cross-backend reproducible path: torch, numpy and
      JAX runs see the same directions for the same ``(seed, step)``. Under a trace it runs
      on the host through ``jax.pure_callback`` (one ``K x M`` host-to-device copy per step).

Data parallelism
    :class:`JaxAxisCollective` sums the per-device characteristic-function sums with
    ``lax.psum`` over a named axis, so the statistic is that of the global batch. Inside the
    ``custom_vjp`` the psum is invisible to JAX's autodiff, so the backward pass applies
    the transpose of ``lax.psum`` to the cotangent itself (obtained from ``jax.vjp`` of
    ``lax.psum``), which reproduces differentiating through the psum in every mode:

    * ``jax.pmap`` and ``jax.shard_map(..., check_vma=False)``: the transpose of psum is a
      psum, so each device's gradient with respect to its local inputs is ``world_size``
      times its share of the full-batch gradient, and ``lax.pmean`` of the per-device
      parameter gradients equals the single-device gradient on the concatenated batch.
    * ``jax.shard_map`` with the default ``check_vma=True``: the loss is device-invariant,
      the transpose of psum is a cast to device-varying (no sum), and JAX itself sums the
      gradients of replicated parameters across devices. They come back equal to the
      single-device gradient: do NOT ``pmean``/``psum`` them again.
"""

from __future__ import annotations

import numbers
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from backends import _jax_kernels as _kernels
from sigreg import engine as _engine
from sigreg._namespace import as_float_array, is_traced
from sigreg._validation import (
    INTEGRATIONS,
    REDUCTIONS,
    check_choice,
    check_finite,
    check_int,
    check_unit_columns,
)
from sigreg.collective import reduce_sums
from sigreg.directions import sample_directions
from sigreg.lejepa import PREDICTIONS, LeJEPAParts
from sigreg.loss_statistics import check_statistic
from sigreg.loss_statistics import forward as statistic_forward
from sigreg.quadrature import null_expectation

__all__ = [
    "JaxAxisCollective",
    "lejepa_loss",
    "pcg64_directions",
    "random_directions",
    "sigreg",
    "sliced_epps_pulley",
]

SAMPLERS = ("jax", "numpy")


# --------------------------------------------------------------------------- collective
@dataclass(frozen=True)
class JaxAxisCollective:
    """Cross-device sum over a named mapped axis, for use inside ``pmap`` or ``shard_map``.

    Parameters
    ----------
    axis_name : hashable or tuple of hashables
        The axis name(s) of the enclosing ``jax.pmap(..., axis_name=...)`` or of the mesh
        axes that ``jax.shard_map`` maps the batch over.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from backends.jax import JaxAxisCollective
    >>> coll = JaxAxisCollective("batch")
    >>> out = jax.pmap(coll.all_reduce_sum, axis_name="batch")(jnp.ones((1, 3)))
    >>> out.tolist()
    [[1.0, 1.0, 1.0]]
    """

    axis_name: Hashable

    def __post_init__(self) -> None:
        if self.axis_name is None or self.axis_name == ():
            raise ValueError(f"axis_name must name a mapped axis, got {self.axis_name!r}")

    def all_reduce_sum(self, x: Any) -> Any:
        """Return ``lax.psum(x, axis_name)``: the sum of ``x`` over the devices of the axis.

        Parameters
        ----------
        x : jax.Array
            Per-device array.

        Returns
        -------
        jax.Array
            The sum, identical on every device.
        """
        return lax.psum(x, self.axis_name)

    def all_gather(self, x: Any) -> Any:
        """Return every device's ``x`` stacked in axis order.

        For ``statistic=`` choices that need the global sorted sample (see
        :func:`lejepa_loss`). It is the psum of ``x`` placed in this device's slot of a
        zero ``(axis_size, *x.shape)`` array (``axis_size`` times the data of
        ``lax.all_gather``), so JAX types and differentiates it exactly like
        :meth:`all_reduce_sum` in every mode (``lax.all_gather`` gives a device-varying
        result that ``shard_map(check_vma=True)`` refuses as a replicated loss).

        Parameters
        ----------
        x : jax.Array
            Per-device array (the same shape on every device).

        Returns
        -------
        jax.Array
            Shape ``(axis_size, *x.shape)``, identical on every device.
        """
        size, index = lax.axis_size(self.axis_name), lax.axis_index(self.axis_name)
        slot = (jnp.arange(size) == index).astype(x.dtype)
        return lax.psum(slot.reshape((size,) + (1,) * x.ndim) * x[None], self.axis_name)

    def all_reduce_sum_transpose(self, cotangent: Any, *like: Any) -> Any:
        """Apply the transpose of :meth:`all_reduce_sum` to a cotangent of its output.

        The transpose depends on how JAX types the enclosing map: a psum under ``pmap`` and
        ``shard_map(check_vma=False)``, a cast to device-varying values under
        ``shard_map(check_vma=True)``. It is obtained from ``jax.vjp`` of the psum applied
        to a zero array typed like the psum's local input, so it is JAX's own rule.

        Parameters
        ----------
        cotangent : jax.Array
            Cotangent of the reduced (global) value.
        *like : jax.Array
            Arrays from which the psum's local input was computed; only their device
            variance (not their values) is used.

        Returns
        -------
        jax.Array
            Cotangent of the local input, shape of ``cotangent``.
        """
        probe = jnp.zeros(cotangent.shape, cotangent.dtype)
        for array in like:
            # a zero-size slice sums to 0.0 and carries the device variance of ``array``
            empty = array[(slice(0, 0),) * array.ndim]
            probe = probe + jnp.sum(empty).astype(cotangent.dtype)
        _, pull = jax.vjp(self.all_reduce_sum, probe)
        return pull(cotangent)[0]


def _check_jax_collective(collective: Any) -> Any:
    if collective is not None and not callable(
        getattr(collective, "all_reduce_sum_transpose", None)
    ):
        raise TypeError(
            "collective must be a JaxAxisCollective (or provide all_reduce_sum and "
            f"all_reduce_sum_transpose), got {type(collective).__name__}"
        )
    return collective


# --------------------------------------------------------------------------- directions
def _default_dtype(dtype: Any) -> Any:
    return jnp.result_type(float) if dtype is None else jnp.dtype(dtype)


def _check_index(value: Any, name: str) -> Any:
    """A seed or step: a non-negative Python integer or an integer JAX array (maybe traced)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return check_int(value, name, minimum=0)
    dtype = getattr(value, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.integer) or jnp.ndim(value) != 0:
        raise TypeError(f"{name} must be an integer or a 0-d integer array, got {value!r}")
    return value


def random_directions(
    dim: int,
    num_slices: int,
    /,
    *,
    key: Any = None,
    seed: Any = None,
    step: Any = 0,
    dtype: Any = None,
) -> Any:
    """Random unit directions drawn with ``jax.random`` from ``fold_in(key, step)``.

    Usable inside ``jax.jit`` with a traced ``step`` (and ``seed``), so one compiled
    function serves every step; every device of a data-parallel job that passes the same
    ``(seed, step)`` gets the same directions. The Gaussian draws are made in float32 and
    normalised in ``dtype``, so float32 and float64 runs see the same directions up to
    rounding. These numbers differ from :func:`sigreg.sample_directions` (numpy PCG64), the
    cross-backend reproducible path (see :func:`pcg64_directions`).

    Parameters
    ----------
    dim : int
        Embedding dimension (rows), at least 1.
    num_slices : int
        Number of directions (columns), at least 1.
    key : jax.random key, optional
        Base key (``jax.random.key`` or legacy ``PRNGKey``). Mutually exclusive with
        ``seed``.
    seed : int or integer array, optional
        Seed of the base key ``jax.random.key(seed)`` when ``key`` is not given; default 0.
    step : int or integer array, default 0
        Step counter folded into the key (may be traced).
    dtype : dtype, optional
        Floating dtype of the result; default: JAX's default float.

    Returns
    -------
    jax.Array, shape (dim, num_slices)
        Unit-norm columns (a zero draw, probability zero, becomes the first basis vector).

    Raises
    ------
    ValueError
        ``dim`` or ``num_slices`` < 1, a negative Python ``seed``/``step``, or both ``key``
        and ``seed`` given.
    TypeError
        Non-integer ``seed``/``step``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from backends.jax import random_directions
    >>> draw = jax.jit(lambda step: random_directions(8, 4, seed=0, step=step))
    >>> a = draw(3)
    >>> a.shape
    (8, 4)
    >>> bool(jnp.allclose(jnp.linalg.norm(a, axis=0), 1.0))
    True
    """
    dim = check_int(dim, "dim", minimum=1)
    num_slices = check_int(num_slices, "num_slices", minimum=1)
    dtype = _default_dtype(dtype)
    step = _check_index(step, "step")
    if key is None:
        base = jax.random.key(_check_index(0 if seed is None else seed, "seed"))
    elif seed is not None:
        raise ValueError("pass either key or seed, not both")
    else:
        base = key
    draw = jax.random.normal(jax.random.fold_in(base, step), (num_slices, dim), jnp.float32)
    draw = draw.astype(dtype)
    norms = jnp.sqrt(jnp.sum(draw * draw, axis=1, keepdims=True))
    zero = norms == 0.0
    first = (jnp.arange(dim) == 0).astype(dtype)
    draw = jnp.where(zero, first, draw)
    norms = jnp.where(zero, jnp.ones((), dtype), norms)
    return jnp.matrix_transpose(draw / norms)


def pcg64_directions(
    dim: int, num_slices: int, /, *, seed: Any = 0, step: Any = 0, dtype: Any = None
) -> Any:
    """:func:`sigreg.sample_directions` as a JAX array, also for traced ``seed``/``step``.

    With Python integers this calls :func:`sigreg.sample_directions` directly; with traced
    integers (inside ``jax.jit``, ``pmap``, ``shard_map``) it calls it on the host through
    ``jax.pure_callback`` (one ``dim x num_slices`` host-to-device copy per call). The
    directions are those of every other backend for the same ``(seed, step)``.

    Parameters
    ----------
    dim : int
        Embedding dimension (rows), at least 1.
    num_slices : int
        Number of directions (columns), at least 1.
    seed : int or integer array, default 0
        Non-negative seed.
    step : int or integer array, default 0
        Non-negative step counter (may be traced).
    dtype : dtype, optional
        Floating dtype of the result; default: JAX's default float.

    Returns
    -------
    jax.Array, shape (dim, num_slices)
        Unit-norm columns, equal to ``sigreg.sample_directions(dim, num_slices, seed=seed,
        step=step, backend="jax", dtype=dtype)``.

    Raises
    ------
    ValueError
        ``dim`` or ``num_slices`` < 1 or a negative Python ``seed``/``step``. A negative
        traced value raises inside the callback at run time.
    TypeError
        Non-integer ``seed``/``step``.

    Examples
    --------
    >>> import jax, numpy as np, sigreg
    >>> from backends.jax import pcg64_directions
    >>> a = jax.jit(lambda s: pcg64_directions(8, 4, seed=1, step=s))(5)
    >>> b = sigreg.sample_directions(8, 4, seed=1, step=5, backend="jax")
    >>> bool(np.array_equal(np.asarray(a), np.asarray(b)))
    True
    """
    dim = check_int(dim, "dim", minimum=1)
    num_slices = check_int(num_slices, "num_slices", minimum=1)
    dtype = _default_dtype(dtype)
    seed, step = _check_index(seed, "seed"), _check_index(step, "step")
    np_dtype = np.dtype(dtype)

    def host(seed_value: Any, step_value: Any) -> np.ndarray:
        out = sample_directions(
            dim, num_slices, seed=int(seed_value), step=int(step_value), backend="numpy"
        )
        return np.asarray(out, dtype=np_dtype)

    if isinstance(seed, int) and isinstance(step, int):
        return jnp.asarray(host(seed, step))
    shape = jax.ShapeDtypeStruct((dim, num_slices), dtype)
    return jax.pure_callback(host, shape, seed, step, vmap_method="sequential")


def _resolve_directions(
    dim, dtype, directions, key, seed, step, num_slices, sampler
) -> tuple[Any, list[Any]]:
    """The directions to use and the deferred checks on user-given ones."""
    sampler = check_choice(sampler, "sampler", SAMPLERS)
    if directions is not None:
        if key is not None or seed is not None:
            raise ValueError("pass either directions or key/seed, not both")
        directions = jnp.asarray(directions)
        if directions.ndim != 2 or directions.shape[0] != dim:
            raise ValueError(
                f"directions must have shape ({dim}, M), got {tuple(directions.shape)}"
            )
        directions, given_dtype = as_float_array(directions, "directions", jnp)
        directions = directions.astype(dtype)
        checks = [
            check_finite(jnp, directions, "directions"),
            check_unit_columns(jnp, directions, "directions", given_dtype),
        ]
        return lax.stop_gradient(directions), checks
    num_slices = check_int(num_slices, "num_slices", minimum=1)
    if sampler == "numpy":
        if key is not None:
            raise ValueError("sampler='numpy' draws from (seed, step); key is not supported")
        drawn = pcg64_directions(
            dim, num_slices, seed=0 if seed is None else seed, step=step, dtype=dtype
        )
    else:
        drawn = random_directions(dim, num_slices, key=key, seed=seed, step=step, dtype=dtype)
    return lax.stop_gradient(drawn), []


# --------------------------------------------------------------------------- custom_vjp
def _knot_statistic(rule: Any, collective: Any, engine: str) -> tuple[Any, Any]:
    """``forward(x, directions, with_gradient)`` and ``gradient(saved, g)`` of the trapezoid rule.

    Phases ``theta = x @ (step * directions)``; the knot sums come from
    :func:`backends._jax_kernels.knot_pass`. Without a collective, ``with_gradient`` also
    returns every slice's gradient with respect to ``theta`` (cotangent 1), computed in the
    same pass; with a collective the gradient is a second pass with the cotangents.
    """
    n_knots = rule.weights.shape[0]

    def constants(like):
        return (jnp.asarray(rule.weights, like.dtype), jnp.asarray(rule.phi, like.dtype))

    def coefficients(grad_cos, grad_sin):
        k = jnp.arange(1, n_knots + 1, dtype=grad_cos.dtype)
        return jnp.concatenate([k * grad_sin, -k * grad_cos], axis=-1)

    def forward(x, directions, with_gradient):
        scaled = directions * rule.step
        theta = _engine.project(jnp, x, scaled)  # (..., M, N)
        lead, n = theta.shape[:-1], theta.shape[-1]
        weights, phi = constants(x)
        unit = None
        if with_gradient and collective is None:

            def unit(sums):
                c, s = sums[:, :n_knots] / n, sums[:, n_knots:] / n
                one = jnp.ones(c.shape[:-1], c.dtype)
                grads = _engine.sums_cotangent(jnp, c, s, n, weights, phi, one, debias=rule.debias)
                return coefficients(*grads)

        sums, grad = _kernels.knot_pass(theta.reshape(-1, n), n_knots, engine, unit)
        cos_sums = sums[:, :n_knots].reshape(lead + (n_knots,))
        sin_sums = sums[:, n_knots:].reshape(lead + (n_knots,))
        count: Any = float(n)
        if collective is not None:
            (cos_sums, sin_sums), total = reduce_sums(collective, jnp, [cos_sums, sin_sums], n)
            count = jnp.reshape(total, (-1,))[0]
        values, c, s = _engine.statistic_from_sums(
            jnp, cos_sums, sin_sums, count, weights, phi, debias=rule.debias
        )
        if grad is not None:  # all the backward pass needs
            return values, (grad.reshape(theta.shape),)
        return values, (c, s, count)

    def gradient(x, directions, residual, g):
        scaled = directions * rule.step
        if len(residual) == 3:  # second pass, with the cotangents
            c, s, count = residual
            weights, phi = constants(x)
            grad_cos, grad_sin = _engine.sums_cotangent(
                jnp, c, s, count, weights, phi, g, debias=rule.debias
            )
            coef = coefficients(grad_cos, grad_sin).reshape(-1, 2 * n_knots)
            theta = _engine.project(jnp, x, scaled)
            _, grad_rows = _kernels.knot_pass(
                theta.reshape(-1, theta.shape[-1]), n_knots, engine, coef
            )
            grad_theta = grad_rows.reshape(theta.shape)
        else:
            grad_theta = g[..., None] * residual[0]
        return jnp.matrix_transpose(grad_theta) @ jnp.matrix_transpose(scaled)

    return forward, gradient


def _exact_statistic(rule: Any) -> tuple[Any, Any]:
    """``forward``/``gradient`` of the closed-form statistic, through the core's engine."""

    def forward(x, directions, with_gradient):
        values, _ = _engine.forward(jnp, _engine.project(jnp, x, directions), rule)
        return values, None

    def gradient(x, directions, residual, g):
        z = _engine.project(jnp, x, directions)
        grad_z = _engine.pullback(jnp, z, rule, None, g)
        return jnp.matrix_transpose(grad_z) @ jnp.matrix_transpose(directions)

    return forward, gradient


def _sliced_statistic(rule: Any, reduction: str, collective: Any, engine: str) -> Any:
    """The per-slice statistic of ``(x, directions)`` as a ``jax.custom_vjp`` function."""
    if rule.integration == "exact":
        forward, gradient = _exact_statistic(rule)
    else:
        forward, gradient = _knot_statistic(rule, collective, engine)

    @jax.custom_vjp
    def statistic(x, directions):
        return _engine.reduce_slices(jnp, forward(x, directions, False)[0], reduction)

    def statistic_fwd(x, directions):
        values, residual = forward(x, directions, True)
        return _engine.reduce_slices(jnp, values, reduction), (x, directions, residual)

    def statistic_bwd(saved, cotangent):
        x, directions, residual = saved
        if collective is not None:
            # the psum inside the forward pass, transposed the way JAX would transpose it
            cotangent = collective.all_reduce_sum_transpose(cotangent, x, directions)
        num_slices = directions.shape[1]
        g = cotangent
        if reduction != "none":
            g = jnp.broadcast_to(g[..., None], x.shape[:-2] + (num_slices,))
            if reduction == "mean":
                g = g / num_slices
        return gradient(x, directions, residual, g).astype(x.dtype), None

    statistic.defvjp(statistic_fwd, statistic_bwd)
    return statistic


def _as_float(x: Any, name: str) -> tuple[Any, Any]:
    x = jnp.asarray(x)
    return as_float_array(x, name, jnp)


def _eager_finite_check(x: Any, name: str) -> None:
    """Raise on non-finite eager input; under a trace NaN propagates on its own.

    Non-finite samples make ``cos``/``sin`` (and the prediction term) NaN, and with a
    collective the NaN spreads to every device through the psum, so no explicit
    device-varying flag is mixed into the (device-invariant) loss.
    """
    if not is_traced(x):
        check_finite(jnp, x, name)


def _poison(value: Any, checks: list[Any]) -> Any:
    """Multiply by NaN where a deferred check failed: value AND gradient become NaN."""
    deferred = [ok for ok in checks if ok is not None]
    if not deferred:
        return value
    ok = deferred[0]
    for more in deferred[1:]:
        ok = jnp.logical_and(ok, more)
    return value * jnp.where(ok, jnp.ones((), value.dtype), jnp.nan)


def _make_rule(t_max, n_points, integration, debias, collective, n_samples):
    rule = _engine.make_rule(
        t_max=t_max,
        n_points=n_points,
        integration=integration,
        debias=debias,
        collective=collective,
    )
    if n_samples < 1:
        raise ValueError("x has an empty sample axis")
    if rule.debias and collective is None and n_samples < 2:
        raise ValueError("x needs at least 2 samples along the sample axis when debias=True")
    return rule


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
    engine: str = "auto",
) -> Any:
    """:func:`sigreg.sliced_epps_pulley` for JAX with an analytic ``custom_vjp`` gradient.

    Same value as the core function; ``jax.grad`` runs the core's analytic pullback, which
    stores only ``x``, ``directions``, ``C``, ``S`` and the count. The directions are
    treated as constants.

    Parameters
    ----------
    x : array, shape (..., N, K)
        Embeddings (converted with ``jnp.asarray``; integers promoted, half precision
        computed in float32 and cast back).
    directions : array, shape (K, M)
        Unit-norm columns (cast to ``x``'s compute dtype).
    reduction : {"mean", "sum", "none"}, default "mean"
        How to combine the ``M`` per-slice statistics.
    t_max : float, default 3.0
        Largest quadrature knot.
    n_points : int, default 17
        Number of knots on ``[0, t_max]``.
    integration : {"trapezoid", "exact"}, default "trapezoid"
        Quadrature or closed-form statistic (the latter without a collective).
    debias : bool, default False
        U-statistic variant.
    collective : JaxAxisCollective, optional
        Sum the per-device sufficient statistics over a mapped axis; the value is then the
        statistic of the global batch, and gradients follow ``lax.psum`` semantics (see the
        module docstring).
    engine : {"auto", "cache_fused", "few_kernels"}, default "auto"
        Evaluation strategy (see the module docstring); same values up to rounding.

    Returns
    -------
    jax.Array
        Shape ``x.shape[:-2]`` (``"mean"``, ``"sum"``) or ``x.shape[:-2] + (M,)``
        (``"none"``), dtype of ``x``.

    Raises
    ------
    ValueError
        Wrong shapes, bad options; eagerly also non-finite input or non-unit directions
        (under a trace these give NaN values and gradients instead).
    TypeError
        Complex input, or a collective that is not a :class:`JaxAxisCollective`.

    Examples
    --------
    >>> import jax, numpy as np, sigreg
    >>> from backends.jax import sliced_epps_pulley
    >>> x = np.random.default_rng(0).standard_normal((256, 8))
    >>> a = sigreg.sample_directions(8, 16, seed=0, backend="jax")
    >>> grad = jax.jit(jax.grad(lambda x: sliced_epps_pulley(x, a)))(x)
    >>> grad.shape
    (256, 8)
    """
    x, out_dtype = _as_float(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (..., N, K), got {x.ndim} dimension(s)")
    directions = jnp.asarray(directions)
    if directions.ndim != 2:
        raise ValueError(f"directions must have shape (K, M), got {directions.ndim} dimension(s)")
    directions, checks = _resolve_directions(
        x.shape[-1], x.dtype, directions, None, None, 0, None, "jax"
    )
    reduction = check_choice(reduction, "reduction", REDUCTIONS)
    check_choice(integration, "integration", INTEGRATIONS)
    collective = _check_jax_collective(collective)
    rule = _make_rule(t_max, n_points, integration, debias, collective, x.shape[-2])
    _eager_finite_check(x, "x")
    engine = _engine.resolve_engine(engine, x)
    value = _sliced_statistic(rule, reduction, collective, engine)(x, directions)
    return _poison(value, checks).astype(out_dtype)


def sigreg(
    x: Any,
    /,
    *,
    num_slices: int = 1024,
    directions: Any = None,
    key: Any = None,
    seed: Any = None,
    step: Any = 0,
    sampler: str = "jax",
    t_max: float = 3.0,
    n_points: int = 17,
    integration: str = "trapezoid",
    debias: bool = False,
    collective: Any = None,
    engine: str = "auto",
) -> Any:
    """SIGReg for JAX: mean Epps-Pulley statistic over random directions, ``custom_vjp``.

    Parameters
    ----------
    x : array, shape (..., N, K)
        Embeddings.
    num_slices : int, default 1024
        Number of directions to draw (ignored when ``directions`` is given).
    directions : array, shape (K, M), optional
        Unit-norm directions to use instead of drawing them.
    key : jax.random key, optional
        Base key for ``sampler="jax"`` (instead of ``seed``).
    seed : int or integer array, optional
        Seed of the directions; default 0.
    step : int or integer array, default 0
        Step counter (may be traced: one compiled function serves every step).
    sampler : {"jax", "numpy"}, default "jax"
        ``"jax"``: :func:`random_directions` (``jax.random``, on device; numbers differ from
        the core's). ``"numpy"``: :func:`pcg64_directions`, the same directions as
        :func:`sigreg.sigreg` and every other backend.
    t_max, n_points, integration, debias, collective, engine
        As in :func:`sliced_epps_pulley`.

    Returns
    -------
    jax.Array
        Shape ``x.shape[:-2]``, dtype of ``x``. With ``sampler="numpy"`` it equals
        ``sigreg.sigreg(x, num_slices=..., seed=..., step=...)``.

    Raises
    ------
    ValueError
        As :func:`sliced_epps_pulley`; both ``directions`` and ``key``/``seed``; ``key``
        with ``sampler="numpy"``.
    TypeError
        As :func:`sliced_epps_pulley`.

    Examples
    --------
    >>> import jax, numpy as np
    >>> from backends.jax import sigreg
    >>> x = np.random.default_rng(0).standard_normal((512, 16))
    >>> loss = jax.jit(lambda x, step: sigreg(x, num_slices=64, seed=0, step=step))
    >>> float(loss(x, 0)) < 2.0
    True
    """
    x, out_dtype = _as_float(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x must have shape (..., N, K), got {x.ndim} dimension(s)")
    directions, checks = _resolve_directions(
        x.shape[-1], x.dtype, directions, key, seed, step, num_slices, sampler
    )
    check_choice(integration, "integration", INTEGRATIONS)
    collective = _check_jax_collective(collective)
    rule = _make_rule(t_max, n_points, integration, debias, collective, x.shape[-2])
    _eager_finite_check(x, "x")
    engine = _engine.resolve_engine(engine, x)
    value = _sliced_statistic(rule, "mean", collective, engine)(x, directions)
    return _poison(value, checks).astype(out_dtype)


def lejepa_loss(
    global_views: Any,
    local_views: Any = None,
    /,
    *,
    lamb: float = 0.05,
    num_slices: int = 1024,
    directions: Any = None,
    key: Any = None,
    seed: Any = None,
    step: Any = 0,
    sampler: str = "jax",
    prediction: str = "center",
    t_max: float = 3.0,
    n_points: int = 17,
    collective: Any = None,
    engine: str = "auto",
    statistic: str = "epps_pulley",
) -> LeJEPAParts:
    """:func:`sigreg.lejepa_loss` for JAX, its SIGReg term a ``custom_vjp``.

    The prediction term is plain ``jax.numpy`` (autodiff, and ``lax.psum`` differentiated
    by JAX when a collective is given); the SIGReg term is :func:`sliced_epps_pulley`, or,
    for another ``statistic``, the core's array-API statistic (:mod:`sigreg.loss_statistics`)
    differentiated by JAX (through ``lax.psum`` / ``lax.all_gather``). Given the same
    directions the value equals :func:`sigreg.lejepa_loss`.

    Parameters
    ----------
    global_views : array, shape (V_g, N, D)
        Embeddings of the global views.
    local_views : array, shape (V_l, N, D), optional
        Embeddings of the local views.
    lamb : float, default 0.05
        Weight of SIGReg, in ``[0, 1]``.
    num_slices : int, default 1024
        Number of directions to draw (ignored when ``directions`` is given).
    directions : array, shape (D, M), optional
        Unit-norm directions to use instead of drawing them.
    key, seed, step, sampler
        How to draw the directions, as in :func:`sigreg`.
    prediction : {"center", "pairwise"}, default "center"
        As in :func:`sigreg.lejepa_loss`.
    t_max, n_points : float, int
        Quadrature grid.
    collective : JaxAxisCollective, optional
        Both terms become those of the global batch (see the module docstring for the
        gradient semantics under ``pmap`` and ``shard_map``).
    engine : {"auto", "cache_fused", "few_kernels"}, default "auto"
        Evaluation strategy of the SIGReg term (see :func:`sliced_epps_pulley`); must stay
        ``"auto"`` with another ``statistic``.
    statistic : str, default "epps_pulley"
        Per-slice statistic of the regulariser, normalised to the Epps-Pulley null mean, as
        in :func:`sigreg.lejepa_loss` (the EDF ones gather with
        :meth:`JaxAxisCollective.all_gather`: equal per-device batches).

    Returns
    -------
    sigreg.LeJEPAParts
        ``(loss, prediction, sigreg)``, 0-d arrays of the dtype of ``global_views``.

    Raises
    ------
    ValueError
        Views not 3-D, empty or of mismatched ``(N, D)``; ``lamb`` outside ``[0, 1]``; bad
        options or directions; eagerly also non-finite views.
    TypeError
        Complex input, or a collective that is not a :class:`JaxAxisCollective`.

    Examples
    --------
    >>> import jax, numpy as np, sigreg
    >>> from backends.jax import lejepa_loss
    >>> rng = np.random.default_rng(0)
    >>> g = rng.standard_normal((2, 128, 16))
    >>> loc = g[:1] + 0.1 * rng.standard_normal((1, 128, 16))
    >>> step = jax.jit(lambda g, l, s: lejepa_loss(g, l, num_slices=64, step=s, sampler="numpy"))
    >>> out = step(g, loc, 3)
    >>> bool(abs(out.loss - (0.95 * out.prediction + 0.05 * out.sigreg)) < 1e-6)
    True
    >>> ref = sigreg.lejepa_loss(g, loc, num_slices=64, step=3)  # same PCG64 directions
    >>> bool(abs(float(out.loss) - float(ref.loss)) < 1e-5)
    True
    """
    g, out_dtype = _as_float(global_views, "global_views")
    if g.ndim != 3:
        raise ValueError(f"global_views must have shape (V, N, D), got {g.ndim} dimension(s)")
    if g.shape[0] < 1:
        raise ValueError("global_views must hold at least one view")
    views = g
    if local_views is not None:
        loc, _ = _as_float(local_views, "local_views")
        if loc.ndim != 3:
            raise ValueError(f"local_views must have shape (V, N, D), got {loc.ndim} dimension(s)")
        if loc.shape[1:] != g.shape[1:]:
            raise ValueError(
                f"local_views has (N, D) = {tuple(loc.shape[1:])} but global_views has "
                f"{tuple(g.shape[1:])}"
            )
        views = jnp.concat([g, loc.astype(g.dtype)], axis=0)
    if isinstance(lamb, bool) or not isinstance(lamb, numbers.Real) or not 0.0 <= lamb <= 1.0:
        raise ValueError(f"lamb must be a number in [0, 1], got {lamb!r}")
    prediction = check_choice(prediction, "prediction", PREDICTIONS)
    statistic = check_statistic(statistic, engine)
    collective = _check_jax_collective(collective)
    n_views, n, dim = views.shape
    rule = _make_rule(t_max, n_points, "trapezoid", False, collective, n)
    directions, checks = _resolve_directions(
        dim, g.dtype, directions, key, seed, step, num_slices, sampler
    )
    _eager_finite_check(views, "global_views/local_views")

    mu = jnp.mean(g, axis=0)
    center_sum = jnp.sum((views - mu) ** 2)
    spread_sum = jnp.sum((g - mu) ** 2)
    if collective is None:
        count: Any = float(n)
    else:
        (sums,), total = reduce_sums(collective, jnp, [jnp.stack([center_sum, spread_sum])], n)
        center_sum, spread_sum, count = sums[0], sums[1], total[0]
    pred = center_sum / (n_views * count * dim)
    if prediction == "pairwise":
        pred = pred + spread_sum / (g.shape[0] * count * dim)
    if statistic == "epps_pulley":
        engine = _engine.resolve_engine(engine, views)
        per_view = _sliced_statistic(rule, "mean", collective, engine)(views, directions)
    else:
        z = _engine.project(jnp, views, directions)
        scale = null_expectation(t_max, n_points)
        per_view = statistic_forward(jnp, z, statistic, scale, collective)
    sig = jnp.mean(per_view)
    loss = (1.0 - lamb) * pred + lamb * sig
    return LeJEPAParts(*(_poison(p, checks).astype(out_dtype) for p in (loss, pred, sig)))
