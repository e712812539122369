"""SIGReg forward + backward: sigreg against the official algorithm and the bare projection.

Every row is measured in this run, in a fresh subprocess (so peak memory is that of the
variant alone), on the same data:

* ``projection``: ``x @ A`` with a trivial loss (``sum``), forward + backward - the floor
  any sliced method pays;
* ``official``: a straightforward eager implementation of the official LeJEPA algorithm
  (broadcast ``x @ A`` against the knots, cos/sin means, framework autodiff), written here
  as the reference;
* ``sigreg ...``: this project's implementation.

Timing: median of ``--reps`` runs after one warm-up run (which includes any compilation;
the compile time is reported separately). Peak extra memory: the resident-set high-water
mark of one run above the resident size just before it (Linux ``/proc/self/clear_refs``),
after the warm-up and a ``malloc_trim`` so that freed memory is not counted.

Usage::

    python benchmarks/bench_sigreg.py            # the issue's size (2048, 512, 1024), sweep
    python benchmarks/bench_sigreg.py --quick    # small sizes, a smoke run
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_POINTS = 17
T_MAX = 3.0


# ----------------------------------------------------------------------- memory helpers
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> int:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current VmRSS
    return _status_kib("VmRSS")


# -------------------------------------------------------------------------- variants
def _official_weights(np):
    t = np.linspace(0.0, T_MAX, N_POINTS)
    dt = T_MAX / (N_POINTS - 1)
    w = np.full(N_POINTS, 2 * dt)
    w[[0, -1]] = dt
    phi = np.exp(-0.5 * t * t)
    return t, phi, w * phi


def _torch_variant(name, n, k, m, threads):
    import torch

    import sigreg
    from backends.torch import sliced_epps_pulley

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, k, generator=gen, requires_grad=True)
    a = sigreg.sample_directions(k, m, seed=0, backend="torch", dtype=torch.float32)
    if name == "projection":

        def loss():
            return (x @ a).sum()

    elif name == "official":
        import numpy as np

        t, phi, w = (torch.tensor(v, dtype=torch.float32) for v in _official_weights(np))

        def loss():
            xt = (x @ a).unsqueeze(-1) * t
            err = (xt.cos().mean(-3) - phi).square() + xt.sin().mean(-3).square()
            return ((err @ w) * n).mean()

    elif name == "sigreg eager":

        def loss():
            return sliced_epps_pulley(x, a)

    elif name == "sigreg fused":

        def loss():
            return sliced_epps_pulley(x, a, fused=True, chunk_size=m)

    else:
        raise ValueError(name)

    def step():
        x.grad = None
        loss().backward()

    return step


def _jax_variant(name, n, k, m, threads):
    import jax

    jax.config.update("jax_enable_x64", False)
    import jax.numpy as jnp
    import numpy as np

    import sigreg
    from backends import jax as bj

    x = jnp.asarray(np.random.default_rng(0).standard_normal((n, k)), dtype=jnp.float32)
    a = jnp.asarray(sigreg.sample_directions(k, m, seed=0, backend="numpy"), dtype=jnp.float32)
    if name == "projection":

        def loss(x, a):
            return jnp.sum(x @ a)

    elif name == "official":
        t, phi, w = (jnp.asarray(v, dtype=jnp.float32) for v in _official_weights(np))

        def loss(x, a):
            xt = (x @ a)[..., None] * t
            err = (jnp.cos(xt).mean(-3) - phi) ** 2 + jnp.sin(xt).mean(-3) ** 2
            return jnp.mean((err @ w) * n)

    elif name == "sigreg":

        def loss(x, a):
            return bj.sliced_epps_pulley(x, a)

    else:
        raise ValueError(name)
    grad = jax.jit(jax.grad(loss))  # directions are an argument: no constant folding

    def step():
        grad(x, a).block_until_ready()

    return step


def _numpy_variant(name, n, k, m, threads):
    import numpy as np

    import sigreg

    x = np.random.default_rng(0).standard_normal((n, k)).astype(np.float32)
    a = sigreg.sample_directions(k, m, seed=0, backend="numpy", dtype=np.float32)
    if name == "projection":

        def step():
            z = x @ a
            return np.ones_like(z) @ a.T

    elif name == "official":
        t, phi, w = (v.astype(np.float32) for v in _official_weights(np))

        def step():  # broadcast forward, broadcast analytic backward
            xt = (x @ a)[..., None] * t
            cos, sin = np.cos(xt), np.sin(xt)
            c, s = cos.mean(0), sin.mean(0)
            grad_z = 2.0 / m * ((w * t) * (s * cos - (c - phi) * sin)).sum(-1)
            return grad_z @ a.T

    elif name == "sigreg":

        def step():
            _, pullback = sigreg.sliced_epps_pulley_vjp(x, a)
            return pullback(np.ones((), dtype=np.float32))

    else:
        raise ValueError(name)
    return step


VARIANTS = {"torch": _torch_variant, "jax": _jax_variant, "numpy": _numpy_variant}


def _child(spec: dict) -> dict:
    """Run one variant: warm-up (timed as compile), then timed reps and one memory run."""
    step = VARIANTS[spec["framework"]](
        spec["name"], spec["n"], spec["k"], spec["m"], spec["threads"]
    )
    start = time.perf_counter()
    step()
    warmup = time.perf_counter() - start
    times = []
    for _ in range(spec["reps"]):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    base = _reset_peak()
    step()
    peak = _status_kib("VmHWM")
    return {
        "seconds": statistics.median(times),
        "warmup": warmup,
        "extra_mib": max(peak - base, 0) / 1024,
    }


def _run(framework, name, n, k, m, reps, threads):
    spec = dict(framework=framework, name=name, n=n, k=k, m=m, reps=reps, threads=threads)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("OMP_NUM_THREADS", str(threads))
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{framework}/{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _table(title, rows, ref_name, floor_name):
    ref, floor = rows[ref_name], rows[floor_name]
    print(f"\n{title}")
    print(
        f"{'variant':<16}{'time (s)':>10}{'warm-up (s)':>13}{'peak extra (MiB)':>18}"
        f"{'vs projection':>15}{'speed-up vs official':>22}{'memory vs official':>20}"
    )
    for name, r in rows.items():
        print(
            f"{name:<16}{r['seconds']:>10.3f}{r['warmup']:>13.2f}{r['extra_mib']:>18.1f}"
            f"{r['seconds'] / floor['seconds']:>14.2f}x"
            f"{ref['seconds'] / r['seconds']:>21.2f}x"
            f"{r['extra_mib'] / max(ref['extra_mib'], 1e-9):>20.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--k", type=int, default=512)
    parser.add_argument("--m", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true", help="small sizes, no sweep")
    parser.add_argument(
        "--frameworks", nargs="+", default=["torch", "jax", "numpy"], choices=list(VARIANTS)
    )
    parser.add_argument("--no-sweep", action="store_true", help="skip the scaling sweep")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    if args.quick:
        args.n, args.k, args.m, args.reps, args.no_sweep = 256, 64, 128, 2, True
    size = (args.n, args.k, args.m)
    print(
        f"SIGReg forward+backward, float32, CPU threads={args.threads}, (N, K, M) = {size}, "
        f"{N_POINTS} knots on [0, {T_MAX}]"
    )
    names = {
        "torch": ["projection", "official", "sigreg eager", "sigreg fused"],
        "jax": ["projection", "official", "sigreg"],
        "numpy": ["projection", "official", "sigreg"],
    }
    titles = {
        "torch": "torch (eager autograd; 'fused' = torch.compile'd ECF kernels)",
        "jax": "jax (jax.jit of jax.grad)",
        "numpy": "numpy (value and explicit gradient; official = broadcast analytic gradient)",
    }
    for fw in args.frameworks:
        rows = {name: _run(fw, name, *size, args.reps, args.threads) for name in names[fw]}
        _table(titles[fw], rows, "official", "projection")
    if args.no_sweep:
        return
    print("\nscaling of torch 'sigreg eager' (no compilation per shape): time per N*M stays")
    print("flat while the ECF dominates; the matmuls add a term in N*M*K")
    print(f"{'N':>6}{'K':>6}{'M':>6}{'time (s)':>10}{'ns per N*M':>12}{'ns per N*M*K':>14}")
    base_n, base_k, base_m = size
    grid = (
        [(n, base_k, base_m) for n in (base_n // 4, base_n // 2, base_n, base_n * 2)]
        + [(base_n, base_k, m) for m in (base_m // 4, base_m // 2, base_m * 2)]
        + [(base_n, k, base_m) for k in (base_k // 4, base_k // 2, base_k * 2)]
    )
    for n, k, m in grid:
        r = _run("torch", "sigreg eager", n, k, m, max(2, args.reps // 2), args.threads)
        print(
            f"{n:>6}{k:>6}{m:>6}{r['seconds']:>10.3f}{1e9 * r['seconds'] / (n * m):>12.2f}"
            f"{1e9 * r['seconds'] / (n * m * k):>14.4f}"
        )


if __name__ == "__main__":
    main()
