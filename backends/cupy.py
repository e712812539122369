"""CuPy adapter: an NCCL all-reduce for :class:`sigreg.Collective`, and explicit gradients.

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

    Notes
    -----
    ``all_reduce_sum`` returns a new array and leaves its input untouched, as the
    :class:`sigreg.Collective` protocol requires. NCCL ``SUM`` is used (never ``AVG``);
    sigreg divides by the reduced sample count itself.
    """

    def __init__(self, comm: Any, stream: Any = None) -> None:
        self.comm = comm
        self.stream = stream

    def all_reduce_sum(self, x: Any) -> Any:
        """Return the sum of ``x`` over all ranks (a new cupy array)."""
        cupy = importlib.import_module("cupy")
        nccl = cupy.cuda.nccl
        codes = {
            cupy.dtype(cupy.float32): nccl.NCCL_FLOAT32,
            cupy.dtype(cupy.float64): nccl.NCCL_FLOAT64,
        }
        if x.dtype not in codes:
            raise TypeError(f"x must be float32 or float64 for the NCCL reduction, got {x.dtype}")
        x = cupy.ascontiguousarray(x)
        out = cupy.empty_like(x)
        stream = self.stream if self.stream is not None else cupy.cuda.get_current_stream()
        self.comm.allReduce(
            x.data.ptr, out.data.ptr, x.size, codes[x.dtype], nccl.NCCL_SUM, stream.ptr
        )
        return out
