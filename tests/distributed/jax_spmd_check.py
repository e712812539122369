"""Two simulated CPU devices: pmap and shard_map SIGReg / LeJEPA vs the one-device batch.

Run by ``test_jax_spmd.py`` in a subprocess, because
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` must be set before JAX is imported.
Prints one JSON object (last line of stdout) mapping metric names to numbers: absolute
errors against the single-device values and gradients on the concatenated batch, plus
sanity figures. The test file holds the tolerances.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402
from jax.sharding import Mesh  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import sigreg  # noqa: E402
from backends import jax as bj  # noqa: E402

AXIS = "data"
V_GLOBAL, V_LOCAL, N, K_IN, D, M = 2, 1, 16, 5, 4, 8
LAMB = 0.3  # both terms matter in the gradient
SEED, STEP = 3, 7
N_POINTS = 9  # fewer knots than the default 17: the same code paths, faster compiles


def err(a, b):
    """Largest absolute difference, as a Python float."""
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def loss(name, w, x, directions, step, collective):
    """One of the checked losses, for parameters ``w`` and inputs ``x`` of shape (V, n, K_IN).

    ``"lejepa"``: the tiny linear model + LeJEPA loss with given directions. ``"sig_key"``:
    SIGReg of view 0 with ``jax.random`` directions from ``(SEED, traced step)``.
    ``"sig_pcg"``: the same with ``sigreg.sample_directions`` drawn through a host callback.
    ``"stat_NAME"``: the LeJEPA loss with ``statistic="NAME"``. The LeJEPA loss runs the
    ``few_kernels`` strategy, SIGReg ``cache_fused``: both strategies under every parallel
    mode, in one compilation.
    """
    emb = x @ w
    if name == "lejepa" or name.startswith("stat_"):
        # "stat_NAME": loss.statistic, the LeJEPA loss with another per-slice statistic
        statistic = name[len("stat_") :] if name != "lejepa" else "epps_pulley"
        return bj.lejepa_loss(
            emb[:V_GLOBAL],
            emb[V_GLOBAL:],
            lamb=LAMB,
            directions=directions,
            n_points=N_POINTS,
            collective=collective,
            engine="few_kernels" if name == "lejepa" else "auto",
            statistic=statistic,
        ).loss
    sampler = {"sig_key": "jax", "sig_pcg": "numpy"}[name]
    return bj.sigreg(
        emb[0],
        num_slices=M,
        seed=SEED,
        step=step,
        sampler=sampler,
        n_points=N_POINTS,
        collective=collective,
        engine="cache_fused",
    )


STATISTICS = (
    "cramer_von_mises",
    "anderson_darling",
    "watson",
    "extended_jarque_bera",
    "mean_variance",
)
STAT_NAMES = tuple(f"stat_{s}" for s in STATISTICS)
NAMES = ("lejepa", "sig_key", "sig_pcg", *STAT_NAMES)


def values_and_grads(w, x, directions, step, collective, names=NAMES):
    """``{name: (value, d value / d w)}`` for the losses ``names`` (see :func:`loss`)."""
    out = {}
    for name in names:
        out[name] = jax.value_and_grad(loss, argnums=1)(name, w, x, directions, step, collective)
    return out


def main() -> None:
    devices = jax.devices()
    assert len(devices) == 2, devices
    rng = np.random.default_rng(0)
    x = jnp.asarray(0.3 + rng.standard_normal((V_GLOBAL + V_LOCAL, N, K_IN)))
    w = jnp.asarray(0.6 * rng.standard_normal((K_IN, D)))
    a = sigreg.sample_directions(D, M, seed=SEED, step=STEP, backend="jax")
    step = jnp.asarray(STEP)
    coll = bj.JaxAxisCollective(AXIS)
    out: dict = {"devices": len(devices), "local_batch": N // 2}
    mesh = Mesh(np.array(devices), (AXIS,))

    # ---- shard_map (check_vma=True) over a 1-D mesh, batch axis 1 of x sharded. The same
    # program also computes the single-device references from a replicated copy of the
    # full batch (one compilation instead of two).
    def body(w, x, a, step, x_full):
        # replicated parameters: gradients come back summed already, no pmean
        return values_and_grads(w, x, a, step, coll), values_and_grads(w, x_full, a, step, None)

    fn = jax.shard_map(body, mesh=mesh, in_specs=(P(), P(None, AXIS), P(), P(), P()), out_specs=P())
    shmap, ref = jax.jit(fn)(w, x, a, step, x)

    emb = np.asarray(x @ w)
    core = sigreg.lejepa_loss(
        emb[:V_GLOBAL], emb[V_GLOBAL:], lamb=LAMB, directions=np.asarray(a), n_points=N_POINTS
    )
    core_sig = sigreg.sigreg(emb[0], num_slices=M, seed=SEED, step=STEP, n_points=N_POINTS)
    out["ref_lejepa_vs_core"] = err(ref["lejepa"][0], core.loss)
    out["ref_sig_pcg_vs_core"] = err(ref["sig_pcg"][0], core_sig)
    for name in NAMES:
        out[f"ref_{name}_grad_norm"] = float(jnp.linalg.norm(ref[name][1]))
    for statistic in STATISTICS:
        core_stat = sigreg.lejepa_loss(
            emb[:V_GLOBAL],
            emb[V_GLOBAL:],
            lamb=LAMB,
            directions=np.asarray(a),
            n_points=N_POINTS,
            statistic=statistic,
        )
        out[f"ref_stat_{statistic}_vs_core"] = err(ref[f"stat_{statistic}"][0], core_stat.loss)

    def record(tag, results):
        for name in results:
            value, grad = results[name]
            out[f"{tag}_{name}_value"] = err(value, ref[name][0])
            out[f"{tag}_{name}_grad"] = err(grad, ref[name][1])

    record("shmap", shmap)

    # ---- shard_map with check_vma=False: pmap semantics, pmean the gradients
    def body_novma(w, x, a, step):
        res = values_and_grads(w, x, a, step, coll, ("lejepa",))
        return {k: (v, lax.pmean(g, AXIS)) for k, (v, g) in res.items()}

    fn = jax.shard_map(
        body_novma,
        mesh=mesh,
        in_specs=(P(), P(None, AXIS), P(), P()),
        out_specs=P(),
        check_vma=False,
    )
    record("shmap_novma", jax.jit(fn)(w, x, a, step))

    # ---- pmap: batch split over a leading device axis; pmean the parameter gradients
    xs = jnp.moveaxis(x.reshape(x.shape[0], 2, N // 2, K_IN), 1, 0)  # (2, V, N/2, K_IN)

    def pmap_body(w, x, a, step):
        res = values_and_grads(w, x, a, step, coll, ("lejepa", "sig_key", *STAT_NAMES))
        own = res["lejepa"][1]
        return {k: (v, lax.pmean(g, AXIS)) for k, (v, g) in res.items()}, own

    res, own = jax.pmap(pmap_body, axis_name=AXIS, in_axes=(None, 0, None, None))(w, xs, a, step)
    record("pmap", res)
    # a device's own gradient is NOT the full-batch gradient: the comparison can fail
    out["pmap_own_grad_rel_diff"] = err(own[0], ref["lejepa"][1]) / out["ref_lejepa_grad_norm"]
    out["pmap_per_device_value_spread"] = err(res["lejepa"][0][0], res["lejepa"][0][1])

    print(json.dumps(out))


if __name__ == "__main__":
    main()
