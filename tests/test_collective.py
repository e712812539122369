"""Collective (simulated k-rank all-reduce with threads): k ranks on unequal shards == one call on
the concatenated batch, for values and for the VJP pullbacks."""

from __future__ import annotations

import numpy as np
import oracles as O
import pytest
from helpers import ThreadGroup, assert_close, make, to64

sigreg = pytest.importorskip("sigreg")

SPLITS = [(5, 3), (4, 1, 3)]
SPLIT_IDS = ["5+3", "4+1+3"]


def _shards(x, sizes, axis=0):
    idx = np.cumsum(sizes)[:-1]
    return np.split(x, idx, axis=axis)


@pytest.mark.parametrize("sizes", SPLITS, ids=SPLIT_IDS)
@pytest.mark.parametrize("debias", [False, True])
def test_epps_pulley_collective(xp, device, sizes, debias):
    x_np = 0.2 + np.random.default_rng(80).standard_normal((sum(sizes), 2))
    shards = [make(xp, device, s) for s in _shards(x_np, sizes)]
    group = ThreadGroup(len(sizes))
    outs = group.run(lambda r, c: sigreg.epps_pulley(shards[r], debias=debias, collective=c))
    ref = O.ep_nd(x_np, axis=0, debias=debias)
    for out in outs:
        assert_close(out, ref)
    assert len(set(group.calls)) == 1 and group.calls[0] >= 1


@pytest.mark.parametrize("sizes", SPLITS, ids=SPLIT_IDS)
@pytest.mark.parametrize("debias", [False, True])
def test_epps_pulley_vjp_collective(xp, device, sizes, debias):
    x_np = 0.2 + np.random.default_rng(81).standard_normal((3, sum(sizes)))
    cot_np = np.array([1.0, -0.5, 2.0])
    shards = [make(xp, device, s) for s in _shards(x_np, sizes, axis=1)]

    def rank(r, c):
        value, pb = sigreg.epps_pulley_vjp(shards[r], axis=1, debias=debias, collective=c)
        return value, pb(make(xp, device, cot_np))

    outs = ThreadGroup(len(sizes)).run(rank)
    for value, _ in outs:
        assert_close(value, O.ep_nd(x_np, axis=1, debias=debias))
    g = np.concatenate([to64(gr) for _, gr in outs], axis=1)
    assert_close(g, O.ep_grad_nd(x_np, cot_np, axis=1, debias=debias))


@pytest.mark.parametrize("sizes", SPLITS, ids=SPLIT_IDS)
@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_sliced_collective_value_and_vjp(xp, device, engine, sizes, reduction):
    rng = np.random.default_rng(82)
    x_np = rng.standard_normal((sum(sizes), 4)) * 0.9
    a_np = O.unit_directions(rng, 4, 3)
    cot_np = rng.standard_normal(3) if reduction == "none" else np.asarray(1.3)
    shards = [make(xp, device, s) for s in _shards(x_np, sizes)]
    a = make(xp, device, a_np)

    def rank(r, c):
        opts = dict(reduction=reduction, collective=c, engine=engine)
        v1 = sigreg.sliced_epps_pulley(shards[r], a, **opts)
        v2, pb = sigreg.sliced_epps_pulley_vjp(shards[r], a, **opts)
        return v1, v2, pb(make(xp, device, cot_np))

    outs = ThreadGroup(len(sizes)).run(rank)
    ref = O.sliced(x_np, a_np, reduction=reduction)
    for v1, v2, _ in outs:
        assert_close(v1, ref)
        assert_close(v2, ref)
    g = np.concatenate([to64(o[2]) for o in outs], axis=0)
    assert_close(g, O.sliced_grad(x_np, a_np, cot_np, reduction=reduction))


@pytest.mark.parametrize("sizes", SPLITS, ids=SPLIT_IDS)
def test_sigreg_collective(xp, device, sizes):
    x_np = np.random.default_rng(83).uniform(-2, 2, (sum(sizes), 5))
    shards = [make(xp, device, s) for s in _shards(x_np, sizes)]
    outs = ThreadGroup(len(sizes)).run(
        lambda r, c: sigreg.sigreg(shards[r], num_slices=8, seed=2, step=5, collective=c)
    )
    a_np = to64(sigreg.sample_directions(5, 8, seed=2, step=5, backend="numpy"))
    for out in outs:
        assert_close(out, O.sliced(x_np, a_np))


@pytest.mark.parametrize("sizes", SPLITS, ids=SPLIT_IDS)
@pytest.mark.parametrize("prediction", ["center", "pairwise"])
@pytest.mark.parametrize("with_local", [False, True])
def test_lejepa_collective(xp, device, sizes, prediction, with_local):
    rng = np.random.default_rng(84)
    n, d = sum(sizes), 4
    base = rng.standard_normal((n, d))
    g_np = base[None] + 0.4 * rng.standard_normal((2, n, d))
    l_np = base[None] + 0.7 * rng.standard_normal((3, n, d)) if with_local else None
    a_np = O.unit_directions(rng, d, 5)
    gs = [make(xp, device, s) for s in _shards(g_np, sizes, axis=1)]
    ls = (
        [None] * len(sizes)
        if l_np is None
        else [make(xp, device, s) for s in _shards(l_np, sizes, axis=1)]
    )
    a = make(xp, device, a_np)
    outs = ThreadGroup(len(sizes)).run(
        lambda r, c: sigreg.lejepa_loss(
            gs[r], ls[r], directions=a, prediction=prediction, lamb=0.4, collective=c
        )
    )
    ref = O.lejepa(g_np, l_np, a_np, lamb=0.4, prediction=prediction)
    for res in outs:
        assert_close(res.loss, ref[0])
        assert_close(res.prediction, ref[1])
        assert_close(res.sigreg, ref[2])


def test_single_rank_collective_is_identity():
    x_np = np.random.default_rng(85).standard_normal(9)
    out = ThreadGroup(1).run(lambda r, c: sigreg.epps_pulley(x_np, collective=c))[0]
    assert_close(out, O.ep_official(x_np))


@pytest.mark.parametrize(
    "call",
    [
        lambda x, c: sigreg.epps_pulley(x, integration="exact", collective=c),
        lambda x, c: sigreg.epps_pulley_vjp(x, integration="exact", collective=c),
        lambda x, c: sigreg.sliced_epps_pulley(
            x[:, None], np.ones((1, 1)), integration="exact", collective=c
        ),
        lambda x, c: sigreg.sliced_epps_pulley_vjp(
            x[:, None], np.ones((1, 1)), integration="exact", collective=c
        ),
        lambda x, c: sigreg.sigreg(x[:, None], num_slices=2, integration="exact", collective=c),
    ],
    ids=["epps_pulley", "epps_pulley_vjp", "sliced", "sliced_vjp", "sigreg"],
)
def test_exact_with_collective_raises(call):
    x = np.random.default_rng(86).standard_normal(6)
    with pytest.raises(ValueError, match="exact|collective|integration"):
        ThreadGroup(1).run(lambda r, c: call(x, c))


@pytest.mark.parametrize("sizes", SPLITS, ids=SPLIT_IDS)
@pytest.mark.parametrize("prediction", ["center", "pairwise"])
def test_lejepa_vjp_collective(sizes, prediction):
    """Shard gradients of the GLOBAL loss, concatenated, equal the full-batch gradient
    (central differences of the float64 oracle)."""
    rng = np.random.default_rng(87)
    n, d = sum(sizes), 3
    g_np = rng.standard_normal((2, n, d))
    l_np = rng.standard_normal((2, n, d))
    a_np = O.unit_directions(rng, d, 4)
    gs = _shards(g_np, sizes, axis=1)
    ls = _shards(l_np, sizes, axis=1)

    def rank(r, c):
        parts, pb = sigreg.lejepa_loss_vjp(
            gs[r], ls[r], directions=a_np, prediction=prediction, lamb=0.4, collective=c
        )
        return parts, pb(1.0)

    outs = ThreadGroup(len(sizes)).run(rank)
    ref = O.lejepa(g_np, l_np, a_np, lamb=0.4, prediction=prediction)
    for parts, _ in outs:
        assert_close(parts.loss, ref[0])
    gg = np.concatenate([to64(o[1][0]) for o in outs], axis=1)
    gl = np.concatenate([to64(o[1][1]) for o in outs], axis=1)
    fg, fl = O.lejepa_fd_grads(g_np, l_np, a_np, 0.4, prediction)
    np.testing.assert_allclose(gg, fg, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gl, fl, rtol=1e-6, atol=1e-8)
