"""Catalogue of the bad and edge inputs of issue 16 (library findings 1, 5, 6, 7, 9).

Every entry runs on every backend of the ``xp`` fixture (numpy, array_api_strict on two
devices, torch, jax) and must end in one of two ways:

* ``Raises``: a ``TypeError``/``ValueError``/``ImportError`` whose message names the
  argument (never a NaN, never an error from deep inside a framework);
* ``Value``: a finite result in the input's namespace that equals a float64 NumPy oracle.

A case that does not apply to a backend (a dtype it lacks, a package that is installed)
is skipped with the reason. The test id starts with the expected outcome, so
``pytest --collect-only -q tests/test_bad_inputs.py`` counts errors and values.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np
import oracles as O
import pytest
from helpers import backend_module_name, make, to64

sigreg = pytest.importorskip("sigreg")

RNG = np.random.default_rng(1600)
X1 = RNG.standard_normal(40)
X2 = RNG.standard_normal((40, 3))
VIEWS = RNG.standard_normal((2, 40, 3))
FAR_BASE = RNG.standard_normal(4200)
RNG_HALF = np.random.default_rng(1607)  # above the 4096 samples where the boxed sum starts


class ReturnsNone:
    """An in-place style collective: reduces nothing and returns ``None``."""

    def all_reduce_sum(self, x: Any) -> Any:
        return None


@dataclass(frozen=True)
class Raises:
    error: type[Exception]
    names: str  # regex the message must match: the argument it is about


@dataclass(frozen=True)
class Value:
    oracle: Callable[[], Any] | None  # float64 NumPy reference; None: the call returns
    rtol: float = 1e-9  # (result, reference), the reference from its rounded inputs


def _arr(xp: Any, device: Any, a: np.ndarray) -> Any:
    return make(xp, device, a, "float64")


def _directions(xp: Any, device: Any, k: int, m: int, dtype: Any = None) -> Any:
    return sigreg.sample_directions(k, m, seed=3, backend=xp, device=device, dtype=dtype)


def _bfloat16(xp: Any) -> Any:
    name = backend_module_name(xp)
    if name == "torch":
        import torch

        return torch.bfloat16
    if name == "jax":
        import jax.numpy as jnp

        return jnp.bfloat16
    if name == "numpy":
        return np.float16
    pytest.skip(f"{name} has no half-precision dtype")


def _far_outlier(far: float) -> tuple[Callable, Value]:
    x = np.r_[FAR_BASE, far, 7.5]

    def call(xp, device):
        return sigreg.epps_pulley(_arr(xp, device, x), integration="exact")

    return call, Value(lambda: O.ep_exact_blocked(x))


def _far_outlier_test(far: float) -> tuple[Callable, Value]:
    x = np.r_[FAR_BASE, far, 7.5]

    def call(xp, device):
        return sigreg.epps_pulley_test(_arr(xp, device, x), standardize=False).statistic

    return call, Value(lambda: O.ep_exact_blocked(x))


def _half_directions(xp, device):
    """bf16 directions from sample_directions are unit-norm to bf16 accuracy: accepted."""
    half = _bfloat16(xp)
    d = _directions(xp, device, 8, 1024, dtype=half)
    x = xp.astype(_arr(xp, device, RNG_HALF.standard_normal((64, 8))), half)
    return sigreg.sliced_epps_pulley(x, d), O.sliced(to64(x), to64(d))


def _half_directions_lejepa(xp, device):
    half = _bfloat16(xp)
    d = _directions(xp, device, 3, 1024, dtype=half)
    views = xp.astype(_arr(xp, device, VIEWS), half)
    out = sigreg.lejepa_loss(views, directions=d).sigreg
    return out, O.lejepa(to64(views), None, to64(d))[2]


def _pullback(make_vjp: Callable, cotangent: Any) -> Callable:
    def call(xp, device):
        _, pullback = make_vjp(xp, device)
        return pullback(cotangent)

    return call


def _vjp_1d(xp, device):
    return sigreg.epps_pulley_vjp(_arr(xp, device, X1))


def _vjp_sliced(xp, device):
    return sigreg.sliced_epps_pulley_vjp(_arr(xp, device, X2), _directions(xp, device, 3, 4))


def _vjp_lejepa(xp, device):
    return sigreg.lejepa_loss_vjp(_arr(xp, device, VIEWS), num_slices=4)


def _no_cupy(xp, device):
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("cupy is installed")
    return sigreg.epps_pulley(_arr(xp, device, X1), backend="cupy")


def _negative_strides(fn: Callable, x: np.ndarray) -> Callable:
    def call(xp, device):
        return fn(np.asarray(x)[::-1], backend=backend_module_name(xp))

    return call


def _sigreg4(x, **kw):
    return sigreg.sigreg(x, num_slices=4, **kw)


def _int_dtype(name: str) -> Callable:
    def call(xp, device):
        return _directions(xp, device, 4, 2, dtype=getattr(xp, name))

    return call


CASES: dict[str, tuple[Callable, Any]] = {
    # 1: one far outlier, exact integral: O(N) memory, and the same value as the N^2 oracle
    **{f"exact_outlier_{far:g}": _far_outlier(far) for far in (1e9, 1e12, 1e30, -1e30)},
    "exact_test_outlier_1e12": _far_outlier_test(1e12),
    # 5: LeJEPA on views without samples
    "lejepa_no_samples": (
        lambda xp, d: sigreg.lejepa_loss(_arr(xp, d, np.zeros((2, 0, 8))), num_slices=16),
        Raises(ValueError, "global_views"),
    ),
    "lejepa_vjp_no_samples": (
        lambda xp, d: sigreg.lejepa_loss_vjp(_arr(xp, d, np.zeros((2, 0, 8))), num_slices=16),
        Raises(ValueError, "global_views"),
    ),
    "lejepa_no_local_samples": (
        lambda xp, d: sigreg.lejepa_loss(
            _arr(xp, d, VIEWS), _arr(xp, d, np.zeros((1, 0, 3))), num_slices=4
        ),
        Raises(ValueError, "local_views"),
    ),
    # 6: integer / boolean dtype for the directions
    "directions_int64": (_int_dtype("int64"), Raises(TypeError, "dtype")),
    "directions_int32": (_int_dtype("int32"), Raises(TypeError, "dtype")),
    "directions_bool": (_int_dtype("bool"), Raises(TypeError, "dtype")),
    # 7: directions drawn in half precision are accepted as unit-norm
    "half_directions_sliced": (_half_directions, Value(None, rtol=1e-2)),
    "half_directions_lejepa": (_half_directions_lejepa, Value(None, rtol=1e-2)),
    # 9: clear errors
    "collective_returns_none": (
        lambda xp, d: sigreg.epps_pulley(_arr(xp, d, X1), collective=ReturnsNone()),
        Raises(TypeError, "all_reduce_sum"),
    ),
    "collective_returns_none_sigreg": (
        lambda xp, d: sigreg.sigreg(_arr(xp, d, X2), num_slices=4, collective=ReturnsNone()),
        Raises(TypeError, "all_reduce_sum"),
    ),
    "collective_returns_none_lejepa": (
        lambda xp, d: sigreg.lejepa_loss(
            _arr(xp, d, VIEWS), num_slices=4, collective=ReturnsNone()
        ),
        Raises(TypeError, "all_reduce_sum"),
    ),
    "rng_negative": (
        lambda xp, d: sigreg.epps_pulley_test(_arr(xp, d, X1), method="montecarlo", rng=-1),
        Raises(ValueError, "rng"),
    ),
    "pullback_none": (_pullback(_vjp_1d, None), Raises(TypeError, "cotangent")),
    "pullback_nan": (_pullback(_vjp_1d, float("nan")), Raises(ValueError, "cotangent")),
    "sliced_pullback_none": (_pullback(_vjp_sliced, None), Raises(TypeError, "cotangent")),
    "lejepa_pullback_none": (_pullback(_vjp_lejepa, None), Raises(TypeError, "cotangent")),
    "backend_cupy_missing": (_no_cupy, Raises(ImportError, r"pip install 'sigreg\[cupy\]'")),
    "negative_strides": (
        _negative_strides(sigreg.epps_pulley, X1),
        Value(lambda: O.ep_official(X1[::-1])),
    ),
    "negative_strides_sigreg": (
        _negative_strides(_sigreg4, X2),
        Value(lambda: O.sliced(X2[::-1], _np_dirs(3, 4, seed=0))),
    ),
    "no_features_sigreg": (
        lambda xp, d: sigreg.sigreg(_arr(xp, d, np.zeros((4, 0))), num_slices=3),
        Raises(ValueError, r"x has an empty feature axis"),
    ),
    "no_features_sliced": (
        lambda xp, d: sigreg.sliced_epps_pulley(
            _arr(xp, d, np.zeros((4, 0))), _arr(xp, d, np.zeros((0, 3)))
        ),
        Raises(ValueError, r"x has an empty feature axis"),
    ),
    "no_features_lejepa": (
        lambda xp, d: sigreg.lejepa_loss(_arr(xp, d, np.zeros((2, 4, 0))), num_slices=3),
        Raises(ValueError, "global_views"),
    ),
}


def _np_dirs(k: int, m: int, seed: int = 3) -> np.ndarray:
    return sigreg.sample_directions(k, m, seed=seed, backend="numpy")


def _case_id(name: str) -> str:
    return ("error-" if isinstance(CASES[name][1], Raises) else "value-") + name


@pytest.mark.parametrize("case", list(CASES), ids=[_case_id(c) for c in CASES])
def test_bad_input_gives_error_or_correct_value(xp, device, case):
    call, expected = CASES[case]
    if isinstance(expected, Raises):
        with pytest.raises(expected.error, match=expected.names):
            call(xp, device)
        return
    with np.errstate(over="ignore"):
        out = call(xp, device)
    if expected.oracle is None:
        out, reference = out
    else:
        reference = expected.oracle()
    assert array_api_compat.array_namespace(out) is xp
    value = to64(out)
    assert np.all(np.isfinite(value)), value
    np.testing.assert_allclose(value, reference, rtol=expected.rtol)


def test_numpy_lejepa_value_and_grad_no_samples():
    """The numpy adapter goes through lejepa_loss_vjp and names the argument too."""
    from backends.numpy import lejepa_value_and_grad

    with pytest.raises(ValueError, match="global_views"):
        lejepa_value_and_grad(np.zeros((2, 0, 8)), num_slices=16)
