"""A short tour of sigreg: Epps-Pulley, SIGReg, the LeJEPA loss and the analytic gradient.

Run with ``bash scripts/run_demo.sh`` (sets up .venv first) or ``python examples/demo.py``.
Frameworks that are not installed (torch, jax, array_api_strict) are skipped with a note.
"""

from __future__ import annotations

import importlib

import numpy as np

import sigreg

N = 1024  # samples per batch
SEED = 0


# --------------------------------------------------------------------------- helpers


def optional(name: str):
    """Import a framework, or print a note and return None if it is not installed."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken install
        print(f"  note: {name} is not importable ({type(exc).__name__}: {exc}); skipping it")
        return None


def table(headers: list[str], rows: list[list[object]]) -> None:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0.0 else f"{v:.2e}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        # first column left-aligned, numbers right-aligned
        return "  " + "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    print(line(headers))
    print(line(["-" * w for w in widths]))
    for r in cells:
        print(line(r))
    print()


def section(title: str) -> None:
    print(title)
    print("=" * len(title))


def to_float(v) -> float:
    return float(v)  # 0-d arrays of every framework support __float__


def kind(v) -> str:
    """'module.Type[dtype]' of an array, to show that results keep the input's namespace/dtype."""
    return f"{type(v).__module__.split('.')[0]}.{type(v).__name__}[{str(v.dtype).split('.')[-1]}]"


# --------------------------------------------------------------------------- data


rng = np.random.default_rng(SEED)

samples = {
    "normal N(0,1)": rng.standard_normal(N),
    "normal N(0,1.5^2)": 1.5 * rng.standard_normal(N),
    "uniform (var 1)": rng.uniform(-np.sqrt(3), np.sqrt(3), N),
    "student t(5)": rng.standard_t(5, N) / np.sqrt(5 / 3),
    "exponential-1": rng.exponential(size=N) - 1.0,
    "bimodal +-0.9": rng.choice([-0.9, 0.9], N) + np.sqrt(1 - 0.81) * rng.standard_normal(N),
}


def x_shaped(n: int, dim: int) -> np.ndarray:
    """Pairs of coordinates lying on the two diagonals of an 'X'.

    Every coordinate is exactly N(0, 1), so per-axis tests see nothing, but most 1-D
    projections are far from Gaussian: a random slice catches it.
    """
    cols = []
    for _ in range(dim // 2):
        t = rng.standard_normal(n)
        sign = rng.choice([-1.0, 1.0], n)
        cols += [t, sign * t]
    return np.stack(cols, axis=1)


D = 4
embeddings = {
    "isotropic N(0, I)": rng.standard_normal((N, D)),
    "anisotropic N(0, diag)": rng.standard_normal((N, D)) * np.linspace(0.3, 2.0, D),
    "'X'-shaped": x_shaped(N, D),
    "collapsed (rank 1)": np.outer(rng.standard_normal(N), np.ones(D)) / np.sqrt(D),
}


# --------------------------------------------------------------------------- frameworks

print("sigreg demo\n")
torch = optional("torch")
jnp = optional("jax.numpy")
xps = optional("array_api_strict")
print()

# name -> (to-array converter)
backends = {"numpy": lambda a: np.asarray(a, dtype=np.float64)}
if torch is not None:
    backends["torch"] = lambda a: torch.asarray(a, dtype=torch.float64)
if jnp is not None:
    # jax computes in float32 unless jax_enable_x64 is set
    backends["jax"] = lambda a: jnp.asarray(a, dtype=jnp.float32)
if xps is not None:
    backends["array_api_strict"] = lambda a: xps.asarray(a, dtype=xps.float64)


# --------------------------------------------------------------------------- 1. Epps-Pulley

section(f"1. Epps-Pulley statistic vs N(0,1), numpy float64, N = {N}")
print("  trapezoid = the official LeJEPA quadrature (t_max=3, 17 points); exact = closed form.")
print("  debias=True is the U-statistic: mean 0 under N(0,1), so it can be slightly negative.\n")
rows = []
for name, x in samples.items():
    rows.append(
        [
            name,
            to_float(sigreg.epps_pulley(x)),
            to_float(sigreg.epps_pulley(x, debias=True)),
            to_float(sigreg.epps_pulley(x, integration="exact")),
            to_float(sigreg.epps_pulley(x, integration="exact", debias=True)),
        ]
    )
table(["sample", "trapezoid", "trap+debias", "exact", "exact+debias"], rows)
null_trap = sigreg.null_expectation() if hasattr(sigreg, "null_expectation") else 1.0525
print(
    f"  Under N(0,1) the statistic is O(1) for every N (mean {null_trap:.3f} trapezoid, "
    f"{np.sqrt(2 * np.pi) * (1 - 1 / np.sqrt(3)):.3f} exact,\n  0 debiased; standard deviation "
    "about 1); a fixed departure from normality grows like N.\n"
)

# Batched: reduce axis 0 of an (N, B) array -> shape (B,)
batch = np.stack(list(samples.values()), axis=1)
batched = sigreg.epps_pulley(batch, axis=0)
print(
    f"  batched: epps_pulley(x of shape {batch.shape}, axis=0) -> shape {tuple(batched.shape)}, "
    f"matches the column-by-column values: {np.allclose(batched, [r[1] for r in rows])}\n"
)

# Same statistic on every framework: same namespace and dtype out
ref = {name: to_float(sigreg.epps_pulley(x)) for name, x in samples.items()}
rows = []
for bname, conv in backends.items():
    for name in ("normal N(0,1)", "exponential-1"):
        out = sigreg.epps_pulley(conv(samples[name]))
        rows.append([bname, name, kind(out), to_float(out), abs(to_float(out) - ref[name])])
table(["backend", "sample", "result type", "trapezoid", "|diff vs numpy|"], rows)


# --------------------------------------------------------------------------- 2. SIGReg

NUM_SLICES = 512
section(f"2. SIGReg (sliced Epps-Pulley, {NUM_SLICES} random unit directions), N = {N}, D = {D}")
print("  per-axis EP = mean Epps-Pulley of the D coordinates (axis-aligned test, no slicing).\n")
rows = []
for name, z in embeddings.items():
    per_axis = float(np.mean(sigreg.epps_pulley(z, axis=0)))
    row: list[object] = [name, per_axis]
    for conv in backends.values():
        row.append(to_float(sigreg.sigreg(conv(z), num_slices=NUM_SLICES, seed=SEED, step=0)))
    rows.append(row)
table(["embedding", "per-axis EP"] + [f"SIGReg {b}" for b in backends], rows)

dirs = sigreg.sample_directions(D, 3, seed=SEED, step=0, backend="numpy")
print(
    f"  sample_directions({D}, 3, seed={SEED}, step=0): shape {tuple(dirs.shape)}, "
    f"column norms {np.round(np.linalg.norm(dirs, axis=0), 12).tolist()}"
)
if torch is not None:
    dt = sigreg.sample_directions(D, 3, seed=SEED, step=0, backend="torch", dtype=torch.float64)
    print(f"  the same directions on torch: {np.allclose(dt.numpy(), dirs)}")
per_slice = sigreg.sliced_epps_pulley(embeddings["'X'-shaped"], dirs, reduction="none")
print(
    f"  sliced_epps_pulley(X-shaped, those 3 directions, reduction='none') -> "
    f"{np.round(np.asarray(per_slice), 3).tolist()}\n"
)


# --------------------------------------------------------------------------- 3. LeJEPA loss

section("3. LeJEPA loss on random views: loss = (1 - lamb) * prediction + lamb * sigreg")
VG, VL, DIM = 2, 6, 32
latent = rng.standard_normal((N // 4, DIM))


def views(n_views: int, noise: float, scale: float = 1.0) -> np.ndarray:
    return scale * latent[None] + noise * rng.standard_normal((n_views, *latent.shape))


cases = {
    "aligned views (noise 0.1)": (views(VG, 0.1), views(VL, 0.1)),
    "noisy views (noise 1.0)": (views(VG, 1.0), views(VL, 1.0)),
    "collapsed (all zeros + eps)": (views(VG, 1e-3, 0.0), views(VL, 1e-3, 0.0)),
}
print(
    f"  global views ({VG}, {N // 4}, {DIM}), local views ({VL}, {N // 4}, {DIM}), lamb = 0.05, "
    f"{NUM_SLICES} slices\n"
)
rows = []
for name, (g, loc) in cases.items():
    for prediction in ("center", "pairwise"):
        out = sigreg.lejepa_loss(
            g, loc, lamb=0.05, num_slices=NUM_SLICES, seed=SEED, prediction=prediction
        )
        rows.append(
            [name, prediction, to_float(out.prediction), to_float(out.sigreg), to_float(out.loss)]
        )
table(["views", "prediction", "prediction", "sigreg", "loss"], rows)

if torch is not None:
    g, loc = (
        torch.asarray(a, dtype=torch.float32).requires_grad_(True)
        for a in cases["noisy views (noise 1.0)"]
    )
    out = sigreg.lejepa_loss(g, loc, lamb=0.05, num_slices=NUM_SLICES, seed=SEED)
    out.loss.backward()
    print(
        f"  torch float32: loss = {out.loss.item():.4f} ({kind(out.loss)}); after backward(): "
        f"|grad global| = {g.grad.norm().item():.3e}, |grad local| = {loc.grad.norm().item():.3e}"
    )
    out_g = sigreg.lejepa_loss(g.detach(), None, num_slices=NUM_SLICES, seed=SEED)
    print(f"  global views only (local_views=None): loss = {out_g.loss.item():.4f}\n")


# --------------------------------------------------------------------------- 4. gradients

section("4. Analytic gradient (epps_pulley_vjp) vs torch autograd, float64")
if torch is None:
    print("  torch is not installed: skipped\n")
else:
    x_np = np.stack(
        [samples["normal N(0,1)"], samples["exponential-1"], samples["uniform (var 1)"]], axis=1
    )  # (N, 3)
    cot_np = rng.standard_normal(3)
    rows = []
    for integration in ("trapezoid", "exact"):
        for debias in (False, True):
            x = torch.asarray(x_np, dtype=torch.float64).requires_grad_(True)
            cot = torch.asarray(cot_np, dtype=torch.float64)

            value, pullback = sigreg.epps_pulley_vjp(
                x.detach(), integration=integration, debias=debias
            )
            grad_vjp = pullback(cot)

            auto = sigreg.epps_pulley(x, integration=integration, debias=debias)
            (grad_auto,) = torch.autograd.grad(auto, x, grad_outputs=cot)

            rows.append(
                [
                    integration,
                    str(debias),
                    float((value - auto.detach()).abs().max()),
                    float((grad_vjp - grad_auto).abs().max()),
                    float((grad_vjp - grad_auto).norm() / grad_auto.norm()),
                ]
            )
    table(
        [
            "integration",
            "debias",
            "|value diff|",
            "max |grad diff|",
            "rel. error",
        ],
        rows,
    )

    # Sliced version: gradient with respect to the (N, K) embedding
    z = torch.asarray(embeddings["'X'-shaped"], dtype=torch.float64).requires_grad_(True)
    w = sigreg.sample_directions(D, NUM_SLICES, seed=SEED, backend="torch", dtype=torch.float64)
    value, pullback = sigreg.sliced_epps_pulley_vjp(z.detach(), w)
    grad_vjp = pullback(torch.ones_like(value))
    (grad_auto,) = torch.autograd.grad(sigreg.sliced_epps_pulley(z, w), z)
    print(
        f"  sliced_epps_pulley_vjp on the 'X'-shaped embedding ({NUM_SLICES} slices): "
        f"max |grad diff| = {float((grad_vjp - grad_auto).abs().max()):.2e}, "
        f"rel. error = {float((grad_vjp - grad_auto).norm() / grad_auto.norm()):.2e}\n"
    )

print("done")
