"""Networks (PyTorch): backbones, the projector MLP and the LeJEPA network with its probe.

``backbone`` is either ``"smallcnn"`` (:class:`SmallCNN`, built in, fast on a CPU) or any
timm model name, created with ``pretrained=False`` (random init, nothing downloaded),
``num_classes=0`` (pooled features) and ``in_chans``; ``img_size`` (plus
``dynamic_img_size=True``, so local views of another size work) is passed to the models
that take it (ViT-like ones).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

__all__ = [
    "LeJEPANet",
    "NetOutput",
    "Projector",
    "SmallCNN",
    "build_backbone",
    "initial_backbone",
]


class SmallCNN(nn.Module):
    """A 4-stage conv net with batch norm and global average pooling.

    Stages of ``width, 2 width, 4 width, 4 width`` channels, each a 3x3 conv, batch norm and
    ReLU; stages 2-4 halve the resolution. About ``0.3 M`` parameters at ``width=32``.

    Parameters
    ----------
    in_chans : int
        Input channels.
    width : int
        Channels of the first stage.

    Attributes
    ----------
    num_features : int
        Dimension of the pooled output (``4 * width``).
    """

    def __init__(self, in_chans: int, width: int) -> None:
        super().__init__()
        chans = (in_chans, width, 2 * width, 4 * width, 4 * width)
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [
                nn.Conv2d(
                    chans[i], chans[i + 1], 3, stride=1 if i == 0 else 2, padding=1, bias=False
                ),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(inplace=True),
            ]
        self.body = nn.Sequential(*layers)
        self.num_features = chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, num_features)`` of images ``(B, C, H, W)``."""
        return self.body(x).mean(dim=(2, 3))


def _create_timm(name: str, in_chans: int, img_size: int, extra: Mapping[str, Any]) -> nn.Module:
    import timm  # imported on first use: slow to load, and smallcnn does not need it

    if not timm.is_model(name):
        raise ValueError(f"model.backbone {name!r} is neither 'smallcnn' nor a timm model")
    kwargs = {"img_size": img_size, "dynamic_img_size": True, **extra}
    while True:
        try:
            return timm.create_model(
                name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs
            )
        except TypeError as exc:  # the model does not take one of the size arguments
            match = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
            if (
                not match
                or match.group(1) not in ("img_size", "dynamic_img_size")
                or match.group(1) in extra
            ):
                raise
            del kwargs[match.group(1)]


def build_backbone(
    name: str, *, in_chans: int, img_size: int, width: int, timm_kwargs: Mapping[str, Any]
) -> nn.Module:
    """The backbone named ``name``; its ``num_features`` attribute is the feature dimension.

    Parameters
    ----------
    name : str
        ``"smallcnn"`` or a timm model name.
    in_chans : int
        Image channels.
    img_size : int
        Global view size (given to timm models that take ``img_size``).
    width : int
        :class:`SmallCNN` width (ignored by timm models).
    timm_kwargs : Mapping
        Extra keyword arguments for ``timm.create_model`` (must be empty for smallcnn).

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    ValueError
        An unknown name, or ``timm_kwargs`` given for smallcnn.
    """
    if name == "smallcnn":
        if timm_kwargs:
            raise ValueError("model.timm_kwargs applies to timm backbones, not smallcnn")
        return SmallCNN(in_chans, width)
    return _create_timm(name, in_chans, img_size, timm_kwargs)


def initial_backbone(cfg: Any, in_chans: int) -> nn.Module:
    """The configured backbone with the trainers' initial weights (seeded by ``run.seed``).

    Parameters
    ----------
    cfg : trainers.core.config.TrainConfig
        ``model.backbone``, ``model.width``, ``model.timm_kwargs``, ``views.global_size``
        and ``run.seed``.
    in_chans : int
        Image channels.

    Returns
    -------
    torch.nn.Module
        See :func:`build_backbone`; the global torch RNG is left seeded by ``run.seed``.
    """
    torch.manual_seed(cfg.run.seed)
    return build_backbone(
        cfg.model.backbone,
        in_chans=in_chans,
        img_size=cfg.views.global_size,
        width=cfg.model.width,
        timm_kwargs=cfg.model.timm_kwargs,
    )


class Projector(nn.Module):
    """MLP ``in_dim -> dims[0] -> ... -> dims[-1]``: Linear-BN-ReLU hidden layers, linear out.

    Parameters
    ----------
    in_dim : int
        Input (backbone feature) dimension.
    dims : sequence of int
        Hidden widths followed by the embedding dimension.
    """

    def __init__(self, in_dim: int, dims: Sequence[int]) -> None:
        super().__init__()
        widths = (in_dim, *dims)
        layers: list[nn.Module] = []
        for d_in, d_out in zip(widths[:-2], widths[1:-1], strict=True):
            layers += [nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(widths[-2], widths[-1]))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, dims[-1])`` of features ``(B, in_dim)``."""
        return self.net(x)


class NetOutput(NamedTuple):
    """What :class:`LeJEPANet` computes for one batch of views."""

    global_embeddings: torch.Tensor
    """Projector outputs of the global views, ``(V_g, B, D)``."""
    local_embeddings: torch.Tensor | None
    """Projector outputs of the local views, ``(V_l, B, D)``, or ``None``."""
    probe_logits: torch.Tensor | None
    """Probe logits on the detached global-view features, ``(V_g, B, classes)``, or ``None``."""


class LeJEPANet(nn.Module):
    """Backbone + projector (trained by the LeJEPA loss) + online linear probe.

    The probe reads the backbone features through ``detach()``: its cross-entropy trains
    the probe only, never the backbone.

    Parameters
    ----------
    backbone : torch.nn.Module
        Feature extractor with a ``num_features`` attribute.
    projector_dims : sequence of int
        See :class:`Projector`.
    num_classes : int
        Probe classes; 0 for no probe (unlabelled data).
    """

    def __init__(self, backbone: nn.Module, projector_dims: Sequence[int], num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.projector = Projector(backbone.num_features, projector_dims)
        self.probe = nn.Linear(backbone.num_features, num_classes) if num_classes else None

    def _embed(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v, b = views.shape[:2]
        features = self.backbone(views.flatten(0, 1))
        return features, self.projector(features).unflatten(0, (v, b))

    def forward(self, global_views: torch.Tensor, local_views: torch.Tensor | None) -> NetOutput:
        """Embed the views (one backbone pass per view size) and probe the global features.

        Parameters
        ----------
        global_views : torch.Tensor, shape (V_g, B, C, S_g, S_g)
        local_views : torch.Tensor, shape (V_l, B, C, S_l, S_l), or None

        Returns
        -------
        NetOutput
        """
        features, g = self._embed(global_views)
        loc = None if local_views is None else self._embed(local_views)[1]
        logits = None
        if self.probe is not None:
            logits = self.probe(features.detach()).unflatten(0, global_views.shape[:2])
        return NetOutput(g, loc, logits)
