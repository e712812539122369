"""Explicit gradients for array libraries without autodiff (numpy, and cupy through it).

Thin wrappers around the core's analytic pullbacks that return ``(value, gradient)``
directly, the way an optimiser loop written in plain numpy wants them. They work on any
array-API namespace; nothing here imports a framework.
"""

from __future__ import annotations

from typing import Any

import sigreg


def sigreg_value_and_grad(
    x: Any, /, *, num_slices: int = 1024, seed: int = 0, step: int = 0, **options: Any
) -> tuple[Any, Any]:
    """SIGReg of ``x`` and its gradient with respect to ``x``.

    Parameters
    ----------
    x : array, shape (N, K)
        Embeddings.
    num_slices, seed, step : int
        Directions, as in :func:`sigreg.sigreg`.
    **options
        ``t_max``, ``n_points``, ``integration``, ``debias``, ``collective``: as in
        :func:`sigreg.sliced_epps_pulley`.

    Returns
    -------
    value : array, 0-d
    grad : array, shape (N, K)

    Examples
    --------
    >>> import numpy as np
    >>> from backends.numpy import sigreg_value_and_grad
    >>> x = np.random.default_rng(0).standard_normal((128, 4))
    >>> value, grad = sigreg_value_and_grad(x, num_slices=16, step=2)
    >>> grad.shape
    (128, 4)
    """
    xp = sigreg._namespace.namespace_of(x, "x")
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, K), got {x.ndim} dimension(s)")
    directions = sigreg.sample_directions(
        x.shape[-1],
        num_slices,
        seed=seed,
        step=step,
        backend=xp,
        dtype=x.dtype if xp.isdtype(x.dtype, "real floating") else None,
        device=sigreg._namespace.device_of(x),
    )
    value, pullback = sigreg.sliced_epps_pulley_vjp(x, directions, **options)
    return value, pullback(xp.ones_like(value))


def lejepa_value_and_grad(
    global_views: Any, local_views: Any = None, /, **options: Any
) -> tuple[sigreg.LeJEPAParts, tuple[Any, Any]]:
    """The LeJEPA loss parts and the gradient of the total with respect to the views.

    Parameters
    ----------
    global_views : array, shape (V_g, N, D)
    local_views : array, shape (V_l, N, D), optional
    **options
        As in :func:`sigreg.lejepa_loss`.

    Returns
    -------
    parts : sigreg.LeJEPAParts
    grads : tuple
        ``(grad_global_views, grad_local_views)``; the second is ``None`` without local
        views.

    Examples
    --------
    >>> import numpy as np
    >>> from backends.numpy import lejepa_value_and_grad
    >>> g = np.random.default_rng(0).standard_normal((2, 64, 8))
    >>> parts, (grad_g, grad_l) = lejepa_value_and_grad(g, num_slices=16)
    >>> grad_g.shape, grad_l is None
    ((2, 64, 8), True)
    """
    parts, pullback = sigreg.lejepa_loss_vjp(global_views, local_views, **options)
    return parts, pullback(1.0)
