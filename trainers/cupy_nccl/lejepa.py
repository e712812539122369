"""The MLP LeJEPA network and its loss with explicit gradients (numpy or cupy).

Framework-free. The network is an MLP encoder, an MLP projector on its features and, for
labelled data, an online linear probe on the *detached* features (its loss trains only the
probe), all from :mod:`trainers.cupy_nccl.mlp`. The loss gradient with respect to the
embeddings is the core's analytic pullback :func:`sigreg.lejepa_loss_vjp`; the rest is the
MLP's hand-written backward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import sigreg
from sigreg._namespace import device_of
from trainers.cupy_nccl.mlp import Layer, backward, forward, mlp_layers

__all__ = ["MLPNet", "build_net", "embed", "loss_and_grads"]


class MLPNet(NamedTuple):
    """Layers of the three parts (parameters are kept apart, in one dict)."""

    encoder: list[Layer]
    projector: list[Layer]
    probe: list[Layer] | None


def build_net(
    dim: int, encoder_dims: Sequence[int], projector_dims: Sequence[int], num_classes: int
) -> MLPNet:
    """Encoder ``dim -> encoder_dims``, projector ``encoder_dims[-1] -> projector_dims``,
    probe ``encoder_dims[-1] -> num_classes`` (none when ``num_classes == 0``)."""
    features = encoder_dims[-1]
    return MLPNet(
        mlp_layers("encoder", [dim, *encoder_dims], last_activation=True),
        mlp_layers("projector", [features, *projector_dims], last_activation=False),
        mlp_layers("probe", [features, num_classes], last_activation=False)
        if num_classes
        else None,
    )


def embed(xp: Any, net: MLPNet, params: dict[str, Any], x: Any) -> tuple[Any, Any, Any]:
    """Features, embeddings and probe logits (``None`` without a probe) of ``x`` ``(n, D)``."""
    features, _ = forward(xp, net.encoder, params, x)
    embeddings, _ = forward(xp, net.projector, params, features)
    logits = None if net.probe is None else forward(xp, net.probe, params, features)[0]
    return features, embeddings, logits


def _cross_entropy(xp: Any, logits: Any, labels: Any, count: int) -> tuple[Any, Any]:
    """``sum(cross-entropy) / count`` and its gradient with respect to ``logits``."""
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    exp = xp.exp(shifted)
    total = xp.sum(exp, axis=1, keepdims=True)
    classes = xp.arange(logits.shape[1], device=device_of(logits))
    onehot = xp.astype(labels[:, None] == classes[None, :], logits.dtype)
    loss = xp.sum(xp.log(total) - xp.sum(shifted * onehot, axis=1, keepdims=True)) / count
    return loss, (exp / total - onehot) / count


def _probe_loss_and_grads(
    xp: Any, net: MLPNet, params: dict[str, Any], features: Any, labels: Any, count: int
) -> tuple[Any, dict[str, Any]]:
    """Cross-entropy (summed, divided by ``count``) of the probe on detached ``features``
    and the probe parameters' gradients."""
    logits, tape = forward(xp, net.probe, params, features)
    loss, grad_logits = _cross_entropy(xp, logits, labels, count)
    return loss, backward(xp, net.probe, params, tape, grad_logits)[1]


def loss_and_grads(
    xp: Any,
    net: MLPNet,
    params: dict[str, Any],
    views: Any,
    labels: Any,
    *,
    n_global: int,
    global_batch: int,
    collective: Any = None,
    clock: Any = None,
    **loss_options: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """LeJEPA loss and probe loss of one batch of views, and the parameter gradients.

    Parameters
    ----------
    xp : namespace
    net : MLPNet
    params : dict
        All parameters of ``net``.
    views : array, shape (V, n, D)
        The ``n_global`` global views first, then the local views, of this rank's ``n``
        samples.
    labels : array, shape (n,), or None
        Integer labels (probe only).
    n_global : int
        Number of global views.
    global_batch : int
        Samples per step over all ranks (the probe's mean runs over the global batch).
    collective : sigreg.Collective, optional
        Makes the LeJEPA loss that of the global batch. The returned gradients and
        ``probe_loss`` are this rank's *contributions*: their sum over the ranks is the
        global one.
    clock : trainers.core.loop.LossClock, optional
        Times the LeJEPA loss's value and pullback.
    **loss_options
        ``lamb``, ``num_slices``, ``seed``, ``step``, ``prediction``, ``directions``,
        ``engine`` or ``statistic`` of :func:`sigreg.lejepa_loss_vjp`.

    Returns
    -------
    parts : dict
        0-d arrays ``loss``, ``prediction``, ``sigreg`` (global) and ``probe_loss``
        (this rank's contribution).
    grads : dict
        Gradient of ``loss + probe_loss`` for every parameter.
    """
    n_views, n, dim = views.shape
    features, tape_e = forward(xp, net.encoder, params, xp.reshape(views, (n_views * n, dim)))
    flat, tape_p = forward(xp, net.projector, params, features)
    z = xp.reshape(flat, (n_views, n, flat.shape[-1]))
    local = z[n_global:, ...] if n_views > n_global else None
    with clock or contextlib.nullcontext():
        lejepa, pullback = sigreg.lejepa_loss_vjp(
            z[:n_global, ...], local, collective=collective, **loss_options
        )
        grad_g, grad_l = pullback(1.0)
    grad_z = grad_g if grad_l is None else xp.concat([grad_g, grad_l], axis=0)
    grad_features, grads = backward(
        xp, net.projector, params, tape_p, xp.reshape(grad_z, flat.shape)
    )
    grads.update(backward(xp, net.encoder, params, tape_e, grad_features)[1])
    probe_loss = xp.zeros((), dtype=views.dtype, device=device_of(views))
    if net.probe is not None:
        seen = features[: n_global * n, ...]  # global views only, detached
        probe_loss, probe_grads = _probe_loss_and_grads(
            xp, net, params, seen, xp.concat([labels] * n_global), n_global * global_batch
        )
        grads.update(probe_grads)
    parts = {
        "loss": lejepa.loss,
        "prediction": lejepa.prediction,
        "sigreg": lejepa.sigreg,
        "probe_loss": probe_loss,
    }
    return parts, grads
