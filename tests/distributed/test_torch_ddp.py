"""torch.distributed on CPU: 2 gloo processes on 127.0.0.1, equal (4+4) and unequal (5+3)
shards, against single-process float64 references on the concatenated batch.

(a) SIGReg and LeJEPA losses with TorchDistributedCollective equal the single-process loss;
(b) a DDP-wrapped model: after DDP's gradient averaging, parameter gradients equal
single-process training; (c) the same with unequal shards. Also: each rank's input
gradient is world_size x its share of the full-batch gradient (autograd-aware all-reduce).

The workers (torch_ddp_worker.py) run once per session; results come back through files.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():  # pragma: no cover
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

import sigreg  # noqa: E402
from backends.torch import LeJEPALoss  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import torch_ddp_worker as W  # noqa: E402

WORLD = 2
TOL = dict(rtol=1e-6, atol=1e-9)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: pathlib.Path, mode: str) -> list:
    """Run the two ranks of torch_ddp_worker.py in ``mode``; return their saved results."""
    env = dict(
        os.environ,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        WORLD_SIZE=str(WORLD),
        GLOO_SOCKET_IFNAME=os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
        OMP_NUM_THREADS="1",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "torch_ddp_worker.py"), str(out), mode],
            env=dict(env, RANK=str(r)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(WORLD)
    ]
    logs = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=300)
            logs.append(err)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} failed:\n{logs[r][-4000:]}"
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Launch the two eager ranks once per test session, also under pytest-xdist: the
    workers share the session's temporary root, and the first one to take the lock runs the
    job while the others wait and read its results."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the directory shared by the workers of this session
    out = base / "torch_ddp_eager"
    out.mkdir(exist_ok=True)
    with open(base / "torch_ddp_eager.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (out / "done").exists():
                return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]
            results = _launch(out, "eager")
            (out / "done").touch()
            return results
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _full_data():
    inputs, emb = W.dataset()
    return inputs, emb


def _core_lejepa(z, prediction="center", step=0):
    return sigreg.lejepa_loss(
        z[: W.N_GLOBAL],
        z[W.N_GLOBAL :],
        lamb=W.LAMB,
        num_slices=W.NUM_SLICES,
        seed=W.SEED,
        step=step,
        prediction=prediction,
    )


def _core_sigreg(z, step=0):
    return sigreg.sigreg(z, num_slices=W.NUM_SLICES, seed=W.SEED, step=step)


@pytest.mark.parametrize("engine", W.ENGINES)
@pytest.mark.parametrize("split", list(W.SPLITS))
def test_sigreg_loss_equals_single_process(ranks, split, engine):
    _, emb = _full_data()
    z0 = emb[0].numpy()
    expected = [_core_sigreg(z0, step=0), _core_sigreg(z0, step=1)]
    for res in ranks:
        assert res["world"] == WORLD
        got = [v.item() for v in res[f"{engine}/{split}/sigreg"]]
        np.testing.assert_allclose(got, expected, **TOL)


@pytest.mark.parametrize("engine", W.ENGINES)
@pytest.mark.parametrize("prediction", ["center", "pairwise"])
@pytest.mark.parametrize("split", list(W.SPLITS))
def test_lejepa_loss_equals_single_process(ranks, split, prediction, engine):
    _, emb = _full_data()
    expected = _core_lejepa(emb.numpy(), prediction)
    for res in ranks:
        got = [p.item() for p in res[f"{engine}/{split}/lejepa/{prediction}"]]
        np.testing.assert_allclose(got, list(expected), **TOL)


@pytest.mark.parametrize("engine", W.ENGINES)
@pytest.mark.parametrize("split", list(W.SPLITS))
def test_input_gradient_is_world_times_full_batch_share(ranks, split, engine):
    _, emb = _full_data()
    z = emb[0].clone().requires_grad_(True)
    sigreg.sigreg(z, num_slices=W.NUM_SLICES, seed=W.SEED, step=0).backward()
    sizes = W.SPLITS[split]
    for r, res in enumerate(ranks):
        start = sum(sizes[:r])
        expected = WORLD * z.grad[start : start + sizes[r]]
        torch.testing.assert_close(res[f"{engine}/{split}/sigreg_input_grad"], expected, **TOL)


@pytest.mark.parametrize("engine", W.ENGINES)
@pytest.mark.parametrize("loss_name", ["lejepa", "sigreg"])
@pytest.mark.parametrize("split", list(W.SPLITS))
def test_ddp_parameter_gradients_equal_single_process(ranks, split, loss_name, engine):
    """Plain torch autograd through the core on the whole batch is the reference."""
    inputs, _ = _full_data()
    model = W.make_model()
    out = model(inputs.reshape(-1, W.D_IN)).reshape(W.N_GLOBAL + W.N_LOCAL, -1, W.D_OUT)
    if loss_name == "lejepa":
        loss = _core_lejepa(out).loss
    else:
        loss = _core_sigreg(out[0])
    loss.backward()
    expected = [p.grad for p in model.parameters()]
    scale = max(g.abs().max().item() for g in expected)
    assert scale > 1e-3  # the gradients are not trivially zero
    for res in ranks:
        np.testing.assert_allclose(
            res[f"{engine}/{split}/ddp/{loss_name}/loss"].item(), loss.item(), **TOL
        )
        for got, ref in zip(res[f"{engine}/{split}/ddp/{loss_name}/grads"], expected, strict=True):
            torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-9 * scale)


@pytest.mark.parametrize("statistic", W.LOSS_STATISTICS)
def test_every_statistic_two_processes_equal_one(ranks, statistic):
    """loss.statistic in the torch trainer's loss: 2 gloo processes (DDP, the collective's
    all_reduce_sum / all_gather) == one process on the whole batch, for the loss parts and the
    parameter gradients of two consecutive steps (fresh directions each)."""
    inputs, _ = _full_data()
    model = W.make_model()
    loss_fn = LeJEPALoss(lamb=W.LAMB, num_slices=W.NUM_SLICES, seed=W.SEED, statistic=statistic)
    splits = [s for s in W.SPLITS if s == "equal" or statistic not in W.EDF_STATISTICS]
    for step in range(2):
        out = model(inputs.reshape(-1, W.D_IN)).reshape(W.N_GLOBAL + W.N_LOCAL, -1, W.D_OUT)
        parts = loss_fn(out[: W.N_GLOBAL], out[W.N_GLOBAL :])
        model.zero_grad()
        parts.loss.backward()
        expected = [p.grad.clone() for p in model.parameters()]
        scale = max(g.abs().max().item() for g in expected)
        assert scale > 1e-3
        for split in splits:
            key = f"statistic/{statistic}/{split}/{step}"
            for res in ranks:
                got = [p.item() for p in res[key + "/parts"]]
                np.testing.assert_allclose(got, [p.item() for p in parts], **TOL)
                for g, ref in zip(res[key + "/grads"], expected, strict=True):
                    torch.testing.assert_close(g, ref, rtol=1e-6, atol=1e-9 * scale)


@pytest.mark.slow
def test_compiled_lejepa_with_functional_collective(tmp_path):
    """torch.compile(fullgraph=True) on every rank: TorchDistributedCollective switches to the
    autograd-aware functional collective. Slow (~25 s of compilation per rank)."""
    results = _launch(tmp_path, "compile")
    _, emb = _full_data()
    z = emb.clone().requires_grad_(True)
    loss = _core_lejepa(z).loss
    loss.backward()
    sizes = W.SPLITS["unequal"]
    for r, res in enumerate(results):
        np.testing.assert_allclose(res["unequal/compiled/loss"].item(), loss.item(), **TOL)
        start = sum(sizes[:r])
        expected = WORLD * z.grad[:, start : start + sizes[r]]
        torch.testing.assert_close(res["unequal/compiled/input_grad"], expected, **TOL)
