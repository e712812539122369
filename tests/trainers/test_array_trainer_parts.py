"""Array-API trainer parts (trainers.cupy_nccl.*): MLP + projector + LeJEPA + probe backward and
AdamW against torch autograd / torch.optim.AdamW, views against NumPy oracles, the packed
gradient reduction."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make, to_numpy

torch = pytest.importorskip("torch")

import sigreg  # noqa: E402
from trainers.cupy_nccl.adamw import AdamW, clip_grad_norm  # noqa: E402
from trainers.cupy_nccl.collective import all_reduce_dict  # noqa: E402
from trainers.cupy_nccl.lejepa import build_net, loss_and_grads  # noqa: E402
from trainers.cupy_nccl.mlp import init_params  # noqa: E402
from trainers.cupy_nccl.views import (  # noqa: E402
    apply_crops,
    apply_vector,
    draw_crops,
    draw_vector,
)

DIM, N, N_GLOBAL, N_LOCAL, CLASSES = 6, 10, 2, 2, 3


def _torch_mlp(layers, params):
    """The torch twin of an array MLP, sharing the (float64) parameter values."""
    mods = []
    for layer in layers:
        d_in, d_out = layer.shape
        if layer.kind == "linear":
            mod = torch.nn.Linear(d_in, d_out, dtype=torch.float64)
            mod.weight.data = torch.tensor(params[f"{layer.name}.weight"].T.copy())
        elif layer.kind == "layernorm":
            mod = torch.nn.LayerNorm(d_out, eps=1e-5, dtype=torch.float64)
            mod.weight.data = torch.tensor(params[f"{layer.name}.weight"])
        else:
            mods.append(torch.nn.ReLU())
            continue
        mod.bias.data = torch.tensor(params[f"{layer.name}.bias"])
        mods.append(mod)
    return torch.nn.Sequential(*mods)


def _torch_grads(layers, seq):
    """Gradients of a torch twin in the array MLP's naming and layout."""
    grads, mods = {}, iter(m for m in seq if not isinstance(m, torch.nn.ReLU))
    for layer in layers:
        if layer.kind == "relu":
            continue
        mod = next(mods)
        weight = mod.weight.grad.numpy()
        grads[f"{layer.name}.weight"] = weight.T if layer.kind == "linear" else weight
        grads[f"{layer.name}.bias"] = mod.bias.grad.numpy()
    return grads


def _setup(prediction="center"):
    rng = np.random.default_rng(3)
    net = build_net(DIM, (8, 7), (9, 5), CLASSES)
    layers = net.encoder + net.projector + net.probe
    params = init_params(layers, rng, np, dtype=np.float64)
    for name in params:  # non-trivial norm parameters
        if ".1." in name or ".4." in name:
            params[name] = params[name] + 0.3 * rng.standard_normal(params[name].shape)
    views = rng.standard_normal((N_GLOBAL + N_LOCAL, N, DIM))
    labels = rng.integers(0, CLASSES, N)
    directions = sigreg.sample_directions(5, 16, seed=1, step=2, backend="numpy", dtype="float64")
    options = {"lamb": 0.3, "directions": directions, "prediction": prediction}
    return net, params, views, labels, options


@pytest.mark.parametrize("prediction", ["center", "pairwise"])
def test_backward_matches_torch_autograd(xp, device, prediction):
    """MLP encoder + projector + LeJEPA loss + detached probe: every parameter gradient
    equals torch autograd on identical float64 weights and data (<= 1e-10)."""
    net, params, views, labels, options = _setup(prediction)
    encoder = _torch_mlp(net.encoder, params)
    projector = _torch_mlp(net.projector, params)
    probe = _torch_mlp(net.probe, params)
    flat = torch.tensor(views).reshape(-1, DIM)
    features = encoder(flat)
    z = projector(features).reshape(N_GLOBAL + N_LOCAL, N, -1)
    ref = sigreg.lejepa_loss(
        z[:N_GLOBAL],
        z[N_GLOBAL:],
        lamb=options["lamb"],
        directions=torch.tensor(options["directions"]),
        prediction=prediction,
    )
    logits = probe(features.detach()[: N_GLOBAL * N])
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor(labels).repeat(N_GLOBAL))
    (ref.loss + ce).backward()
    expected = {}
    for layers, seq in ((net.encoder, encoder), (net.projector, projector), (net.probe, probe)):
        expected.update(_torch_grads(layers, seq))

    arrays = {k: make(xp, device, v) for k, v in params.items()}
    options["directions"] = make(xp, device, options["directions"])
    labels_xp = xp.asarray(labels, device=device) if device is not None else xp.asarray(labels)
    parts, grads = loss_and_grads(
        xp,
        net,
        arrays,
        make(xp, device, views),
        labels_xp,
        n_global=N_GLOBAL,
        global_batch=N,
        **options,
    )
    assert abs(float(parts["loss"]) - ref.loss.item()) <= 1e-12
    assert abs(float(parts["probe_loss"]) - ce.item()) <= 1e-12
    assert set(grads) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(to_numpy(grads[name]), value, rtol=0, atol=1e-10, err_msg=name)
    assert max(np.abs(v).max() for v in expected.values()) > 1e-3  # the check is not vacuous


def test_adamw_matches_torch():
    """Several AdamW steps (decay on matrices only, changing lr, clipping) equal
    torch.optim.AdamW + clip_grad_norm_ on identical float64 parameters and gradients."""
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = torch.optim.AdamW(
        [
            {"params": [tparams["w"]], "weight_decay": 0.1},
            {"params": [tparams["b"]], "weight_decay": 0.0},
        ],
        lr=1.0,
    )
    adamw = AdamW(np, params, weight_decay=0.1)
    for step, lr in enumerate([1e-2, 3e-2, 5e-3, 1e-3]):
        grads = {k: rng.standard_normal(v.shape) * (step + 1) for k, v in params.items()}
        for k, t in tparams.items():
            t.grad = torch.tensor(grads[k])
        torch.nn.utils.clip_grad_norm_(list(tparams.values()), 2.0)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        params = adamw.step(params, clip_grad_norm(np, grads, 2.0), lr)
        for k, t in tparams.items():
            np.testing.assert_allclose(params[k], t.detach().numpy(), rtol=0, atol=1e-12)
    assert adamw.step_count == 4


def test_crops_match_numpy_oracle(xp, device):
    """Bilinear crop-resize-flip equals a per-pixel NumPy oracle; the whole image without a
    flip is the identity."""
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(5, 2, 6, 7))
    params = draw_crops(rng, 5, (6, 7), scale=(0.2, 1.0), ratio=(0.75, 1.33), flip_p=0.5)
    out = to_numpy(apply_crops(xp, make(xp, device, images), params))

    def sample(img, y, x):  # bilinear with edge clamping
        y, x = min(max(y, 0.0), 5.0), min(max(x, 0.0), 6.0)
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        y1, x1 = min(y0 + 1, 5), min(x0 + 1, 6)
        fy, fx = y - y0, x - x0
        top = (1 - fx) * img[y0, x0] + fx * img[y0, x1]
        bottom = (1 - fx) * img[y1, x0] + fx * img[y1, x1]
        return (1 - fy) * top + fy * bottom

    expected = np.empty((5, 2, 6, 7))
    for i in range(5):
        for o in range(6):
            for p in range(7):
                q = 6 - p if params.flip[i] else p
                y = params.top[i] + (o + 0.5) * params.height[i] / 6 - 0.5
                x = params.left[i] + (q + 0.5) * params.width[i] / 7 - 0.5
                for c in range(2):
                    expected[i, c, o, p] = sample(images[i, c], y, x)
    np.testing.assert_allclose(out, expected.reshape(5, -1), atol=1e-12)
    assert params.flip.any() and not params.flip.all()
    whole = draw_crops(rng, 5, (6, 7), scale=(1.0, 1.0), ratio=(7 / 6, 7 / 6), flip_p=0.0)
    out = to_numpy(apply_crops(xp, make(xp, device, images), whole))
    np.testing.assert_allclose(out, images.reshape(5, -1), atol=1e-12)


def test_vector_views(xp, device):
    """Mixing, noise and masking as the formula says; disabled transforms are identities."""
    rng = np.random.default_rng(0)
    x, partners = rng.standard_normal((50, 8)), rng.standard_normal((50, 8))
    p = draw_vector(rng, 50, 8, num_samples=100, mask_p=0.3, noise_std=0.5, mix=0.4)
    out = to_numpy(
        apply_vector(xp, make(xp, device, x), make(xp, device, partners), p, noise_std=0.5)
    )
    a = p.alpha[:, None]
    np.testing.assert_allclose(out, ((1 - a) * x + a * partners + 0.5 * p.noise) * p.keep)
    assert 0.2 < 1 - p.keep.mean() < 0.4 and p.alpha.max() <= 0.4 and p.partner.max() < 100
    off = draw_vector(rng, 50, 8, num_samples=100, mask_p=0.0, noise_std=0.0, mix=0.0)
    same = apply_vector(xp, make(xp, device, x), make(xp, device, partners), off, noise_std=0.0)
    np.testing.assert_allclose(to_numpy(same), x)


class _TwoRanks:
    """A fake collective: the other rank holds ``other``; the sum is returned as new."""

    def __init__(self, other):
        self.other = other

    def all_reduce_sum(self, x):
        return x + self.other


def test_all_reduce_dict_packs_and_uses_the_result():
    arrays = {"a": np.ones((2, 3)), "b": np.arange(4.0)}
    other = np.concatenate([np.full(6, 10.0), np.full(4, 100.0)])
    out = all_reduce_dict(_TwoRanks(other), np, arrays)
    np.testing.assert_array_equal(out["a"], np.full((2, 3), 11.0))
    np.testing.assert_array_equal(out["b"], np.arange(4.0) + 100.0)
    np.testing.assert_array_equal(arrays["a"], np.ones((2, 3)))  # inputs untouched
