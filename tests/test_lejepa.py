"""lejepa_loss vs the float64 oracle: both prediction modes, with/without local views,
explicit directions, seed/step path, lamb, result type, autodiff."""

from __future__ import annotations

import numpy as np
import oracles as O
import pytest
from helpers import assert_close, assert_same_backend, make, to64

sigreg = pytest.importorskip("sigreg")


def _views(seed, vg=2, vl=3, n=10, d=6):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, d))
    g = base[None] + 0.3 * rng.standard_normal((vg, n, d))
    loc = None if vl == 0 else base[None] + 0.6 * rng.standard_normal((vl, n, d)) + 0.1
    return g, loc


@pytest.mark.parametrize("prediction", ["center", "pairwise"])
@pytest.mark.parametrize("with_local", [False, True])
def test_matches_oracle_with_directions(xp, device, dtype, engine, prediction, with_local):
    g_np, l_np = _views(50, vl=3 if with_local else 0)
    a_np = O.unit_directions(np.random.default_rng(51), 6, 9)
    g = make(xp, device, g_np, dtype)
    loc = None if l_np is None else make(xp, device, l_np, dtype)
    a = make(xp, device, a_np, dtype)
    res = sigreg.lejepa_loss(g, loc, directions=a, prediction=prediction, lamb=0.3, engine=engine)
    ref_loss, ref_pred, ref_sig = O.lejepa(
        to64(g), None if loc is None else to64(loc), to64(a), lamb=0.3, prediction=prediction
    )
    assert_close(res.prediction, ref_pred, dtype, scale=5)
    assert_close(res.sigreg, ref_sig, dtype, scale=10)
    assert_close(res.loss, ref_loss, dtype, scale=10)
    for v in res:
        assert tuple(v.shape) == ()
        assert_same_backend(v, g)
        assert v.dtype == g.dtype


def test_result_is_namedtuple():
    g_np, l_np = _views(52)
    res = sigreg.lejepa_loss(g_np, l_np, num_slices=8)
    assert isinstance(res, tuple) and type(res).__name__ == "LeJEPAParts"
    assert res._fields == ("loss", "prediction", "sigreg")


@pytest.mark.parametrize("prediction", ["center", "pairwise"])
def test_seed_step_path(xp, device, prediction):
    g_np, l_np = _views(53, vg=2, vl=2, n=12, d=5)
    res = sigreg.lejepa_loss(
        make(xp, device, g_np),
        make(xp, device, l_np),
        num_slices=16,
        seed=4,
        step=9,
        prediction=prediction,
    )
    a_np = to64(sigreg.sample_directions(5, 16, seed=4, step=9, backend="numpy"))
    ref = O.lejepa(g_np, l_np, a_np, prediction=prediction)  # default lamb = 0.05
    assert_close(res.loss, ref[0])
    assert_close(res.prediction, ref[1])
    assert_close(res.sigreg, ref[2])


@pytest.mark.parametrize("lamb", [0.0, 0.05, 1.0])
def test_lamb_mixes(lamb):
    g_np, l_np = _views(54)
    a_np = O.unit_directions(np.random.default_rng(55), 6, 4)
    res = sigreg.lejepa_loss(g_np, l_np, directions=a_np, lamb=lamb)
    ref = O.lejepa(g_np, l_np, a_np, lamb=lamb)
    assert abs(float(to64(res.loss)) - ref[0]) <= 1e-10 * max(1.0, abs(ref[0]))


def test_prediction_modes_relation():
    """pairwise = center + spread of the global views around their mean (paper Eq. 5 vs 6)."""
    g_np, l_np = _views(56, vg=3, vl=2)
    a_np = O.unit_directions(np.random.default_rng(57), 6, 4)
    c = sigreg.lejepa_loss(g_np, l_np, directions=a_np, prediction="center")
    p = sigreg.lejepa_loss(g_np, l_np, directions=a_np, prediction="pairwise")
    spread = np.mean((g_np - g_np.mean(0)) ** 2)
    assert abs(float(to64(p.prediction)) - float(to64(c.prediction)) - spread) < 1e-12
    assert float(to64(p.sigreg)) == pytest.approx(float(to64(c.sigreg)), rel=1e-12)


def test_single_global_view_center_without_local_is_zero():
    g_np, _ = _views(58, vg=1, vl=0)
    a_np = O.unit_directions(np.random.default_rng(59), 6, 4)
    res = sigreg.lejepa_loss(g_np, None, directions=a_np)
    assert float(to64(res.prediction)) == 0.0
    assert float(to64(res.sigreg)) == pytest.approx(O.sliced(g_np[0], a_np), rel=1e-10)


@pytest.mark.parametrize("prediction", ["center", "pairwise"])
def test_torch_autograd_through_lejepa(prediction):
    torch = pytest.importorskip("torch")
    g_np, l_np = _views(60, vg=2, vl=2, n=8, d=4)
    a_np = O.unit_directions(np.random.default_rng(61), 4, 5)
    g = torch.asarray(g_np).requires_grad_(True)
    loc = torch.asarray(l_np).requires_grad_(True)
    res = sigreg.lejepa_loss(
        g, loc, directions=torch.asarray(a_np), prediction=prediction, lamb=0.2
    )
    gg, gl = torch.autograd.grad(res.loss, (g, loc))

    # central finite differences of the float64 oracle
    def f(gv, lv):
        return O.lejepa(gv, lv, a_np, lamb=0.2, prediction=prediction)[0]

    h = 1e-6
    for arr, grad, which in ((g_np, gg, 0), (l_np, gl, 1)):
        fd = np.zeros_like(arr)
        for idx in np.ndindex(*arr.shape):
            e = np.zeros_like(arr)
            e[idx] = h
            args_p = (g_np + e, l_np) if which == 0 else (g_np, l_np + e)
            args_m = (g_np - e, l_np) if which == 0 else (g_np, l_np - e)
            fd[idx] = (f(*args_p) - f(*args_m)) / (2 * h)
        np.testing.assert_allclose(grad.numpy(), fd, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------ lejepa_loss_vjp
@pytest.mark.parametrize("prediction", ["center", "pairwise"])
@pytest.mark.parametrize("with_local", [False, True])
def test_lejepa_vjp_matches_finite_differences(prediction, with_local):
    g_np, l_np = _views(62, vg=2, vl=2 if with_local else 0, n=6, d=3)
    a_np = O.unit_directions(np.random.default_rng(63), 3, 4)
    parts, pb = sigreg.lejepa_loss_vjp(g_np, l_np, directions=a_np, lamb=0.3, prediction=prediction)
    ref = O.lejepa(g_np, l_np, a_np, lamb=0.3, prediction=prediction)
    for got, want in zip(parts, ref, strict=True):
        assert abs(float(to64(got)) - want) <= 1e-10 * max(1.0, abs(want))
    gg, gl = pb(np.asarray(-1.5))
    fg, fl = O.lejepa_fd_grads(g_np, l_np, a_np, 0.3, prediction)
    np.testing.assert_allclose(to64(gg), -1.5 * fg, rtol=1e-6, atol=1e-8)
    if with_local:
        np.testing.assert_allclose(to64(gl), -1.5 * fl, rtol=1e-6, atol=1e-8)
    else:
        assert gl is None


def test_lejepa_vjp_backends(xp, device, dtype, engine):
    g_np, l_np = _views(64, vg=2, vl=1, n=5, d=3)
    a_np = O.unit_directions(np.random.default_rng(65), 3, 2)
    g, loc, a = (make(xp, device, v, dtype) for v in (g_np, l_np, a_np))
    parts, pb = sigreg.lejepa_loss_vjp(g, loc, directions=a, prediction="pairwise", engine=engine)
    gg, gl = pb(1.0)
    for arr, like in ((gg, g), (gl, loc)):
        assert tuple(arr.shape) == tuple(like.shape) and arr.dtype == like.dtype
        assert_same_backend(arr, like)
    fg, fl = O.lejepa_fd_grads(to64(g), to64(loc), to64(a), 0.05, "pairwise")
    assert_close(
        gg,
        fg,
        dtype,
        rtol=1e-6 if dtype == "float64" else 2e-3,
        atol=1e-8 if dtype == "float64" else 1e-4,
    )
    assert_close(
        gl,
        fl,
        dtype,
        rtol=1e-6 if dtype == "float64" else 2e-3,
        atol=1e-8 if dtype == "float64" else 1e-4,
    )
    assert_close(parts.loss, O.lejepa(to64(g), to64(loc), to64(a), prediction="pairwise")[0], dtype)


def test_null_expectation():
    assert sigreg.null_expectation() == pytest.approx(O.quad_null_mean(), rel=1e-14)
    assert sigreg.null_expectation(5.0, 33) == pytest.approx(O.quad_null_mean(5.0, 33), rel=1e-14)
