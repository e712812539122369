"""Faults a user can cause around a training run (issue 16, items 12, 13, 14, 16, 18): each
ends in one line naming the file or option and a documented exit status, never a traceback.

The run-level tests use the numpy trainer (``trainers.cupy_nccl``) on digits, the cheapest.
A full disk is real: the trainer runs under ``RLIMIT_FSIZE``, so writing the checkpoint
fails with ``EFBIG`` from the kernel. A read-only run directory cannot be made with
``chmod`` for root (this sandbox): one test injects the ``PermissionError`` the kernel
raises for a non-root user, and a second uses ``chmod`` and runs where the tests are not
root.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from run_helpers import ROOT, subprocess_env

pytest.importorskip("sklearn")
pytest.importorskip("torch")  # the numpy trainer's control plane (gloo)
PIL = pytest.importorskip("PIL.Image")

from trainers.core import config, datasets, loop, rundir  # noqa: E402

TIMEOUT = 240
FAST = [
    "--config",
    "trainers/configs/digits_mlp.yaml",
    "optim.epochs=1",
    "data.train_size=256",
    "run.progress=false",
]


def _trainer(*args: str, setup: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the numpy trainer in a fresh interpreter after the Python code ``setup`` (no
    ``preexec_fn``: forking a process that runs JAX threads may deadlock)."""
    script = textwrap.dedent(setup) + textwrap.dedent(
        """
        import sys
        from trainers.cupy_nccl.trainer import main
        raise SystemExit(main(sys.argv[1:]))
        """
    )
    return subprocess.run(
        [sys.executable, "-c", script, *FAST, *args],
        cwd=ROOT,
        env={**subprocess_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def _one_error_line(stderr: str) -> str:
    """The last stderr line, after checking there is no traceback."""
    assert "Traceback" not in stderr, stderr
    return stderr.strip().splitlines()[-1]


# ------------------------------------------------------------- 16: command-line mistakes
@pytest.mark.parametrize(
    "override, message",
    [
        ("run.dir=", "run.dir must not be empty"),
        ("run.dir={file}", "run.dir '{file}' must be a directory"),
        ("run.dir={file}/sub", "run.dir '{file}/sub' must be a directory ({file} is a file)"),
    ],
)
def test_bad_run_dir_is_a_usage_error(tmp_path, capsys, override, message):
    from trainers.cupy_nccl.trainer import main

    afile = tmp_path / "afile"
    afile.write_text("not a directory\n")
    with pytest.raises(SystemExit) as info:
        main([*FAST, override.format(file=afile)])
    assert info.value.code == 2
    assert _one_error_line(capsys.readouterr().err).endswith(message.format(file=afile))


def test_invalid_yaml_names_the_file(tmp_path, capsys):
    from trainers.cupy_nccl.trainer import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {epochs: 1\n  bad: [\n")
    with pytest.raises(SystemExit) as info:
        main(["--config", str(bad)])
    assert info.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{bad}: not valid YAML:" in line and "line 2" in line


def test_invalid_yaml_override_is_one_line():
    with pytest.raises(ValueError) as info:
        config.parse_override("model.projector_dims=[64, 32")
    assert "\n" not in str(info.value) and "model.projector_dims" in str(info.value)


# ------------------------------------------------- 12, 13, 18: files of the run directory
def test_full_disk_one_line_exit_4_and_stale_temp_removed(tmp_path):
    """EFBIG from RLIMIT_FSIZE while writing the first checkpoint; a stale temp file of an
    earlier crash is removed first; files get the umask's permissions, not 0600."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale = run_dir / ".ckpt_00000004.npz.k2j_x9qa.tmp"
    stale.write_bytes(b"half a checkpoint")
    other = run_dir / ".notes.tmp"  # not a file of the run: kept
    other.write_text("mine")

    limit = """
        import os, resource, signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG
        os.umask(0o027)
    """
    proc = _trainer(f"run.dir={run_dir}", setup=limit)
    assert proc.returncode == 4, proc.stderr[-3000:]
    line = _one_error_line(proc.stderr)
    assert line == f"rank 0: error: File too large: {run_dir}/ckpt_00000002.npz"
    assert f"removed 1 stale temporary file(s) in {run_dir}: {stale.name}" in proc.stderr
    assert not stale.exists() and other.exists()
    names = sorted(os.listdir(run_dir))
    assert names == [".notes.tmp", "config.yaml", "metrics.jsonl", "run_info.json"]
    for name in ("config.yaml", "run_info.json"):
        assert stat.S_IMODE(os.stat(run_dir / name).st_mode) == 0o640, name


READ_ONLY = """
    import errno, os, tempfile
    run_dir = os.path.realpath(os.environ["READ_ONLY_DIR"])
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # what the kernel does in a read-only directory
        if dir is not None and os.path.realpath(dir) == run_dir:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), dir)
        return real_mkstemp(*args, dir=dir, **kwargs)

    tempfile.mkstemp = mkstemp
"""


def test_read_only_run_dir_injected(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = _trainer(f"run.dir={run_dir}", setup=READ_ONLY, env={"READ_ONLY_DIR": str(run_dir)})
    assert proc.returncode == 4, proc.stderr[-3000:]
    line = _one_error_line(proc.stderr)
    assert line == f"rank 0: error: Permission denied: {run_dir}/metrics.jsonl"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_run_dir_chmod(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_dir.chmod(0o555)
    try:
        proc = _trainer(f"run.dir={run_dir}")
    finally:
        run_dir.chmod(0o755)
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert _one_error_line(proc.stderr).startswith("rank 0: error: Permission denied: ")


def test_atomic_write_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        rundir.atomic_write_text(str(tmp_path / "a.txt"), "a")
        os.umask(0o077)
        rundir.atomic_write_text(str(tmp_path / "b.txt"), "b")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "b.txt").st_mode) == 0o600


def test_atomic_write_error_names_the_target(tmp_path):
    target = str(tmp_path / "ckpt_00000001.pt")

    def full(fh):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as info:
        rundir.atomic_write(target, full)
    assert info.value.errno == errno.ENOSPC and info.value.filename == target
    assert os.listdir(tmp_path) == []  # the temporary file is gone
    message = loop.os_error_message(info.value, str(tmp_path))
    assert message == f"No space left on device: {target}"
    bare = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert loop.os_error_message(bare, "/r") == "No space left on device (writing to run.dir /r)"


def test_remove_stale_temp_files_only_takes_run_files(tmp_path):
    names = [
        ".ckpt_00000012.pt.abc_1234.tmp",
        ".ckpt_00000012.msgpack.zz9.tmp",
        ".metrics.jsonl.q1w2e3r4.tmp",
        ".config.yaml.x.tmp",
        ".run_info.json.y.tmp",
        ".other.txt.abc.tmp",
        "ckpt_00000012.pt",
        "notes.tmp",
    ]
    for name in names:
        (tmp_path / name).write_text("x")
    removed = rundir.remove_stale_temp_files(str(tmp_path))
    assert sorted(os.path.basename(p) for p in removed) == sorted(names[:5])
    assert sorted(os.listdir(tmp_path)) == sorted(names[5:])
    assert rundir.remove_stale_temp_files(str(tmp_path / "missing")) == []


# --------------------------------------------------------------------------- 14: data
def _imagefolder(tmp_path, files: dict[str, np.ndarray | bytes]) -> str:
    folder = tmp_path / "images"
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            PIL.fromarray(content).save(path)
    return str(folder)


def _load(name: str):
    return datasets.load_dataset(name, test_fraction=0.25, split_seed=0)


def test_sixteen_bit_grey_images_are_scaled_not_clipped(tmp_path):
    rng = np.random.default_rng(0)
    wide = [rng.integers(0, 65536, (6, 6), dtype=np.uint16) for _ in range(4)]
    narrow = rng.integers(0, 256, (6, 6), dtype=np.uint8)
    files = {f"a/{i}.png": w for i, w in enumerate(wide)} | {"b/0.png": narrow}
    data = _load("imagefolder:" + _imagefolder(tmp_path, files))
    images = np.concatenate([data.train_images, data.test_images])[:, 0]
    expected = [w / 65535.0 for w in wide] + [narrow / 255.0]
    assert len(images) == len(expected)
    for want in expected:  # the split shuffles: every image is found, to float32 precision
        assert min(np.abs(images - want).max(axis=(1, 2))) < 1e-6
    assert images.max() < 1.0 and (images > 0.99).mean() < 0.05  # not all white


def test_sixteen_bit_grey_images_resized_among_rgb(tmp_path):
    wide = np.full((8, 8), 32768, dtype=np.uint16)
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    files = {"0.png": wide, "1.png": rgb, "2.png": rgb, "3.png": wide}
    folder = _imagefolder(tmp_path, files)
    data = datasets.load_dataset(
        "imagefolder:" + folder, test_fraction=0.25, split_seed=0, image_size=4
    )
    images = np.concatenate([data.train_images, data.test_images])
    assert images.shape == (4, 3, 4, 4)
    assert sorted(np.round(images.mean(axis=(1, 2, 3)), 4)) == [0.0, 0.0, 0.5, 0.5]


def _png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    noise = np.random.default_rng(1).integers(0, 256, (16, 16), dtype=np.uint8)
    PIL.fromarray(noise).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "bad",
    [b"this is a text file, not a jpeg\n", _png_bytes()[:200], b"\x89PNG\r\n\x1a\n" + b"\0" * 40],
    ids=["text_named_jpg", "truncated_png", "corrupt_png"],
)
def test_unreadable_image_is_named(tmp_path, bad):
    good = np.zeros((16, 16), dtype=np.uint8)
    name = "broken.jpg" if bad.startswith(b"this") else "broken.png"
    folder = _imagefolder(tmp_path, {"ok1.png": good, "ok2.png": good, name: bad})
    with pytest.raises(ValueError, match=f"cannot read image {os.path.join(folder, name)}"):
        _load("imagefolder:" + folder)


def test_npz_labels_renumbered_densely(tmp_path):
    path = tmp_path / "sparse.npz"
    labels = np.array([0, 10**9, 10**9, 0, 7, 7, 0, 10**9], dtype=np.int64)
    np.savez(path, images=np.zeros((8, 4, 4), np.uint8), labels=labels)
    with pytest.warns(UserWarning, match=r"renumbered 0\.\.2"):
        data = _load(f"npz:{path}")
    assert data.num_classes == 3
    all_labels = np.concatenate([data.train_labels, data.test_labels])
    assert sorted(all_labels.tolist()) == [0, 0, 0, 1, 1, 2, 2, 2]
    dense = tmp_path / "dense.npz"
    np.savez(dense, images=np.zeros((4, 4, 4), np.uint8), labels=np.array([0, 1, 2, 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _load(f"npz:{dense}").num_classes == 3


@pytest.mark.parametrize("kind", ["missing", "random_bytes", "npy", "directory"])
def test_bad_npz_file_is_named(tmp_path, kind):
    path = tmp_path / "data.npz"
    if kind == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "npy":
        with open(path, "wb") as fh:
            np.save(fh, np.zeros((3, 4, 4)))
    elif kind == "directory":
        path.mkdir()
    with pytest.raises(ValueError, match=f"^npz:{path}: ") as info:
        _load(f"npz:{path}")
    assert "\n" not in str(info.value)


def test_damaged_npz_member_is_named(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, images=np.zeros((4, 4, 4), np.uint8), labels=np.arange(4))
    raw = bytearray(path.read_bytes())
    start = raw.index(b"\x93NUMPY")
    raw[start : start + 6] = b"garbag"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f"^npz:{path}: damaged"):
        _load(f"npz:{path}")


def test_missing_npz_from_the_command_line(tmp_path):
    proc = _trainer(f"run.dir={tmp_path / 'run'}", f"data.name=npz:{tmp_path}/missing.npz")
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _one_error_line(proc.stderr)
    assert line == f"rank 0: error: npz:{tmp_path}/missing.npz: no such file"


def test_missing_idx_folder_from_the_command_line(tmp_path):
    proc = _trainer(f"run.dir={tmp_path / 'run'}", f"data.name=idx:{tmp_path}/missing")
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _one_error_line(proc.stderr)
    assert line == (
        f"rank 0: error: data.name idx:{tmp_path}/missing: no such folder, nor files with "
        "that prefix"
    )
