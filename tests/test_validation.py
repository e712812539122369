"""Bad input -> the stated error type, with a message naming the argument."""

from __future__ import annotations

import math

import numpy as np
import oracles as O
import pytest
from helpers import load_backend, make, to64

sigreg = pytest.importorskip("sigreg")

X = np.random.default_rng(70).standard_normal((8, 3))
A = O.unit_directions(np.random.default_rng(71), 3, 4)
X_RE = r"\bx\b"


def _ep(x, **kw):
    return sigreg.epps_pulley(x, **kw)


def _ep_vjp(x, **kw):
    return sigreg.epps_pulley_vjp(x, **kw)


def _sl(x, **kw):
    return sigreg.sliced_epps_pulley(x, A, **kw)


def _sl_vjp(x, **kw):
    return sigreg.sliced_epps_pulley_vjp(x, A, **kw)


def _sig(x, **kw):
    return sigreg.sigreg(x, num_slices=4, **kw)


STAT_FUNCS = {
    "epps_pulley": _ep,
    "epps_pulley_vjp": _ep_vjp,
    "sliced": _sl,
    "sliced_vjp": _sl_vjp,
    "sigreg": _sig,
}


# ------------------------------------------------------------------ x itself
@pytest.mark.parametrize("fname", list(STAT_FUNCS))
@pytest.mark.parametrize("bad", [[[0.1, 0.2], [0.3]], "abc", None, 3.0, [["a", "b"]]])
def test_x_not_an_array(fname, bad):
    with pytest.raises(TypeError, match=X_RE):
        STAT_FUNCS[fname](bad)


@pytest.mark.parametrize("fname", list(STAT_FUNCS))
def test_complex_rejected(fname):
    with pytest.raises(TypeError, match=X_RE):
        STAT_FUNCS[fname](X.astype(np.complex128))


@pytest.mark.parametrize("name", ["torch", "jax", "array_api_strict"])
def test_complex_rejected_backends(name):
    xp, dev = load_backend(name)
    x = make(xp, dev, X, xp.complex64)
    with pytest.raises(TypeError, match=X_RE):
        sigreg.epps_pulley(x)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_raises_eager(xp, device, bad):
    x_np = X.copy()
    x_np[2, 1] = bad
    x = make(xp, device, x_np)
    with pytest.raises(ValueError, match=X_RE):
        sigreg.epps_pulley(x)
    with pytest.raises(ValueError, match=X_RE):
        sigreg.sliced_epps_pulley(x, make(xp, device, A))
    with pytest.raises(ValueError, match=X_RE):
        sigreg.sigreg(x, num_slices=4)
    with pytest.raises(ValueError, match=X_RE):
        sigreg.epps_pulley_vjp(x)


def test_nonfinite_lejepa_views():
    g = np.stack([X, X])
    g[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="global_views"):
        sigreg.lejepa_loss(g, None, num_slices=4)
    loc = np.stack([X])
    loc[0, 3, 2] = np.inf
    with pytest.raises(ValueError, match="local_views"):
        sigreg.lejepa_loss(np.stack([X, X]), loc, num_slices=4)


@pytest.mark.parametrize("fname", ["epps_pulley", "epps_pulley_vjp"])
def test_empty_axis(fname):
    with pytest.raises(ValueError, match=r"\bx\b|\baxis\b"):
        STAT_FUNCS[fname](np.zeros((0, 3)))


@pytest.mark.parametrize("fname", ["sliced", "sliced_vjp", "sigreg"])
def test_empty_sample_axis_sliced(fname):
    with pytest.raises(ValueError, match=X_RE):
        STAT_FUNCS[fname](np.zeros((0, 3)))


@pytest.mark.parametrize("fname", list(STAT_FUNCS))
@pytest.mark.parametrize("integration", ["trapezoid", "exact"])
def test_debias_needs_two_samples(fname, integration):
    with pytest.raises(ValueError, match=r"debias|\bx\b"):
        STAT_FUNCS[fname](X[:1], debias=True, integration=integration)


@pytest.mark.parametrize("axis", [2, -3, 5])
@pytest.mark.parametrize("fname", ["epps_pulley", "epps_pulley_vjp"])
def test_axis_out_of_range(fname, axis):
    with pytest.raises(ValueError, match="axis"):
        STAT_FUNCS[fname](X, axis=axis)


@pytest.mark.parametrize("fname", ["epps_pulley", "epps_pulley_vjp"])
def test_axis_non_int(fname):
    with pytest.raises((TypeError, ValueError), match="axis"):
        STAT_FUNCS[fname](X, axis=0.5)


# ------------------------------------------------------------- grid / options
@pytest.mark.parametrize("fname", list(STAT_FUNCS))
@pytest.mark.parametrize("t_max", [0.0, -1.0, math.inf, math.nan])
def test_t_max(fname, t_max):
    with pytest.raises(ValueError, match="t_max"):
        STAT_FUNCS[fname](X, t_max=t_max)


@pytest.mark.parametrize("fname", list(STAT_FUNCS))
@pytest.mark.parametrize("n_points", [17.0, "17", None])
def test_n_points_type(fname, n_points):
    with pytest.raises(TypeError, match="n_points"):
        STAT_FUNCS[fname](X, n_points=n_points)


@pytest.mark.parametrize("fname", list(STAT_FUNCS))
@pytest.mark.parametrize("n_points", [1, 0, -5])
def test_n_points_value(fname, n_points):
    with pytest.raises(ValueError, match="n_points"):
        STAT_FUNCS[fname](X, n_points=n_points)


@pytest.mark.parametrize("fname", list(STAT_FUNCS))
@pytest.mark.parametrize("integration", ["simpson", "Exact", "", "gauss-hermite"])
def test_integration_unknown(fname, integration):
    with pytest.raises(ValueError, match="integration"):
        STAT_FUNCS[fname](X, integration=integration)


@pytest.mark.parametrize("reduction", ["avg", "Mean", ""])
def test_reduction_unknown(reduction):
    with pytest.raises(ValueError, match="reduction"):
        sigreg.sliced_epps_pulley(X, A, reduction=reduction)
    with pytest.raises(ValueError, match="reduction"):
        sigreg.sliced_epps_pulley_vjp(X, A, reduction=reduction)


@pytest.mark.parametrize("prediction", ["centre", "pair", ""])
def test_prediction_unknown(prediction):
    with pytest.raises(ValueError, match="prediction"):
        sigreg.lejepa_loss(np.stack([X, X]), None, num_slices=4, prediction=prediction)


# -------------------------------------------------------------- sliced shapes
@pytest.mark.parametrize("fn", [sigreg.sliced_epps_pulley, sigreg.sliced_epps_pulley_vjp])
def test_sliced_x_ndim(fn):
    with pytest.raises(ValueError, match=X_RE):
        fn(X[:, 0], A)


def test_sigreg_x_ndim():
    with pytest.raises(ValueError, match=X_RE):
        sigreg.sigreg(X[:, 0], num_slices=4)


@pytest.mark.parametrize("fn", [sigreg.sliced_epps_pulley, sigreg.sliced_epps_pulley_vjp])
@pytest.mark.parametrize("bad", [A[:, 0], A[None]])
def test_directions_ndim(fn, bad):
    with pytest.raises(ValueError, match="directions"):
        fn(X, bad)


@pytest.mark.parametrize("fn", [sigreg.sliced_epps_pulley, sigreg.sliced_epps_pulley_vjp])
def test_k_mismatch(fn):
    a = O.unit_directions(np.random.default_rng(72), 4, 2)
    with pytest.raises(ValueError, match=r"directions|\bx\b"):
        fn(X, a)


@pytest.mark.parametrize("fn", [sigreg.sliced_epps_pulley, sigreg.sliced_epps_pulley_vjp])
@pytest.mark.parametrize("scale", [2.0, 0.0, 0.999])
def test_non_unit_directions(fn, scale):
    a = A.copy()
    a[:, 1] *= scale
    with pytest.raises(ValueError, match="directions"):
        fn(X, a)


def test_non_unit_directions_lejepa():
    with pytest.raises(ValueError, match="directions"):
        sigreg.lejepa_loss(np.stack([X, X]), None, directions=2.0 * A)


def test_unit_directions_float32_accepted(xp, device):
    """Unit check must allow float32 rounding of genuinely unit columns."""
    x = make(xp, device, X, "float32")
    a = make(xp, device, A, "float32")
    out = sigreg.sliced_epps_pulley(x, a)
    assert np.isfinite(float(to64(out)))


@pytest.mark.parametrize("fn", [sigreg.sliced_epps_pulley, sigreg.sliced_epps_pulley_vjp])
def test_mixed_namespaces(fn):
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"directions|\bx\b|namespace"):
        fn(torch.asarray(X), A)
    with pytest.raises(TypeError, match=r"directions|\bx\b|namespace"):
        fn(X, torch.asarray(A))


def test_mixed_namespaces_lejepa():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError):
        sigreg.lejepa_loss(np.stack([X, X]), None, directions=torch.asarray(A))


# ------------------------------------------------------- counts / seeds / lamb
@pytest.mark.parametrize(
    "dim,m,arg", [(0, 3, "dim"), (-1, 3, "dim"), (3, 0, "num_slices"), (3, -2, "num_slices")]
)
def test_sample_directions_sizes(dim, m, arg):
    with pytest.raises(ValueError, match=arg):
        sigreg.sample_directions(dim, m, seed=0, backend="numpy")


@pytest.mark.parametrize("fn", ["sigreg", "lejepa"])
def test_num_slices(fn):
    for m in (0, -1):
        with pytest.raises(ValueError, match="num_slices"):
            if fn == "sigreg":
                sigreg.sigreg(X, num_slices=m)
            else:
                sigreg.lejepa_loss(np.stack([X, X]), None, num_slices=m)


SEED_CALLS = {
    "sample_directions": lambda **kw: sigreg.sample_directions(3, 4, backend="numpy", **kw),
    "sigreg": lambda **kw: sigreg.sigreg(X, num_slices=4, **kw),
    "lejepa_loss": lambda **kw: sigreg.lejepa_loss(np.stack([X, X]), None, num_slices=4, **kw),
}


@pytest.mark.parametrize("fname", list(SEED_CALLS))
@pytest.mark.parametrize("arg", ["seed", "step"])
def test_seed_step_negative(fname, arg):
    kw = {"seed": 0, arg: -1}
    with pytest.raises(ValueError, match=arg):
        SEED_CALLS[fname](**kw)


@pytest.mark.parametrize("fname", list(SEED_CALLS))
@pytest.mark.parametrize("arg", ["seed", "step"])
@pytest.mark.parametrize("bad", [1.5, "3", None])
def test_seed_step_non_int(fname, arg, bad):
    kw = {"seed": 0, arg: bad}
    with pytest.raises(TypeError, match=arg):
        SEED_CALLS[fname](**kw)


def test_seed_accepts_numpy_int():
    a = sigreg.sample_directions(3, 4, seed=np.int64(5), step=np.int32(2), backend="numpy")
    b = sigreg.sample_directions(3, 4, seed=5, step=2, backend="numpy")
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("lamb", [-0.01, 1.01, math.nan])
def test_lamb_range(lamb):
    with pytest.raises(ValueError, match="lamb"):
        sigreg.lejepa_loss(np.stack([X, X]), None, num_slices=4, lamb=lamb)


def test_unknown_backend_name():
    with pytest.raises((ValueError, TypeError), match="backend"):
        sigreg.epps_pulley(X, backend="tensorflow-not-a-backend")


@pytest.mark.parametrize("fname", ["epps_pulley", "epps_pulley_vjp"])
def test_zero_dim_x(fname):
    with pytest.raises(ValueError, match=r"\baxis\b|\bx\b"):
        STAT_FUNCS[fname](np.asarray(1.0))


def test_python_sequences_are_converted_with_numpy_as_scipy_does():
    data = [0.1, -1.2, 0.4, 2.0, -0.3]
    for like in (data, tuple(data), memoryview(np.array(data))):
        res = sigreg.epps_pulley_test(like)
        assert isinstance(res.statistic, np.float64)
        assert float(res.statistic) == float(sigreg.epps_pulley_test(np.array(data)).statistic)
    res = sigreg.epps_pulley_test([0.1, -1.2, 0.4, 2.0, -0.3], backend="numpy")
    ref = sigreg.epps_pulley_test(np.array([0.1, -1.2, 0.4, 2.0, -0.3]))
    assert float(res.statistic) == float(ref.statistic) and float(res.pvalue) == float(ref.pvalue)
