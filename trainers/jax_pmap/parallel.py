"""Data parallelism for the JAX trainer: ``jax.pmap`` or ``jax.jit`` + ``jax.shard_map``.

One per-device program, two ways to run it over the devices of every process:

* ``"pmap"``: :func:`jax.pmap` over the local devices (the axis spans every process's devices
  after ``jax.distributed.initialize``); replicated values carry a leading device axis;
  gradients are averaged with ``lax.pmean`` (:meth:`DataParallel.reduce_gradients`).
* ``"shard_map"``: :func:`jax.jit` of :func:`jax.shard_map` over a one-axis
  :class:`jax.sharding.Mesh` of all devices, global arrays with
  :class:`jax.sharding.NamedSharding`, the default ``check_vma=True``. Replicated parameters
  then receive gradients already summed over the devices (the loss is device-invariant),
  so :meth:`DataParallel.reduce_gradients` leaves them alone: a second ``pmean`` would be
  wrong (see :mod:`backends.jax`).

Every argument and output of a mapped function has a :class:`Placement`: replicated (the
train state, the dataset), split over the devices along axis 0 (batch indices) or axis 1
(views ``(V, B, ...)``), or a host scalar (step, learning rate).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["KINDS", "DataParallel", "Placement"]

KINDS = ("pmap", "shard_map")


class Placement(enum.Enum):
    """Where an argument or output of a mapped function lives."""

    REPLICATED = "replicated"
    """The same value on every device (:meth:`DataParallel.replicate`)."""
    BATCH = "batch"
    """Split over the devices along axis 0 (:meth:`DataParallel.split`)."""
    VIEWS = "views"
    """Split over the devices along axis 1: views ``(V, B, ...)``."""
    SCALAR = "scalar"
    """A host scalar (:meth:`DataParallel.scalar`)."""


class DataParallel:
    """Run per-device functions over all devices of all processes, data parallel.

    Parameters
    ----------
    kind : {"pmap", "shard_map"}
        The mapping.
    devices : sequence of jax.Device, optional
        This process's devices to use (default: all local devices); with several processes
        every local device is used.
    axis_name : str, default "batch"
        Name of the device axis (for collectives inside the mapped functions).

    Raises
    ------
    ValueError
        An unknown ``kind``, or a device subset in a multi-process job.
    """

    def __init__(
        self, kind: str, devices: Sequence[Any] | None = None, *, axis_name: str = "batch"
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"parallel must be one of {list(KINDS)}, got {kind!r}")
        if devices is not None and jax.process_count() > 1:
            raise ValueError("a device subset is only supported in a single process")
        self.kind, self.axis_name = kind, axis_name
        self._pmap_devices = None if devices is None else list(devices)
        self.local_devices = list(jax.local_devices() if devices is None else devices)
        all_devices = jax.devices() if devices is None else self.local_devices
        self.num_devices = len(all_devices)
        self.mesh = Mesh(np.array(all_devices), (axis_name,))

    @property
    def num_local(self) -> int:
        """Devices of this process."""
        return len(self.local_devices)

    def _spec(self, placement: Placement) -> P:
        if placement is Placement.BATCH:
            return P(self.axis_name)
        if placement is Placement.VIEWS:
            return P(None, self.axis_name)
        return P()

    def compile(
        self, fn: Callable, *, args: Sequence[Placement], outs: Sequence[Placement]
    ) -> Callable:
        """``fn`` mapped over the devices.

        Parameters
        ----------
        fn : callable
            The per-device function (collectives over ``axis_name`` allowed).
        args, outs : sequence of Placement
            One per positional argument / per output.

        Returns
        -------
        callable
            Takes what :meth:`replicate`, :meth:`split` and :meth:`scalar` produce.
        """
        if self.kind == "pmap":
            return jax.pmap(
                fn,
                axis_name=self.axis_name,
                in_axes=tuple(None if a is Placement.SCALAR else 0 for a in args),
                out_axes=tuple(0 for _ in outs),
                devices=self._pmap_devices,
            )
        mapped = jax.shard_map(
            fn,
            mesh=self.mesh,
            in_specs=tuple(self._spec(a) for a in args),
            out_specs=tuple(self._spec(o) for o in outs),
        )
        return jax.jit(mapped)

    def replicate(self, tree: Any) -> Any:
        """Host values (the same on every process) copied to every device."""
        if self.kind == "pmap":
            # a broadcasting pmap: the copies carry the sharding of the mapped outputs, so
            # feeding them back (the train state) never triggers a recompilation
            copy = jax.pmap(
                lambda _, x: x,
                axis_name=self.axis_name,
                in_axes=(0, None),
                devices=self._pmap_devices,
            )
            return copy(np.zeros(self.num_local), jax.tree.map(np.asarray, tree))
        sharding = NamedSharding(self.mesh, P())

        def put(x):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

        return jax.tree.map(put, tree)

    def split(self, local: np.ndarray) -> Any:
        """This process's rows of a batch, split evenly over its devices (axis 0)."""
        if self.kind == "pmap":
            return local.reshape(self.num_local, -1, *local.shape[1:])
        sharding = NamedSharding(self.mesh, P(self.axis_name))
        return jax.make_array_from_process_local_data(sharding, local)

    def scalar(self, value: Any, dtype: Any) -> Any:
        """A host scalar argument."""
        value = np.asarray(value, dtype=dtype)
        return value if self.kind == "pmap" else self.replicate(value)

    def reduce_gradients(self, grads: Any) -> Any:
        """Inside a mapped function: the gradient of the global loss from the per-device
        gradients (``lax.pmean`` under pmap; unchanged under ``shard_map``)."""
        if self.kind == "pmap":
            return lax.pmean(grads, self.axis_name)
        return grads

    def host(self, tree: Any) -> Any:
        """A replicated output as NumPy arrays (one device's copy)."""
        if self.kind == "pmap":  # the first device's block of the leading device axis
            return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], tree)
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)
