"""End-to-end runs of trainers.torch_ddp on digits: 2-process torchrun (gloo, CPU), kill -9 and
``--resume auto``, the non-finite-loss guard, one process without torchrun, eval_linear.

All runs use a tiny deterministic configuration (one thread per process,
``torch.use_deterministic_algorithms``); the uninterrupted 2-process run is made once per
session (shared by pytest-xdist workers through a file lock).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from run_helpers import (
    ROOT,
    free_port,
    kill_tree_when,
    read_records,
    subprocess_env,
    without_timing,
)

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("sklearn")
yaml = pytest.importorskip("yaml")
from filelock import FileLock  # noqa: E402  (a torch dependency)

TIMEOUT = 240
TINY = {
    "views": {"n_global": 2, "n_local": 2, "global_size": 8, "local_size": 4},
    "augment": {"flip_p": 0.0, "blur_sigma": [0.1, 0.8]},
    "model": {"backbone": "smallcnn", "width": 8, "projector_dims": [32, 16]},
    "loss": {"num_slices": 32},
    "optim": {"epochs": 3, "batch_size": 128, "lr": 2e-3, "warmup_epochs": 1},
    "eval": {"every_epochs": 1, "batch_size": 512},
    "run": {
        "threads": 1,
        "deterministic": True,
        "ckpt_every_steps": 4,
        "keep_checkpoints": 3,
        "log_every_steps": 1,
    },
}


def _write_config(folder) -> str:
    path = os.path.join(folder, "tiny.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(TINY, fh)
    return path


def _command(nproc: int | None, *args: str) -> list[str]:
    if nproc is None:
        return [sys.executable, "-m", "trainers.torch_ddp", *args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--master_port={free_port()}",
        "-m",
        "trainers.torch_ddp",
        *args,
    ]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT
    )


def _checkpoints(run_dir: str) -> list[str]:
    return sorted(f for f in os.listdir(run_dir) if f.startswith("ckpt_") and f.endswith(".pt"))


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
    """The uninterrupted 2-process run: (run_dir, config path, completed process)."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the session's folder, common to the workers
        shared = shared.parent
    folder = shared / "trainer-reference"
    with FileLock(str(shared / "trainer-reference.lock")):
        done = folder / "result.json"
        if not done.exists():
            folder.mkdir(exist_ok=True)
            config = _write_config(folder)
            run_dir = str(folder / "run")
            proc = _run(_command(2, "--config", config, f"run.dir={run_dir}"))
            done.write_text(
                json.dumps(
                    {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
                )
            )
        result = json.loads(done.read_text())
    return str(folder / "run"), str(folder / "tiny.yaml"), result


def test_two_process_smoke_run(reference):
    run_dir, _, result = reference
    assert result["returncode"] == 0, result["stderr"][-4000:]
    records = read_records(run_dir)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    steps_per_epoch = 1438 // 128
    assert [r["step"] for r in train] == list(range(1, 3 * steps_per_epoch + 1))
    assert [r["epoch"] for r in evals] == [1, 2, 3]
    for r in train:
        for key in (
            "loss",
            "prediction",
            "sigreg",
            "lr",
            "probe_loss",
            "imgs_per_s",
            "data_time",
            "step_time",
        ):
            assert isinstance(r[key], float), key
        assert 0 < r["data_time"] < r["step_time"]
        assert 0 < r["loss_share"] < 1  # the loss's forward + backward within the step
    assert train[-1]["loss"] < train[0]["loss"]
    for r in evals:
        assert 0.0 <= r["probe_acc"] <= 1.0 and 0.0 <= r["knn_acc"] <= 1.0
    assert evals[-1]["knn_acc"] > 0.5  # 10 classes: chance is 0.1
    summary = records[-1]
    assert summary["kind"] == "summary" and summary["step"] == 3 * steps_per_epoch
    assert summary["probe_acc"] == evals[-1]["probe_acc"] and summary["imgs_per_s"] > 0
    assert "knn_acc" in result["stdout"] and "probe_acc" in result["stdout"]
    assert "imgs_s=" in result["stderr"]  # the tqdm bar of rank 0

    with open(os.path.join(run_dir, "config.yaml")) as fh:
        config = yaml.safe_load(fh)
    assert config["model"]["width"] == 8 and config["loss"]["num_slices"] == 32
    with open(os.path.join(run_dir, "run_info.json")) as fh:
        info = json.load(fh)
    assert info["world_size"] == 2 and info["backend"] == "gloo" and info["git_sha"]
    for name in ("loss.png", "accuracy.png", "spectrum.png"):
        with open(os.path.join(run_dir, name), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"

    names = _checkpoints(run_dir)
    assert len(names) == 3 and names[-1] == f"ckpt_{3 * steps_per_epoch:08d}.pt"
    state = torch.load(os.path.join(run_dir, names[-1]), weights_only=True)
    assert state["step"] == 3 * steps_per_epoch and state["epoch"] == 3
    assert int(state["loss"]["step"]) == 3 * steps_per_epoch  # LeJEPA direction counter
    assert len(state["rng"]) == 2 and state["world_size"] == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])
    assert {
        "backbone",
        "projector",
        "probe",
        "optimizer",
        "scheduler",
        "scaler",
        "config",
        "metrics_count",
    } <= set(state)


def test_kill9_then_resume_auto_matches_uninterrupted_run(reference, tmp_path):
    ref_dir, config, result = reference
    assert result["returncode"] == 0, result["stderr"][-4000:]
    run_dir = str(tmp_path / "run")
    args = ("--config", config, f"run.dir={run_dir}", "run.progress=false")
    proc = subprocess.Popen(
        _command(2, *args),
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # mid-epoch 2 (11 steps per epoch)
    kill_tree_when(proc, os.path.join(run_dir, "ckpt_00000016.pt"), TIMEOUT)
    records = read_records(run_dir)
    assert not any(r["kind"] == "summary" for r in records)

    resumed = _run(_command(2, *args, "--resume", "auto"))
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert without_timing(read_records(run_dir)) == without_timing(read_records(ref_dir))


def test_nan_guard_stops_every_rank_and_keeps_last_good_checkpoint(reference, tmp_path):
    _, config, _ = reference
    run_dir = str(tmp_path / "run")
    proc = _run(
        _command(
            2,
            "--config",
            config,
            f"run.dir={run_dir}",
            "run.progress=false",
            "optim.epochs=2",
            "debug.nan_at_step=10",
            "debug.nan_rank=1",
        )
    )
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    for rank in (0, 1):  # each rank stopped by itself, rank 0 although its loss was finite
        assert f"rank {rank}: error: non-finite loss at step 10" in output, output[-4000:]
    assert _checkpoints(run_dir) == ["ckpt_00000004.pt", "ckpt_00000008.pt"]
    state = torch.load(os.path.join(run_dir, "ckpt_00000008.pt"), weights_only=True)
    assert state["step"] == 8
    assert f"last good checkpoint: {os.path.join(run_dir, 'ckpt_00000008.pt')}" in output
    assert max(r["step"] for r in read_records(run_dir)) == 9


def test_single_process_run_and_linear_eval(reference, tmp_path, capsys):
    """Without torchrun: one process, no process group (run in this process, with the torch
    global settings left alone: not deterministic, default threads); with gradient
    accumulation and clipping; then the linear evaluation and both baselines."""
    from trainers import eval_linear, torch_ddp

    _, config, _ = reference
    run_dir = str(tmp_path / "run")
    args = [
        "--config",
        config,
        f"run.dir={run_dir}",
        "optim.epochs=1",
        "run.progress=false",
        "run.deterministic=false",
        "run.threads=null",
        "optim.accum_steps=2",  # two micro-batches of 64 per step
        "optim.grad_clip=1.0",
    ]
    assert torch_ddp.main(args) == 0
    assert not torch.distributed.is_initialized()
    with open(os.path.join(run_dir, "run_info.json")) as fh:
        info = json.load(fh)
    assert info["world_size"] == 1 and info["backend"] is None
    assert _checkpoints(run_dir) == ["ckpt_00000004.pt", "ckpt_00000008.pt", "ckpt_00000011.pt"]
    capsys.readouterr()

    assert torch_ddp.main(args) == 2  # refuses to overwrite the run
    assert "already holds checkpoints" in capsys.readouterr().err

    out = str(tmp_path / "eval.json")
    assert (
        eval_linear.main(
            [
                run_dir,
                "--baseline",
                "random-init",
                "--baseline",
                "raw-pixels",
                "--json",
                out,
                "run.deterministic=false",
                "run.threads=null",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    with open(out) as fh:
        results = json.load(fh)
    assert [r["method"] for r in results] == ["checkpoint", "random-init", "raw-pixels"]
    assert [r["features"] for r in results] == [32, 32, 64]
    for r in results:
        assert 0.5 < r["accuracy"] <= 1.0
    for label in ("LeJEPA backbone", "random-init backbone", "raw pixels"):
        assert label in printed


def test_single_process_run_with_another_statistic(tmp_path):
    """loss.statistic: one epoch in this process with the Anderson-Darling regulariser; the
    config records the statistic and the logged sigreg is the normalised value in the loss
    (loss = (1 - lamb) prediction + lamb sigreg)."""
    from trainers import torch_ddp

    config = _write_config(tmp_path)
    run_dir = str(tmp_path / "run")
    args = ["--config", config, f"run.dir={run_dir}", "optim.epochs=1", "run.progress=false"]
    args += ["run.deterministic=false", "run.threads=null"]  # leave torch settings alone
    assert torch_ddp.main([*args, "loss.statistic=anderson_darling", "loss.lamb=0.2"]) == 0
    with open(os.path.join(run_dir, "config.yaml")) as fh:
        assert yaml.safe_load(fh)["loss"]["statistic"] == "anderson_darling"
    train = [r for r in read_records(run_dir) if r["kind"] == "train"]
    assert len(train) == 1438 // 128
    for r in train:
        assert r["loss"] == pytest.approx(0.8 * r["prediction"] + 0.2 * r["sigreg"], rel=1e-5)
        assert 0.0 < r["sigreg"] < 1e4
