"""CuPy adapter: NCCL all-reduce and all-gather for :class:`sigreg.Collective`, and explicit
gradients.

CuPy has no autodiff: use :func:`backends.numpy.sigreg_value_and_grad` and
:func:`backends.numpy.lejepa_value_and_grad` (they run on cupy arrays unchanged, since the
core is array-API code) and reduce with :class:`NcclCollective` across GPUs. ``cupy`` is
imported only when a collective is used, never at import time of this module.
"""

from __future__ import annotations

import importlib
from typing import Any

from backends.numpy import lejepa_value_and_grad, sigreg_value_and_grad

__all__ = ["NcclCollective", "lejepa_value_and_grad", "sigreg_value_and_grad"]


class NcclCollective:
    """Cross-GPU sum of cupy arrays with ``cupy.cuda.nccl`` (one process per GPU).

    Parameters
    ----------
    comm : cupy.cuda.nccl.NcclCommunicator
        An initialised communicator (``NcclCommunicator(world_size, unique_id, rank)``).
    stream : cupy.cuda.Stream, optional
        Stream to enqueue the reduction on; default: the current stream.

    Attributes
    ----------
    rank : int
        This process's rank in ``comm`` (the explicit gradients of the gathered statistics
        need it).

    Notes
    -----
    ``all_reduce_sum`` and ``all_gather`` return new arrays and leave their input untouched,
    as the :class:`sigreg.Collective` protocol requires. NCCL ``SUM`` is used (never
    ``AVG``); sigreg divides by the reduced sample count itself.
    """

    def __init__(self, comm: Any, stream: Any = None) -> None:
        self.comm = comm
        self.stream = stream
        self.rank: int = comm.rank_id()

    def _prepare(self, x: Any) -> tuple[Any, Any, Any, Any]:
        """``(cupy, contiguous x, NCCL dtype code, stream pointer)``."""
        cupy = importlib.import_module("cupy")
        nccl = cupy.cuda.nccl
        codes = {
            cupy.dtype(cupy.float32): nccl.NCCL_FLOAT32,
            cupy.dtype(cupy.float64): nccl.NCCL_FLOAT64,
        }
        if x.dtype not in codes:
            raise TypeError(f"x must be float32 or float64 for the NCCL collective, got {x.dtype}")
        stream = self.stream if self.stream is not None else cupy.cuda.get_current_stream()
        return cupy, cupy.ascontiguousarray(x), codes[x.dtype], stream.ptr

    def all_reduce_sum(self, x: Any) -> Any:
        """Return the sum of ``x`` over all ranks (a new cupy array)."""
        cupy, x, code, stream = self._prepare(x)
        out = cupy.empty_like(x)
        nccl_sum = cupy.cuda.nccl.NCCL_SUM
        self.comm.allReduce(x.data.ptr, out.data.ptr, x.size, code, nccl_sum, stream)
        return out

    def all_gather(self, x: Any) -> Any:
        """Return every rank's ``x`` (same shape on every rank) stacked in rank order,
        shape ``(world_size, *x.shape)`` (a new cupy array)."""
        cupy, x, code, stream = self._prepare(x)
        out = cupy.empty((self.comm.size(),) + x.shape, dtype=x.dtype)
        self.comm.allGather(x.data.ptr, out.data.ptr, x.size, code, stream)
        return out
