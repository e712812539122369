"""AdamW written against the array API, with gradient-norm clipping.

Framework-free (numpy or cupy parameters). The update is the one of ``torch.optim.AdamW``
(decoupled weight decay ``p -= lr * wd * p``, then the bias-corrected Adam step with
``eps`` added to ``sqrt(v) / sqrt(1 - beta2^t)``), operation for operation, so both agree
to rounding on identical parameters and gradients. The learning rate of each step is given
by the caller (e.g. ``lr * trainers.core.schedule.warmup_cosine(step, ...)``).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["AdamW", "clip_grad_norm"]


class AdamW:
    """AdamW state and update for a ``dict`` of parameters.

    Parameters
    ----------
    xp : namespace
        Array namespace of the parameters.
    params : dict
        ``{name: array}``; the moments are created with the same shapes, dtypes, devices.
    weight_decay : float
        Decoupled weight decay of the parameters with ``ndim >= 2`` (biases and norm
        weights are not decayed, as in the torch trainer).
    betas : tuple of float, default (0.9, 0.999)
    eps : float, default 1e-8

    Attributes
    ----------
    step_count : int
        Updates applied so far (``t`` of the bias corrections).
    exp_avg, exp_avg_sq : dict
        First and second moments, keyed like ``params``.
    """

    def __init__(
        self,
        xp: Any,
        params: dict[str, Any],
        *,
        weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        self.xp, self.weight_decay, self.betas, self.eps = xp, weight_decay, betas, eps
        self.step_count = 0
        self.exp_avg = {k: xp.zeros_like(v) for k, v in params.items()}
        self.exp_avg_sq = {k: xp.zeros_like(v) for k, v in params.items()}

    def step(self, params: dict[str, Any], grads: dict[str, Any], lr: float) -> dict[str, Any]:
        """Return the updated parameters (the moments are updated in this object).

        Parameters
        ----------
        params, grads : dict
            Parameters and their gradients, same keys as at construction.
        lr : float
            Learning rate of this step.
        """
        if set(grads) != set(self.exp_avg):
            raise ValueError("grads must have exactly the parameters' names")
        xp = self.xp
        beta1, beta2 = self.betas
        self.step_count += 1
        correction1 = 1.0 - beta1**self.step_count
        correction2_sqrt = math.sqrt(1.0 - beta2**self.step_count)
        out = {}
        for name, p in params.items():
            g = grads[name]
            if p.ndim >= 2 and self.weight_decay:
                p = p * (1.0 - lr * self.weight_decay)
            m = self.exp_avg[name] * beta1 + g * (1.0 - beta1)
            v = self.exp_avg_sq[name] * beta2 + g * g * (1.0 - beta2)
            self.exp_avg[name], self.exp_avg_sq[name] = m, v
            denom = xp.sqrt(v) / correction2_sqrt + self.eps
            out[name] = p - (lr / correction1) * (m / denom)
        return out


def clip_grad_norm(xp: Any, grads: dict[str, Any], max_norm: float) -> dict[str, Any]:
    """Scale ``grads`` so that their global L2 norm is at most ``max_norm``
    (``torch.nn.utils.clip_grad_norm_``: factor ``min(1, max_norm / (norm + 1e-6))``)."""
    norm = math.sqrt(sum(float(xp.sum(g * g)) for g in grads.values()))
    factor = min(1.0, max_norm / (norm + 1e-6))
    return grads if factor == 1.0 else {k: g * factor for k, g in grads.items()}
