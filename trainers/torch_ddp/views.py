"""Multi-crop augmentation batched on the device (PyTorch).

Every view of every sample gets its own random parameters, but each operation runs as one
batched tensor op over all ``V * B`` views of a kind (no per-image Python loop, no worker
processes), on the device that holds the images:

* random resized crop + horizontal flip: one affine grid per view (``F.affine_grid``) and one
  bilinear ``F.grid_sample`` (which also resizes, e.g. upsamples 8x8 digits to 32x32);
  the crop's area fraction is drawn from ``scale`` and its log aspect ratio from
  ``log(ratio)``, both relative to the image's sides; a side longer than the image is
  clipped to it (torchvision redraws instead);
* colour jitter with probability ``jitter_p``: brightness, contrast, and on 3-channel
  images saturation and hue (a rotation of the chroma plane in YIQ space), applied in that
  fixed order with per-view factors (torchvision shuffles the order);
* grayscale with probability ``grayscale_p`` (3 channels only);
* Gaussian blur with probability ``blur_p``: a per-view separable kernel applied with
  ``unfold`` + ``einsum`` (a depthwise convolution), replicate padding;
* solarization with probability ``solarize_p``: ``x -> 1 - x`` where ``x >= 0.5``;
* per-channel normalisation with the training set's mean and standard deviation.

Randomness comes only from the ``torch.Generator`` passed in, so a view batch is a function
of the generator's seed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainers.core.config import AugmentConfig, ViewsConfig

__all__ = ["MultiCrop"]

_LUMA = (0.299, 0.587, 0.114)
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


class MultiCrop:
    """Global and local views of an image batch, plus the un-augmented evaluation view.

    Parameters
    ----------
    views : ViewsConfig
        Number, size and crop scale of the global and local views.
    augment : AugmentConfig
        Photometric augmentation probabilities and strengths.
    mean, std : sequence of float
        Per-channel normalisation applied to every output (their length is ``C``).
    """

    def __init__(self, views: ViewsConfig, augment: AugmentConfig, *, mean, std) -> None:
        self.views, self.aug = views, augment
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)

    # ----------------------------------------------------------------------- public
    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augmented views of ``images``.

        Parameters
        ----------
        images : torch.Tensor, shape (B, C, H, W)
            Float images in ``[0, 1]``.
        generator : torch.Generator
            Source of all random parameters, on the device of ``images``.

        Returns
        -------
        global_views : torch.Tensor, shape (V_g, B, C, S_g, S_g)
        local_views : torch.Tensor, shape (V_l, B, C, S_l, S_l), or None when ``V_l = 0``
        """
        v = self.views
        g = self._views(images, v.n_global, v.global_size, v.global_scale, generator)
        if v.n_local == 0:
            return g, None
        return g, self._views(images, v.n_local, v.local_size, v.local_scale, generator)

    @torch.no_grad()
    def eval_view(self, images: torch.Tensor) -> torch.Tensor:
        """The whole image resized to the global view size and normalised, ``(B, C, S, S)``."""
        n = images.shape[0]
        theta = torch.zeros((n, 2, 3), dtype=images.dtype, device=images.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        return self._normalize(self._sample(images, theta, self.views.global_size))

    # ---------------------------------------------------------------------- helpers
    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    @staticmethod
    def _sample(images: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
        grid = F.affine_grid(
            theta, [theta.shape[0], images.shape[1], size, size], align_corners=False
        )
        return F.grid_sample(
            images, grid, mode="bilinear", padding_mode="border", align_corners=False
        )

    def _views(self, images, n_views, size, scale, generator) -> torch.Tensor:
        b, c = images.shape[:2]
        x = self._crop(images, n_views, size, scale, generator)
        x = self._photometric(x, generator)
        return self._normalize(x).reshape(n_views, b, c, size, size)

    def _crop(self, images, n_views, size, scale, generator) -> torch.Tensor:
        """Random resized crops with flips, view-major: row ``v * B + b``."""
        n = n_views * images.shape[0]
        u = torch.rand((n, 5), generator=generator, device=images.device, dtype=images.dtype)
        area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
        lo, hi = math.log(self.views.ratio[0]), math.log(self.views.ratio[1])
        ratio = torch.exp(lo + (hi - lo) * u[:, 1])
        w = torch.sqrt(area * ratio).clamp(max=1.0)  # half-widths in [-1, 1] coordinates
        h = torch.sqrt(area / ratio).clamp(max=1.0)
        theta = torch.zeros((n, 2, 3), dtype=images.dtype, device=images.device)
        theta[:, 0, 0] = torch.where(u[:, 4] < self.aug.flip_p, -w, w)
        theta[:, 0, 2] = (2.0 * u[:, 2] - 1.0) * (1.0 - w)
        theta[:, 1, 1] = h
        theta[:, 1, 2] = (2.0 * u[:, 3] - 1.0) * (1.0 - h)
        return self._sample(images.repeat(n_views, 1, 1, 1), theta, size)

    def _photometric(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        a = self.aug
        n, c = x.shape[:2]
        u = torch.rand((n, 9), generator=generator, device=x.device, dtype=x.dtype)

        def per_view(values: torch.Tensor) -> torch.Tensor:
            return values.reshape(n, 1, 1, 1)

        jitter = u[:, 0] < a.jitter_p
        one = torch.ones_like(u[:, 0])
        brightness = torch.where(jitter, 1.0 + a.brightness * (2.0 * u[:, 1] - 1.0), one)
        contrast = torch.where(jitter, 1.0 + a.contrast * (2.0 * u[:, 2] - 1.0), one)
        x = (x * per_view(brightness)).clamp(0.0, 1.0)
        mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * per_view(contrast) + mean).clamp(0.0, 1.0)
        if c == 3:
            saturation = torch.where(jitter, 1.0 + a.saturation * (2.0 * u[:, 3] - 1.0), one)
            gray = _gray(x)
            x = (gray + (x - gray) * per_view(saturation)).clamp(0.0, 1.0)
            hue = torch.where(jitter, a.hue * (2.0 * u[:, 4] - 1.0), torch.zeros_like(one))
            x = _rotate_hue(x, hue)
            x = torch.where(per_view(u[:, 5] < a.grayscale_p), _gray(x).expand_as(x), x)
        if a.blur_p > 0:
            sigma = a.blur_sigma[0] + (a.blur_sigma[1] - a.blur_sigma[0]) * u[:, 7]
            x = _blur(x, sigma, u[:, 6] < a.blur_p, a.blur_sigma[1])
        return torch.where(per_view(u[:, 8] < a.solarize_p) & (x >= 0.5), 1.0 - x, x)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma ``(N, 1, H, W)`` of RGB images; 1-channel images are returned unchanged."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _rotate_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate the chroma (I, Q) plane of RGB images by ``turns`` of a full circle each."""
    to_yiq = torch.tensor(_RGB_TO_YIQ, dtype=x.dtype, device=x.device)
    angle = 2.0 * math.pi * turns
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros((len(turns), 3, 3), dtype=x.dtype, device=x.device)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    matrix = torch.linalg.inv(to_yiq) @ rot @ to_yiq  # (N, 3, 3)
    return torch.einsum("nij,njhw->nihw", matrix, x).clamp(0.0, 1.0)


def _blur(x: torch.Tensor, sigma: torch.Tensor, apply: torch.Tensor, max_sigma: float):
    """Separable Gaussian blur with a per-view ``sigma`` where ``apply``; identity elsewhere."""
    n, c, h, w = x.shape
    radius = max(1, min(math.ceil(3.0 * max_sigma), h - 1, w - 1))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma[:, None]) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    delta = (offsets == 0).to(x.dtype).expand_as(kernel)
    kernel = torch.where(apply[:, None], kernel, delta)  # (N, K)
    x = F.pad(x, (radius, radius, 0, 0), mode="replicate").unfold(3, 2 * radius + 1, 1)
    x = torch.einsum("nchwk,nk->nchw", x, kernel)
    x = F.pad(x, (0, 0, radius, radius), mode="replicate").unfold(2, 2 * radius + 1, 1)
    return torch.einsum("nchwk,nk->nchw", x, kernel)
