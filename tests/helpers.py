"""Test helpers: backend loading, conversion to/from NumPy, tolerances, namespace/device checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from functools import reduce

import array_api_compat
import numpy as np
import pytest

BACKEND_IDS = ["numpy", "array_api_strict", "array_api_strict:device1", "torch", "jax", "cupy"]

_CACHE: dict = {}


def load_backend(name: str):
    """Return ``(xp, device)`` for a backend id, skipping the test if unavailable.

    ``xp`` is what ``array_api_compat.array_namespace`` returns for that framework's
    arrays, ``device`` is ``None`` (framework default) except for the NON-default
    array_api_strict ``device1`` case."""
    if name in _CACHE:
        return _CACHE[name]
    if name == "numpy":
        out = (array_api_compat.array_namespace(np.empty(0)), None)
    elif name.startswith("array_api_strict"):
        strict = pytest.importorskip("array_api_strict")
        dev = strict.Device("device1") if name.endswith(":device1") else None
        out = (strict, dev)
    elif name == "torch":
        torch = pytest.importorskip("torch")
        out = (array_api_compat.array_namespace(torch.empty(0)), None)
    elif name == "jax":
        pytest.importorskip("jax")
        import jax.numpy as jnp

        out = (array_api_compat.array_namespace(jnp.zeros(0)), None)
    elif name == "cupy":
        try:
            import cupy

            if cupy.cuda.runtime.getDeviceCount() < 1:
                raise RuntimeError
        except Exception:
            pytest.skip("no CUDA device")
        out = (array_api_compat.array_namespace(cupy.empty(0)), None)
    else:  # pragma: no cover
        raise ValueError(name)
    _CACHE[name] = out
    return out


def backend_module_name(xp) -> str:
    """'numpy' / 'torch' / 'jax' / 'cupy' / 'array_api_strict' for a namespace."""
    n = xp.__name__
    for key in ("torch", "jax", "cupy", "array_api_strict", "numpy"):
        if key in n:
            return key
    raise ValueError(n)


def make(xp, device, arr, dtype="float64"):
    """Convert float64 NumPy reference data to ``xp`` with ``dtype`` on ``device``."""
    dt = getattr(xp, dtype) if isinstance(dtype, str) else dtype
    arr = np.asarray(arr)
    if device is None:
        return xp.asarray(arr, dtype=dt)
    return xp.asarray(arr, dtype=dt, device=device)


def to_numpy(a) -> np.ndarray:
    """Any backend array (or Python/NumPy scalar) -> float64-compatible NumPy array."""
    if isinstance(a, (float, int, np.generic, np.ndarray)):
        return np.asarray(a)
    mod = type(a).__module__
    if mod.startswith("torch"):
        a = a.detach().cpu()
        if a.dtype.is_floating_point and a.element_size() < 4:
            a = a.float()
        return a.numpy()
    if mod.startswith("array_api_strict"):
        import array_api_strict as s

        return np.asarray(a.to_device(s.Device("CPU_DEVICE")))
    if mod.startswith("cupy"):
        return a.get()
    return np.asarray(a)  # jax, numpy, anything with __array__


def to64(a) -> np.ndarray:
    return np.asarray(to_numpy(a), dtype=np.float64)


def tol(dtype, scale: float = 1.0):
    """(rtol, atol) for comparing a statistic of typical size ``scale``."""
    name = dtype if isinstance(dtype, str) else str(dtype)
    if "float64" in name:
        return 1e-10, 1e-12 * scale
    if "float32" in name:
        return 2e-4, 2e-5 * scale
    return 2e-2, 2e-2 * scale  # float16 / bfloat16


def assert_close(actual, expected, dtype="float64", scale=None, rtol=None, atol=None, err_msg=""):
    a = to64(actual)
    e = np.asarray(expected, dtype=np.float64)
    if scale is None:
        scale = max(1.0, float(np.max(np.abs(e)))) if e.size else 1.0
    r, t = tol(dtype, scale)
    np.testing.assert_allclose(
        a, e, rtol=r if rtol is None else rtol, atol=t if atol is None else atol, err_msg=err_msg
    )
    assert a.shape == e.shape, (a.shape, e.shape)


def dtype_of(xp, name):
    return getattr(xp, name)


def assert_same_backend(out, ref):
    """``out`` lives in the namespace and on the device of ``ref``."""
    assert array_api_compat.array_namespace(out) is array_api_compat.array_namespace(ref)
    assert array_api_compat.device(out) == array_api_compat.device(ref)


def default_float(xp, device=None):
    info = xp.__array_namespace_info__()
    return info.default_dtypes(device=device)["real floating"]


# ------------------------------------------------------------ simulated collective
class ThreadGroup:
    """k ranks in k threads; ``all_reduce_sum`` sums the arrays of all ranks and returns
    the sum to every rank, ``all_gather`` stacks them in rank order (threading.Barrier
    based); each rank's collective knows its ``rank``. A failing rank aborts the barrier so
    the others do not hang."""

    def __init__(self, k: int, timeout: float = 60.0):
        self.k = k
        self.barrier = threading.Barrier(k, timeout=timeout)
        self.slots: list = [None] * k
        self.calls = [0] * k

    def rank(self, r: int):
        group = self

        class _Rank:
            rank = r

            def _exchange(self, x, combine):
                group.calls[r] += 1
                group.slots[r] = x
                group.barrier.wait()
                out = combine(group.slots)
                group.barrier.wait()  # nobody overwrites its slot before all have read
                return out

            def all_reduce_sum(self, x):
                return self._exchange(x, lambda xs: reduce(lambda a, b: a + b, xs))

            def all_gather(self, x):
                return self._exchange(x, lambda xs: array_api_compat.array_namespace(x).stack(xs))

        return _Rank()

    def run(self, fn):
        """Run ``fn(rank, collective)`` in k threads; return the list of results."""
        results: list = [None] * self.k
        errors: list = [None] * self.k

        def target(r):
            try:
                results[r] = fn(r, self.rank(r))
            except BaseException as e:  # noqa: BLE001
                errors[r] = e
                self.barrier.abort()

        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.k)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for e in errors:
            if e is not None and not isinstance(e, threading.BrokenBarrierError):
                raise e
        for e in errors:
            if e is not None:
                raise e
        return results


def run_once(tmp_path_factory, name, compute):
    """``compute()`` once per test session, shared by the pytest-xdist workers.

    Without xdist this just calls ``compute``. Under xdist the first worker to get here runs
    it and stores the JSON result in the session's shared temporary directory; the others
    wait on a file lock and read it (the pytest-xdist recipe for once-only fixtures).
    """
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return compute()
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return compute()
    root = tmp_path_factory.getbasetemp().parent
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = root / f"{name}.json"
        if cached.exists():
            return json.loads(cached.read_text())
        result = compute()
        cached.write_text(json.dumps(result))
        return result


def run_json_script(script: str, root: str, timeout: float, *args: str) -> dict:
    """Run ``python script *args`` on the CPU (JAX platform ``cpu``, no ``XLA_FLAGS``: the script
    sets its own device count) with ``root`` on ``PYTHONPATH``; return the JSON object it
    prints on its last stdout line (a non-zero exit fails the test with its stderr)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=root, OMP_NUM_THREADS="1")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, script, *args],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
