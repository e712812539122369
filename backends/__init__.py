"""Framework adapters for sigreg, one module per framework, imported only on request.

- :mod:`backends.torch`: memory-lean autograd Function, ``SIGReg`` / ``LeJEPALoss`` modules
  with a checkpointed step counter, ``TorchDistributedCollective``.
- :mod:`backends.jax`: ``jax.custom_vjp`` SIGReg and LeJEPA loss, ``JaxAxisCollective``
  (``lax.psum`` inside ``pmap`` / ``shard_map``).
- :mod:`backends.numpy`: explicit ``value_and_grad`` helpers for code without autodiff.
- :mod:`backends.cupy`: ``NcclCollective`` (``cupy.cuda.nccl``) plus the explicit gradients.

``import backends`` imports no framework.
"""
