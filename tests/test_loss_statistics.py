"""``statistic=`` of the LeJEPA loss (sigreg/loss_statistics.py): values against float64 numpy/scipy
oracles, the exact null means by Monte Carlo, analytic pullbacks against finite differences
and autograd, and k simulated ranks (threads) == one call on the concatenated batch."""

from __future__ import annotations

import gof_oracles as G
import numpy as np
import oracles as O
import pytest
from helpers import ThreadGroup, assert_close, make, to64

import sigreg
from sigreg import loss_statistics as L

OTHERS = [s for s in L.LOSS_STATISTICS if s != "epps_pulley"]
EP_NULL = 1.052464  # NOTES.md section 3: the official grid's null mean


def _oracle_sigreg(views, a_np, statistic):
    """Mean over views and slices of ``T * EP_null / E_0[T; N]`` (oracles of tests/gof_oracles)."""
    n = views.shape[1]
    per_slice = [G.sliced(statistic, v, a_np) for v in views]
    return float(np.mean(per_slice)) * sigreg.null_expectation() / L.null_mean(statistic, n)


def _oracle_loss(g_np, l_np, a_np, statistic, lamb=0.3):
    views = np.concatenate([g_np, l_np], axis=0)
    pred = O.lejepa(g_np, l_np, a_np, lamb=lamb)[1]
    return (1.0 - lamb) * pred + lamb * _oracle_sigreg(views, a_np, statistic)


def _problem(seed, n=24, dim=3, m=4):
    rng = np.random.default_rng(seed)
    g = 0.3 + 1.2 * rng.standard_normal((2, n, dim))
    loc = g[:1] + 0.5 * rng.standard_normal((1, n, dim))
    return g, loc, O.unit_directions(rng, dim, m)


def test_scale_is_the_official_null_mean():
    assert abs(sigreg.null_expectation() - EP_NULL) < 5e-7


@pytest.mark.parametrize("statistic", OTHERS)
@pytest.mark.parametrize("n", [8, 64, 256])
def test_null_mean_monte_carlo(statistic, n):
    """E_0[T; N] of null_mean against N(0, 1) samples: within 4 standard errors (exact at
    every N, so also at N = 8, where e.g. Watson's 1/12 and (1/12)(1 - 1/N) are 4 standard
    errors apart)."""
    x = np.random.default_rng(7 + n).standard_normal((4000 if n > 8 else 40000, n))
    values = getattr(sigreg, statistic)(x, axis=1)
    se = values.std() / np.sqrt(values.size)
    assert abs(values.mean() - L.null_mean(statistic, n)) < 4.0 * se, (values.mean(), se)


def test_extended_jarque_bera_null_mean_finite_n():
    """The exact finite-N mean rises to the asymptotic 4, ~7% below it at N = 64."""
    means = [L.null_mean("extended_jarque_bera", n) for n in (64, 128, 256, 512, 10**7)]
    assert 3.7 < means[0] < 3.73 and np.all(np.diff(means) > 0)
    assert means[-1] == pytest.approx(4.0, abs=1e-5)


@pytest.mark.parametrize("statistic", L.LOSS_STATISTICS)
def test_lejepa_loss_matches_oracle(xp, device, statistic):
    g_np, l_np, a_np = _problem(1)
    g, loc, a = (make(xp, device, v) for v in (g_np, l_np, a_np))
    out = sigreg.lejepa_loss(g, loc, directions=a, lamb=0.3, statistic=statistic)
    if statistic == "epps_pulley":
        ref = O.lejepa(g_np, l_np, a_np, lamb=0.3)[0]
    else:
        ref = _oracle_loss(g_np, l_np, a_np, statistic)
    assert_close(out.loss, ref, rtol=1e-9, atol=1e-12)
    assert_close(out.loss, 0.7 * to64(out.prediction) + 0.3 * to64(out.sigreg), rtol=1e-12)


@pytest.mark.parametrize("statistic", OTHERS)
def test_lejepa_vjp_matches_finite_differences(xp, device, statistic):
    g_np, l_np, a_np = _problem(2, n=10, dim=2, m=3)
    g, loc, a = (make(xp, device, v) for v in (g_np, l_np, a_np))
    parts, pullback = sigreg.lejepa_loss_vjp(g, loc, directions=a, lamb=0.3, statistic=statistic)
    grad_g, grad_l = pullback(make(xp, device, np.asarray(1.0)))
    assert_close(parts.loss, _oracle_loss(g_np, l_np, a_np, statistic), rtol=1e-9)
    h = 1e-6
    for which, arr, grad in ((0, g_np, grad_g), (1, l_np, grad_l)):
        fd = np.zeros_like(arr)
        for idx in np.ndindex(*arr.shape):
            e = np.zeros_like(arr)
            e[idx] = h
            plus = (g_np + e, l_np) if which == 0 else (g_np, l_np + e)
            minus = (g_np - e, l_np) if which == 0 else (g_np, l_np - e)
            fd[idx] = (
                _oracle_loss(*plus, a_np, statistic) - _oracle_loss(*minus, a_np, statistic)
            ) / (2 * h)
        assert_close(grad, fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("statistic", OTHERS)
def test_lejepa_vjp_matches_torch_autograd(statistic):
    torch = pytest.importorskip("torch")
    g_np, l_np, a_np = _problem(3, n=40, dim=5, m=8)
    _, pullback = sigreg.lejepa_loss_vjp(g_np, l_np, directions=a_np, statistic=statistic)
    grads = pullback(2.5)
    g, loc = (torch.tensor(v, requires_grad=True) for v in (g_np, l_np))
    out = sigreg.lejepa_loss(g, loc, directions=torch.tensor(a_np), statistic=statistic)
    (2.5 * out.loss).backward()
    for ours, ref in zip(grads, (g.grad, loc.grad), strict=True):
        assert_close(ours, ref.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("statistic", OTHERS)
@pytest.mark.parametrize("sizes", [(6, 6), (5, 3)], ids=["6+6", "5+3"])
def test_collective_equals_one_call(xp, device, statistic, sizes):
    """k ranks (threads): values and the sum of the ranks' gradients == one call (EDF
    statistics gather, so equal shards only)."""
    if statistic in L.EDF_STATISTICS and len(set(sizes)) > 1:
        pytest.skip("all_gather needs equal per-rank batches")
    g_np, l_np, a_np = _problem(4, n=sum(sizes), dim=3, m=5)
    bounds = np.cumsum((0, *sizes))
    a = make(xp, device, a_np)
    opts = dict(directions=a, lamb=0.3, statistic=statistic)

    def rank(r, c):
        part = slice(bounds[r], bounds[r + 1])
        g, loc = make(xp, device, g_np[:, part]), make(xp, device, l_np[:, part])
        value = sigreg.lejepa_loss(g, loc, collective=c, **opts)
        parts, pullback = sigreg.lejepa_loss_vjp(g, loc, collective=c, **opts)
        return value, parts, pullback(make(xp, device, np.asarray(1.0)))

    outs = ThreadGroup(len(sizes)).run(rank)
    g, loc = make(xp, device, g_np), make(xp, device, l_np)
    ref, pullback = sigreg.lejepa_loss_vjp(g, loc, **opts)
    ref_g, ref_l = pullback(make(xp, device, np.asarray(1.0)))
    for value, parts, _ in outs:
        for ours in (value, parts):
            assert_close(ours.loss, to64(ref.loss), rtol=1e-10)
            assert_close(ours.sigreg, to64(ref.sigreg), rtol=1e-10)
    assert_close(np.concatenate([to64(o[2][0]) for o in outs], axis=1), to64(ref_g), rtol=1e-9)
    assert_close(np.concatenate([to64(o[2][1]) for o in outs], axis=1), to64(ref_l), rtol=1e-9)


def test_engine_applies_to_epps_pulley_only():
    g = np.random.default_rng(5).standard_normal((2, 16, 4))
    with pytest.raises(ValueError, match="engine='few_kernels'.*statistic='watson'"):
        sigreg.lejepa_loss(g, num_slices=8, statistic="watson", engine="few_kernels")
    with pytest.raises(ValueError, match="statistic must be one of"):
        sigreg.lejepa_loss(g, num_slices=8, statistic="shapiro_wilk")
    with pytest.raises(ValueError, match="at least 2 samples"):
        sigreg.lejepa_loss(g[:, :1], num_slices=8, statistic="mean_variance")


def test_edf_statistic_needs_a_gathering_collective():
    class SumOnly:
        def all_reduce_sum(self, x):
            return x

    class NoRank(SumOnly):
        def all_gather(self, x):
            return x[None]

    g = np.random.default_rng(6).standard_normal((2, 16, 4))
    with pytest.raises(TypeError, match="all_gather"):
        sigreg.lejepa_loss(g, num_slices=8, statistic="anderson_darling", collective=SumOnly())
    with pytest.raises(TypeError, match="rank"):
        sigreg.lejepa_loss_vjp(g, num_slices=8, statistic="watson", collective=NoRank())
    # a one-rank gathering collective is the identity
    one = sigreg.lejepa_loss(g, num_slices=8, statistic="watson", collective=NoRank())
    assert one.loss == pytest.approx(
        float(sigreg.lejepa_loss(g, num_slices=8, statistic="watson").loss)
    )
    # moment statistics need sums only
    out = sigreg.lejepa_loss(g, num_slices=8, statistic="mean_variance", collective=SumOnly())
    ref = sigreg.lejepa_loss(g, num_slices=8, statistic="mean_variance")
    assert float(out.loss) == pytest.approx(float(ref.loss), rel=1e-12)


@pytest.mark.parametrize("statistic", OTHERS)
def test_normalised_value_near_ep_null_on_gaussian_embeddings(statistic):
    """lamb means "lamb x one null mean of SIGReg": every statistic ~1.05 on N(0, I)."""
    rng = np.random.default_rng(8)
    values = [
        float(
            sigreg.lejepa_loss(
                rng.standard_normal((1, 128, 16)), num_slices=64, step=s, statistic=statistic
            ).sigreg
        )
        for s in range(40)
    ]
    assert np.mean(values) == pytest.approx(EP_NULL, rel=0.1)


@pytest.mark.parametrize("statistic", L.LOSS_STATISTICS)
def test_torch_module_matches_core(statistic):
    """backends.torch.LeJEPALoss(statistic=...) == sigreg.lejepa_loss at the same step, and
    its autograd gradient == the core's analytic pullback."""
    torch = pytest.importorskip("torch")
    from backends.torch import LeJEPALoss

    g_np, l_np, _ = _problem(9, n=32, dim=6)
    loss_fn = LeJEPALoss(lamb=0.3, num_slices=16, seed=4, statistic=statistic)
    loss_fn.set_step(5)
    g, loc = (torch.tensor(v, requires_grad=True) for v in (g_np, l_np))
    out = loss_fn(g, loc)
    out.loss.backward()
    opts = dict(lamb=0.3, num_slices=16, seed=4, step=5, statistic=statistic)
    ref, pullback = sigreg.lejepa_loss_vjp(g_np, l_np, **opts)
    for ours, theirs in zip(out, ref, strict=True):
        assert_close(ours, theirs, rtol=1e-11)
    for ours, theirs in zip((g.grad, loc.grad), pullback(1.0), strict=True):
        assert_close(ours, theirs, rtol=1e-9, atol=1e-14)
    assert f"statistic={statistic!r}" in repr(loss_fn)
    if statistic != "epps_pulley":
        with pytest.raises(ValueError, match="engine='few_kernels'"):
            LeJEPALoss(statistic=statistic, engine="few_kernels")


@pytest.mark.parametrize("statistic", OTHERS)
def test_torch_float32_matches_float64_core(statistic):
    """The torch path (native erfc / log_ndtr for the EDF statistics) in float32 against the
    float64 core, on embeddings with far tails (a few samples at |z| ~ 8-12)."""
    torch = pytest.importorskip("torch")
    from backends.torch import LeJEPALoss

    g_np, l_np, _ = _problem(10, n=64, dim=6)
    g_np[0, :3, 0] = [12.0, -9.0, 8.0]
    out = LeJEPALoss(num_slices=16, statistic=statistic)(
        torch.tensor(g_np, dtype=torch.float32), torch.tensor(l_np, dtype=torch.float32)
    )
    ref = sigreg.lejepa_loss(g_np, l_np, num_slices=16, statistic=statistic)
    assert out.loss.dtype == torch.float32
    for ours, theirs in zip(out, ref, strict=True):
        assert_close(ours, theirs, rtol=2e-5)


@pytest.mark.parametrize("statistic", OTHERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_collapsed_embeddings_give_a_finite_loss_and_gradient(xp, device, statistic, dtype):
    """Every view constant (a collapsed projector): finite loss and gradient, not NaN (the
    trainers stop on a non-finite loss), like Epps-Pulley."""
    g = make(xp, device, np.full((2, 32, 4), 0.7), dtype)
    parts, pullback = sigreg.lejepa_loss_vjp(g, num_slices=8, statistic=statistic)
    grad, _ = pullback(make(xp, device, np.asarray(1.0), dtype))
    assert np.isfinite(to64(parts.loss)) and to64(parts.sigreg) > 1.0
    assert np.all(np.isfinite(to64(grad)))
