"""End-to-end runs of trainers.jax_pmap on streamed sources (generated images on disk).

One tiny configuration, 2 epochs of 4 steps, on an image folder unless said otherwise:

1. the reference: one process with 2 simulated CPU devices (made once per module);
2. two processes with one CPU device each (``jax.distributed`` on loopback), each streaming
   its half of every global batch, a NaN injected by process 1 at step 7: both stop with
   status 3, the checkpoint of step 6 (mid-epoch 2) stays;
3. ``--resume auto`` of that run by one process with 2 devices: it reads the stream from
   step 6 on, so its records equal the reference's (up to float32 rounding of the
   reductions, which the topology changes);
4. the reference's command killed with its data workers (kill -9) once the checkpoint of
   step 6 exists, then ``--resume auto``: its records equal the reference's exactly;
5. WebDataset-style tar shards with a separate test folder.

The runs after the first reuse its compilations (a persistent JAX cache). Marked slow
(about 5 minutes on 2 busy cores); the torch trainer's streamed runs
(test_trainer_stream_runs.py) are in the default suite.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.slow  # seven JAX runs: ~5 min on 2 busy cores

pytest.importorskip("flax")
pytest.importorskip("optax")
pytest.importorskip("PIL")
yaml = pytest.importorskip("yaml")

from run_helpers import kill_then_resume, read_records, without_timing  # noqa: E402
from stream_images import make_folder, make_shards  # noqa: E402
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
def reference(tmp_path_factory):
    """The uninterrupted run (one process, 2 simulated devices) on a streamed folder:
    (folder, base arguments, compilation cache, run_dir, completed process)."""
    folder = tmp_path_factory.mktemp("jax-stream")
    source = make_folder(folder / "images")
    config = str(folder / "tiny.yaml")
    with open(config, "w") as fh:
        yaml.safe_dump(TINY, fh)
    base = ["--config", config, f"data.name={source}"]
    cache, ref_dir = str(folder / "jax-cache"), str(folder / "ref")
    proc = _run(cache, *base, f"run.dir={ref_dir}", "--num-cpu-devices", "2")
    return folder, base, cache, ref_dir, proc


def _run(cache: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(*args), cwd=ROOT, env=_env(cache), capture_output=True, text=True, timeout=TIMEOUT
    )


@pytest.fixture(scope="module")
def runs(reference):
    folder, base, cache, ref_dir, ref = reference
    split_dir = str(folder / "split")
    out = {"ref_dir": ref_dir, "split_dir": split_dir, "ref": ref}
    out["split"] = two_processes(
        *base, f"run.dir={split_dir}", "debug.nan_at_step=7", "debug.nan_rank=1"
    )
    out["checkpoints"] = sorted(f for f in os.listdir(split_dir) if f.startswith("ckpt_"))
    out["resumed"] = _run(
        cache, *base, f"run.dir={split_dir}", "--num-cpu-devices", "2", "--resume", "auto"
    )
    return out


def test_streamed_reference_run(reference):
    _, _, _, ref_dir, proc = reference
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = _records(ref_dir)
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


def test_kill9_mid_epoch_then_resume_matches_uninterrupted_run(reference):
    """One process with 2 devices, as the reference; killed (data workers too) as soon as
    the checkpoint of step 6 (mid-epoch 2) exists, then ``--resume auto``: the records
    equal the reference's exactly (same topology), timing fields aside."""
    folder, base, cache, ref_dir, ref = reference
    assert ref.returncode == 0, ref.stderr[-4000:]
    run_dir = str(folder / "killed")
    args = [*base, f"run.dir={run_dir}", "--num-cpu-devices", "2"]
    resumed = kill_then_resume(
        _command(*args),
        lambda: _command(*args, "--resume", "auto"),
        os.path.join(run_dir, "ckpt_00000006.msgpack"),
        TIMEOUT,
        env=_env(cache),
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert without_timing(read_records(run_dir)) == without_timing(read_records(ref_dir))


def test_single_process_run_on_shards_with_a_separate_test_folder(reference):
    """Unequal shards, all 96 images trained on (4 steps an epoch: a seeded split would
    leave 3) and evaluated on a separate test folder of 15; 2 devices as the reference (its
    compilations are reused)."""
    folder, base, cache, _, _ = reference
    train = make_shards(folder / "shards", [35, 35, 26])
    test = make_folder(folder / "test", per_class=5, seed=2, prefix="")  # shard classes 0..2
    run_dir = str(folder / "shards-run")
    args = [f"data.name={train}", f"data.test={test}", f"run.dir={run_dir}"]
    proc = _run(cache, *base, *args, "--num-cpu-devices", "2")
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = read_records(run_dir)
    train_steps = [r["step"] for r in records if r["kind"] == "train"]
    assert train_steps == list(range(1, STEPS + 1))
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["epoch"] for r in evals] == [1, 2]
    assert records[-1]["kind"] == "summary" and records[-1]["step"] == STEPS
    assert records[-1]["knn_acc"] > 0.8  # 3 colour classes: chance is 1/3
