"""LeJEPA pretraining with JAX (``python -m trainers.jax_pmap``): trainer, Flax models, views
and data parallelism."""

from trainers.jax_pmap.trainer import Trainer, main

__all__ = ["Trainer", "main"]
