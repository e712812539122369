"""JAX trainer pieces: Flax networks, jitted multi-crop, weight-decay mask, CLI, and the
cross-framework parity of the loss (JAX vs torch on identical embeddings and directions)."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")

import jax.numpy as jnp  # noqa: E402

from trainers.core.config import load_config  # noqa: E402
from trainers.jax_pmap.models import BACKBONES, LeJEPANet, build_backbone  # noqa: E402
from trainers.jax_pmap.trainer import _decay_mask, parser  # noqa: E402
from trainers.jax_pmap.views import MultiCrop  # noqa: E402

OFF = [
    "augment.jitter_p=0",
    "augment.grayscale_p=0",
    "augment.blur_p=0",
    "augment.solarize_p=0",
    "augment.flip_p=0",
]
WHOLE = ["views.global_scale=[1, 1]", "views.ratio=[1, 1]"]


def _images(n=4, channels=1, size=8, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, channels, size, size), dtype=np.float32)


def _multicrop(*overrides, channels=1):
    cfg = load_config(overrides=list(overrides))
    return MultiCrop(cfg.views, cfg.augment, mean=[0.0] * channels, std=[1.0] * channels)


_split = jax.jit(lambda seed: jax.random.key_data(jax.random.split(jax.random.key(seed), 64)))


def _keys(n, seed=0) -> np.ndarray:
    """Raw key data of ``n`` per-sample keys (NumPy: slicing them compiles nothing)."""
    return np.asarray(_split(seed))[:n]


def _views_fn(mc):
    """``mc`` jitted, taking raw key data."""
    return jax.jit(lambda images, keys: mc(images, jax.random.wrap_key_data(keys)))


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _net(backbone, **kwargs):
    return build_backbone(backbone, img_size=8, width=4, timm_kwargs=kwargs)


# ------------------------------------------------------------------------------ models
def test_unknown_backbone_and_misplaced_options_are_rejected():
    with pytest.raises(ValueError, match="not available in the JAX trainer"):
        _net("convnext_atto")
    with pytest.raises(ValueError, match="timm_kwargs applies to the ViT"):
        _net("smallcnn", patch_size=4)
    with pytest.raises(ValueError, match=r"\['mlp_ratio'\] not supported"):
        _net("vit_tiny_patch16_224", mlp_ratio=2)
    assert BACKBONES == ("smallcnn", "resnet18", "vit_tiny_patch16_224")


def test_smallcnn_and_projector_have_the_torch_architecture():
    torch = pytest.importorskip("torch")
    from trainers.torch_ddp.models import LeJEPANet as TorchNet
    from trainers.torch_ddp.models import SmallCNN

    net = LeJEPANet(_net("smallcnn"), (32, 16), 10)
    variables = jax.eval_shape(  # shapes only: nothing is compiled
        lambda k: net.init(k, jnp.zeros((1, 2, 1, 8, 8)), None, False), jax.random.key(0)
    )
    reference = TorchNet(SmallCNN(1, 4), (32, 16), 10)
    for part in ("backbone", "projector", "probe"):
        expected = sum(p.numel() for p in getattr(reference, part).parameters())
        assert _count(variables["params"][part]) == expected, part
    stats = sum(b.numel() for n, b in reference.named_buffers() if "running" in n)
    assert _count(variables["batch_stats"]) == stats
    del torch


@pytest.mark.parametrize(
    ("backbone", "kwargs", "features"),
    [
        ("smallcnn", {}, 16),
        ("resnet18", {}, 512),
        (
            "vit_tiny_patch16_224",
            {"patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2},
            16,
        ),
    ],
)
def test_network_output_shapes(backbone, kwargs, features):
    net = LeJEPANet(_net(backbone, **kwargs), (32, 8), 10)
    g = jnp.zeros((2, 3, 1, 8, 8))
    loc = g[:, :, :, :4, :4]  # local views of another size (ViT: resized position grid)
    variables = jax.eval_shape(lambda k: net.init(k, g, loc, False), jax.random.key(0))
    out = jax.eval_shape(lambda v: net.apply(v, g, loc, False), variables)
    assert out.global_embeddings.shape == (2, 3, 8) and out.local_embeddings.shape == (2, 3, 8)
    assert out.probe_logits.shape == (2, 3, 10)
    feats = jax.eval_shape(lambda v: net.apply(v, g[0], method=LeJEPANet.features), variables)
    assert feats.shape == (3, features)
    if backbone == "resnet18":  # timm's resnet18 without its head: 11.18 M parameters
        assert 11.1e6 < _count(variables["params"]["backbone"]) < 11.2e6


def test_probe_gradient_is_stopped():
    net = LeJEPANet(_net("smallcnn"), (32, 8), 10)
    g = np.random.default_rng(0).standard_normal((2, 3, 1, 8, 8)).astype(np.float32)

    @jax.jit
    def probe_grads(key):
        variables = net.init(key, g, None, False)

        def probe_loss(params):
            return jnp.sum(net.apply({**variables, "params": params}, g, None, False).probe_logits)

        return jax.grad(probe_loss)(variables["params"])

    grads = jax.tree.map(np.asarray, probe_grads(jax.random.key(0)))
    assert np.abs(grads["probe"]["kernel"]).sum() > 0
    assert all(np.abs(x).max() == 0.0 for x in jax.tree.leaves(grads["backbone"]))
    assert all(np.abs(x).max() == 0.0 for x in jax.tree.leaves(grads["projector"]))


def test_weight_decay_mask():
    params = {
        "Conv_0": {"kernel": np.ones((3, 3, 1, 4))},
        "BatchNorm_0": {"scale": np.ones(4), "bias": np.ones(4)},
        "pos_embed": np.ones((1, 5, 8)),
        "cls_token": np.ones((1, 1, 8)),
    }
    mask = _decay_mask(params)
    assert mask["Conv_0"]["kernel"] is True
    assert not mask["BatchNorm_0"]["scale"] and not mask["BatchNorm_0"]["bias"]
    assert not mask["pos_embed"] and not mask["cls_token"]


# ----------------------------------------------------------------------------- augment
@pytest.mark.parametrize("channels", [1, 3])
def test_views_shapes_keys_and_batch_independence(channels):
    views_cfg = ("views.n_global=2", "views.n_local=3", "views.global_size=12")
    mc = _multicrop(*views_cfg, "views.local_size=6", channels=channels)
    x = _images(channels=channels)
    keys = _keys(4)
    views = _views_fn(mc)
    g, loc = (np.asarray(v) for v in views(x, keys))
    assert g.shape == (2, 4, channels, 12, 12) and loc.shape == (3, 4, channels, 6, 6)
    assert np.all(np.isfinite(g))
    # a sample's views depend on its key only, not on the rest of the batch
    swapped, _ = views(x[::-1], keys[::-1])  # (reversed on the host: no eager ops)
    np.testing.assert_allclose(swapped[:, ::-1], g, atol=1e-6)
    other, _ = views(x, _keys(4, seed=1))
    assert not np.allclose(other, g)
    assert not np.allclose(g[0], g[1])  # each view has its own parameters
    no_local = _multicrop("views.n_local=0", channels=channels)
    assert jax.eval_shape(no_local.__call__, x, jax.random.wrap_key_data(keys))[1] is None


def test_eval_view_equals_torch_and_whole_crop_equals_eval_view():
    torch = pytest.importorskip("torch")
    from trainers.torch_ddp.views import MultiCrop as TorchMultiCrop

    cfg = load_config(overrides=["views.global_size=16"])
    x = _images(size=8)
    jax_mc = MultiCrop(cfg.views, cfg.augment, mean=[0.3], std=[0.2])
    jax_view = jax.jit(jax_mc.eval_view)(x)
    torch_view = TorchMultiCrop(cfg.views, cfg.augment, mean=[0.3], std=[0.2]).eval_view(
        torch.from_numpy(x)
    )
    np.testing.assert_allclose(np.asarray(jax_view), torch_view.numpy(), atol=1e-5)

    mc = _multicrop(*OFF, *WHOLE, "views.global_size=16", "views.n_local=0")
    flip = _multicrop(*OFF, *WHOLE, "augment.flip_p=1", "views.global_size=16", "views.n_local=0")

    @jax.jit
    def views(images, raw_keys):
        keys = jax.random.wrap_key_data(raw_keys)
        return mc(images, keys)[0], flip(images, keys)[0], mc.eval_view(images)

    g, flipped, ev = (np.asarray(v) for v in views(x, _keys(4)))
    np.testing.assert_allclose(g[0], ev, atol=1e-5)
    np.testing.assert_allclose(flipped[1], ev[..., ::-1], atol=1e-5)


def test_crops_zoom_in_and_photometric_ops_stay_in_range():
    x = np.zeros((1, 1, 32, 32), np.float32)
    x[..., 16:] = 1.0  # left half 0, right half 1
    small = _multicrop(
        *OFF, "views.global_scale=[0.05, 0.05]", "views.global_size=8", "views.n_local=0"
    )
    g, _ = _views_fn(small)(np.repeat(x, 64, axis=0), _keys(64))
    flat = np.asarray(g).reshape(2 * 64, -1)
    pure = np.mean((flat.min(axis=1) == 0.0) & (flat.max(axis=1) == 0.0)) + np.mean(
        (flat.min(axis=1) == 1.0) & (flat.max(axis=1) == 1.0)
    )
    assert pure > 0.5  # most small crops lie inside one half
    strong = _multicrop(
        "views.global_size=8",
        "views.n_local=1",
        "views.local_size=4",
        "augment.jitter_p=1",
        "augment.blur_p=1",
        "augment.solarize_p=1",
        "augment.grayscale_p=1",
        channels=3,
    )
    g, loc = (np.asarray(v) for v in _views_fn(strong)(_images(channels=3), _keys(4)))
    for v in (g, loc):
        assert v.min() >= 0.0 and v.max() <= 1.0
    np.testing.assert_allclose(g[:, :, 0], g[:, :, 1], atol=1e-6)  # grayscale everywhere


# --------------------------------------------------------------------------------- CLI
def test_help_lists_the_jax_flags_and_the_config_options():
    text = parser().format_help()
    for flag in (
        "--parallel",
        "--num-cpu-devices",
        "--distributed",
        "--coordinator-address",
        "--num-processes",
        "--process-id",
        "--resume",
        "--config",
        "optim.batch_size",
    ):
        assert flag in text, flag


# ---------------------------------------------------------------------------- parity
@pytest.fixture
def x64():
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


@pytest.mark.parametrize("prediction", ["center", "pairwise"])
def test_loss_parity_with_torch(x64, prediction):
    """Identical embeddings and directions: the JAX and torch SIGReg, LeJEPA loss and their
    embedding gradients agree to 1e-6 (float64)."""
    torch = pytest.importorskip("torch")
    import backends.jax as bj
    import backends.torch as bt
    import sigreg

    rng = np.random.default_rng(3)
    g = 0.4 + 1.3 * rng.standard_normal((2, 64, 16))
    loc = g[:1] + 0.3 * rng.standard_normal((3, 64, 16))
    seed, step = 5, 11
    directions = sigreg.sample_directions(16, 32, seed=seed, step=step, backend="numpy")

    sig_j, sig_grad_j = jax.jit(jax.value_and_grad(lambda v: bj.sliced_epps_pulley(v, directions)))(
        jnp.asarray(g[0])
    )
    emb = torch.tensor(g[0], requires_grad=True)
    sig_t = bt.sliced_epps_pulley(emb, torch.from_numpy(directions))
    sig_t.backward()
    assert abs(float(sig_j) - sig_t.item()) <= 1e-6
    np.testing.assert_allclose(np.asarray(sig_grad_j), emb.grad.numpy(), atol=1e-6)

    def jax_loss(gv, lv):
        out = bj.lejepa_loss(
            gv, lv, num_slices=32, seed=seed, step=step, sampler="numpy", prediction=prediction
        )
        return out.loss, out

    (_, parts_j), grads_j = jax.jit(jax.value_and_grad(jax_loss, argnums=(0, 1), has_aux=True))(
        jnp.asarray(g), jnp.asarray(loc)
    )
    loss_fn = bt.LeJEPALoss(num_slices=32, seed=seed, prediction=prediction)
    loss_fn.set_step(step)
    gt, lt = torch.tensor(g, requires_grad=True), torch.tensor(loc, requires_grad=True)
    parts_t = loss_fn(gt, lt)
    parts_t.loss.backward()
    for a, b in zip(parts_j, parts_t, strict=True):
        assert abs(float(a) - b.item()) <= 1e-6
    assert float(parts_j.sigreg) > 0.1  # non-Gaussian input: the comparison can fail
    np.testing.assert_allclose(np.asarray(grads_j[0]), gt.grad.numpy(), atol=1e-6)
    np.testing.assert_allclose(np.asarray(grads_j[1]), lt.grad.numpy(), atol=1e-6)
