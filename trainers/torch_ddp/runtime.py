"""Torch settings shared by the torch trainer, the supervised baseline and the evaluation:
threads and determinism, autocast dtype, AdamW parameter groups."""

from __future__ import annotations

import os
from typing import Any

import torch

from trainers.core.config import TrainConfig

__all__ = ["autocast_dtype", "configure_torch", "param_groups"]


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``run.precision`` on ``device`` (``None``: float32, no autocast)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp64":
        raise ValueError("run.precision 'fp64' is supported by trainers.cupy_nccl only")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def param_groups(net: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norm weights and the backbone's declared
    ``no_weight_decay()`` parameters (e.g. ViT position embeddings)."""
    skip = getattr(net.backbone, "no_weight_decay", lambda: set())()
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        if param.ndim <= 1 or name.removeprefix("backbone.") in skip:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def configure_torch(cfg: TrainConfig) -> None:
    """Apply run.threads and run.deterministic to torch."""
    if cfg.run.threads is not None:
        torch.set_num_threads(cfg.run.threads)
    if cfg.run.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
