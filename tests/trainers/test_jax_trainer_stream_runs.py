"""End-to-end runs of trainers.jax_pmap on a streamed image folder (generated PNGs on disk).

Three runs (made once per module), one tiny configuration, 2 epochs of 4 steps:

1. the reference: one process with 2 simulated CPU devices;
2. two processes with one CPU device each (``jax.distributed`` on loopback), each streaming
   its half of every global batch, a NaN injected by process 1 at step 7: both stop with
   status 3, the checkpoint of step 6 (mid-epoch 2) stays;
3. ``--resume auto`` of that run by one process with 2 devices: it reads the stream from
   step 6 on, so its records equal the reference's (up to float32 rounding of the
   reductions, which the topology changes).

Marked slow (about 7 minutes on 2 busy cores); the torch trainer's streamed runs
(test_trainer_stream_runs.py) are in the default suite.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.slow  # four JAX runs: ~7 min on 2 busy cores

pytest.importorskip("flax")
pytest.importorskip("optax")
pytest.importorskip("PIL")
yaml = pytest.importorskip("yaml")

from stream_images import make_folder  # noqa: E402
from test_jax_trainer_runs import ROOT, TIMING, _command, _env, two_processes  # noqa: E402

TIMEOUT = 600
TINY = {
    "data": {"image_size": 8, "workers": 1},
    "views": {"n_global": 2, "n_local": 2, "global_size": 8, "local_size": 4},
    "augment": {"flip_p": 0.0, "blur_sigma": [0.1, 0.8]},
    "model": {"backbone": "smallcnn", "width": 8, "projector_dims": [32, 16]},
    "loss": {"num_slices": 32},
    "optim": {"epochs": 2, "batch_size": 20, "lr": 2e-3, "warmup_epochs": 1},
    "eval": {"every_epochs": 1, "batch_size": 64},
    "run": {"ckpt_every_steps": 2, "log_every_steps": 1, "progress": False},
}
STEPS = 2 * (96 // 20)


def _records(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jax-stream")
    source = make_folder(folder / "images")
    config = str(folder / "tiny.yaml")
    with open(config, "w") as fh:
        yaml.safe_dump(TINY, fh)
    base = ["--config", config, f"data.name={source}"]
    cache = str(folder / "jax-cache")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            _command(*base, *args),
            cwd=ROOT,
            env=_env(cache),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )

    ref_dir, split_dir = str(folder / "ref"), str(folder / "split")
    out = {"ref_dir": ref_dir, "split_dir": split_dir}
    out["ref"] = run(f"run.dir={ref_dir}", "--num-cpu-devices", "2")
    out["split"] = two_processes(
        *base, f"run.dir={split_dir}", "debug.nan_at_step=7", "debug.nan_rank=1"
    )
    out["checkpoints"] = sorted(f for f in os.listdir(split_dir) if f.startswith("ckpt_"))
    out["resumed"] = run(f"run.dir={split_dir}", "--num-cpu-devices", "2", "--resume", "auto")
    return out


def test_streamed_reference_run(runs):
    assert runs["ref"].returncode == 0, runs["ref"].stderr[-4000:]
    records = _records(runs["ref_dir"])
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))
    assert all(0 < r["data_time"] < r["step_time"] for r in train)
    assert records[-1]["kind"] == "summary" and records[-1]["knn_acc"] > 0.8


def test_two_processes_stop_on_a_nan_and_resume_matches_the_reference(runs):
    codes = [r["returncode"] for r in runs["split"]]
    assert codes == [3, 3], runs["split"][1]["stderr"][-4000:]
    assert runs["checkpoints"][-1] == "ckpt_00000006.msgpack"
    assert runs["resumed"].returncode == 0, runs["resumed"].stderr[-4000:]
    ref, resumed = _records(runs["ref_dir"]), _records(runs["split_dir"])
    assert [r["kind"] for r in resumed] == [r["kind"] for r in ref]
    for a, b in zip(ref, resumed, strict=True):
        assert a.keys() == b.keys()
        for key in a.keys() - TIMING:
            if isinstance(a[key], float):
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
            else:
                assert a[key] == b[key], key
