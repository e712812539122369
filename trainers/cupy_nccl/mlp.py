"""An MLP written against the array API, with a hand-derived backward pass.

Framework-free: the same code runs on numpy (CPU) and cupy (GPU) arrays, which have no
autodiff. A network is a list of layers; :func:`forward` stores what :func:`backward`
needs (a tape), and :func:`backward` returns the gradient with respect to the input and
to every parameter. Layers: ``Linear`` (``y = x @ W + b``, ``W`` of shape ``(in, out)``),
``LayerNorm`` (per-sample, affine; no cross-sample statistics, so data-parallel training
needs no synchronised norm) and ``ReLU``.

Parameters live in a flat ``dict`` of arrays named ``"<net>.<layer index>.<weight|bias>"``,
the form :mod:`trainers.cupy_nccl.adamw` and the checkpoints use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Layer", "backward", "forward", "init_params", "mlp_layers"]

LAYER_NORM_EPS = 1e-5


class Layer(NamedTuple):
    """One layer of an MLP."""

    kind: str
    """``"linear"``, ``"layernorm"`` or ``"relu"``."""
    name: str
    """Parameter prefix (``"<net>.<index>"``); unused by ``relu``."""
    shape: tuple[int, int]
    """``(in, out)`` features (``(d, d)`` for norms and ReLU)."""


def mlp_layers(name: str, dims: Sequence[int], *, last_activation: bool) -> list[Layer]:
    """Linear-LayerNorm-ReLU blocks ``dims[0] -> dims[1] -> ... -> dims[-1]``.

    Parameters
    ----------
    name : str
        Prefix of the parameter names.
    dims : sequence of int
        Input width, then the output width of every linear layer.
    last_activation : bool
        Whether the last linear layer is followed by LayerNorm and ReLU too (an encoder)
        or is a plain linear output (a projector or a probe).

    Returns
    -------
    list of Layer
    """
    if len(dims) < 2 or any(int(d) < 1 for d in dims):
        raise ValueError(f"dims must hold at least two positive widths, got {list(dims)}")
    layers = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(Layer("linear", f"{name}.{len(layers)}", (d_in, d_out)))
        if i < len(dims) - 2 or last_activation:
            layers.append(Layer("layernorm", f"{name}.{len(layers)}", (d_out, d_out)))
            layers.append(Layer("relu", f"{name}.{len(layers)}", (d_out, d_out)))
    return layers


def init_params(
    layers: Sequence[Layer], rng: np.random.Generator, xp: Any, *, dtype: Any, device: Any = None
) -> dict[str, Any]:
    """Initial parameters: PyTorch's defaults (linear ``U(-1/sqrt(in), 1/sqrt(in))`` for the
    weight and bias, LayerNorm weight 1 and bias 0), drawn on the host from ``rng``.

    Parameters
    ----------
    layers : sequence of Layer
    rng : numpy.random.Generator
        Source of the random weights (the same seed gives the same weights on any device).
    xp : namespace
        Array namespace of the parameters.
    dtype, device
        Of the parameters.

    Returns
    -------
    dict
        ``{name: array}``.
    """
    params = {}
    for layer in layers:
        d_in, d_out = layer.shape
        if layer.kind == "linear":
            bound = 1.0 / math.sqrt(d_in)
            weight = rng.uniform(-bound, bound, (d_in, d_out))
            bias = rng.uniform(-bound, bound, (d_out,))
        elif layer.kind == "layernorm":
            weight, bias = np.ones(d_out), np.zeros(d_out)
        else:
            continue
        params[f"{layer.name}.weight"] = xp.asarray(weight, dtype=dtype, device=device)
        params[f"{layer.name}.bias"] = xp.asarray(bias, dtype=dtype, device=device)
    return params


def forward(
    xp: Any, layers: Sequence[Layer], params: dict[str, Any], x: Any
) -> tuple[Any, list[Any]]:
    """Apply the network to ``x`` of shape ``(..., in)``.

    Returns
    -------
    y : array, shape (..., out)
    tape : list
        Per-layer values saved for :func:`backward`.
    """
    tape = []
    for layer in layers:
        if layer.kind == "linear":
            tape.append(x)
            x = x @ params[f"{layer.name}.weight"] + params[f"{layer.name}.bias"]
        elif layer.kind == "layernorm":
            centred = x - xp.mean(x, axis=-1, keepdims=True)
            inv_std = 1.0 / xp.sqrt(xp.mean(centred**2, axis=-1, keepdims=True) + LAYER_NORM_EPS)
            normed = centred * inv_std
            tape.append((normed, inv_std))
            x = normed * params[f"{layer.name}.weight"] + params[f"{layer.name}.bias"]
        else:
            x = xp.maximum(x, 0.0)
            tape.append(x)
    return x, tape


def backward(
    xp: Any, layers: Sequence[Layer], params: dict[str, Any], tape: list[Any], grad: Any
) -> tuple[Any, dict[str, Any]]:
    """Gradients of a scalar with respect to the input and the parameters.

    Parameters
    ----------
    xp : namespace
    layers, params
        As given to :func:`forward`.
    tape : list
        From :func:`forward`.
    grad : array, shape (..., out)
        Gradient of the scalar with respect to the network's output.

    Returns
    -------
    grad_input : array, shape (..., in)
    grads : dict
        ``{name: gradient}`` for every parameter of ``layers``.
    """
    grads = {}
    for layer, saved in zip(reversed(layers), reversed(tape), strict=True):
        if layer.kind == "linear":
            x = xp.reshape(saved, (-1, layer.shape[0]))
            g = xp.reshape(grad, (-1, layer.shape[1]))
            grads[f"{layer.name}.weight"] = xp.matrix_transpose(x) @ g
            grads[f"{layer.name}.bias"] = xp.sum(g, axis=0)
            grad = grad @ xp.matrix_transpose(params[f"{layer.name}.weight"])
        elif layer.kind == "layernorm":
            normed, inv_std = saved
            flat_n = xp.reshape(normed, (-1, layer.shape[0]))
            flat_g = xp.reshape(grad, (-1, layer.shape[0]))
            grads[f"{layer.name}.weight"] = xp.sum(flat_g * flat_n, axis=0)
            grads[f"{layer.name}.bias"] = xp.sum(flat_g, axis=0)
            g = grad * params[f"{layer.name}.weight"]
            grad = inv_std * (
                g
                - xp.mean(g, axis=-1, keepdims=True)
                - normed * xp.mean(g * normed, axis=-1, keepdims=True)
            )
        else:
            grad = xp.where(saved > 0, grad, 0.0)
    return grad, grads
