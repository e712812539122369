"""End-to-end runs of trainers.torch_ddp on streamed sources (generated images on disk):
2-process torchrun on an image folder, kill -9 mid-epoch and ``--resume auto`` ending with the
uninterrupted run's metrics, tar shards with a separate test set, one-line errors.

Which samples each rank reads is proven in tests/trainers/test_stream*.py (exactly once per
epoch across 2 processes over unequal shards); here the trainer's use of the stream is.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from run_helpers import ROOT, kill_then_resume, read_records, subprocess_env, without_timing

torch = pytest.importorskip("torch")
pytest.importorskip("timm")
pytest.importorskip("PIL")
yaml = pytest.importorskip("yaml")

from stream_images import make_folder, make_shards  # noqa: E402
from test_trainer_runs import _command  # noqa: E402

TIMEOUT = 300
TINY = {
    "data": {"image_size": 8, "workers": 1, "prefetch": 2},
    "views": {"n_global": 2, "n_local": 2, "global_size": 8, "local_size": 4},
    "augment": {"flip_p": 0.0, "blur_sigma": [0.1, 0.8]},
    "model": {"backbone": "smallcnn", "width": 8, "projector_dims": [32, 16]},
    "loss": {"num_slices": 32},
    "optim": {"epochs": 3, "batch_size": 20, "lr": 2e-3, "warmup_epochs": 1},
    "eval": {"every_epochs": 1, "batch_size": 64},
    "run": {"threads": 1, "deterministic": True, "ckpt_every_steps": 2, "log_every_steps": 1},
}
STEPS_PER_EPOCH = 96 // 20  # 4 whole global batches; the 16 left over open the next epoch


def write_config(folder) -> str:
    path = os.path.join(folder, "tiny.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(TINY, fh)
    return path


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted 2-process run on a streamed folder: (run_dir, args, process)."""
    folder = tmp_path_factory.mktemp("stream-reference")
    source = make_folder(folder / "images")
    run_dir = str(folder / "run")
    args = ["--config", write_config(folder), f"data.name={source}", "run.progress=false"]
    return run_dir, args, run(_command(2, *args, f"run.dir={run_dir}"))


def test_two_process_run_on_a_streamed_folder(reference):
    run_dir, _, proc = reference
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = read_records(run_dir)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train] == list(range(1, 3 * STEPS_PER_EPOCH + 1))
    assert all(0 < r["data_time"] < r["step_time"] for r in train)
    assert [r["epoch"] for r in evals] == [1, 2, 3]
    assert evals[-1]["knn_acc"] > 0.8  # 3 colour classes: chance is 1/3
    summary = records[-1]
    assert summary["kind"] == "summary" and 0 < summary["data_time_fraction"] < 1
    state = torch.load(os.path.join(run_dir, "ckpt_00000012.pt"), weights_only=True)
    stream = json.loads(state["data_stream"])
    assert stream["next_batch"] == 12 and stream["num_samples"] == 96
    assert stream["global_batch"] == 20


def test_eval_linear_of_a_streamed_run(reference, tmp_path, capsys):
    """trainers.eval_linear streams the run's folder (features are kept, images are not)."""
    from trainers import eval_linear

    run_dir, _, proc = reference
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = str(tmp_path / "eval.json")
    args = [run_dir, "--baseline", "raw-pixels", "--json", out, "run.deterministic=false"]
    assert eval_linear.main(args) == 0
    with open(out) as fh:
        results = json.load(fh)
    assert [r["method"] for r in results] == ["checkpoint", "raw-pixels"]
    assert [r["features"] for r in results] == [32, 3 * 8 * 8]
    assert all(0.8 < r["accuracy"] <= 1.0 for r in results)  # 24 test images, 3 classes
    capsys.readouterr()


def test_kill9_mid_epoch_then_resume_matches_uninterrupted_run(reference, tmp_path):
    ref_dir, args, proc = reference
    assert proc.returncode == 0, proc.stderr[-4000:]
    run_dir = str(tmp_path / "run")
    args = [*args, f"run.dir={run_dir}"]
    # mid-epoch 2 (4 steps per epoch); the data workers are killed too
    checkpoint = os.path.join(run_dir, "ckpt_00000006.pt")
    resumed = kill_then_resume(
        _command(2, *args), lambda: _command(2, *args, "--resume", "auto"), checkpoint, TIMEOUT
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert without_timing(read_records(run_dir)) == without_timing(read_records(ref_dir))


def test_single_process_run_on_shards_with_a_separate_test_folder(tmp_path, capsys):
    """In this process (no process group), decoding here too (data.workers=0), with gradient
    accumulation over the streamed batch."""
    from trainers import torch_ddp

    train = make_shards(tmp_path / "shards", [35, 35, 26])  # unequal shards
    test = make_folder(tmp_path / "test", per_class=5, seed=2, prefix="")  # shard classes 0..2
    run_dir = str(tmp_path / "run")
    args = [
        "--config",
        write_config(tmp_path),
        f"data.name={train}",
        f"data.test={test}",
        "data.workers=0",
        "optim.epochs=2",
        "optim.accum_steps=2",
        "run.deterministic=false",
        "run.threads=null",
        "run.progress=false",
        f"run.dir={run_dir}",
    ]
    assert torch_ddp.main(args) == 0
    records = read_records(run_dir)
    assert records[-1]["kind"] == "summary" and records[-1]["step"] == 2 * (96 // 20)
    assert records[-1]["knn_acc"] > 0.8
    capsys.readouterr()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.name=imagefolder:{folder}"], "set data.image_size"),
        (["data.name=imagefolder:{missing}", "data.image_size=8"], "not a directory"),
        (["data.test=imagefolder:{folder}"], "data.test applies to streamed sources"),
        (["data.name=shards:{missing}/x-{{0..1}}.tar", "data.image_size=8"], "2 shard(s) not"),
        (["data.bad_files=ignore"], "data.bad_files must be one of"),
    ],
)
def test_configuration_errors_are_one_line(tmp_path, capsys, overrides, message):
    from trainers import torch_ddp

    folder = make_folder(tmp_path / "images", per_class=2).partition(":")[2]
    values = {"folder": folder, "missing": str(tmp_path / "missing")}
    args = [o.format(**values) for o in overrides]
    try:  # a bad option value exits from the parser, a bad source returns status 2
        code = torch_ddp.main([*args, f"run.dir={tmp_path / 'run'}", "run.progress=false"])
    except SystemExit as stop:
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err[-2000:]
