"""Array backend and cross-process sums for the MLP trainer (numpy on CPU, cupy on GPUs).

One process per device. The control plane (who is rank 0, broadcasting the NCCL id and the
checkpoint to resume from) is, under torchrun, the ``torch.distributed`` gloo group of
:func:`trainers.distributed.setup` (:func:`control_plane`); torch is imported only then,
since the ``cupy`` extra does not install it. The data plane is a :class:`sigreg.Collective`:

* cupy: :class:`backends.cupy.NcclCollective` (``cupy.cuda.nccl``, one communicator);
* numpy: :class:`GlooCollective`, ``torch.distributed.all_reduce`` (gloo, SUM) used only
  as a transport for numpy arrays.

Both return a new array and reduce with SUM; the callers divide by global counts. The
same collective reduces SIGReg's C/S sums (inside :func:`sigreg.lejepa_loss_vjp`) and the
parameter gradients (:func:`all_reduce_dict`).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from trainers.core.launch import DistEnv, launched_by_torchrun, single_process

__all__ = [
    "GlooCollective",
    "all_reduce_dict",
    "array_backend",
    "control_plane",
    "cupy_usable",
    "gather_objects",
    "leave_control_plane",
    "make_collective",
]


def _torch_group() -> Any:
    """:mod:`trainers.distributed`, imported on first use: only a torchrun launch needs
    torch here."""
    return importlib.import_module("trainers.distributed")


def control_plane() -> DistEnv:
    """This process's rank: torchrun's gloo group under torchrun, else a lone process."""
    if launched_by_torchrun():
        return _torch_group().setup("cpu")
    return single_process("cpu")


def leave_control_plane(env: DistEnv) -> None:
    """Leave the process group of :func:`control_plane`, if any."""
    if env.distributed:
        _torch_group().shutdown()


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order (every rank must call)."""
    if not env.distributed:
        return [obj]
    return _torch_group().gather_objects(obj, env)


class GlooCollective:
    """:class:`sigreg.Collective` over the default ``torch.distributed`` group for numpy.

    Attributes
    ----------
    rank : int
        This process's rank (the explicit gradients of the gathered statistics need it).
    """

    def __init__(self) -> None:
        self._torch = importlib.import_module("torch")  # only under torchrun (see above)
        self.rank: int = self._torch.distributed.get_rank()

    def all_reduce_sum(self, x: Any) -> np.ndarray:
        """Return the sum of the numpy array ``x`` over all ranks (a new array)."""
        dist = self._torch.distributed
        tensor = self._torch.from_numpy(np.array(x, copy=True))
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.numpy()

    def all_gather(self, x: Any) -> np.ndarray:
        """Return every rank's numpy array ``x`` (same shape on every rank) stacked in rank
        order, shape ``(world_size, *x.shape)`` (a new array)."""
        dist = self._torch.distributed
        tensor = self._torch.from_numpy(np.ascontiguousarray(x))
        out = [self._torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(out, tensor)
        return np.stack([t.numpy() for t in out])


def cupy_usable(gpu: int = 0) -> bool:
    """Whether ``cupy`` imports and can allocate on CUDA device ``gpu``."""
    try:
        cupy = importlib.import_module("cupy")
        with cupy.cuda.Device(gpu):
            cupy.zeros(1)
    except Exception:  # noqa: BLE001 (ImportError, CUDARuntimeError, driver errors...)
        return False
    return True


def array_backend(device: str, local_rank: int) -> tuple[Any, str]:
    """The array namespace and device name for ``run.device``.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"}
        ``"auto"``: cupy when it can allocate on a GPU, else numpy.
    local_rank : int
        GPU of this process (cupy only).

    Returns
    -------
    xp : namespace
        ``array_api_compat.numpy`` or ``array_api_compat.cupy``.
    name : str
        ``"cpu"`` or ``"cuda:LOCAL_RANK"``.

    Raises
    ------
    ValueError
        ``device="cuda"`` but cupy cannot allocate on a GPU.
    """
    use_cuda = cupy_usable(local_rank) if device == "auto" else device == "cuda"
    if use_cuda and device == "cuda" and not cupy_usable(local_rank):
        raise ValueError("run.device is 'cuda' but cupy cannot allocate on a CUDA device")
    if use_cuda:
        importlib.import_module("cupy").cuda.Device(local_rank).use()
        return importlib.import_module("array_api_compat.cupy"), f"cuda:{local_rank}"
    return importlib.import_module("array_api_compat.numpy"), "cpu"


def make_collective(device: str, env: DistEnv) -> Any:
    """The data-plane collective for ``device`` (from :func:`array_backend`), or ``None``
    in a single process. Every rank must call (the NCCL id is broadcast)."""
    if env.world_size == 1:
        return None
    if device == "cpu":
        return GlooCollective()
    from backends.cupy import NcclCollective  # imports cupy: only on GPUs

    nccl = importlib.import_module("cupy.cuda.nccl")
    uid = gather_objects(nccl.get_unique_id() if env.is_main else None, env)[0]
    return NcclCollective(nccl.NcclCommunicator(env.world_size, uid, env.rank))


def all_reduce_dict(collective: Any, xp: Any, arrays: dict[str, Any]) -> dict[str, Any]:
    """Sum every array of ``arrays`` over the ranks in one packed reduction.

    Returns
    -------
    dict
        The reduced arrays (new arrays, same keys, shapes and dtypes).
    """
    names = list(arrays)
    flat = xp.concat([xp.reshape(arrays[k], (-1,)) for k in names])
    total = collective.all_reduce_sum(flat)
    out, start = {}, 0
    for name in names:
        size = int(np.prod(arrays[name].shape))
        out[name] = xp.reshape(total[start : start + size], arrays[name].shape)
        start += size
    return out
