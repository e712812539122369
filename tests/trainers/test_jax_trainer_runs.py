"""End-to-end runs of trainers.jax_pmap on digits: 2 simulated devices, 2 processes through
``jax.distributed`` on loopback, the non-finite-loss guard and ``--resume auto``.

One tiny configuration, three runs (made once per session):

1. the reference: one process with 2 simulated CPU devices (``--num-cpu-devices 2``), 2 epochs;
2. two processes with one CPU device each (``jax.distributed``, gloo collectives), a NaN
   injected by process 1 at step 15: both stop with status 3, checkpoint 12 stays;
3. ``--resume auto`` of that run directory by one process with 2 devices.

The global batch, augmentation keys and directions do not depend on the topology, so the
resumed records equal the reference's up to float32 rounding of the reductions.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from helpers import run_once
from run_helpers import TIMING

pytest.importorskip("flax")
pytest.importorskip("optax")
pytest.importorskip("sklearn")
yaml = pytest.importorskip("yaml")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 600
TINY = {
    "views": {"n_global": 2, "n_local": 2, "global_size": 8, "local_size": 4},
    "augment": {"flip_p": 0.0, "blur_sigma": [0.1, 0.8]},
    "model": {"backbone": "smallcnn", "width": 8, "projector_dims": [32, 16]},
    "loss": {"num_slices": 32},
    "optim": {"epochs": 2, "batch_size": 128, "lr": 2e-3, "warmup_epochs": 1},
    "eval": {"every_epochs": 1, "batch_size": 512},
    "run": {"ckpt_every_steps": 4, "keep_checkpoints": 3, "log_every_steps": 1},
}
STEPS = 2 * (1438 // 128)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(cache_dir: str | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    if cache_dir is not None:  # the resumed run reuses the reference run's compilations
        env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainers.jax_pmap", *args]


def _result(proc) -> dict:
    return {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}


def _runs(folder) -> dict:
    """Make the three runs; return their outcomes and folders (JSON)."""
    os.makedirs(folder, exist_ok=True)
    config = os.path.join(folder, "tiny.yaml")
    with open(config, "w") as fh:
        yaml.safe_dump(TINY, fh)
    ref_dir, split_dir = os.path.join(folder, "ref"), os.path.join(folder, "split")
    out = {"ref_dir": ref_dir, "split_dir": split_dir}
    cache = os.path.join(folder, "jax-cache")

    def run(cmd):
        return subprocess.run(
            cmd, cwd=ROOT, env=_env(cache), capture_output=True, text=True, timeout=TIMEOUT
        )

    out["ref"] = _result(
        run(_command("--config", config, f"run.dir={ref_dir}", "--num-cpu-devices", "2"))
    )
    out["split"] = two_processes(
        "--config",
        config,
        f"run.dir={split_dir}",
        "run.progress=false",
        "debug.nan_at_step=15",
        "debug.nan_rank=1",
    )
    out["split_checkpoints"] = sorted(f for f in os.listdir(split_dir) if f.startswith("ckpt_"))
    out["split_records"] = _records(split_dir)
    out["resumed"] = _result(
        run(
            _command(
                "--config",
                config,
                f"run.dir={split_dir}",
                "run.progress=false",
                "--num-cpu-devices",
                "2",
                "--resume",
                "auto",
            )
        )
    )
    return out


def two_processes(*args: str) -> list[dict]:
    """Run the trainer with ``args`` as 2 processes of one CPU device each
    (``jax.distributed`` on loopback); their return codes and output."""
    port = _free_port()
    procs = [
        subprocess.Popen(
            _command(
                *args,
                "--coordinator-address",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ),
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    out = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
            out.append({"returncode": proc.returncode, "stdout": stdout, "stderr": stderr})
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return out


def _records(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = str(tmp_path_factory.getbasetemp() / "jax-trainer-runs")
    return run_once(tmp_path_factory, "jax_trainer_runs", lambda: _runs(folder))


def _check(result):
    assert result["returncode"] == 0, result["stderr"][-4000:]


def test_smoke_run_on_two_simulated_devices(runs):
    _check(runs["ref"])
    run_dir = runs["ref_dir"]
    records = _records(run_dir)
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))
    assert [r["epoch"] for r in evals] == [1, 2]
    for r in train:
        for key in ("loss", "prediction", "sigreg", "lr", "probe_loss", "imgs_per_s"):
            assert isinstance(r[key], float), key
        assert 0 < r["data_time"] < r["step_time"]
        assert 0 < r["loss_share"] < 1  # timed apart: the step cannot be split
    assert train[-1]["loss"] < train[0]["loss"]
    assert evals[-1]["knn_acc"] > 0.5  # 10 classes: chance is 0.1
    summary = records[-1]
    assert summary["kind"] == "summary" and summary["step"] == STEPS
    assert 0.5 < summary["linear_acc"] <= 1.0 and summary["imgs_per_s"] > 0
    assert "linear_acc" in runs["ref"]["stdout"] and "imgs_s=" in runs["ref"]["stderr"]
    with open(os.path.join(run_dir, "run_info.json")) as fh:
        info = json.load(fh)
    assert info["world_size"] == 2 and info["processes"] == 1 and info["parallel"] == "pmap"
    for name in ("loss.png", "accuracy.png", "spectrum.png"):
        with open(os.path.join(run_dir, name), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    names = sorted(f for f in os.listdir(run_dir) if f.startswith("ckpt_"))
    assert names == ["ckpt_00000016.msgpack", "ckpt_00000020.msgpack", "ckpt_00000022.msgpack"]


def test_eval_linear_on_the_run(runs, tmp_path, capsys):
    """The one evaluation CLI reads the JAX checkpoint: its linear probe equals the run's
    own ``linear_acc``; the random-init baseline is the trainer's initial network."""
    from trainers import eval_linear

    _check(runs["ref"])
    out = str(tmp_path / "eval.json")
    assert eval_linear.main([runs["ref_dir"], "--baseline", "random-init", "--json", out]) == 0
    with open(out) as fh:
        results = json.load(fh)
    assert [r["method"] for r in results] == ["checkpoint", "random-init"]
    assert results[0]["checkpoint"].endswith("ckpt_00000022.msgpack")
    assert results[0]["features"] == results[1]["features"] == 32
    summary = _records(runs["ref_dir"])[-1]
    assert results[0]["accuracy"] == pytest.approx(summary["linear_acc"], abs=0.01)
    assert "LeJEPA backbone: linear-probe top-1" in capsys.readouterr().out


def test_two_processes_stop_together_on_a_nan(runs):
    for process, result in enumerate(runs["split"]):
        assert result["returncode"] == 3, result["stderr"][-4000:]
        assert f"process {process}: error: non-finite loss at step 15" in result["stderr"]
    assert runs["split_checkpoints"] == [
        "ckpt_00000008.msgpack",
        "ckpt_00000011.msgpack",
        "ckpt_00000012.msgpack",
    ]
    assert max(r["step"] for r in runs["split_records"]) == 14


def _close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a.keys() - TIMING:
        if isinstance(a[key], float):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
        else:
            assert a[key] == b[key], key


def test_two_processes_then_resume_match_the_reference(runs):
    _check(runs["ref"])
    _check(runs["resumed"])
    reference = _records(runs["ref_dir"])
    # the 2-process records before the NaN equal the 1-process, 2-device run's
    for a, b in zip(runs["split_records"], reference, strict=False):
        _close(a, b)
    resumed = _records(runs["split_dir"])
    assert len(resumed) == len(reference)
    for a, b in zip(resumed[:-1], reference[:-1], strict=True):
        _close(a, b)
    assert resumed[-1]["linear_acc"] == pytest.approx(reference[-1]["linear_acc"], abs=0.01)


@pytest.mark.slow
def test_digits_demo_on_two_devices(tmp_path):
    """The documented demo (about 2-3 minutes on 2 CPU cores): the LeJEPA backbone's linear
    probe beats raw pixels' 97.2% (the torch demo reaches 98.9%)."""
    run_dir = str(tmp_path / "demo")
    proc = subprocess.run(
        _command(
            "--config",
            os.path.join(ROOT, "trainers", "configs", "digits_demo.yaml"),
            f"run.dir={run_dir}",
            "run.progress=false",
            "--num-cpu-devices",
            "2",
        ),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    _check(_result(proc))
    summary = _records(run_dir)[-1]
    assert summary["kind"] == "summary" and summary["step"] == 30 * (1438 // 128)
    assert summary["linear_acc"] > 0.972
    assert summary["knn_acc"] > 0.9
