"""LeJEPA pretraining with PyTorch (``python -m trainers.torch_ddp``): trainer, models, views,
checkpoint format and feature extraction."""

from trainers.torch_ddp.trainer import Trainer, main

__all__ = ["Trainer", "main"]
