"""backends.torch: the analytic-backward autograd Function, the nn.Module losses, their step
counter, half precision, memory saved for backward, torch.compile, an in-process collective.

References are float64: plain torch autograd through the core (``sigreg.sliced_epps_pulley``,
``sigreg.lejepa_loss`` on tensors that require grad) and the core on NumPy.
"""

from __future__ import annotations

import doctest

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import ThreadGroup  # noqa: E402

import sigreg  # noqa: E402
from backends import torch as bt  # noqa: E402

F64 = torch.float64
N_KNOTS = 16  # n_points=17 minus the knot t=0


def _data(seed, shape, loc=0.3, scale=1.2, dtype=F64):
    rng = np.random.default_rng(seed)
    return torch.tensor(loc + scale * rng.standard_normal(shape), dtype=dtype)


def _dirs(dim, m, step=0, dtype=F64):
    return sigreg.sample_directions(dim, m, seed=7, step=step, backend="torch", dtype=dtype)


def _core_value_and_grad(x, directions, weights, **opts):
    """Plain autograd through the core: value and d sum(weights * value) / dx."""
    x = x.detach().to(F64).requires_grad_(True)
    value = sigreg.sliced_epps_pulley(x, directions.to(F64), **opts)
    (grad,) = torch.autograd.grad((value * weights).sum(), x)
    return value.detach(), grad


def _value_and_grad(x, directions, weights, **opts):
    x = x.detach().clone().requires_grad_(True)
    value = bt.sliced_epps_pulley(x, directions, **opts)
    (grad,) = torch.autograd.grad((value * weights.to(value.dtype)).sum(), x)
    return value.detach(), grad


# ------------------------------------------------------------ Function vs core autograd
ENGINES = ["cache_fused", "few_kernels"]  # "compiled": test_compiled_engine_matches (slow)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("debias", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 7, None])
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("shape", [(50, 6), (3, 40, 6)], ids=["2d", "views"])
def test_function_matches_core_autograd_float64(reduction, debias, chunk_size, engine, shape):
    x = _data(0, shape)
    a = _dirs(shape[-1], 19)
    out_shape = shape[:-2] + ((19,) if reduction == "none" else ())
    w = _data(1, out_shape, loc=0.0, scale=1.0)
    ref_v, ref_g = _core_value_and_grad(x, a, w, reduction=reduction, debias=debias)
    v, g = _value_and_grad(
        x, a, w, reduction=reduction, debias=debias, chunk_size=chunk_size, engine=engine
    )
    assert v.shape == ref_v.shape and v.dtype == F64 and g.dtype == F64
    torch.testing.assert_close(v, ref_v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g, ref_g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("t_max,n_points", [(3.0, 17), (5.0, 9)])
def test_function_quadrature_options(t_max, n_points):
    x, a = _data(2, (64, 5)), _dirs(5, 10)
    w = torch.ones(())
    ref_v, ref_g = _core_value_and_grad(x, a, w, t_max=t_max, n_points=n_points)
    v, g = _value_and_grad(x, a, w, t_max=t_max, n_points=n_points)
    torch.testing.assert_close(v, ref_v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g, ref_g, rtol=1e-10, atol=1e-12)


def test_function_float32_against_float64_oracle():
    x, a = _data(3, (2, 128, 12)), _dirs(12, 300)
    w = _data(4, (2,), loc=0.0, scale=1.0)
    ref_v, ref_g = _core_value_and_grad(x, a, w)
    v, g = _value_and_grad(x.float(), a.float(), w)
    assert v.dtype == torch.float32 and g.dtype == torch.float32
    torch.testing.assert_close(v.double(), ref_v, rtol=2e-4, atol=1e-5)
    torch.testing.assert_close(g.double(), ref_g, rtol=2e-3, atol=2e-5 * ref_g.abs().max().item())


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_precision_computed_in_float32_returned_in_input_dtype(half):
    x, a = _data(5, (96, 8)).to(half), _dirs(8, 64)
    xh = x.clone().requires_grad_(True)
    value = bt.sliced_epps_pulley(xh, a)
    value.backward()
    assert value.dtype == half and xh.grad.dtype == half
    # oracle: the same (rounded) half-precision samples, in float64
    ref_v, ref_g = _core_value_and_grad(x.to(F64), a, torch.ones(()))
    torch.testing.assert_close(value.double(), ref_v, rtol=1e-2, atol=1e-3)
    scale = ref_g.abs().max().item()
    torch.testing.assert_close(xh.grad.double(), ref_g, rtol=2e-2, atol=2e-2 * scale)
    # the float32 result is exactly the float32 computation cast to the input dtype
    v32 = bt.sliced_epps_pulley(x.float(), a.float())
    assert torch.equal(value, v32.to(half))


def test_autocast_does_not_leak_into_the_function():
    """Under CPU autocast (bfloat16), matmuls inside the Function must stay float32."""
    x, a = _data(6, (64, 16)).float(), _dirs(16, 256).float()
    plain = bt.sliced_epps_pulley(x, a, reduction="none")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = bt.sliced_epps_pulley(x, a, reduction="none")
        lin = torch.nn.Linear(16, 16)
        emb = lin(x)
        assert emb.dtype == torch.bfloat16
        loss = bt.SIGReg(num_slices=32)(emb)
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, plain, rtol=1e-6, atol=1e-6)
    assert loss.dtype == torch.bfloat16
    loss.backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()


@pytest.mark.parametrize("debias", [False, True])
@pytest.mark.parametrize("engine", ENGINES)
def test_gradcheck_float64(debias, engine):
    x = _data(7, (2, 6, 3)).requires_grad_(True)
    a = _dirs(3, 5)
    fn = lambda x: bt.sliced_epps_pulley(  # noqa: E731
        x, a, reduction="none", debias=debias, chunk_size=2, engine=engine
    )
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_double_backward_is_refused():
    x = _data(8, (20, 3)).requires_grad_(True)
    value = bt.sliced_epps_pulley(x, _dirs(3, 4))
    (g,) = torch.autograd.grad(value, x, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()


# ----------------------------------------------------------------------- memory
def _saved_bytes(fn):
    """Bytes of every tensor autograd saves for backward while running ``fn``."""
    total = []

    def pack(t):
        total.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(total), out


@pytest.mark.parametrize("engine", ENGINES)
def test_saved_for_backward_is_small(engine):
    """Without a collective: the per-slice gradient (the size of the projections) and the
    directions; with one: x, directions, C, S, count. Never O(N M n_points)."""
    v, n, k, m = 2, 512, 8, 256
    x = _data(9, (v, n, k)).requires_grad_(True)
    a = _dirs(k, m)
    ours, out = _saved_bytes(lambda: bt.sliced_epps_pulley(x, a, engine=engine))
    assert ours <= 8 * (v * n * m + k * m + 64), ours  # gradient d value / d theta, directions
    sizes = sorted(t.numel() for t in out.grad_fn.next_functions[0][0].saved_tensors)
    assert sizes == sorted([v * m * n, k * m])
    coll = ThreadGroup(1).run(
        lambda r, c: _saved_bytes(lambda: bt.sliced_epps_pulley(x, a, engine=engine, collective=c))
    )[0][0]
    assert coll <= 8 * (v * n * k + k * m + 2 * v * m * N_KNOTS + 64)  # x, directions, C, S, count
    # the plain-autograd path through the core keeps O(N M n_points) numbers: the check bites
    core, _ = _saved_bytes(lambda: sigreg.sliced_epps_pulley(x, a))
    assert core > 8 * v * n * m * N_KNOTS


class _OpCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts every aten operation dispatched (each is a kernel launch on a GPU)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn):
    counter = _OpCounter()
    with counter:
        fn()
    return counter.count


def test_few_kernels_dispatches_few_operations():
    """The accelerator strategy: a bounded number of aten operations per forward + backward,
    independent of the number of slices while one chunk holds them (the benchmark prints the
    count at (2048, 512, 1024))."""
    x = torch.randn(256, 32, requires_grad=True)
    counts = {}
    for m in (64, 512):
        a = _dirs(32, m, dtype=torch.float32)

        def step(engine, a=a):
            x.grad = None
            bt.sliced_epps_pulley(x, a, engine=engine).backward()

        step("few_kernels")  # constants are cached on first use
        counts[m] = count_ops(lambda: step("few_kernels"))
        assert counts[m] <= 64, counts
    assert counts[64] == counts[512]


# --------------------------------------------------------------- SIGReg module
def test_sigreg_module_matches_core_and_advances_step():
    x = _data(10, (64, 6))
    mod = bt.SIGReg(num_slices=50, seed=3)
    assert int(mod.step) == 0 and "step" in mod.state_dict()
    for k in range(3):
        xr = x.clone().requires_grad_(True)
        value = mod(xr)
        value.backward()
        ref = sigreg.sigreg(x.numpy(), num_slices=50, seed=3, step=k)
        np.testing.assert_allclose(value.item(), ref, rtol=1e-10, atol=0)
        a = sigreg.sample_directions(6, 50, seed=3, step=k, backend="torch", dtype=F64)
        _, ref_g = _core_value_and_grad(x, a, torch.ones(()))
        torch.testing.assert_close(xr.grad, ref_g, rtol=1e-10, atol=1e-12)
        assert int(mod.step) == k + 1 and int(mod._step_cpu) == k + 1
    # fresh directions each step: consecutive values differ
    assert mod(x).item() != mod(x).item()


def test_sigreg_module_batch_of_views_and_options():
    x = _data(11, (3, 40, 5))
    mod = bt.SIGReg(num_slices=20, seed=1, t_max=4.0, n_points=9, debias=True, chunk_size=6)
    value = mod(x)
    ref = sigreg.sigreg(x.numpy(), num_slices=20, seed=1, t_max=4.0, n_points=9, debias=True)
    assert value.shape == (3,)
    np.testing.assert_allclose(value.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_state_dict_round_trip_resumes_directions():
    x = _data(12, (2, 32, 6))
    first = bt.LeJEPALoss(num_slices=30, seed=5)
    for _ in range(3):
        first(x)
    state = first.state_dict()
    assert int(state["step"]) == 3
    resumed = bt.LeJEPALoss(num_slices=30, seed=5)
    resumed.load_state_dict(state)
    assert int(resumed._step_cpu) == 3
    expected = first(x)
    got = resumed(x)
    assert torch.equal(got.loss, expected.loss)
    assert int(resumed.step) == int(first.step) == 4
    # a module that did not resume draws step-0 directions: a different value
    assert not torch.equal(bt.LeJEPALoss(num_slices=30, seed=5)(x).loss, expected.loss)
    # the same through set_step, and for SIGReg
    s1, s2 = bt.SIGReg(num_slices=30), bt.SIGReg(num_slices=30)
    s1.set_step(11)
    s2.load_state_dict(s1.state_dict())
    assert torch.equal(s1(x[0]), s2(x[0]))
    np.testing.assert_allclose(
        s1(x[0]).item(), sigreg.sigreg(x[0].numpy(), num_slices=30, step=12), rtol=1e-10
    )


# ------------------------------------------------------------- LeJEPA module
@pytest.mark.parametrize("prediction", ["center", "pairwise"])
@pytest.mark.parametrize("with_local", [False, True])
def test_lejepa_module_matches_core(prediction, with_local):
    g = _data(13, (2, 48, 7))
    loc = _data(14, (3, 48, 7), loc=0.0, scale=0.8) if with_local else None
    mod = bt.LeJEPALoss(lamb=0.2, num_slices=40, seed=2, prediction=prediction)
    for k in range(2):
        gr = g.clone().requires_grad_(True)
        lr = loc.clone().requires_grad_(True) if with_local else None
        out = mod(gr, lr)
        # oracle 1: the core on NumPy
        ref = sigreg.lejepa_loss(
            g.numpy(),
            None if loc is None else loc.numpy(),
            lamb=0.2,
            num_slices=40,
            seed=2,
            step=k,
            prediction=prediction,
        )
        for part, expected in zip(out, ref, strict=True):
            assert part.dtype == F64 and part.shape == ()
            np.testing.assert_allclose(part.item(), expected, rtol=1e-10, atol=1e-13)
        # oracle 2: plain torch autograd through the core
        gc = g.clone().requires_grad_(True)
        lc = loc.clone().requires_grad_(True) if with_local else None
        ref_t = sigreg.lejepa_loss(
            gc, lc, lamb=0.2, num_slices=40, seed=2, step=k, prediction=prediction
        )
        inputs = (gr, lr) if with_local else (gr,)
        ref_inputs = (gc, lc) if with_local else (gc,)
        grads = torch.autograd.grad(out.loss, inputs)
        ref_grads = torch.autograd.grad(ref_t.loss, ref_inputs)
        for got, expected in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-13)
    assert int(mod.step) == 2


def test_lejepa_module_half_precision():
    g = _data(15, (2, 64, 8)).to(torch.bfloat16).requires_grad_(True)
    out = bt.LeJEPALoss(num_slices=32)(g)
    assert all(p.dtype == torch.bfloat16 for p in out)
    ref = sigreg.lejepa_loss(g.detach().double().numpy(), num_slices=32)
    np.testing.assert_allclose(out.loss.double().item(), ref.loss, rtol=1e-2)
    out.loss.backward()
    assert g.grad.dtype == torch.bfloat16


# ------------------------------------------------------------------- validation
def test_validation_errors():
    x, a = _data(16, (10, 3)), _dirs(3, 4)
    with pytest.raises(TypeError):
        bt.sliced_epps_pulley(x.numpy(), a)
    with pytest.raises(TypeError):
        bt.sliced_epps_pulley(x.to(torch.complex128), a)
    with pytest.raises(ValueError, match="x must"):
        bt.sliced_epps_pulley(x[0], a)
    with pytest.raises(ValueError, match="directions"):
        bt.sliced_epps_pulley(x, _dirs(4, 4))
    with pytest.raises(ValueError, match="directions"):
        bt.sliced_epps_pulley(x, a.clone().requires_grad_(True))
    with pytest.raises(ValueError, match="reduction"):
        bt.sliced_epps_pulley(x, a, reduction="max")
    with pytest.raises(ValueError, match="chunk_size"):
        bt.sliced_epps_pulley(x, a, chunk_size=0)
    with pytest.raises(ValueError, match="debias"):
        bt.sliced_epps_pulley(x[:1], a, debias=True)
    with pytest.raises(ValueError, match="t_max"):
        bt.SIGReg(t_max=-1.0)
    with pytest.raises(ValueError, match="num_slices"):
        bt.SIGReg(num_slices=0)
    with pytest.raises(ValueError, match="seed"):
        bt.SIGReg(seed=2**63)
    with pytest.raises(TypeError, match="collective"):
        bt.SIGReg(collective=object())
    with pytest.raises(ValueError, match="lamb"):
        bt.LeJEPALoss(lamb=1.5)
    with pytest.raises(ValueError, match="prediction"):
        bt.LeJEPALoss(prediction="both")
    mod = bt.LeJEPALoss(num_slices=4)
    with pytest.raises(ValueError, match="global_views"):
        mod(x)
    with pytest.raises(ValueError, match="local_views"):
        mod(x[None], _data(17, (1, 9, 3)))
    with pytest.raises(ValueError, match="global_views"):
        mod(x[None, :0])
    assert int(mod.step) == 0  # failed calls do not consume a step
    sig = bt.SIGReg(num_slices=4, debias=True)
    with pytest.raises(ValueError, match="x must"):
        sig(x[0])
    with pytest.raises(ValueError, match="2 samples"):
        sig(x[:1])
    assert int(sig.step) == 0


def test_non_finite_input_gives_nan_not_an_exception():
    x = _data(18, (10, 3))
    x[0, 0] = float("nan")
    assert torch.isnan(bt.sliced_epps_pulley(x, _dirs(3, 4)))


# --------------------------------------------------------------- collective (threads)
@pytest.mark.parametrize("sizes", [(4, 4), (5, 3), (1, 4)])
@pytest.mark.parametrize("engine", ENGINES)
def test_collective_semantics_with_threads(sizes, engine):
    """Each rank's value is the global one; its input gradient is world_size x its share of
    the global gradient (the backward sums the cotangents over ranks, like an autograd-aware
    all-reduce)."""
    x = _data(19, (2, sum(sizes), 5))
    a = _dirs(5, 9)
    shards = torch.split(x, list(sizes), dim=1)
    world = len(sizes)
    ref_v, ref_g = _core_value_and_grad(x, a, torch.ones(2), debias=True)

    def rank_fn(r, coll):
        xs = shards[r].clone().requires_grad_(True)
        value = bt.sliced_epps_pulley(
            xs, a, debias=True, collective=coll, chunk_size=4, engine=engine
        )
        value.sum().backward()
        return value.detach(), xs.grad

    results = ThreadGroup(world).run(rank_fn)
    ref_shards = torch.split(ref_g, list(sizes), dim=1)
    for (value, grad), expected in zip(results, ref_shards, strict=True):
        torch.testing.assert_close(value, ref_v, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad, world * expected, rtol=1e-10, atol=1e-12)


def test_lejepa_collective_values_with_threads():
    g = _data(20, (2, 8, 4))
    ref = sigreg.lejepa_loss(g.numpy(), num_slices=12, prediction="pairwise")

    def rank_fn(r, coll):
        shard = g[:, :5] if r == 0 else g[:, 5:]
        return bt.LeJEPALoss(num_slices=12, prediction="pairwise", collective=coll)(shard)

    for out in ThreadGroup(2).run(rank_fn):
        for part, expected in zip(out, ref, strict=True):
            np.testing.assert_allclose(part.item(), expected, rtol=1e-10, atol=1e-13)


# --------------------------------------------------------------------- compile
@pytest.mark.parametrize("engine", ["auto", *ENGINES])
def test_compile_fullgraph_tiny_model_matches_eager(engine):
    """fullgraph=True fails on any graph break (e.g. a host sync such as ``.item()``);
    error_on_recompile proves the step counter does not force a recompilation per step."""
    dynamo = pytest.importorskip("torch._dynamo")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 5)
    ).double()
    lejepa = bt.LeJEPALoss(num_slices=40, chunk_size=16, engine=engine)
    sig = bt.SIGReg(num_slices=24, chunk_size=16, engine=engine)

    fixed = _dirs(5, 10)

    def step(g, loc):
        zg, zl = model(g), model(loc)
        out = lejepa(zg, zl)
        return (
            out.loss
            + 0.5 * sig(zg[0])
            + 0.1 * bt.sliced_epps_pulley(zl, fixed, debias=True, engine=engine).sum()
        )

    g, loc = _data(21, (2, 16, 6)), _data(22, (3, 16, 6))
    expected = []
    for _ in range(3):
        model.zero_grad()
        total = step(g, loc)
        total.backward()
        expected.append((total.detach(), [p.grad.clone() for p in model.parameters()]))
    lejepa.set_step(0)
    sig.set_step(0)
    dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    with dynamo.config.patch(error_on_recompile=True):
        for k in range(3):
            model.zero_grad()
            total = compiled(g, loc)
            total.backward()
            torch.testing.assert_close(total.detach(), expected[k][0], rtol=1e-12, atol=0)
            for p, ref in zip(model.parameters(), expected[k][1], strict=True):
                torch.testing.assert_close(p.grad, ref, rtol=1e-12, atol=1e-14)
    assert int(lejepa.step) == int(sig.step) == 3
    dynamo.reset()


# ------------------------------------------------------------------------ docs
def test_docstring_examples():
    result = doctest.testmod(bt, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_public_symbols_documented():
    for name in bt.__all__:
        obj = getattr(bt, name)
        if callable(obj):
            assert obj.__doc__ and "Parameters" in obj.__doc__ or name == "LeJEPAParts", name


@pytest.mark.slow  # inductor compiles two kernels: ~1-2 minutes on a small CPU
@pytest.mark.parametrize("debias", [False, True])
def test_compiled_engine_matches_eager(debias):
    from backends.torch import sliced_epps_pulley

    gen = torch.Generator().manual_seed(11)
    x = torch.randn(96, 12, dtype=torch.float64, generator=gen, requires_grad=True)
    a = sigreg.sample_directions(12, 40, seed=2, backend="torch", dtype=torch.float64)
    compiled = sliced_epps_pulley(x, a, chunk_size=16, engine="compiled", debias=debias)
    (grad_compiled,) = torch.autograd.grad(compiled, x)
    eager = sliced_epps_pulley(x, a, chunk_size=16, engine="cache_fused", debias=debias)
    (grad_eager,) = torch.autograd.grad(eager, x)
    torch.testing.assert_close(compiled, eager, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad_compiled, grad_eager, rtol=1e-10, atol=1e-12)


def test_engine_option_and_deprecated_fused():
    x = _data(30, (40, 4))
    a = _dirs(4, 6)
    with pytest.raises(ValueError, match="engine"):
        bt.sliced_epps_pulley(x, a, engine="gpu")
    with pytest.raises(ValueError, match="engine"):
        bt.SIGReg(engine="fast")
    with pytest.warns(DeprecationWarning, match="compiled"):
        assert bt.SIGReg(num_slices=4, fused=True).engine == "compiled"
    with pytest.warns(DeprecationWarning, match="LeJEPAParts"):
        assert bt.LeJEPALossParts is sigreg.LeJEPAParts


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_strategies_agree_with_each_other(dtype, rtol):
    """The issue's tolerance between strategies, at a size with many cache blocks."""
    x = _data(31, (2, 700, 24), dtype=dtype)
    a = _dirs(24, 96, dtype=dtype)
    out = {e: _value_and_grad(x, a, torch.ones(2, 96), reduction="none", engine=e) for e in ENGINES}
    (v1, g1), (v2, g2) = out["cache_fused"], out["few_kernels"]
    torch.testing.assert_close(v1, v2, rtol=rtol, atol=rtol * v2.abs().max().item())
    torch.testing.assert_close(g1, g2, rtol=rtol, atol=rtol * g2.abs().max().item())
