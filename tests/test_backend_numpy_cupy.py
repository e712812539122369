"""Explicit value-and-gradient helpers (numpy, cupy) and the NCCL collective."""

import numpy as np
import pytest

import sigreg
from backends.numpy import lejepa_value_and_grad, sigreg_value_and_grad

torch = pytest.importorskip("torch")


def _cupy_with_device():
    cupy = pytest.importorskip("cupy", reason="cupy is not installed")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError
    except Exception:
        pytest.skip("no CUDA device: CuPy cannot allocate here (CI is CPU-only)")
    return cupy


@pytest.mark.parametrize("integration", ["trapezoid", "exact"])
def test_sigreg_value_and_grad_matches_torch_autograd(integration):
    x = np.random.default_rng(3).standard_normal((96, 6)) * 1.5
    value, grad = sigreg_value_and_grad(x, num_slices=24, seed=4, step=7, integration=integration)
    xt = torch.tensor(x, requires_grad=True)
    ref = sigreg.sigreg(xt, num_slices=24, seed=4, step=7, integration=integration)
    ref.backward()
    np.testing.assert_allclose(value, ref.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("prediction", ["center", "pairwise"])
def test_lejepa_value_and_grad_matches_torch_autograd(prediction):
    rng = np.random.default_rng(5)
    g, loc = rng.standard_normal((2, 40, 5)), rng.standard_normal((3, 40, 5))
    parts, (grad_g, grad_l) = lejepa_value_and_grad(
        g, loc, num_slices=12, step=1, lamb=0.2, prediction=prediction
    )
    gt = torch.tensor(g, requires_grad=True)
    lt = torch.tensor(loc, requires_grad=True)
    ref = sigreg.lejepa_loss(gt, lt, num_slices=12, step=1, lamb=0.2, prediction=prediction)
    ref.loss.backward()
    np.testing.assert_allclose(parts.loss, ref.loss.item(), rtol=1e-12)
    np.testing.assert_allclose(grad_g, gt.grad.numpy(), rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(grad_l, lt.grad.numpy(), rtol=1e-9, atol=1e-13)


def test_sigreg_value_and_grad_rejects_batched_input():
    with pytest.raises(ValueError, match="x must have shape"):
        sigreg_value_and_grad(np.zeros((2, 3, 4)))


@pytest.mark.gpu
def test_cupy_value_and_grad_matches_numpy():
    cupy = _cupy_with_device()
    x = np.random.default_rng(0).standard_normal((64, 4))
    value, grad = sigreg_value_and_grad(cupy.asarray(x), num_slices=8, step=3)
    ref_value, ref_grad = sigreg_value_and_grad(x, num_slices=8, step=3)
    np.testing.assert_allclose(cupy.asnumpy(value), ref_value, rtol=1e-10)
    np.testing.assert_allclose(cupy.asnumpy(grad), ref_grad, rtol=1e-9, atol=1e-12)


@pytest.mark.gpu
def test_nccl_collective_single_rank_is_identity():
    cupy = _cupy_with_device()
    from backends.cupy import NcclCollective

    nccl = cupy.cuda.nccl
    comm = nccl.NcclCommunicator(1, nccl.get_unique_id(), 0)
    x = cupy.arange(6, dtype=cupy.float64).reshape(2, 3)
    out = NcclCollective(comm).all_reduce_sum(x)
    assert out is not x
    np.testing.assert_array_equal(cupy.asnumpy(out), cupy.asnumpy(x))
    value = sigreg.sigreg(x, num_slices=4, collective=NcclCollective(comm))
    np.testing.assert_allclose(cupy.asnumpy(value), sigreg.sigreg(cupy.asnumpy(x), num_slices=4))
