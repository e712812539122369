"""The supervised baseline trainer (trainers.supervised): it learns, and its CLI writes the
backbone that eval code loads."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from trainers import supervised  # noqa: E402
from trainers.core.config import load_config  # noqa: E402
from trainers.core.datasets import load_dataset  # noqa: E402
from trainers.torch_ddp.checkpoint import load_checkpoint  # noqa: E402
from trainers.torch_ddp.models import build_backbone  # noqa: E402

TINY = [
    "data.train_size=640",
    "views.global_size=8",
    "views.global_scale=[0.6,1]",
    "augment.flip_p=0",
    "model.width=8",
    "optim.epochs=4",
    "optim.batch_size=64",
    "optim.lr=3e-3",
    "run.threads=1",
    "run.device=cpu",
]


def test_supervised_training_learns_digits_from_the_trainer_init():
    cfg = load_config(None, TINY)
    data = load_dataset("digits", test_fraction=0.2, split_seed=0, train_size=640)
    state, stats = supervised.train_supervised(cfg, data, torch.device("cpu"))
    # chance is 10% and ln(10) = 2.30: four epochs of 10 steps learn most digits
    assert stats["train_accuracy"] > 0.6 and stats["final_loss"] < 1.5
    assert stats["train_time"] > 0
    torch.manual_seed(cfg.run.seed)
    init = build_backbone("smallcnn", in_chans=1, img_size=8, width=8, timm_kwargs={})
    assert state.keys() == init.state_dict().keys()
    changed = [k for k, v in init.state_dict().items() if not torch.equal(v, state[k])]
    assert "body.0.weight" in changed
    unlabelled = load_dataset("digits", test_fraction=0.2, split_seed=0)
    unlabelled = type(unlabelled)(unlabelled.train_images, None, unlabelled.test_images, None, 0)
    with pytest.raises(ValueError, match="supervised training needs labels"):
        supervised.train_supervised(cfg, unlabelled, torch.device("cpu"))


def test_supervised_cli_writes_the_backbone_and_rejects_bad_options(tmp_path, capsys):
    run_dir = str(tmp_path / "sup")
    args = [*TINY, "optim.epochs=1", f"run.dir={run_dir}"]
    assert supervised.main(args) == 0
    checkpoint = load_checkpoint(os.path.join(run_dir, supervised.CHECKPOINT_NAME))
    assert checkpoint["config"]["optim"]["epochs"] == 1
    assert checkpoint["config"]["data"]["train_size"] == 640
    torch.manual_seed(0)
    backbone = build_backbone("smallcnn", in_chans=1, img_size=8, width=8, timm_kwargs={})
    backbone.load_state_dict(checkpoint["backbone"])  # loads into the same architecture
    assert "supervised smallcnn" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        supervised.main(["data.train_size=5000", f"run.dir={run_dir}"])
    assert exit_info.value.code == 2
    assert "data.train_size must be in [1, 1438]" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["imagefolder", "shards"])
def test_supervised_training_from_a_stream(tmp_path, kind):
    """The baseline trains from a streamed folder or tar shards (3 colour classes, chance
    1/3): decoded batches, every training image once per epoch."""
    pytest.importorskip("PIL")
    from stream_images import make_folder, make_shards

    from trainers.core.stream import open_configured

    if kind == "imagefolder":
        source = make_folder(tmp_path / "images")
    else:
        source = make_shards(tmp_path / "shards", [35, 35, 50])
    args = [
        f"data.name={source}",
        "data.image_size=8",
        "data.workers=0",
        "views.global_size=8",
        "views.global_scale=[0.6,1]",
        "model.width=8",
        "optim.epochs=4",
        "optim.batch_size=16",
        "optim.lr=3e-3",
        "run.threads=1",
        "run.device=cpu",
    ]
    cfg = load_config(None, args)
    data = open_configured(cfg.data)
    state, stats = supervised.train_supervised(cfg, data, torch.device("cpu"))
    assert stats["train_accuracy"] > 0.6 and stats["final_loss"] < 0.9  # ln 3 = 1.10
    assert "body.0.weight" in state
