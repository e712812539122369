"""LeJEPA training built on sigreg.

Framework-free modules, shared by every trainer (PyTorch, CuPy/NumPy, JAX):
:mod:`trainers.core.loop` (the run loop: records, progress bar, cadences, summary, resume
checks), :mod:`trainers.core.config` (options, YAML, overrides, ``--help``),
:mod:`trainers.core.datasets` (NumPy image datasets and splits), :mod:`trainers.core.sampler`
(seeded, rank-sharded epochs), :mod:`trainers.core.schedule` (warm-up + cosine),
:mod:`trainers.core.metrics` (``metrics.jsonl``, k-NN, spectra), :mod:`trainers.core.probes`
(linear evaluation), :mod:`trainers.core.plots` (PNG plots) and :mod:`trainers.core.rundir` (atomic
writes, checkpoint names, provenance), :mod:`trainers.core.loop` (the run loop and command line
of every trainer), :mod:`trainers.core.vector_data` (feature files and flattened images).

Array-API modules (numpy or cupy, explicit gradients): :mod:`trainers.cupy_nccl` (the MLP
trainer, ``python -m trainers.cupy_nccl``), :mod:`trainers.eval_mlp`
(``python -m trainers.eval_mlp``), :mod:`trainers.cupy_nccl.mlp` (MLP with a hand-written
backward), :mod:`trainers.cupy_nccl.lejepa` (network + loss gradients),
:mod:`trainers.cupy_nccl.adamw`, :mod:`trainers.cupy_nccl.views` and
:mod:`trainers.cupy_nccl.collective` (gloo / NCCL sums).

PyTorch modules: :mod:`trainers.torch_ddp` (the trainer, ``python -m trainers.torch_ddp``),
:mod:`trainers.eval_linear` (``python -m trainers.eval_linear``), :mod:`trainers.torch_ddp.views`
(multi-crop on the device), :mod:`trainers.torch_ddp.models`, :mod:`trainers.distributed`,
:mod:`trainers.torch_ddp.features` and :mod:`trainers.torch_ddp.checkpoint`.

JAX modules: :mod:`trainers.jax_pmap` (the trainer, ``python -m trainers.jax_pmap``),
:mod:`trainers.jax_pmap.parallel` (``pmap`` / ``shard_map`` data parallelism),
:mod:`trainers.jax_pmap.views` (multi-crop in jitted ``jax.numpy``) and
:mod:`trainers.jax_pmap.models` (Flax networks).
"""
