"""The cross-rank reduction hook used for data-parallel training.

A statistic computed on a data-parallel batch must see the *global* batch. Every public
function that takes ``collective=`` sums its per-rank sufficient statistics (the
characteristic-function sums over the local samples, and the local sample count) with
``collective.all_reduce_sum`` and normalises by the reduced count, so ranks may hold
unequal numbers of samples and ``N`` in the statistic is the global batch size. Only
``2 * n_knots * num_slices + 1`` numbers per view cross the network.

The EDF statistics of :func:`sigreg.lejepa_loss` (``statistic="cramer_von_mises"`` and
the like) need each slice's global sorted sample instead: they call the optional method
``collective.all_gather`` (equal per-rank batches), and their explicit pullbacks read the
collective's ``rank`` to pick this rank's rows of the global gradient.

Adapters for ``torch.distributed``, JAX ``lax.psum`` and NCCL live in ``backends/``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from sigreg._namespace import device_of


@runtime_checkable
class Collective(Protocol):
    """Anything with an ``all_reduce_sum`` method.

    ``all_reduce_sum(x)`` returns a NEW array holding the element-wise sum of ``x`` over all
    ranks (every rank gets the result). Its return value is what sigreg uses; an in-place
    reduction that returns nothing is not a collective here. For gradients to reach the
    local samples through a framework's autodiff, the reduction must be differentiable
    (e.g. ``torch.distributed.nn.functional.all_reduce``); the explicit pullbacks of
    :func:`sigreg.epps_pulley_vjp` need no differentiable reduction.
    """

    def all_reduce_sum(self, x: Any) -> Any:
        """Return the sum of ``x`` over all ranks."""
        ...


def check_gather(collective: Any, statistic: str, *, need_rank: bool) -> None:
    """Raise ``TypeError`` unless ``collective`` can gather (and, if asked, knows its rank).

    ``all_gather(x)`` must return a NEW array of shape ``(world_size, *x.shape)`` holding
    every rank's ``x`` in rank order (differentiable for autodiff, e.g.
    ``torch.distributed.nn.functional.all_gather``); ``rank`` is this rank's index.
    """
    if not callable(getattr(collective, "all_gather", None)):
        raise TypeError(
            f"statistic={statistic!r} needs every rank's samples: the collective must provide "
            f"an all_gather(x) method, {type(collective).__name__} has none"
        )
    if need_rank and not isinstance(getattr(collective, "rank", None), int):
        raise TypeError(
            f"the explicit gradient of statistic={statistic!r} needs the collective's integer "
            f"rank attribute, {type(collective).__name__} has none"
        )


def all_gather_checked(collective: Any, x: Any) -> Any:
    """``collective.all_gather(x)``, refusing a result that is not ``(world, *x.shape)``."""
    out = collective.all_gather(x)
    shape = getattr(out, "shape", None)
    if shape is None or tuple(shape[1:]) != tuple(x.shape) or len(shape) != x.ndim + 1:
        raise TypeError(
            f"collective.all_gather must return an array of shape (world_size, "
            f"*{tuple(x.shape)}), got {type(out).__name__} of shape {shape}"
        )
    return out


def check_collective(collective: Any) -> Any:
    """Validate the ``collective`` argument (``None`` or a :class:`Collective`)."""
    if collective is not None and not isinstance(collective, Collective):
        raise TypeError(
            f"collective must provide an all_reduce_sum(x) method, got {type(collective).__name__}"
        )
    return collective


def all_reduce_checked(collective: Any, x: Any) -> Any:
    """``collective.all_reduce_sum(x)``, refusing a result that is not an array of ``x``'s shape.

    An in-place reduction that returns ``None`` would otherwise fail far from its cause.
    """
    out = collective.all_reduce_sum(x)
    if getattr(out, "shape", None) != x.shape:
        raise TypeError(
            f"collective.all_reduce_sum must return the summed array of shape {tuple(x.shape)}, "
            f"got {type(out).__name__} (an in-place reduction must return its result)"
        )
    return out


def reduce_sums(collective: Any, xp: Any, parts: list[Any], count: int) -> tuple[list[Any], Any]:
    """Sum per-rank arrays and the local sample ``count`` across ranks in one reduction.

    Parameters
    ----------
    collective : Collective
        The reduction.
    xp : namespace
        Namespace of the arrays.
    parts : list of arrays
        Arrays of a common shape ``(..., k_i)`` (same leading shape) to be summed.
    count : int
        Local number of samples.

    Returns
    -------
    reduced : list of arrays
        The summed ``parts``.
    total : array, shape (..., 1)
        The global sample count.
    """
    first = parts[0]
    counts = xp.full(
        first.shape[:-1] + (1,), float(count), dtype=first.dtype, device=device_of(first)
    )
    packed = all_reduce_checked(collective, xp.concat([*parts, counts], axis=-1))
    reduced, start = [], 0
    for part in parts:
        stop = start + part.shape[-1]
        reduced.append(packed[..., start:stop])
        start = stop
    return reduced, packed[..., start:]
