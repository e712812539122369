"""SIGReg forward + backward per backend and strategy, against the official algorithm and
the bare projection, idle and under contention.

Every row is measured in this run, in a fresh subprocess (so peak memory is that of the
variant alone), on the same data:

* ``projection``: ``x @ A`` with a trivial loss (``sum``), forward + backward - the floor
  any sliced method pays;
* ``official``: a straightforward eager implementation of the official LeJEPA algorithm
  (broadcast ``x @ A`` against the knots, cos/sin means, framework autodiff), written here
  as the reference;
* ``<strategy>``: this project's implementation with ``engine=<strategy>``.

Timing: minimum of ``--reps`` runs after one warm-up run (which includes any compilation;
the warm-up time is reported separately: for ``compiled`` it is the compile cost). Peak extra
memory: the resident-set high-water mark of one run above the resident size just before it
(Linux ``/proc/self/clear_refs``), after the warm-up and a ``malloc_trim``. Ops: aten
operations dispatched by one forward + backward (``TorchDispatchMode``, counted once more
with one thread so that none runs in a worker thread); on a GPU each is a kernel launch.
"Contended": the same measurement with two copies of the child process running at once
on the machine's cores (what two data-parallel ranks on two cores do); the ratio is to the
projection measured under the same contention.

Usage::

    python benchmarks/bench_sigreg.py            # the issue's size (2048, 512, 1024), sweep
    python benchmarks/bench_sigreg.py --quick    # small sizes, a smoke run
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
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

    else:

        def loss():
            return sliced_epps_pulley(x, a, engine=name)

    def step():
        x.grad = None
        loss().backward()

    return step


def _torch_op_count(step) -> int:
    """aten operations of one step, all in this thread (one intra-op thread)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Counter.count += 1
            return func(*args, **(kwargs or {}))

    torch.set_num_threads(1)
    step()
    with Counter():
        step()
    return Counter.count


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

    else:

        def loss(x, a):
            return bj.sliced_epps_pulley(x, a, engine=name)

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

    else:

        def step():
            _, pullback = sigreg.sliced_epps_pulley_vjp(x, a, engine=name)
            return pullback(np.ones((), dtype=np.float32))

    return step


VARIANTS = {"torch": _torch_variant, "jax": _jax_variant, "numpy": _numpy_variant}
NAMES = {
    "torch": ["projection", "official", "cache_fused", "few_kernels", "compiled"],
    "jax": ["projection", "official", "cache_fused", "few_kernels"],
    "numpy": ["projection", "official", "cache_fused", "few_kernels"],
}
TITLES = {
    "torch": "torch (eager autograd; 'compiled' = torch.compile'd few-kernels functions)",
    "jax": "jax (jax.jit of jax.grad)",
    "numpy": "numpy (value and explicit gradient; official = broadcast analytic gradient)",
}


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
    out = {"seconds": min(times), "warmup": warmup, "extra_mib": max(peak - base, 0) / 1024}
    # a dispatch mode cannot run inside torch.compile: no count for "compiled"
    if spec["framework"] == "torch" and spec.get("count_ops") and spec["name"] != "compiled":
        out["ops"] = _torch_op_count(step)
    return out


def _spawn(spec: dict):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("OMP_NUM_THREADS", str(spec["threads"]))
    return subprocess.Popen(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _collect(proc, what: str) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _run(framework, name, n, k, m, reps, threads, copies=1):
    """One variant in ``copies`` simultaneous processes; the slowest copy's numbers."""
    spec = dict(framework=framework, name=name, n=n, k=k, m=m, reps=reps, threads=threads)
    procs = [_spawn(dict(spec, count_ops=(i == 0 and copies == 1))) for i in range(copies)]
    results = [_collect(p, f"{framework}/{name}") for p in procs]
    return max(results, key=lambda r: r["seconds"])


def _table(title, rows, contended):
    ref, floor = rows["official"], rows["projection"]
    print(f"\n{title}")
    print(
        f"{'variant':<13}{'time (s)':>9}{'warm-up (s)':>12}{'extra MiB':>10}{'ops':>7}"
        f"{'vs proj':>9}{'vs official':>12}{'contended (s)':>15}{'vs proj':>9}"
    )
    for name, r in rows.items():
        c, c_floor = contended.get(name), contended.get("projection")
        busy = (
            f"{c['seconds']:>15.3f}{c['seconds'] / c_floor['seconds']:>8.2f}x"
            if c and c_floor
            else f"{'-':>15}{'-':>9}"
        )
        ops = str(r["ops"]) if "ops" in r else "-"
        print(
            f"{name:<13}{r['seconds']:>9.3f}{r['warmup']:>12.2f}{r['extra_mib']:>10.1f}{ops:>7}"
            f"{r['seconds'] / floor['seconds']:>8.2f}x{ref['seconds'] / r['seconds']:>11.2f}x"
            f"{busy}"
        )


def _load() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


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
    parser.add_argument("--no-compiled", action="store_true", help="skip torch.compile")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    if args.quick:
        args.n, args.k, args.m, args.reps, args.no_sweep = 256, 64, 128, 2, True
    size = (args.n, args.k, args.m)
    print(
        f"SIGReg forward+backward, float32, CPU threads={args.threads}, (N, K, M) = {size}, "
        f"{N_POINTS} knots on [0, {T_MAX}]; load average at start: {_load()}"
    )
    for fw in args.frameworks:
        names = [v for v in NAMES[fw] if not (args.no_compiled and v == "compiled")]
        rows = {name: _run(fw, name, *size, args.reps, args.threads) for name in names}
        busy = [v for v in names if v != "compiled"]  # compiled: same kernels, compile cost
        contended = {v: _run(fw, v, *size, args.reps, args.threads, copies=2) for v in busy}
        _table(TITLES[fw], rows, contended)
        print(f"(load average now: {_load()})")
    if not args.no_sweep:
        _sweep(size, args)


def _sweep(size, args) -> None:
    print("\nscaling of torch engine='auto' (cache_fused on a CPU) against the projection")
    print(f"{'N':>6}{'K':>6}{'M':>6}{'time (s)':>10}{'projection (s)':>16}{'ratio':>8}")
    base_n, base_k, base_m = size
    grid = (
        [(n, base_k, base_m) for n in (base_n // 4, base_n // 2, base_n, base_n * 2)]
        + [(base_n, base_k, m) for m in (base_m // 4, base_m // 2, base_m * 2)]
        + [(base_n, k, base_m) for k in (base_k // 4, base_k // 2, base_k * 2)]
    )
    reps = max(2, args.reps // 2)
    for n, k, m in grid:
        r = _run("torch", "auto", n, k, m, reps, args.threads)
        p = _run("torch", "projection", n, k, m, reps, args.threads)
        print(
            f"{n:>6}{k:>6}{m:>6}{r['seconds']:>10.3f}{p['seconds']:>16.3f}"
            f"{r['seconds'] / p['seconds']:>7.2f}x"
        )


if __name__ == "__main__":
    main()
