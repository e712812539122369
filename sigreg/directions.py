"""Reproducible random unit directions for slicing."""

from __future__ import annotations

from typing import Any

import numpy as np

from sigreg._namespace import default_float, resolve_backend
from sigreg._validation import check_int


def sample_directions(
    dim: int,
    num_slices: int,
    /,
    *,
    seed: int,
    step: int = 0,
    backend: Any,
    dtype: Any = None,
    device: Any = None,
) -> Any:
    """Random unit vectors, one per column, reproducible from ``(seed, step)``.

    The numbers are drawn in float64 by numpy's PCG64 generator seeded with
    ``SeedSequence([seed, step])`` and then converted, so the same ``(seed, step)`` gives
    the same directions (to ``dtype`` rounding) on every backend and device, and every
    rank of a distributed job draws the same ones. Column ``m`` does not depend on
    ``num_slices``: ``sample_directions(d, 16, ...)`` is the first 16 columns of
    ``sample_directions(d, 1024, ...)``. Pass a new ``step`` each training step for fresh
    directions. Inside ``jax.jit``, ``seed`` and ``step`` must be static Python integers
    (or pass precomputed directions to :func:`sigreg.sliced_epps_pulley`).

    Parameters
    ----------
    dim : int
        Dimension of the embedding (rows), at least 1.
    num_slices : int
        Number of directions (columns), at least 1.
    seed : int
        Non-negative seed of the run.
    step : int, default 0
        Non-negative step counter.
    backend : str or namespace
        Namespace of the result ("numpy", "torch", "jax", "cupy", "array_api_strict" or a
        namespace module).
    dtype : dtype, optional
        Real floating dtype of the result (``TypeError`` otherwise); default: the
        backend's default float.
    device : device, optional
        Device of the result; default: the backend's default device.

    Returns
    -------
    array, shape (dim, num_slices)
        Columns of unit Euclidean norm. A Gaussian draw of exactly zero norm (probability
        zero) is replaced by the first basis vector, so no NaN can appear.

    Examples
    --------
    >>> from sigreg import sample_directions
    >>> a = sample_directions(8, 4, seed=0, step=3, backend="numpy")
    >>> a.shape
    (8, 4)
    >>> bool(abs((a ** 2).sum(axis=0) - 1).max() < 1e-12)
    True
    """
    dim = check_int(dim, "dim", minimum=1)
    num_slices = check_int(num_slices, "num_slices", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    step = check_int(step, "step", minimum=0)
    xp = resolve_backend(backend)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, step])))
    g = rng.standard_normal((num_slices, dim))
    norms = np.sqrt(np.sum(g * g, axis=1))
    zero = norms == 0.0
    g[zero, 0], norms[zero] = 1.0, 1.0
    directions = np.ascontiguousarray((g / norms[:, None]).T)
    if dtype is None:
        dtype = default_float(xp, device)
    out = xp.asarray(directions, dtype=dtype, device=device)
    if not xp.isdtype(out.dtype, "real floating"):
        raise TypeError(f"dtype must be a real floating dtype, got {dtype!r}")
    return out
