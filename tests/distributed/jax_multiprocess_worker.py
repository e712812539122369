"""One of two JAX processes on loopback: the global LeJEPA loss through ``jax.distributed``.

Usage: ``python jax_multiprocess_worker.py PORT PROCESS_ID``. Run by
``test_jax_multiprocess.py``. Each process owns one CPU device and half of the batch; the
loss and the parameter gradient are computed with ``jax.shard_map`` over the global
2-device mesh (CPU collectives through gloo) and compared with the single-device values on
the concatenated batch, which the same program computes from a replicated copy. Prints one
JSON object (last line of stdout); ``{"unsupported": reason}`` if this jaxlib has no CPU
collectives.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import jax  # noqa: E402

V_GLOBAL, V_LOCAL, N, K_IN, D, M = 2, 1, 16, 5, 4, 8
LAMB, N_POINTS, SEED, STEP = 0.3, 9, 3, 7
AXIS = "data"


def main() -> None:
    port, process_id = sys.argv[1], int(sys.argv[2])
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError) as exc:  # option missing in this jaxlib
        print(json.dumps({"unsupported": f"jax_cpu_collectives_implementation: {exc}"}))
        return
    jax.config.update("jax_enable_x64", True)
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=2,
        process_id=process_id,
        initialization_timeout=60,
    )
    import numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import sigreg
    from backends import jax as bj

    rng = np.random.default_rng(0)  # the same full batch in both processes
    x_full = 0.3 + rng.standard_normal((V_GLOBAL + V_LOCAL, N, K_IN))
    w_np = 0.6 * rng.standard_normal((K_IN, D))
    a_np = sigreg.sample_directions(D, M, seed=SEED, step=STEP, backend="numpy")

    def loss(w, x, a, collective):
        emb = x @ w
        return bj.lejepa_loss(
            emb[:V_GLOBAL],
            emb[V_GLOBAL:],
            lamb=LAMB,
            directions=a,
            n_points=N_POINTS,
            collective=collective,
        ).loss

    # global arrays: this process contributes its half of the batch
    mesh = Mesh(np.array(jax.devices()), (AXIS,))
    half = N // 2
    local_x = x_full[:, process_id * half : (process_id + 1) * half]
    x_global = jax.make_array_from_single_device_arrays(
        x_full.shape,
        NamedSharding(mesh, P(None, AXIS)),
        [jax.device_put(local_x, jax.local_devices()[0])],
    )
    w_global, a_global, full_global = multihost_utils.host_local_array_to_global_array(
        (w_np, a_np, x_full), mesh, P()
    )
    coll = bj.JaxAxisCollective(AXIS)

    def body(w, x, a, x_full):
        # the global loss from the shards, and (one compilation) the single-device
        # reference from a replicated copy of the concatenated batch
        return jax.value_and_grad(loss)(w, x, a, coll), jax.value_and_grad(loss)(w, x_full, a, None)

    step = jax.jit(
        jax.shard_map(body, mesh=mesh, in_specs=(P(), P(None, AXIS), P(), P()), out_specs=P())
    )
    (value, grad), (ref_value, ref_grad) = step(w_global, x_global, a_global, full_global)
    value, grad, ref_value, ref_grad = (
        np.asarray(r.addressable_data(0)) for r in (value, grad, ref_value, ref_grad)
    )
    emb = x_full @ w_np
    core = sigreg.lejepa_loss(
        emb[:V_GLOBAL], emb[V_GLOBAL:], lamb=LAMB, directions=a_np, n_points=N_POINTS
    )
    out = {
        "process_id": process_id,
        "process_count": jax.process_count(),
        "global_devices": len(jax.devices()),
        "local_devices": len(jax.local_devices()),
        "local_batch": int(local_x.shape[1]),
        "value_err": float(abs(value - ref_value)),
        "grad_err": float(np.max(np.abs(grad - ref_grad))),
        "ref_vs_core": float(abs(ref_value - core.loss)),
        "ref_grad_norm": float(np.linalg.norm(ref_grad)),
        "value": float(value),
    }
    jax.distributed.shutdown()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
