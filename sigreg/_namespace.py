"""Namespace inference, backend conversion and dtype rules shared by the public functions.

Nothing here imports a framework unless the caller names it (``backend="torch"``) or hands
over one of its arrays, which means it is already in ``sys.modules``.
"""

from __future__ import annotations

import importlib
import numbers
import sys
from typing import Any

import numpy as np
from array_api_compat import (
    array_namespace,
    is_cupy_array,
    is_jax_array,
    is_lazy_array,
    is_torch_array,
)
from array_api_compat import device as array_device

_BACKEND_MODULES = {
    "numpy": "numpy",
    "torch": "torch",
    "jax": "jax.numpy",
    "cupy": "cupy",
    "array_api_strict": "array_api_strict",
}


def resolve_backend(backend: Any) -> Any:
    """Return the array-API namespace named by ``backend`` (a name or a namespace module)."""
    if isinstance(backend, str):
        if backend not in _BACKEND_MODULES:
            raise ValueError(
                f"backend must be one of {sorted(_BACKEND_MODULES)} or an array namespace, "
                f"got {backend!r}"
            )
        try:
            module = importlib.import_module(_BACKEND_MODULES[backend])
        except ImportError as exc:
            extra = "array-api-strict" if backend == "array_api_strict" else f"'sigreg[{backend}]'"
            raise ImportError(
                f"backend={backend!r} needs a package that is not installed ({exc}); "
                f"install it with: pip install {extra}"
            ) from exc
    else:
        module = backend
    try:
        return array_namespace(module.asarray(0.0))
    except (AttributeError, TypeError) as exc:
        raise TypeError(
            f"backend must be a backend name or an array namespace, got {backend!r}"
        ) from exc


def _to_host(x: Any) -> np.ndarray:
    """Copy an array of any supported backend into a numpy array."""
    if is_torch_array(x):
        x = x.detach().cpu()
        if x.dtype == sys.modules["torch"].bfloat16:  # numpy has no bfloat16
            x = x.float()
        return x.numpy()
    if is_cupy_array(x):
        return x.get()
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError, ValueError):
            pass
    return np.asarray(x)


def convert(x: Any, xp: Any) -> Any:
    """Return ``x`` as an array of namespace ``xp`` (a copy through the host when needed)."""
    try:
        if array_namespace(x) is xp:
            return x
    except TypeError:
        pass
    host = _to_host(x)
    if any(stride < 0 for stride in getattr(host, "strides", ())):  # torch cannot wrap these
        host = np.ascontiguousarray(host)
    return xp.asarray(host)


def namespace_of(x: Any, name: str) -> Any:
    """``array_namespace(x)`` with an error message that names the argument."""
    try:
        return array_namespace(x)
    except TypeError as exc:
        raise TypeError(
            f"{name} must be an array of a supported namespace (numpy, torch, jax, cupy, "
            f"array_api_strict) or an array-like numpy converts, got {type(x).__name__}"
        ) from exc


def _is_namespace_array(x: Any) -> bool:
    try:
        array_namespace(x)
    except TypeError:
        return False
    return True


def as_numpy_array_like(x: Any, name: str) -> Any:
    """A Python sequence, scalar or ``__array__``/buffer object (pandas Series, memoryview)
    as a numpy array, the way scipy.stats accepts them; arrays of a namespace unchanged."""
    if _is_namespace_array(x):
        return x
    if isinstance(x, (numbers.Number, str, bytes)) or x is None:
        raise TypeError(f"{name} must be an array or a sequence of samples, got {type(x).__name__}")
    try:
        converted = np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged nesting, unconvertible objects
        raise TypeError(
            f"{name} must be an array or an array-like numpy converts, got "
            f"{type(x).__name__} ({exc})"
        ) from exc
    if converted.dtype == object or converted.dtype.kind in "USV":
        raise TypeError(
            f"{name} must hold real numbers, got {type(x).__name__} of dtype {converted.dtype}"
        )
    return converted


def default_float(xp: Any, device: Any) -> Any:
    """The namespace's default real floating dtype on ``device``."""
    info = getattr(xp, "__array_namespace_info__", None)
    if info is None:
        return xp.float64
    return info().default_dtypes(device=device)["real floating"]


def as_float_array(x: Any, name: str, xp: Any) -> tuple[Any, Any]:
    """Return ``(x_compute, result_dtype)`` for a real input array.

    Booleans and integers are promoted to the namespace's default float (the results keep
    that dtype). Half precisions (float16, bfloat16) are computed in float32 and the
    results cast back to the input dtype. Floats wider than 64 bits (numpy ``longdouble``)
    are computed in float64 and the results are float64: no array-API operation here
    would keep the extra precision, so the result says what it has. Complex input raises
    ``TypeError``.
    """
    dtype = x.dtype
    if xp.isdtype(dtype, "complex floating"):
        raise TypeError(f"{name} must be real-valued, got complex dtype {dtype}")
    if xp.isdtype(dtype, ("bool", "integral")):
        target = default_float(xp, array_device(x))
        return xp.astype(x, target), target
    if not xp.isdtype(dtype, "real floating"):
        raise TypeError(f"{name} must have a real numeric dtype, got {dtype}")
    if dtype == xp.float32 or dtype == xp.float64:
        return x, dtype
    if xp.finfo(dtype).bits > 64:  # numpy longdouble: computed and returned in float64
        return xp.astype(x, xp.float64), xp.float64
    return xp.astype(x, xp.float32), dtype


def is_traced(x: Any) -> bool:
    """True when ``x`` is a placeholder whose values are unknown (e.g. inside ``jax.jit``)."""
    if is_jax_array(x):
        return isinstance(x, sys.modules["jax"].core.Tracer)
    return bool(is_lazy_array(x))


def device_of(x: Any) -> Any:
    """The device of ``x`` (``None`` inside ``jax.jit``)."""
    return array_device(x)


def pick_namespace(x: Any, name: str, backend: Any) -> Any:
    """The namespace to compute in: ``backend`` if given, else the one of ``x`` (numpy for
    array-likes such as lists, pandas Series or memoryviews)."""
    if backend is None:
        return namespace_of(as_numpy_array_like(x, name), name)
    return resolve_backend(backend)


def prepare_array(x: Any, name: str, xp: Any, *, convert_input: bool) -> tuple[Any, Any]:
    """Bring argument ``x`` into namespace ``xp`` as a compute-ready float array.

    With ``convert_input`` (a ``backend`` was requested) ``x`` is converted to ``xp``;
    otherwise it must already belong to ``xp`` (array-likes that are not arrays of a
    namespace are converted with numpy first, see :func:`as_numpy_array_like`). Returns
    ``(x_compute, result_dtype)`` as :func:`as_float_array` does.
    """
    if convert_input:
        x = convert(x, xp)
    elif namespace_of(x := as_numpy_array_like(x, name), name) is not xp:
        raise TypeError(
            f"{name} belongs to namespace {namespace_of(x, name).__name__}, but the computation "
            f"runs in {xp.__name__}; pass arrays of one namespace (or backend=... to convert)"
        )
    return as_float_array(x, name, xp)
