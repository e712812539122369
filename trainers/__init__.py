"""LeJEPA training built on sigreg.

Framework-free modules, shared by every trainer (PyTorch, CuPy/NumPy, JAX):
:mod:`trainers.loop` (the run loop: records, progress bar, cadences, summary, resume
checks), :mod:`trainers.config` (options, YAML, overrides, ``--help``),
:mod:`trainers.datasets` (NumPy image datasets and splits), :mod:`trainers.sampler`
(seeded, rank-sharded epochs), :mod:`trainers.schedule` (warm-up + cosine),
:mod:`trainers.metrics` (``metrics.jsonl``, k-NN, spectra), :mod:`trainers.linear_eval`
(linear evaluation), :mod:`trainers.plots` (PNG plots) and :mod:`trainers.rundir` (atomic
writes, checkpoint names, provenance), :mod:`trainers.loop` (the run loop and command line
of every trainer), :mod:`trainers.vector_data` (feature files and flattened images).

Array-API modules (numpy or cupy, explicit gradients): :mod:`trainers.cupy_nccl` (the MLP
trainer, ``python -m trainers.cupy_nccl``), :mod:`trainers.eval_mlp`
(``python -m trainers.eval_mlp``), :mod:`trainers.array_mlp` (MLP with a hand-written
backward), :mod:`trainers.array_lejepa` (network + loss gradients),
:mod:`trainers.array_adamw`, :mod:`trainers.array_views` and
:mod:`trainers.array_collective` (gloo / NCCL sums).

PyTorch modules: :mod:`trainers.torch_ddp` (the trainer, ``python -m trainers.torch_ddp``),
:mod:`trainers.eval_linear` (``python -m trainers.eval_linear``), :mod:`trainers.augment`
(multi-crop on the device), :mod:`trainers.models`, :mod:`trainers.distributed`,
:mod:`trainers.features` and :mod:`trainers.checkpoint`.

JAX modules: :mod:`trainers.jax_pmap` (the trainer, ``python -m trainers.jax_pmap``),
:mod:`trainers.jax_parallel` (``pmap`` / ``shard_map`` data parallelism),
:mod:`trainers.jax_augment` (multi-crop in jitted ``jax.numpy``) and
:mod:`trainers.jax_models` (Flax networks).
"""
