"""End-to-end runs of trainers.cupy_nccl (numpy on CPU) on streamed sources (generated images
on disk): a 2-process torchrun on an image folder in which the ranks train on every sample
exactly once per data epoch, kill -9 mid-epoch and ``--resume auto`` ending with the
uninterrupted run's metrics, tar shards with a separate test folder and trainers.eval_linear
of that run.

The torch trainer's streamed runs are in test_trainer_stream_runs.py (same generated data).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from run_helpers import (
    ROOT,
    free_port,
    kill_then_resume,
    read_records,
    subprocess_env,
    without_timing,
)

pytest.importorskip("torch")  # torchrun and the gloo control plane
pytest.importorskip("PIL")

from stream_images import CLASSES, PER_CLASS, make_folder, make_shards  # noqa: E402

TIMEOUT = 300
RECORDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cupy_stream_recorder.py")
TINY = [
    "data.image_size=8",
    "data.workers=1",
    "views.n_global=2",
    "views.n_local=1",
    "vector.mask_p=0.1",
    "vector.noise_std=0.1",
    "vector.mix=0.3",
    "model.encoder_dims=[32,32]",
    "model.projector_dims=[32,16]",
    "loss.num_slices=32",
    "optim.epochs=3",
    "optim.batch_size=20",
    "optim.lr=2e-3",
    "optim.warmup_epochs=1",
    "eval.batch_size=64",
    "run.precision=fp64",
    "run.device=cpu",
    "run.ckpt_every_steps=2",
    "run.log_every_steps=1",
    "run.progress=false",
]
"""3 epochs of 4 global batches of 20 (96 training images: 16 left over open the next
epoch), float64, every view transform on."""
TRAIN = CLASSES * PER_CLASS * 4 // 5
STEPS_PER_EPOCH = TRAIN // 20


def torchrun(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        *args,
    ]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted 2-process run on a streamed folder, recording what each rank trains
    on: (run_dir, args, process, recorded steps of rank 0 and rank 1)."""
    folder = tmp_path_factory.mktemp("cupy-stream")
    args = [*TINY, f"data.name={make_folder(folder / 'images')}"]
    run_dir, prefix = str(folder / "run"), str(folder / "seen")
    proc = run(torchrun(RECORDER, prefix, *args, f"run.dir={run_dir}"))
    seen = []
    for rank in range(2):
        path = f"{prefix}.rank{rank}.jsonl"
        seen.append([json.loads(line) for line in open(path)] if os.path.exists(path) else [])
    return run_dir, args, proc, seen


def test_two_processes_train_on_every_sample_exactly_once_per_epoch(reference):
    run_dir, _, proc, seen = reference
    assert proc.returncode == 0, proc.stderr[-4000:]
    steps = 3 * STEPS_PER_EPOCH
    for rank in seen:
        assert [r["step"] for r in rank] == list(range(steps))
        assert all(len(r["indices"]) == 10 for r in rank)
    # the stream: global batch k is rank 0's 10 samples, then rank 1's
    stream = np.concatenate([seen[rank][k]["indices"] for k in range(steps) for rank in range(2)])
    for epoch in stream[: 2 * TRAIN].reshape(2, TRAIN):  # 240 positions: 2 whole data epochs
        np.testing.assert_array_equal(np.sort(epoch), np.arange(TRAIN))
    records = read_records(run_dir)
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, steps + 1))
    assert all(0 < r["data_time"] < r["step_time"] for r in train)
    assert records[-1]["kind"] == "summary" and records[-1]["knn_acc"] > 0.8  # chance 1/3
    with np.load(os.path.join(run_dir, "ckpt_00000012.npz")) as ckpt:
        stream_state = json.loads(str(ckpt["data_stream"]))
    assert stream_state["next_batch"] == 12 and stream_state["global_batch"] == 20


def test_kill9_mid_epoch_then_resume_matches_uninterrupted_run(reference, tmp_path):
    ref_dir, args, proc, _ = reference
    assert proc.returncode == 0, proc.stderr[-4000:]
    run_dir = str(tmp_path / "run")
    args = ["-m", "trainers.cupy_nccl", *args, f"run.dir={run_dir}"]
    # mid-epoch 2 (4 steps per epoch); the data workers are killed too
    checkpoint = os.path.join(run_dir, "ckpt_00000006.npz")
    resumed = kill_then_resume(
        torchrun(*args), lambda: torchrun(*args, "--resume", "auto"), checkpoint, TIMEOUT
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert without_timing(read_records(run_dir)) == without_timing(read_records(ref_dir))


def test_single_process_run_on_shards_with_a_separate_test_folder(tmp_path, capsys):
    """In this process (decoding here too: data.workers=0), unequal shards; then
    trainers.eval_linear of the run and its baselines, streamed (features are kept)."""
    from trainers import cupy_nccl, eval_linear

    train = make_shards(tmp_path / "shards", [35, 35, 26])
    test = make_folder(tmp_path / "test", per_class=5, seed=2, prefix="")  # shard classes 0..2
    run_dir = str(tmp_path / "run")
    args = [*TINY, f"data.name={train}", f"data.test={test}", "data.workers=0"]
    assert cupy_nccl.main([*args, "optim.epochs=2", f"run.dir={run_dir}"]) == 0
    records = read_records(run_dir)
    assert records[-1]["kind"] == "summary" and records[-1]["step"] == 2 * STEPS_PER_EPOCH
    assert records[-1]["knn_acc"] > 0.8
    out = str(tmp_path / "eval.json")
    baselines = ["--baseline", "random-init", "--baseline", "raw-pixels"]
    assert eval_linear.main([run_dir, *baselines, "--json", out]) == 0
    with open(out) as fh:
        results = json.load(fh)
    assert [r["method"] for r in results] == ["checkpoint", "random-init", "raw-pixels"]
    assert [r["features"] for r in results] == [32, 32, 3 * 8 * 8]
    assert all(0.8 < r["accuracy"] <= 1.0 for r in results)  # 15 test images, 3 classes
    capsys.readouterr()


def test_streamed_mixing_partners_are_rows_of_the_batch(tmp_path):
    """With only mixing on (whole-image crops, no flip, noise or mask), every streamed view
    is ``(1 - a) x_i + a x_j`` with ``x_j`` a standardised sample of the same batch."""
    from trainers.core.config import load_config
    from trainers.core.launch import single_process
    from trainers.cupy_nccl.trainer import BASE, Trainer

    overrides = [
        *TINY,
        f"data.name={make_folder(tmp_path / 'images')}",
        "data.workers=0",
        "views.global_scale=[1,1]",
        "views.ratio=[1,1]",
        "views.n_local=0",
        "augment.flip_p=0",
        "vector.mask_p=0",
        "vector.noise_std=0",
        "vector.mix=0.5",
        f"run.dir={tmp_path / 'run'}",
    ]
    cfg = load_config(None, overrides, base=BASE)
    trainer = Trainer(cfg, single_process("cpu"), resume=None, argv=[])
    batch = next(trainer.sampler.batches(0))
    samples, pool, labels = trainer._batch(batch)
    trainer.sampler.close()
    np.testing.assert_array_equal(labels, batch.labels)
    x = trainer._standardise(samples)
    np.testing.assert_allclose(pool, x, rtol=0, atol=1e-12)
    views = trainer._views(samples, pool)
    assert views.shape == (2, 20, 3 * 8 * 8)
    mixed = 0
    for view in views:
        for i, row in enumerate(view):
            residuals = []
            for partner in pool:  # the best fit row ~ c1 x_i + c2 partner
                basis = np.stack([x[i], partner], axis=1)
                fit = basis @ np.linalg.lstsq(basis, row, rcond=None)[0]
                residuals.append(np.abs(fit - row).max())
            assert min(residuals) < 1e-9
            mixed += not np.allclose(row, x[i])
    assert mixed > 30  # of 40 views, mixed with weight ~ U(0, 0.5)
