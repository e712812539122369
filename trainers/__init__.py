"""LeJEPA training built on sigreg.

Architecture:

* :mod:`trainers.core` — framework-free (imports no torch, jax or cupy; a test proves it):
  :mod:`~trainers.core.config` (options, each declaring the trainers that read it; YAML,
  overrides, per-trainer ``--help``), :mod:`~trainers.core.loop` (the :class:`RunLoop` of
  every trainer: epochs, records, progress bar, cadences, ``save``/``start_or_resume``,
  summary, command-line helpers), :mod:`~trainers.core.checkpoints` (the ``RunPosition``
  every checkpoint stores, checkpoint formats, fallback past damaged files, resume checks,
  data fingerprints), :mod:`~trainers.core.rundir` (atomic writes, checkpoint names,
  provenance), :mod:`~trainers.core.launch` (rank, world size, torchrun detection),
  :mod:`~trainers.core.sampler`, :mod:`~trainers.core.schedule`,
  :mod:`~trainers.core.metrics` (``metrics.jsonl``, k-NN, spectra),
  :mod:`~trainers.core.plots`, :mod:`~trainers.core.probes` (linear and few-shot
  probes), :mod:`~trainers.core.datasets` (images) and :mod:`~trainers.core.vector_data`
  (feature files and flattened images).
* One package per framework, each with a ``__main__`` (``python -m trainers.NAME``), its
  ``trainer`` (a ``RunLoop`` subclass: the optimiser step, evaluation and the two checkpoint
  hooks), ``models``, ``views``, checkpoint format and an ``evaluation`` module (features
  of a checkpoint for :mod:`trainers.eval_linear`): :mod:`trainers.torch_ddp` (PyTorch,
  DDP; also ``features``, ``runtime``), :mod:`trainers.jax_pmap` (JAX, Flax + optax;
  ``parallel``: ``pmap``/``shard_map``) and :mod:`trainers.cupy_nccl` (CuPy/NumPy with
  explicit gradients: ``mlp``, ``lejepa``, ``adamw``, ``collective``).
* :mod:`trainers.distributed` — torch's process group: the torch trainer's, and the
  CuPy/NumPy trainer's control plane under torchrun (the only case it imports torch).
* Command lines beside the trainers: :mod:`trainers.eval_linear` (linear evaluation of a
  run of any trainer and of the baselines; :mod:`trainers.eval_mlp` is an alias) and
  :mod:`trainers.supervised` (the supervised baseline, PyTorch).
"""
