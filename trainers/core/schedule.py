"""Learning-rate schedule: linear warm-up, then cosine decay to a fraction of the peak.

Framework-free, shared by every trainer.
"""

from __future__ import annotations

import math

__all__ = ["warmup_cosine"]


def warmup_cosine(step: int, *, total_steps: int, warmup_steps: int, final_ratio: float) -> float:
    """Multiplier of the peak learning rate for optimiser step ``step`` (0-based).

    ``(step + 1) / warmup_steps`` during the warm-up, then a half cosine from 1 at the end
    of the warm-up to ``final_ratio`` at ``total_steps - 1``, constant after that.

    Parameters
    ----------
    step : int
        Optimiser steps taken so far.
    total_steps : int
        Steps of the whole run (>= 1).
    warmup_steps : int
        Steps of the linear warm-up (0: none).
    final_ratio : float
        Final learning rate as a fraction of the peak.

    Returns
    -------
    float

    Examples
    --------
    >>> warmup_cosine(0, total_steps=10, warmup_steps=2, final_ratio=0.0)
    0.5
    >>> warmup_cosine(9, total_steps=10, warmup_steps=2, final_ratio=1e-3)
    0.001
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - 1 - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
