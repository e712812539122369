"""Random views of vectors and images in array-API code (numpy or cupy), for the MLP trainer.

The random parameters are drawn on the host from an explicit ``numpy.random.Generator``;
the arrays are transformed in the namespace of the data. Parameters are drawn for a whole
*global* batch and every rank applies its own slice, so a data-parallel run sees exactly
the views of a single process on the concatenated batch.

* Images ``(n, C, H, W)``: random resized crop (area fraction from ``scale``, log aspect
  ratio from ``log(ratio)``, sides clipped to the image, continuous position) resampled
  bilinearly back to ``H x W``, and a horizontal flip with probability ``flip_p`` --- both
  folded into one pair of separable interpolation matrices per view, applied by ``matmul``;
  then flattened to ``C * H * W``.
* Vectors ``(n, D)`` (and flattened crops): mixing ``x <- (1 - a) x + a x'`` with a random
  partner ``x'`` from the whole training set and ``a ~ U(0, mix)``, Gaussian noise of
  standard deviation ``noise_std``, and masking of every feature with probability
  ``mask_p`` (set to 0, the mean of standardised data), in that order.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from sigreg._namespace import device_of

__all__ = ["CropParams", "VectorParams", "apply_crops", "apply_vector", "draw_crops", "draw_vector"]


class CropParams(NamedTuple):
    """Crop boxes and flips of ``n`` views (host arrays of shape ``(n,)``)."""

    top: np.ndarray
    left: np.ndarray
    height: np.ndarray
    width: np.ndarray
    flip: np.ndarray


class VectorParams(NamedTuple):
    """Vector-view randomness of ``n`` views of ``D`` features (host arrays)."""

    partner: np.ndarray
    """``(n,)`` training-set index of the mixing partner."""
    alpha: np.ndarray
    """``(n,)`` mixing weight of the partner."""
    noise: np.ndarray
    """``(n, D)`` standard normal draws (scaled by ``noise_std`` when applied)."""
    keep: np.ndarray
    """``(n, D)`` 1.0 where the feature is kept, 0.0 where it is masked."""


def draw_crops(
    rng: np.random.Generator,
    n: int,
    size: tuple[int, int],
    *,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flip_p: float,
) -> CropParams:
    """Random resized crop boxes (in pixels, continuous) and flips for ``n`` images of
    ``size = (H, W)``."""
    height, width = size
    area = rng.uniform(scale[0], scale[1], n) * height * width
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), n))
    crop_w = np.minimum(np.sqrt(area * aspect), width)
    crop_h = np.minimum(np.sqrt(area / aspect), height)
    top = rng.uniform(0.0, 1.0, n) * (height - crop_h)
    left = rng.uniform(0.0, 1.0, n) * (width - crop_w)
    return CropParams(top, left, crop_h, crop_w, rng.uniform(0.0, 1.0, n) < flip_p)


def _interpolation(
    xp: Any, start: Any, length: Any, flip: Any, size: int, dtype: Any, device: Any
) -> Any:
    """``(n, size, size)`` bilinear resampling matrices of the intervals
    ``[start, start + length)`` onto ``size`` output pixels (reversed where ``flip``)."""
    out = xp.arange(size, dtype=dtype, device=device)
    out = xp.where(flip[:, None], size - 1 - out[None, :], out[None, :])
    source = start[:, None] + (out + 0.5) * (length[:, None] / size) - 0.5
    source = xp.clip(source, 0.0, size - 1.0)
    pixels = xp.arange(size, dtype=dtype, device=device)
    return xp.maximum(1.0 - xp.abs(source[:, :, None] - pixels[None, None, :]), 0.0)


def apply_crops(xp: Any, images: Any, params: CropParams) -> Any:
    """Crop, resize back to ``(H, W)``, flip and flatten ``images`` ``(n, C, H, W)``.

    Returns
    -------
    array, shape (n, C * H * W)
    """
    n, channels, height, width = images.shape
    dtype = images.dtype
    device = device_of(images)

    def host(a: np.ndarray, kind: Any = None) -> Any:
        return xp.asarray(a, dtype=kind or dtype, device=device)

    flip = host(params.flip, xp.bool)
    rows = _interpolation(
        xp,
        host(params.top),
        host(params.height),
        host(np.zeros(n, bool), xp.bool),
        height,
        dtype,
        device,
    )
    cols = _interpolation(xp, host(params.left), host(params.width), flip, width, dtype, device)
    out = rows[:, None, ...] @ images @ xp.matrix_transpose(cols)[:, None, ...]
    return xp.reshape(out, (n, channels * height * width))


def draw_vector(
    rng: np.random.Generator,
    n: int,
    dim: int,
    *,
    num_samples: int,
    mask_p: float,
    noise_std: float,
    mix: float,
) -> VectorParams:
    """Random mixing partners (among ``num_samples``), weights, noise and masks for ``n``
    views of ``dim`` features. Draws nothing for a disabled transform."""
    partner = rng.integers(0, num_samples, n) if mix > 0 else np.zeros(n, np.int64)
    alpha = rng.uniform(0.0, mix, n) if mix > 0 else np.zeros(n)
    noise = rng.standard_normal((n, dim)) if noise_std > 0 else np.zeros((n, dim))
    keep = (rng.uniform(0.0, 1.0, (n, dim)) >= mask_p) if mask_p > 0 else np.ones((n, dim))
    return VectorParams(partner, alpha, noise, keep.astype(np.float64))


def apply_vector(xp: Any, x: Any, partners: Any, params: VectorParams, *, noise_std: float) -> Any:
    """Mix ``x`` ``(n, D)`` with ``partners`` ``(n, D)`` (the rows of ``params.partner``,
    gathered and viewed by the caller), add noise, mask."""
    device = device_of(x)

    def host(a: np.ndarray) -> Any:
        return xp.asarray(a, dtype=x.dtype, device=device)

    alpha = host(params.alpha)[:, None]
    x = (1.0 - alpha) * x + alpha * partners
    if noise_std > 0:
        x = x + noise_std * host(params.noise)
    return x * host(params.keep)
