"""LeJEPA pretraining of an MLP with explicit gradients on CuPy or NumPy
(``python -m trainers.cupy_nccl``): trainer, MLP, loss gradients, AdamW, views, collectives."""

from trainers.cupy_nccl.trainer import CKPT_EXT, Trainer, main

__all__ = ["CKPT_EXT", "Trainer", "main"]
