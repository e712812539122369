"""Damaged run directories: a truncated, empty or foreign latest checkpoint (every format),
a torn last line of ``metrics.jsonl``, a dataset that changed under a run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from run_helpers import read_records

pytest.importorskip("yaml")
pytest.importorskip("sklearn")

from trainers import eval_linear  # noqa: E402
from trainers.core import metrics, rundir  # noqa: E402
from trainers.core.checkpoints import (  # noqa: E402
    CheckpointError,
    RunPosition,
    newest_readable,
    read_checkpoint,
)
from trainers.core.config import TrainConfig, config_to_dict  # noqa: E402


def _format(trainer: str):
    if trainer == "torch_ddp":
        pytest.importorskip("torch")
        from trainers.torch_ddp.checkpoint import TORCH_FORMAT

        return TORCH_FORMAT, {"backbone": {}}
    if trainer == "jax_pmap":
        pytest.importorskip("flax")
        from trainers.jax_pmap.checkpoint import JAX_FORMAT

        return JAX_FORMAT, {"params": {"w": np.ones(3, np.float32)}}
    from trainers.cupy_nccl.trainer import ARRAY_FORMAT

    return ARRAY_FORMAT, {"param/w": np.ones(3), "adam_step": np.asarray(2)}


def _position(step: int) -> RunPosition:
    return RunPosition(
        epoch=0,
        batch_in_epoch=step,
        step=step,
        train_time=1.5,
        metrics_count=step,
        world_size=1,
        config=config_to_dict(TrainConfig()),
        num_classes=10,
        data_fingerprint="abc",
    )


def _damage(path: str, how: str) -> None:
    if how == "truncated":
        size = os.path.getsize(path)
        with open(path, "r+b") as fh:
            fh.truncate(size // 2)
    elif how == "empty":
        open(path, "wb").close()
    else:  # a text file under the checkpoint's name
        with open(path, "w") as fh:
            fh.write("not a checkpoint\n")


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage"])
@pytest.mark.parametrize("trainer", ["torch_ddp", "jax_pmap", "cupy_nccl"])
def test_a_damaged_latest_checkpoint_falls_back_with_a_warning(trainer, how, tmp_path, capsys):
    fmt, state = _format(trainer)
    run_dir = str(tmp_path)
    for step in (4, 8):
        fmt.write(
            rundir.checkpoint_path(run_dir, step, fmt.suffix), _position(step).to_dict(), state
        )
    path, position, _ = newest_readable(fmt, run_dir)
    assert position == _position(8)
    latest = rundir.checkpoint_path(run_dir, 8, fmt.suffix)
    _damage(latest, how)
    path, position, _ = newest_readable(fmt, run_dir)
    assert path == rundir.checkpoint_path(run_dir, 4, fmt.suffix) and position == _position(4)
    err = capsys.readouterr().err
    assert f"warning: {latest}: cannot read the checkpoint" in err
    with pytest.raises(CheckpointError, match=f"^{latest}: cannot read"):
        read_checkpoint(fmt, latest)
    # the evaluation CLI: one line naming the file, exit status 2
    with pytest.raises(SystemExit) as exc:
        eval_linear.main([latest])
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and latest in lines[0]


def test_eval_linear_names_a_file_of_no_trainer(tmp_path, capsys):
    path = tmp_path / "model.bin"
    path.write_text("x")
    with pytest.raises(SystemExit) as exc:
        eval_linear.main([str(path)])
    assert exc.value.code == 2
    assert f"{path}: not a checkpoint" in capsys.readouterr().err


def test_a_torn_last_metrics_line_is_ignored_but_a_bad_middle_line_is_not(tmp_path, capsys):
    path = str(tmp_path / "metrics.jsonl")
    with open(path, "w") as fh:
        fh.write('{"kind": "train", "step": 1}\n{"kind": "train", "st')
    assert metrics.read_metrics(path) == [{"kind": "train", "step": 1}]
    assert f"warning: {path}: ignoring a partial last line" in capsys.readouterr().err
    log = metrics.MetricsLog(path)
    assert log.count == 1
    log.truncate(1)
    with open(path) as fh:
        assert fh.read() == '{"kind": "train", "step": 1}\n'
    with open(path, "w") as fh:
        fh.write('{"kind": "tr\n{"kind": "train", "step": 2}\n')
    with pytest.raises(ValueError, match=f"{path}: line 1 is not a JSON record"):
        metrics.read_metrics(path)


# ---------------------------------------------------------------- end to end (torch)
TORCH_TINY = [
    "views.n_local=2",
    "views.global_size=8",
    "views.local_size=4",
    "augment.flip_p=0",
    "model.width=8",
    "model.projector_dims=[32,16]",
    "loss.num_slices=32",
    "optim.epochs=1",
    "optim.batch_size=128",
    "eval.batch_size=512",
    "run.ckpt_every_steps=4",
    "run.keep_checkpoints=3",
    "run.log_every_steps=1",
    "run.progress=false",
]


def test_torch_resume_past_a_damaged_checkpoint_and_a_torn_metrics_line(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    from trainers.torch_ddp.trainer import main

    run_dir = str(tmp_path / "run")
    args = [*TORCH_TINY, f"run.dir={run_dir}"]
    assert main(args) == 0
    reference = read_records(run_dir)
    latest = rundir.checkpoint_path(run_dir, 11)
    _damage(latest, "truncated")
    with open(os.path.join(run_dir, "metrics.jsonl"), "a") as fh:
        fh.write('{"kind": "train", "step": 1')  # a torn append
    capsys.readouterr()
    assert main([*args, "--resume", latest]) == 2  # named explicitly: refused, named
    assert f"error: {latest}: cannot read the checkpoint" in capsys.readouterr().err
    assert main([*args, "--resume", "auto"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {latest}: cannot read the checkpoint" in err
    assert "ignoring a partial last line" in err
    resumed = read_records(run_dir)  # every line parses again
    assert [r["step"] for r in resumed if r["kind"] == "train"] == list(range(1, 12))
    assert [r["kind"] for r in resumed] == [r["kind"] for r in reference]
    assert resumed[-1]["step"] == 11


# ---------------------------------------------------------- changed data (array trainer)
ARRAY_TINY = [
    "views.n_local=1",
    "model.encoder_dims=[16]",
    "model.projector_dims=[16,8]",
    "loss.num_slices=8",
    "optim.epochs=1",
    "optim.batch_size=256",
    "run.device=cpu",
    "run.progress=false",
]


def _digits_npz(path, labels=None) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.uint8)
    np.savez(path, images=images, labels=digits.target if labels is None else labels)


def test_resume_on_changed_data_is_refused_by_name(tmp_path, capsys):
    from trainers.cupy_nccl.trainer import main

    data = tmp_path / "data.npz"
    _digits_npz(data)
    run_dir = str(tmp_path / "run")
    args = [*ARRAY_TINY, f"data.name=npz:{data}", f"run.dir={run_dir}", "--resume", "auto"]
    assert main(args) == 0
    with np.load(data) as archive:
        images, labels = archive["images"].copy(), archive["labels"]
    images[0, 0, 0] += 1  # same shapes, same options, other contents
    np.savez(data, images=images, labels=labels)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "was trained on other data than data.name" in err and str(data) in err
    _digits_npz(data, labels=np.arange(len(labels)) % 5)  # 5 classes instead of 10
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "was trained on 10 classes but data.name" in err and "now has 5" in err
    assert "Traceback" not in err


def test_checkpoints_record_the_data_identity(tmp_path):
    from trainers.cupy_nccl.trainer import ARRAY_FORMAT, main

    run_dir = str(tmp_path / "run")
    assert main([*ARRAY_TINY, f"run.dir={run_dir}"]) == 0
    position, _ = read_checkpoint(ARRAY_FORMAT, rundir.latest_checkpoint(run_dir, ".npz"))
    assert position.num_classes == 10 and len(position.data_fingerprint) == 32
    with open(os.path.join(run_dir, "config.yaml")) as fh:
        assert "digits" in fh.read()
    assert json.loads(json.dumps(position.to_dict())) == position.to_dict()
