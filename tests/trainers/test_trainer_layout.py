"""The trainers' layout: a framework-free core, per-trainer options (``--help``, rejection
of ignored options) and ``data.train_size`` in every trainer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from run_helpers import ROOT, subprocess_env

pytest.importorskip("yaml")
pytest.importorskip("sklearn")

FRAMEWORKS = ("torch", "jax", "flax", "optax", "cupy")

_IMPORTED = """
import importlib, json, pkgutil, sys
import trainers.core
names = [m.name for m in pkgutil.walk_packages(trainers.core.__path__, "trainers.core.")]
for name in names:
    importlib.import_module(name)
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({"modules": names, "loaded": sorted(sys.modules)}))
"""


def _imported(*extra: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _IMPORTED, *extra],
        env=subprocess_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.splitlines()[-1])


def _frameworks(loaded: list[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in loaded} & set(FRAMEWORKS))


def test_core_imports_no_framework():
    result = _imported()
    assert "trainers.core.loop" in result["modules"]
    assert "trainers.core.checkpoints" in result["modules"]
    assert _frameworks(result["loaded"]) == []


def test_array_trainer_and_its_evaluation_import_no_framework():
    """The CuPy/NumPy trainer needs torch only as a torchrun control plane."""
    result = _imported("trainers.cupy_nccl", "trainers.cupy_nccl.evaluation", "trainers.eval_mlp")
    assert _frameworks(result["loaded"]) == []


# ------------------------------------------------------------------------ options
OWN = {
    "torch_ddp": ("run.deterministic", "optim.accum_steps", "augment.jitter_p", "model.width"),
    "jax_pmap": ("optim.accum_steps", "augment.jitter_p", "views.global_size", "model.width"),
    "cupy_nccl": ("vector.mask_p", "model.encoder_dims", "augment.flip_p", "views.n_local"),
}
FOREIGN = {
    "torch_ddp": ("vector.mask_p", "model.encoder_dims"),
    "jax_pmap": ("vector.mix", "model.encoder_dims", "run.deterministic"),
    "cupy_nccl": (
        "views.global_size",
        "augment.jitter_p",
        "model.width",
        "model.timm_kwargs",
        "optim.accum_steps",
        "run.deterministic",
    ),
}
SETTING = {
    "vector.mask_p": "0.1",
    "vector.mix": "0.1",
    "model.encoder_dims": "[8]",
    "run.deterministic": "true",
    "views.global_size": "16",
    "augment.jitter_p": "0.5",
    "model.width": "4",
    "model.timm_kwargs": "{patch_size: 4}",
    "optim.accum_steps": "2",
}


def _main(trainer: str):
    if trainer == "torch_ddp":
        pytest.importorskip("torch")
        pytest.importorskip("timm")
        from trainers.torch_ddp.trainer import main
    elif trainer == "jax_pmap":
        pytest.importorskip("flax")
        pytest.importorskip("optax")
        from trainers.jax_pmap.trainer import main
    else:
        from trainers.cupy_nccl.trainer import main
    return main


@pytest.mark.parametrize("trainer", sorted(OWN))
def test_help_lists_only_the_trainers_options(trainer, capsys):
    with pytest.raises(SystemExit) as exc:
        _main(trainer)(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for key in OWN[trainer]:
        assert f"  {key} (" in text, key
    for key in FOREIGN[trainer]:
        assert f"  {key} (" not in text, key
    if trainer == "cupy_nccl":  # its own default
        assert "model.backbone (str, default mlp)" in text


@pytest.mark.parametrize(("trainer", "key"), [(t, k) for t in sorted(FOREIGN) for k in FOREIGN[t]])
def test_a_set_option_the_trainer_ignores_is_rejected(trainer, key, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _main(trainer)([f"run.dir={tmp_path}", f"{key}={SETTING[key]}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {key} does not apply to trainers.{trainer}" in err
    assert not os.listdir(tmp_path)  # nothing started


# --------------------------------------------------------------------- train_size
TINY = [
    "data.train_size=300",
    "views.n_local=0",
    "loss.num_slices=8",
    "optim.batch_size=100",
    "optim.epochs=1",
    "run.progress=false",
]


def test_torch_trainer_honours_train_size(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("timm")
    from trainers.core.config import load_config
    from trainers.core.launch import single_process
    from trainers.torch_ddp.trainer import Trainer

    cfg = load_config(
        overrides=[*TINY, "views.global_size=8", "model.width=4", f"run.dir={tmp_path}"]
    )
    trainer = Trainer(cfg, single_process(torch.device("cpu")), resume=None, argv=[])
    assert trainer.train_images.shape[0] == 300 and trainer.steps_per_epoch == 3


def test_jax_trainer_honours_train_size(tmp_path):
    pytest.importorskip("flax")
    pytest.importorskip("optax")
    import jax

    from trainers.core.config import load_config
    from trainers.jax_pmap.parallel import DataParallel
    from trainers.jax_pmap.trainer import Trainer

    cfg = load_config(
        overrides=[*TINY, "views.global_size=8", "model.width=4", f"run.dir={tmp_path}"]
    )
    parallel = DataParallel("pmap", jax.local_devices()[:1])
    trainer = Trainer(cfg, parallel, resume=None, argv=[])
    assert trainer.data.train_images.shape[0] == 300 and trainer.steps_per_epoch == 3
    assert np.asarray(trainer.images).shape[1] == 300  # the device copy: (devices, N, ...)


def test_array_trainer_honours_train_size(tmp_path):
    from trainers.core.config import load_config
    from trainers.core.launch import single_process
    from trainers.cupy_nccl.trainer import BASE, Trainer

    cfg = load_config(
        overrides=[*TINY, "model.encoder_dims=[8]", "run.device=cpu", f"run.dir={tmp_path}"],
        base=BASE,
    )
    trainer = Trainer(cfg, single_process("cpu"), resume=None, argv=[])
    assert trainer.train.shape[0] == 300 and trainer.steps_per_epoch == 3
