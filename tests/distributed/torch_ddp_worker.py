"""One rank of the 2-process torch.distributed (gloo, CPU) checks in test_torch_ddp.py.

Run as ``python torch_ddp_worker.py OUT_DIR [eager|compile]`` with MASTER_ADDR, MASTER_PORT,
RANK and WORLD_SIZE set. ``compile`` runs only the LeJEPA loss under
``torch.compile(fullgraph=True, backend="aot_eager")`` (the functional-collective path).
Every rank takes its shard of a fixed float64 data set, computes the quantities below with
the torch adapter and a TorchDistributedCollective, and saves them to
``OUT_DIR/rank{RANK}.pt``; the parent test compares them with single-process float64
references on the concatenated batch (also for every ``loss.statistic``). Nothing is
asserted here.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from backends.torch import LeJEPALoss, SIGReg, TorchDistributedCollective  # noqa: E402
from sigreg.loss_statistics import EDF_STATISTICS, LOSS_STATISTICS  # noqa: E402

SPLITS = {"equal": (4, 4), "unequal": (5, 3)}
N_TOTAL = 8
N_GLOBAL, N_LOCAL, D_IN, D_OUT = 2, 3, 6, 5
NUM_SLICES, SEED, LAMB = 24, 3, 0.3


ENGINES = ("cache_fused", "few_kernels")


def dataset():
    """Full batch: input views (V, N, D_IN) and embeddings (V, N, D_OUT), float64."""
    rng = np.random.default_rng(1234)
    inputs = torch.tensor(rng.standard_normal((N_GLOBAL + N_LOCAL, N_TOTAL, D_IN)))
    emb = torch.tensor(0.2 + 1.3 * rng.standard_normal((N_GLOBAL + N_LOCAL, N_TOTAL, D_OUT)))
    return inputs, emb


def make_model():
    """The tiny model; identical parameters in every process (seeded, float64, CPU)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(D_IN, 8), torch.nn.Tanh(), torch.nn.Linear(8, D_OUT)
    ).double()


def _shard(x, sizes, rank):
    start = sum(sizes[:rank])
    return x[:, start : start + sizes[rank]]


def compiled_lejepa(rank: int, coll: TorchDistributedCollective) -> dict:
    """LeJEPA loss and input gradient under torch.compile, unequal shards."""
    z = _shard(dataset()[1], SPLITS["unequal"], rank).clone().requires_grad_(True)
    loss_fn = LeJEPALoss(lamb=LAMB, num_slices=NUM_SLICES, seed=SEED, collective=coll)

    def step(x):
        return loss_fn(x[:N_GLOBAL], x[N_GLOBAL:]).loss

    loss = torch.compile(step, fullgraph=True, backend="aot_eager")(z)
    loss.backward()
    return {"unequal/compiled/loss": loss.detach(), "unequal/compiled/input_grad": z.grad}


def eager_results(rank, coll, inputs, emb, engine: str) -> dict:
    """(a) loss values and input gradients, (b, c) DDP parameter gradients, per split."""
    results: dict = {}
    for name, sizes in SPLITS.items():
        x_in, z = _shard(inputs, sizes, rank), _shard(emb, sizes, rank)

        # (a) loss values: SIGReg (two consecutive steps) and LeJEPA (both prediction terms)
        sig = SIGReg(num_slices=NUM_SLICES, seed=SEED, collective=coll, engine=engine)
        zr = z[0].clone().requires_grad_(True)
        first = sig(zr)
        first.backward()
        results[f"{engine}/{name}/sigreg"] = [first.detach(), sig(z[0]).detach()]
        results[f"{engine}/{name}/sigreg_input_grad"] = zr.grad
        for prediction in ("center", "pairwise"):
            loss_fn = LeJEPALoss(
                lamb=LAMB,
                num_slices=NUM_SLICES,
                seed=SEED,
                prediction=prediction,
                collective=coll,
                engine=engine,
            )
            out = loss_fn(z[:N_GLOBAL], z[N_GLOBAL:])
            results[f"{engine}/{name}/lejepa/{prediction}"] = [p.detach() for p in out]

        # (b, c) a DDP-wrapped model: one forward over all views, loss, backward, averaged grads
        for loss_name in ("lejepa", "sigreg"):
            model = make_model()
            ddp = DistributedDataParallel(model)
            n = sizes[rank]
            out = ddp(x_in.reshape(-1, D_IN)).reshape(N_GLOBAL + N_LOCAL, n, D_OUT)
            if loss_name == "lejepa":
                loss_fn = LeJEPALoss(
                    lamb=LAMB, num_slices=NUM_SLICES, seed=SEED, collective=coll, engine=engine
                )
                loss = loss_fn(out[:N_GLOBAL], out[N_GLOBAL:]).loss
            else:
                loss = SIGReg(num_slices=NUM_SLICES, seed=SEED, collective=coll, engine=engine)(
                    out[0]
                )
            loss.backward()
            results[f"{engine}/{name}/ddp/{loss_name}/loss"] = loss.detach()
            results[f"{engine}/{name}/ddp/{loss_name}/grads"] = [
                p.grad.clone() for p in model.parameters()
            ]
    return results


def statistic_results(rank, coll, inputs) -> dict:
    """loss.statistic: a DDP-wrapped model, LeJEPALoss(statistic=...) with the collective,
    two steps; the loss parts and averaged parameter gradients of each step. Equal shards for
    every statistic, unequal ones too for those that reduce sums (not the gathered EDF ones)."""
    results: dict = {}
    for statistic in LOSS_STATISTICS:
        for name, sizes in SPLITS.items():
            if name == "unequal" and statistic in EDF_STATISTICS:
                continue
            x_in, n = _shard(inputs, sizes, rank), sizes[rank]
            model = make_model()
            ddp = DistributedDataParallel(model)
            loss_fn = LeJEPALoss(
                lamb=LAMB, num_slices=NUM_SLICES, seed=SEED, collective=coll, statistic=statistic
            )
            for step in range(2):
                out = ddp(x_in.reshape(-1, D_IN)).reshape(N_GLOBAL + N_LOCAL, n, D_OUT)
                parts = loss_fn(out[:N_GLOBAL], out[N_GLOBAL:])
                model.zero_grad()
                parts.loss.backward()
                key = f"statistic/{statistic}/{name}/{step}"
                results[key + "/parts"] = [p.detach() for p in parts]
                results[key + "/grads"] = [p.grad.clone() for p in model.parameters()]
    return results


def main(out_dir: str, mode: str = "eager") -> None:
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    rank, world = dist.get_rank(), dist.get_world_size()
    coll = TorchDistributedCollective()
    inputs, emb = dataset()
    results: dict = {"world": world}
    if mode == "compile":
        results.update(compiled_lejepa(rank, coll))
    for engine in ENGINES if mode == "eager" else ():
        results.update(eager_results(rank, coll, inputs, emb, engine))
    if mode == "eager":
        results.update(statistic_results(rank, coll, inputs))
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
