"""Multi-crop augmentation in ``jax.numpy``, jitted on the device (the JAX trainer's).

The operations and their parameter ranges are those of :mod:`trainers.torch_ddp.views` (the torch
trainer's): random resized crop with flip, colour jitter (brightness, contrast; saturation
and hue on 3 channels), grayscale, Gaussian blur, solarization, per-channel normalisation.
The random numbers differ: every sample draws its views from its own ``jax.random`` key.
The trainer derives that key from ``(run.seed, step, dataset index)``, so a sample's views
do not depend on how the batch is split over devices or processes.

Crops and blurs are separable linear maps: a crop is ``R_y @ image @ R_x.T`` with bilinear
interpolation matrices (``align_corners=False``, border clamping, as ``F.grid_sample``), a
blur ``B @ view @ B.T`` with a replicate-padded Gaussian band matrix.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from trainers.core.config import AugmentConfig, ViewsConfig

__all__ = ["MultiCrop"]

_LUMA = np.array([0.299, 0.587, 0.114])
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _interpolation(size: int, scale: jax.Array, shift: jax.Array, length: int) -> jax.Array:
    """``(size, length)`` bilinear weights sampling ``scale * x + shift`` of ``[-1, 1]``."""
    out = (2.0 * jnp.arange(size, dtype=scale.dtype) + 1.0) / size - 1.0
    source = ((scale * out + shift + 1.0) * length - 1.0) / 2.0
    source = jnp.clip(source, 0.0, length - 1.0)
    return jnp.maximum(0.0, 1.0 - jnp.abs(source[:, None] - jnp.arange(length, dtype=scale.dtype)))


def _gray(x: jax.Array) -> jax.Array:
    """Luma ``(1, H, W)`` of an RGB view; a 1-channel view unchanged."""
    if x.shape[0] == 1:
        return x
    return jnp.tensordot(jnp.asarray(_LUMA, x.dtype), x, axes=1)[None]


def _rotate_hue(x: jax.Array, turns: jax.Array) -> jax.Array:
    """Rotate the (I, Q) chroma plane of an RGB view by ``turns`` of a full circle."""
    angle = 2.0 * math.pi * turns
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    zero, one = jnp.zeros_like(cos), jnp.ones_like(cos)
    rot = jnp.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos]).reshape(3, 3)
    to_yiq = jnp.asarray(_RGB_TO_YIQ, x.dtype)
    matrix = jnp.asarray(np.linalg.inv(_RGB_TO_YIQ), x.dtype) @ rot @ to_yiq
    return jnp.clip(jnp.einsum("ij,jhw->ihw", matrix, x), 0.0, 1.0)


def _blur_matrix(size: int, sigma: jax.Array, apply: jax.Array, max_sigma: float) -> jax.Array:
    """``(size, size)`` replicate-padded Gaussian blur (identity where not ``apply``)."""
    radius = max(1, min(math.ceil(3.0 * max_sigma), size - 1))
    offsets = np.arange(-radius, radius + 1)
    kernel = jnp.exp(-0.5 * (jnp.asarray(offsets, sigma.dtype) / sigma) ** 2)
    kernel = kernel / jnp.sum(kernel)
    kernel = jnp.where(apply, kernel, jnp.asarray(offsets == 0, sigma.dtype))
    columns = np.clip(np.arange(size)[:, None] + offsets[None, :], 0, size - 1)  # (S, K)
    one_hot = np.eye(size)[columns]  # (S, K, S)
    return jnp.einsum("k,ikj->ij", kernel, jnp.asarray(one_hot, sigma.dtype))


class MultiCrop:
    """The JAX :class:`trainers.torch_ddp.views.MultiCrop`: the same arguments (``views``,
    ``augment``, ``mean``, ``std``) and outputs, random numbers from per-sample keys."""

    def __init__(self, views: ViewsConfig, augment: AugmentConfig, *, mean, std) -> None:
        self.views, self.aug = views, augment
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1, 1, 1)
        self.std = np.asarray(std, dtype=np.float64).reshape(-1, 1, 1)

    def __call__(self, images: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """Augmented views of ``images``, every sample from its own key.

        Parameters
        ----------
        images : jax.Array, shape (B, C, H, W)
            Float images in ``[0, 1]``.
        keys : jax.Array, shape (B,)
            ``jax.random`` keys, one per sample.

        Returns
        -------
        global_views : jax.Array, shape (V_g, B, C, S_g, S_g)
        local_views : jax.Array, shape (V_l, B, C, S_l, S_l), or None when ``V_l = 0``
        """
        v = self.views

        def per_sample(image, key):
            key_g, key_l = jax.random.split(key)
            g = self._views(image, key_g, v.n_global, v.global_size, v.global_scale)
            if v.n_local == 0:
                return g, None
            return g, self._views(image, key_l, v.n_local, v.local_size, v.local_scale)

        g, loc = jax.vmap(per_sample, out_axes=1)(images, keys)
        return g, loc

    def eval_view(self, images: jax.Array) -> jax.Array:
        """The whole image resized to the global view size and normalised, ``(B, C, S, S)``."""
        _, _, h, w = images.shape
        size = self.views.global_size
        one, zero = jnp.ones((), images.dtype), jnp.zeros((), images.dtype)
        rows = _interpolation(size, one, zero, h)
        cols = _interpolation(size, one, zero, w)
        return self._normalize(jnp.einsum("sh,bchw,tw->bcst", rows, images, cols))

    # ---------------------------------------------------------------------- helpers
    def _normalize(self, x: jax.Array) -> jax.Array:
        return (x - jnp.asarray(self.mean, x.dtype)) / jnp.asarray(self.std, x.dtype)

    def _views(self, image, key, n_views, size, scale) -> jax.Array:
        def one(view_key):
            u = jax.random.uniform(view_key, (14,), image.dtype)
            return self._normalize(self._photometric(self._crop(image, u[:5], size, scale), u[5:]))

        return jax.vmap(one)(jax.random.split(key, n_views))

    def _crop(self, image, u, size, scale) -> jax.Array:
        """A random resized crop (flipped with probability ``flip_p``) of ``image``."""
        _, h, w = image.shape
        area = scale[0] + (scale[1] - scale[0]) * u[0]
        lo, hi = math.log(self.views.ratio[0]), math.log(self.views.ratio[1])
        ratio = jnp.exp(lo + (hi - lo) * u[1])
        half_w = jnp.minimum(jnp.sqrt(area * ratio), 1.0)
        half_h = jnp.minimum(jnp.sqrt(area / ratio), 1.0)
        flip = jnp.where(u[4] < self.aug.flip_p, -half_w, half_w)
        cols = _interpolation(size, flip, (2.0 * u[2] - 1.0) * (1.0 - half_w), w)
        rows = _interpolation(size, half_h, (2.0 * u[3] - 1.0) * (1.0 - half_h), h)
        return jnp.einsum("sh,chw,tw->cst", rows, image, cols)

    def _photometric(self, x: jax.Array, u: jax.Array) -> jax.Array:
        a = self.aug
        jitter = u[0] < a.jitter_p
        brightness = jnp.where(jitter, 1.0 + a.brightness * (2.0 * u[1] - 1.0), 1.0)
        contrast = jnp.where(jitter, 1.0 + a.contrast * (2.0 * u[2] - 1.0), 1.0)
        x = jnp.clip(x * brightness, 0.0, 1.0)
        mean = jnp.mean(_gray(x))
        x = jnp.clip((x - mean) * contrast + mean, 0.0, 1.0)
        if x.shape[0] == 3:
            saturation = jnp.where(jitter, 1.0 + a.saturation * (2.0 * u[3] - 1.0), 1.0)
            gray = _gray(x)
            x = jnp.clip(gray + (x - gray) * saturation, 0.0, 1.0)
            x = _rotate_hue(x, jnp.where(jitter, a.hue * (2.0 * u[4] - 1.0), 0.0))
            x = jnp.where(u[5] < a.grayscale_p, jnp.broadcast_to(_gray(x), x.shape), x)
        if a.blur_p > 0:
            sigma = a.blur_sigma[0] + (a.blur_sigma[1] - a.blur_sigma[0]) * u[7]
            blur = _blur_matrix(x.shape[-1], sigma, u[6] < a.blur_p, a.blur_sigma[1])
            x = jnp.einsum("sh,chw,tw->cst", blur, x, blur)
        return jnp.where((u[8] < a.solarize_p) & (x >= 0.5), 1.0 - x, x)
