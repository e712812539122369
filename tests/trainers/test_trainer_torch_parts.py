"""Torch-side trainer pieces: device augmentations, networks, RNG checkpointing, param groups."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

import torch.nn.functional as F  # noqa: E402

from trainers.core.config import load_config  # noqa: E402
from trainers.torch_ddp.checkpoint import capture_rng_state, restore_rng_state  # noqa: E402
from trainers.torch_ddp.models import LeJEPANet, Projector, SmallCNN, build_backbone  # noqa: E402
from trainers.torch_ddp.runtime import param_groups  # noqa: E402
from trainers.torch_ddp.views import MultiCrop, _rotate_hue  # noqa: E402

OFF = [
    "augment.jitter_p=0",
    "augment.grayscale_p=0",
    "augment.blur_p=0",
    "augment.solarize_p=0",
    "augment.flip_p=0",
]
WHOLE = ["views.global_scale=[1, 1]", "views.ratio=[1, 1]"]


def _multicrop(*overrides, channels=1):
    cfg = load_config(overrides=list(overrides))
    return MultiCrop(cfg.views, cfg.augment, mean=[0.0] * channels, std=[1.0] * channels)


def _images(n=6, channels=1, size=8, seed=0):
    return torch.rand((n, channels, size, size), generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- augment
@pytest.mark.parametrize("channels", [1, 3])
def test_view_shapes_and_seeded_randomness(channels):
    mc = _multicrop(
        "views.n_global=2",
        "views.n_local=3",
        "views.global_size=12",
        "views.local_size=6",
        channels=channels,
    )
    x = _images(channels=channels)
    g, loc = mc(x, torch.Generator().manual_seed(1))
    assert g.shape == (2, 6, channels, 12, 12) and loc.shape == (3, 6, channels, 6, 6)
    g2, loc2 = mc(x, torch.Generator().manual_seed(1))
    assert torch.equal(g, g2) and torch.equal(loc, loc2)
    g3, _ = mc(x, torch.Generator().manual_seed(2))
    assert not torch.equal(g, g3)
    assert not torch.equal(g[0], g[1])  # each view has its own parameters
    none = _multicrop("views.n_local=0", channels=channels)(x, torch.Generator())[1]
    assert none is None


def test_whole_image_crop_is_the_eval_view_and_flip_mirrors_it():
    x = _images(size=8)
    mc = _multicrop(*OFF, *WHOLE, "views.global_size=16", "views.n_local=0")
    g, _ = mc(x, torch.Generator().manual_seed(0))
    ev = mc.eval_view(x)
    torch.testing.assert_close(g[0], ev)
    torch.testing.assert_close(ev, F.interpolate(x, size=16, mode="bilinear", align_corners=False))
    flipped = _multicrop(
        *OFF, *WHOLE, "augment.flip_p=1", "views.global_size=16", "views.n_local=0"
    )(x, torch.Generator())[0]
    torch.testing.assert_close(flipped[1], ev.flip(-1))


def test_crops_are_inside_the_image_and_zoom_in():
    x = torch.zeros((1, 1, 32, 32))
    x[..., :, 16:] = 1.0  # left half 0, right half 1
    mc = _multicrop(
        *OFF,
        "views.n_global=64",
        "views.global_size=8",
        "views.n_local=0",
        "views.global_scale=[0.05, 0.05]",
    )
    g, _ = mc(x, torch.Generator().manual_seed(0))
    means = g.mean(dim=(1, 2, 3, 4))
    assert g.min() >= 0 and g.max() <= 1
    assert (means < 0.05).sum() > 5 and (means > 0.95).sum() > 5  # small crops: one half only


def test_normalisation_uses_the_given_statistics():
    cfg = load_config(overrides=OFF + WHOLE)
    mc = MultiCrop(cfg.views, cfg.augment, mean=[0.5], std=[0.25])
    x = _images(size=32)
    torch.testing.assert_close(mc.eval_view(x), (_multicrop().eval_view(x) - 0.5) / 0.25)


def test_colour_ops_skip_single_channel_images():
    x = _images(size=8)
    colour_only = _multicrop(
        *OFF,
        *WHOLE,
        "augment.jitter_p=1",
        "augment.brightness=0",
        "augment.contrast=0",
        "augment.saturation=0.9",
        "augment.hue=0.5",
        "augment.grayscale_p=1",
        "views.global_size=8",
        "views.n_local=0",
    )
    g, _ = colour_only(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(g[0], x)


def test_grayscale_solarize_and_brightness():
    x = _images(channels=3, size=8)
    gray = _multicrop(
        *OFF, *WHOLE, "augment.grayscale_p=1", "views.global_size=8", "views.n_local=0", channels=3
    )(x, torch.Generator())[0]
    assert torch.allclose(gray[..., 0, :, :], gray[..., 2, :, :])
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(gray[0, :, 1], luma)

    sol = _multicrop(
        *OFF, *WHOLE, "augment.solarize_p=1", "views.global_size=8", "views.n_local=0", channels=3
    )(x, torch.Generator())[0]
    torch.testing.assert_close(sol[0], torch.where(x >= 0.5, 1 - x, x))

    bright = _multicrop(
        *OFF,
        *WHOLE,
        "augment.jitter_p=1",
        "augment.brightness=0.5",
        "augment.contrast=0",
        "augment.saturation=0",
        "augment.hue=0",
        "views.global_size=8",
        "views.n_local=0",
        channels=3,
    )(x * 0.5, torch.Generator().manual_seed(3))[0]
    factors = bright[0].sum(dim=(1, 2, 3)) / (x * 0.5).sum(dim=(1, 2, 3))
    torch.testing.assert_close(bright[0], x * 0.5 * factors.reshape(-1, 1, 1, 1))
    assert factors.min() >= 0.5 - 1e-6 and factors.max() <= 1.5 + 1e-6
    assert factors.std() > 0.01  # one factor per image


def test_hue_rotation_keeps_grays_and_turns_full_circle():
    x = _images(n=4, channels=3)
    torch.testing.assert_close(_rotate_hue(x, torch.zeros(4)), x.clamp(0, 1), atol=1e-5, rtol=0)
    grey = x[:, :1].expand(-1, 3, -1, -1)
    torch.testing.assert_close(_rotate_hue(grey, torch.full((4,), 0.3)), grey, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        _rotate_hue(x * 0.5 + 0.25, torch.ones(4)), x * 0.5 + 0.25, atol=1e-5, rtol=0
    )


def test_blur_is_a_normalised_per_view_gaussian():
    x = torch.zeros((1, 1, 15, 15))
    x[..., 7, 7] = 1.0
    blur = _multicrop(
        *OFF,
        *WHOLE,
        "augment.blur_p=1",
        "augment.blur_sigma=[1.5, 1.5]",
        "views.global_size=15",
        "views.n_local=0",
    )
    out = blur(x, torch.Generator())[0][0, 0, 0]
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)
    k = torch.exp(-0.5 * (torch.arange(-5, 6.0) / 1.5) ** 2)  # radius ceil(3 sigma)
    k = k / k.sum()
    torch.testing.assert_close(out[2:13, 2:13], torch.outer(k, k), atol=1e-6, rtol=0)
    const = blur(torch.full((2, 1, 15, 15), 0.3), torch.Generator())[0]
    torch.testing.assert_close(const, torch.full_like(const, 0.3))


# ------------------------------------------------------------------------------ models
def test_smallcnn_projector_and_detached_probe():
    torch.manual_seed(0)
    net = LeJEPANet(SmallCNN(1, 8), (16, 12), num_classes=10)
    assert net.backbone.num_features == 32
    g, loc = torch.rand(2, 5, 1, 16, 16), torch.rand(3, 5, 1, 8, 8)
    out = net(g, loc)
    assert out.global_embeddings.shape == (2, 5, 12)
    assert out.local_embeddings.shape == (3, 5, 12)
    assert out.probe_logits.shape == (2, 5, 10)
    out.probe_logits.sum().backward()
    assert all(p.grad is None for p in net.backbone.parameters())
    assert net.probe.weight.grad is not None
    assert LeJEPANet(SmallCNN(1, 8), (4,), num_classes=0)(g, None).probe_logits is None
    assert [
        m.out_features for m in Projector(32, (64, 64, 8)).net if isinstance(m, torch.nn.Linear)
    ] == [64, 64, 8]


def test_timm_backbones_get_channels_and_sizes():
    resnet = build_backbone("resnet18", in_chans=1, img_size=16, width=0, timm_kwargs={})
    assert resnet(torch.rand(2, 1, 16, 16)).shape == (2, resnet.num_features)
    vit = build_backbone(
        "vit_tiny_patch16_224", in_chans=3, img_size=16, width=0, timm_kwargs={"patch_size": 4}
    )
    assert vit.patch_embed.img_size == (16, 16)
    assert vit(torch.rand(2, 3, 16, 16)).shape == vit(torch.rand(2, 3, 8, 8)).shape
    with pytest.raises(ValueError, match="neither 'smallcnn' nor a timm model"):
        build_backbone("no_such_net", in_chans=1, img_size=8, width=8, timm_kwargs={})
    with pytest.raises(ValueError, match="model.timm_kwargs applies to timm backbones"):
        build_backbone("smallcnn", in_chans=1, img_size=8, width=8, timm_kwargs={"a": 1})


def test_no_weight_decay_on_norms_biases_and_vit_embeddings():
    net = LeJEPANet(
        build_backbone(
            "vit_tiny_patch16_224", in_chans=1, img_size=16, width=0, timm_kwargs={"patch_size": 8}
        ),
        (8,),
        num_classes=3,
    )
    decay, no_decay = param_groups(net, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    assert id(net.backbone.pos_embed) in ids and id(net.backbone.cls_token) in ids
    assert id(net.backbone.norm.weight) in ids and id(net.probe.bias) in ids
    assert id(net.probe.weight) not in ids
    assert len(decay["params"]) + len(ids) == len(list(net.parameters()))


# ---------------------------------------------------------------------- RNG checkpoints
def test_rng_states_survive_a_weights_only_round_trip():
    torch.manual_seed(3)
    np.random.seed(4)  # noqa: NPY002 (the legacy global state is what is checkpointed)
    np.random.standard_normal()  # noqa: NPY002 (leaves a cached gaussian in NumPy's state)
    random.seed(5)
    random.gauss(0, 1)  # leaves a cached gaussian in Python's state
    buffer = io.BytesIO()
    torch.save(capture_rng_state(), buffer)

    def draw():
        legacy = np.random.standard_normal(3)  # noqa: NPY002
        return torch.rand(3), legacy, random.random(), random.gauss(0, 1)

    expected = draw()
    buffer.seek(0)
    restore_rng_state(torch.load(buffer, weights_only=True))
    got = draw()
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2:] == expected[2:]
