"""Networks in Flax (``flax.linen``): backbones, the projector and the LeJEPA network.

The JAX counterparts of :mod:`trainers.torch_ddp.models`, selected by the same ``model.backbone``
names so that one configuration file serves both trainers:

* ``smallcnn``: :class:`SmallCNN`, the architecture of :class:`trainers.torch_ddp.models.SmallCNN`;
* ``resnet18``: :class:`ResNet18`, the layout of timm's ``resnet18`` (7x7/2 stem, 3x3/2 max
  pool, four stages of two basic blocks, 64-512 channels);
* ``vit_tiny_patch16_224``: :class:`ViT` with timm's ``vit_tiny_patch16_224`` shape (width
  192, depth 12, 3 heads, patch 16, class token, pre-norm blocks); ``model.timm_kwargs``
  may set ``patch_size``, ``embed_dim``, ``depth`` and ``num_heads`` as for timm, and the
  position embeddings are resized bilinearly for views of another size (timm's
  ``dynamic_img_size``).

Images come in as ``(B, C, H, W)`` (the layout of :mod:`trainers.core.datasets`) and are moved to
Flax's ``(B, H, W, C)`` inside. Batch norm layers take ``axis_name``: under ``jax.pmap`` or
``jax.shard_map`` their batch statistics are those of the global batch (synchronised batch
norm), so a data-parallel step equals the single-device step on the concatenated batch.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "BACKBONES",
    "LeJEPANet",
    "NetOutput",
    "Projector",
    "ResNet18",
    "SmallCNN",
    "ViT",
    "build_backbone",
    "configured_net",
    "initial_variables",
]

BACKBONES = ("smallcnn", "resnet18", "vit_tiny_patch16_224")
_VIT_OPTIONS = ("patch_size", "embed_dim", "depth", "num_heads")


def _batch_norm(train: bool, axis_name: Hashable | None, dtype: Any, name: str | None = None):
    """Batch norm with torch's defaults (momentum 0.1, eps 1e-5)."""
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        axis_name=axis_name if train else None,
        dtype=dtype,
        param_dtype=dtype,
        name=name,
    )


def _nhwc(images: jax.Array) -> jax.Array:
    return jnp.transpose(images, (0, 2, 3, 1))


class SmallCNN(nn.Module):
    """4 stages of 3x3 conv (no bias), batch norm, ReLU; stages 2-4 stride 2; mean pool.

    Attributes
    ----------
    width : int
        Channels of the first stage (then ``2 width, 4 width, 4 width``).
    axis_name : hashable, optional
        Mapped axis of synchronised batch norm.
    dtype : dtype
        Parameter and compute dtype.
    """

    width: int
    axis_name: Hashable | None = None
    dtype: Any = jnp.float32

    @property
    def num_features(self) -> int:
        """Dimension of the pooled features."""
        return 4 * self.width

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        """Pooled features ``(B, 4 width)`` of images ``(B, C, H, W)``."""
        x = _nhwc(images)
        for i, chans in enumerate((1, 2, 4, 4)):
            stride = 1 if i == 0 else 2
            x = nn.Conv(
                chans * self.width,
                (3, 3),
                strides=stride,
                padding=((1, 1), (1, 1)),
                use_bias=False,
                dtype=self.dtype,
                param_dtype=self.dtype,
            )(x)
            x = nn.relu(_batch_norm(train, self.axis_name, self.dtype)(x))
        return jnp.mean(x, axis=(1, 2))


class _BasicBlock(nn.Module):
    chans: int
    stride: int
    axis_name: Hashable | None
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        conv = partial(
            nn.Conv, use_bias=False, dtype=self.dtype, param_dtype=self.dtype, kernel_size=(3, 3)
        )
        out = conv(self.chans, strides=self.stride, padding=((1, 1), (1, 1)))(x)
        out = nn.relu(_batch_norm(train, self.axis_name, self.dtype)(out))
        out = conv(self.chans, strides=1, padding=((1, 1), (1, 1)))(out)
        out = _batch_norm(train, self.axis_name, self.dtype)(out)
        if self.stride != 1 or x.shape[-1] != self.chans:
            x = nn.Conv(
                self.chans,
                (1, 1),
                strides=self.stride,
                use_bias=False,
                dtype=self.dtype,
                param_dtype=self.dtype,
            )(x)
            x = _batch_norm(train, self.axis_name, self.dtype)(x)
        return nn.relu(out + x)


class ResNet18(nn.Module):
    """ResNet-18 (timm ``resnet18`` layout) with global average pooling, 512 features.

    Attributes
    ----------
    axis_name : hashable, optional
        Mapped axis of synchronised batch norm.
    dtype : dtype
        Parameter and compute dtype.
    """

    axis_name: Hashable | None = None
    dtype: Any = jnp.float32

    @property
    def num_features(self) -> int:
        """Dimension of the pooled features."""
        return 512

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        """Pooled features ``(B, 512)`` of images ``(B, C, H, W)``."""
        x = nn.Conv(
            64,
            (7, 7),
            strides=2,
            padding=((3, 3), (3, 3)),
            use_bias=False,
            dtype=self.dtype,
            param_dtype=self.dtype,
        )(_nhwc(images))
        x = nn.relu(_batch_norm(train, self.axis_name, self.dtype)(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, chans in enumerate((64, 128, 256, 512)):
            for block in range(2):
                stride = 2 if stage > 0 and block == 0 else 1
                x = _BasicBlock(chans, stride, self.axis_name, self.dtype)(x, train)
        return jnp.mean(x, axis=(1, 2))


class _ViTBlock(nn.Module):
    dim: int
    num_heads: int
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        norm = partial(nn.LayerNorm, epsilon=1e-6, dtype=self.dtype, param_dtype=self.dtype)
        dense = partial(nn.Dense, dtype=self.dtype, param_dtype=self.dtype)
        x = x + nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads, dtype=self.dtype, param_dtype=self.dtype
        )(norm()(x))
        h = nn.gelu(dense(4 * self.dim)(norm()(x)), approximate=False)
        return x + dense(self.dim)(h)


class ViT(nn.Module):
    """Vision transformer (timm ``vit_tiny_patch16_224`` shape by default), class-token output.

    Attributes
    ----------
    img_size : int
        Side of the images the position embeddings are made for (other sizes: resized).
    patch_size, embed_dim, depth, num_heads : int
        Patch side, width, number of blocks and attention heads.
    dtype : dtype
        Parameter and compute dtype.
    """

    img_size: int
    patch_size: int = 16
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    dtype: Any = jnp.float32

    @property
    def num_features(self) -> int:
        """Dimension of the output features (the width)."""
        return self.embed_dim

    @nn.compact
    def __call__(self, images: jax.Array, train: bool) -> jax.Array:
        """Final-norm class-token features ``(B, embed_dim)`` of images ``(B, C, H, W)``."""
        p = self.patch_size
        b, _, h, w = images.shape
        if h < p or w < p:
            raise ValueError(f"views of {h}x{w} pixels are smaller than the ViT patch ({p})")
        x = nn.Conv(
            self.embed_dim,
            (p, p),
            strides=p,
            padding="VALID",
            dtype=self.dtype,
            param_dtype=self.dtype,
        )(_nhwc(images))
        grid = self.img_size // p
        pos = self.param(
            "pos_embed",
            nn.initializers.normal(0.02),
            (1, grid * grid + 1, self.embed_dim),
            self.dtype,
        )
        cls = self.param(
            "cls_token", nn.initializers.normal(1e-6), (1, 1, self.embed_dim), self.dtype
        )
        gh, gw = x.shape[1], x.shape[2]
        patch_pos = pos[:, 1:].reshape(1, grid, grid, self.embed_dim)
        if (gh, gw) != (grid, grid):
            patch_pos = jax.image.resize(patch_pos, (1, gh, gw, self.embed_dim), "bilinear")
        x = x.reshape(b, gh * gw, self.embed_dim) + patch_pos.reshape(1, gh * gw, -1)
        x = jnp.concatenate([jnp.broadcast_to(cls + pos[:, :1], (b, 1, self.embed_dim)), x], 1)
        for _ in range(self.depth):
            x = _ViTBlock(self.embed_dim, self.num_heads, self.dtype)(x)
        return nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=self.dtype)(x)[:, 0]


def build_backbone(
    name: str,
    *,
    img_size: int,
    width: int,
    timm_kwargs: Mapping[str, Any],
    axis_name: Hashable | None = None,
    dtype: Any = jnp.float32,
) -> nn.Module:
    """The backbone named ``name`` (one of :data:`BACKBONES`).

    Parameters
    ----------
    name : str
        ``model.backbone``.
    img_size : int
        Global view size (the ViT's position-embedding grid).
    width : int
        :class:`SmallCNN` width.
    timm_kwargs : Mapping
        ``model.timm_kwargs``: ViT only, keys among ``patch_size``, ``embed_dim``, ``depth``,
        ``num_heads``.
    axis_name : hashable, optional
        Mapped axis of synchronised batch norm.
    dtype : dtype, default float32
        Parameter and compute dtype.

    Returns
    -------
    flax.linen.Module
        Called as ``module(images, train)``; ``num_features`` is the feature dimension.

    Raises
    ------
    ValueError
        An unknown name, or ``timm_kwargs`` the backbone does not take.
    """
    if name not in BACKBONES:
        raise ValueError(
            f"model.backbone {name!r} is not available in the JAX trainer; choose one of "
            f"{', '.join(BACKBONES)}"
        )
    if name == "vit_tiny_patch16_224":
        unknown = sorted(set(timm_kwargs) - set(_VIT_OPTIONS))
        if unknown:
            raise ValueError(
                f"model.timm_kwargs {unknown} not supported by the JAX ViT; "
                f"allowed: {', '.join(_VIT_OPTIONS)}"
            )
        return ViT(img_size=img_size, dtype=dtype, **dict(timm_kwargs))
    if timm_kwargs:
        raise ValueError(f"model.timm_kwargs applies to the ViT, not {name}")
    if name == "smallcnn":
        return SmallCNN(width, axis_name, dtype)
    return ResNet18(axis_name, dtype)


class Projector(nn.Module):
    """MLP: Dense-BN-ReLU hidden layers, a linear output
    (:class:`trainers.torch_ddp.models.Projector`).

    Attributes
    ----------
    dims : sequence of int
        Hidden widths followed by the embedding dimension.
    axis_name : hashable, optional
        Mapped axis of synchronised batch norm.
    dtype : dtype
        Parameter and compute dtype.
    """

    dims: Sequence[int]
    axis_name: Hashable | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """Embeddings ``(B, dims[-1])`` of features ``(B, F)``."""
        for d in self.dims[:-1]:
            x = nn.Dense(d, dtype=self.dtype, param_dtype=self.dtype)(x)
            x = nn.relu(_batch_norm(train, self.axis_name, self.dtype)(x))
        return nn.Dense(self.dims[-1], dtype=self.dtype, param_dtype=self.dtype)(x)


class NetOutput(NamedTuple):
    """What :class:`LeJEPANet` computes for one batch of views."""

    global_embeddings: jax.Array
    """Projector outputs of the global views, ``(V_g, B, D)``."""
    local_embeddings: jax.Array | None
    """Projector outputs of the local views, ``(V_l, B, D)``, or ``None``."""
    probe_logits: jax.Array | None
    """Probe logits on the gradient-stopped global-view features, ``(V_g, B, classes)``."""


class LeJEPANet(nn.Module):
    """Backbone + projector (trained by the LeJEPA loss) + online linear probe.

    The probe reads the backbone features through ``jax.lax.stop_gradient``: its
    cross-entropy trains the probe only.

    Attributes
    ----------
    backbone : flax.linen.Module
        From :func:`build_backbone`.
    projector_dims : sequence of int
        See :class:`Projector`.
    num_classes : int
        Probe classes; 0 for no probe.
    axis_name : hashable, optional
        Mapped axis of the projector's synchronised batch norm.
    dtype : dtype
        Parameter and compute dtype.
    """

    backbone: nn.Module
    projector_dims: Sequence[int]
    num_classes: int
    axis_name: Hashable | None = None
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.projector = Projector(self.projector_dims, self.axis_name, self.dtype)
        if self.num_classes:
            self.probe = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.dtype)

    def features(self, images: jax.Array) -> jax.Array:
        """Backbone features of images ``(B, C, H, W)``, evaluation mode."""
        return self.backbone(images, False)

    def embed(self, images: jax.Array) -> jax.Array:
        """Projector outputs of images ``(B, C, H, W)``, evaluation mode."""
        return self.projector(self.backbone(images, False), False)

    def classify(self, features: jax.Array) -> jax.Array:
        """Probe logits of backbone features."""
        return self.probe(features)

    def _embed_views(self, views: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        v, b = views.shape[:2]
        features = self.backbone(views.reshape((v * b, *views.shape[2:])), train)
        return features, self.projector(features, train).reshape(v, b, -1)

    def __call__(
        self, global_views: jax.Array, local_views: jax.Array | None, train: bool = True
    ) -> NetOutput:
        """Embed the views (one backbone pass per view size) and probe the global features.

        Parameters
        ----------
        global_views : jax.Array, shape (V_g, B, C, S_g, S_g)
        local_views : jax.Array, shape (V_l, B, C, S_l, S_l), or None
        train : bool, default True
            Batch statistics (and their running averages updated) or running averages.

        Returns
        -------
        NetOutput
        """
        features, g = self._embed_views(global_views, train)
        loc = None if local_views is None else self._embed_views(local_views, train)[1]
        logits = None
        if self.num_classes:
            logits = self.probe(jax.lax.stop_gradient(features)).reshape(
                (*global_views.shape[:2], self.num_classes)
            )
        return NetOutput(g, loc, logits)


def configured_net(
    cfg: Any, num_classes: int, *, axis_name: Hashable | None, dtype: Any
) -> LeJEPANet:
    """The LeJEPA network of a configuration (``model.*``, ``views.global_size``).

    Parameters
    ----------
    cfg : trainers.core.config.TrainConfig
    num_classes : int
        Classes of the online probe (0: no probe).
    axis_name : hashable, optional
        Mapped axis of synchronised batch norm (``None``: evaluation).
    dtype : dtype
        Parameter and compute dtype.
    """
    backbone = build_backbone(
        cfg.model.backbone,
        img_size=cfg.views.global_size,
        width=cfg.model.width,
        timm_kwargs=cfg.model.timm_kwargs,
        axis_name=axis_name,
        dtype=dtype,
    )
    return LeJEPANet(backbone, cfg.model.projector_dims, num_classes, axis_name, dtype)


def initial_variables(net: LeJEPANet, cfg: Any, channels: int, dtype: Any) -> Any:
    """The network's initial variables for ``run.seed`` (the trainer's initialisation)."""
    size = cfg.views.global_size
    dummy = jnp.zeros((1, 1, channels, size, size), dtype)
    init = jax.jit(lambda key: net.init(key, dummy, None, False))
    return init(jax.random.key(cfg.run.seed))
