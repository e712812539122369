"""End-to-end runs of trainers.cupy_nccl on CPU (numpy): 2 processes (gloo) equal one process
on the concatenated batch, resume equals the uninterrupted run, the digits smoke
pretraining, the isotropic projector on precomputed features, configuration errors, the
non-finite-loss guard; and the cupy paths, skipped without a CUDA device."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from run_helpers import ROOT, free_port, read_records, subprocess_env, without_timing

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from trainers import cupy_nccl, eval_mlp
from trainers.core import rundir  # noqa: E402
from trainers.cupy_nccl.collective import cupy_usable  # noqa: E402

TIMEOUT = 240
TINY = [
    "data.name=digits",
    "views.n_global=2",
    "views.n_local=1",
    "vector.mask_p=0.1",
    "vector.noise_std=0.1",
    "vector.mix=0.2",
    "model.encoder_dims=[32,32]",
    "model.projector_dims=[32,16]",
    "loss.num_slices=32",
    "optim.epochs=1",
    "optim.batch_size=256",
    "optim.lr=2e-3",
    "optim.warmup_epochs=0.5",
    "optim.grad_clip=5.0",
    "eval.batch_size=512",
    "run.precision=fp64",
    "run.ckpt_every_steps=2",
    "run.keep_checkpoints=10",
    "run.log_every_steps=1",
    "run.progress=false",
]
"""5 steps of 256 samples, float64, every view transform on."""


def _params(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files if k.split("/")[0] != "config"}


def _final(run_dir: str) -> dict[str, np.ndarray]:
    return _params(rundir.latest_checkpoint(run_dir, cupy_nccl.CKPT_EXT))


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The uninterrupted single-process tiny run (in this process)."""
    run_dir = str(tmp_path_factory.mktemp("cupy-single") / "run")
    assert cupy_nccl.main([*TINY, "run.device=cpu", f"run.dir={run_dir}"]) == 0
    return run_dir


def _two_processes_equal_one(single: str, run_dir: str, *extra: str) -> None:
    """torchrun 2 x gloo with ``extra`` overrides ends where the single run ``single`` did."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        "-m",
        "trainers.cupy_nccl",
        *TINY,
        *extra,
        "run.device=cpu",
        f"run.dir={run_dir}",
    ]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    two, one = _final(run_dir), _final(single)
    assert int(two["step"]) == int(one["step"]) == 5 and int(two["world_size"]) == 2
    for name, value in one.items():
        if name.startswith(("param/", "exp_avg")):
            np.testing.assert_allclose(two[name], value, rtol=0, atol=1e-10, err_msg=name)
    moved = _params(rundir.list_checkpoints(single, cupy_nccl.CKPT_EXT)[0][1])
    assert any(np.abs(moved[k] - one[k]).max() > 1e-3 for k in one if k.startswith("param/"))
    train_two = [r for r in read_records(run_dir) if r["kind"] == "train"]
    train_one = [r for r in read_records(single) if r["kind"] == "train"]
    assert len(train_two) == len(train_one) == 5
    for a, b in zip(train_two, train_one, strict=True):
        for key in ("loss", "prediction", "sigreg", "probe_loss", "lr"):
            assert abs(a[key] - b[key]) <= 1e-10 * max(1.0, abs(b[key])), key


def test_two_processes_equal_one_process_on_the_concatenated_batch(single, tmp_path):
    """torchrun 2 x gloo: same views (drawn for the global batch), same global SIGReg and
    prediction terms, summed gradients: parameters and AdamW moments equal the single
    process to 1e-10 (float64), and the logged losses too."""
    _two_processes_equal_one(single, str(tmp_path / "run"))


@pytest.mark.parametrize(
    "statistic", ["watson", pytest.param("extended_jarque_bera", marks=pytest.mark.slow)]
)
def test_two_processes_equal_one_process_with_another_statistic(statistic, tmp_path):
    """loss.statistic with the explicit pullbacks: an EDF statistic (GlooCollective.all_gather
    and its rank's rows of the global gradient) and, slow-marked (the power sums are also
    checked by tests/test_loss_statistics.py), a moment one. ~30 s each."""
    single = str(tmp_path / "single")
    extra = (f"loss.statistic={statistic}", "loss.lamb=0.3")
    assert cupy_nccl.main([*TINY, *extra, "run.device=cpu", f"run.dir={single}"]) == 0
    _two_processes_equal_one(single, str(tmp_path / "run"), *extra)


def test_resume_equals_uninterrupted_run(single, tmp_path, capsys):
    """A run stopped after its step-2 checkpoint (later checkpoints gone, metrics.jsonl
    longer than the checkpoint knows) and resumed with --resume auto ends bit-identical to
    the uninterrupted run, with identical metrics."""
    run_dir = str(tmp_path / "run")
    shutil.copytree(single, run_dir)
    for step, path in rundir.list_checkpoints(run_dir, cupy_nccl.CKPT_EXT):
        if step > 2:
            os.unlink(path)
    assert cupy_nccl.main([*TINY, "run.device=cpu", f"run.dir={run_dir}", "--resume", "auto"]) == 0
    final, ref = _final(run_dir), _final(single)
    assert set(final) == set(ref)
    for name, value in ref.items():
        if name != "train_time":
            np.testing.assert_array_equal(final[name], value, err_msg=name)
    assert without_timing(read_records(run_dir)) == without_timing(read_records(single))
    capsys.readouterr()
    assert cupy_nccl.main([*TINY, f"run.dir={run_dir}"]) == 2  # no --resume: refused
    assert "already holds checkpoints" in capsys.readouterr().err


def test_stopped_run_resumes_to_the_uninterrupted_run(single, tmp_path):
    """A run really stopped mid-way (the NaN guard ends it at step 3, after the step-2
    checkpoint) and resumed without the NaN ends at the uninterrupted run's state."""
    run_dir = str(tmp_path / "run")
    args = [*TINY, "run.device=cpu", f"run.dir={run_dir}"]
    assert cupy_nccl.main([*args, "debug.nan_at_step=3"]) == 3
    assert cupy_nccl.main([*args, "--resume", "auto"]) == 0
    final, ref = _final(run_dir), _final(single)
    for name, value in ref.items():
        if name != "train_time":
            np.testing.assert_array_equal(final[name], value, err_msg=name)
    assert without_timing(read_records(run_dir)) == without_timing(read_records(single))


def test_digits_smoke_pretraining(tmp_path):
    """The digits demo shortened to 8 epochs: losses fall, SIGReg falls, the probe learns,
    plots and summary are written."""
    run_dir = str(tmp_path / "run")
    config = os.path.join(ROOT, "trainers", "configs", "digits_mlp.yaml")
    args = ["--config", config, f"run.dir={run_dir}", "optim.epochs=8", "eval.every_epochs=4"]
    assert cupy_nccl.main([*args, "run.progress=false"]) == 0
    records = read_records(run_dir)
    train = [r for r in records if r["kind"] == "train"]
    summary = records[-1]
    assert summary["kind"] == "summary" and summary["step"] == 8 * 11
    assert np.mean([r["sigreg"] for r in train[-3:]]) < 0.5 * train[0]["sigreg"]
    assert all(0 < r["loss_share"] < 1 for r in train)
    assert summary["probe_acc"] > 0.8 and summary["knn_acc"] > 0.9
    for name in ("loss.png", "accuracy.png", "spectrum.png", "config.yaml", "run_info.json"):
        assert os.path.getsize(os.path.join(run_dir, name)) > 0
    # linear evaluation of the run by trainers.eval_mlp: three methods, same test split
    out = str(tmp_path / "eval.json")
    assert eval_mlp.main([run_dir, "--json", out]) == 0
    with open(out, encoding="utf-8") as fh:
        results = {r["method"]: r for r in json.load(fh)}
    assert set(results) == {"checkpoint", "random-init", "raw-pixels"}
    assert results["raw-pixels"]["features"] == 64
    assert all(0.9 < r["accuracy"] <= 1.0 for r in results.values())


def test_isotropic_projector_on_precomputed_features(tmp_path):
    """npz:PATH with a 'features' array and pure SIGReg (lamb=1): the projector maps
    anisotropic, correlated features to embeddings with a much flatter covariance spectrum
    than the (standardised) input's, and SIGReg falls."""
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((1200, 16)) * np.geomspace(10.0, 0.3, 16)
    features = latent @ np.linalg.qr(rng.standard_normal((16, 16)))[0] + 3.0
    path = tmp_path / "features.npz"
    np.savez(path, features=features)
    run_dir = str(tmp_path / "run")
    args = [
        f"data.name=npz:{path}",
        "views.n_local=0",
        "model.encoder_dims=[64]",
        "model.projector_dims=[64,16]",
        "loss.lamb=1.0",
        "loss.num_slices=64",
        "optim.epochs=100",
        "optim.batch_size=120",
        "optim.lr=1e-2",
        "optim.warmup_epochs=0.5",
        "eval.every_epochs=100",
        f"run.dir={run_dir}",
        "run.progress=false",
    ]
    assert cupy_nccl.main(args) == 0
    records = read_records(run_dir)
    evals = [r for r in records if r["kind"] == "eval"]
    sig = [r["sigreg"] for r in records if r["kind"] == "train"]
    from trainers.core.metrics import covariance_spectrum, effective_rank

    before = effective_rank(covariance_spectrum((features - features.mean(0)) / features.std(0)))
    assert before < 7.0 and evals[-1]["effective_rank"] > 1.6 * before  # of 16
    assert np.mean(sig[-10:]) < 0.3 * sig[0]
    assert "probe_acc" not in evals[-1]  # unlabelled: no probe


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"features": np.zeros((10, 2, 2))}, "features must be floats of shape (N, D)"),
        ({"features": np.full((10, 2), np.nan)}, "features must be finite"),
        ({"features": np.zeros((10, 2)), "labels": np.zeros(9, int)}, "labels must be integers"),
    ],
)
def test_bad_feature_files(tmp_path, arrays, message):
    from trainers.core.vector_data import load_vectors

    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_vectors(f"npz:{path}", test_fraction=0.2, split_seed=0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.backbone=smallcnn", "model.backbone must be 'mlp'"),
        ("run.precision=bf16", "run.precision must be"),
        ("loss.engine=compiled", "loss.engine='compiled' is torch.compile"),
        ("data.test=imagefolder:/x", "data.test applies to streamed sources"),
    ],
)
def test_rejected_options(tmp_path, capsys, override, message):
    """Values the trainer cannot take (options it does not read at all are rejected when
    parsed: tests/trainers/test_trainer_layout.py)."""
    assert cupy_nccl.main([*TINY, f"run.dir={tmp_path}", override]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(cupy_usable(), reason="a usable GPU is present")
def test_cuda_without_a_usable_gpu_is_refused(tmp_path, capsys):
    assert cupy_nccl.main([*TINY, f"run.dir={tmp_path}", "run.device=cuda"]) == 2
    assert "cupy cannot allocate on a CUDA device" in capsys.readouterr().err


def test_range_checked_vector_options(capsys):
    with pytest.raises(SystemExit) as info:
        cupy_nccl.main(["vector.mask_p=1.5"])
    assert info.value.code == 2 and "vector.mask_p must be <= 0.95" in capsys.readouterr().err


def test_nonfinite_loss_stops_and_keeps_checkpoints(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    assert cupy_nccl.main([*TINY, f"run.dir={run_dir}", "debug.nan_at_step=4"]) == 3
    assert "non-finite loss at step 4" in capsys.readouterr().err
    assert [s for s, _ in rundir.list_checkpoints(run_dir, cupy_nccl.CKPT_EXT)] == [2]


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_usable(), reason="cupy cannot allocate on a CUDA device")
def test_cupy_run_matches_numpy_run(single, tmp_path):  # pragma: no cover (needs a GPU)
    """The same tiny run on a GPU (cupy arrays) ends at the numpy run's parameters."""
    run_dir = str(tmp_path / "run")
    assert cupy_nccl.main([*TINY, "run.device=cuda", f"run.dir={run_dir}"]) == 0
    gpu, cpu = _final(run_dir), _final(single)
    for name, value in cpu.items():
        if name.startswith("param/"):
            np.testing.assert_allclose(gpu[name], value, rtol=0, atol=1e-8, err_msg=name)
