"""The run directory: atomic file writes, checkpoint names, config and provenance files.

Framework-free, shared by every trainer. Layout of a run directory::

    config.yaml          the resolved configuration
    run_info.json        git SHA, command line, world size, library versions
    metrics.jsonl        training and evaluation records (trainers.core.metrics)
    ckpt_00000042.pt     checkpoints, named by optimiser step (.msgpack: JAX, .npz: array trainer)
    *.png                plots (trainers.core.plots)

Every file that a crash must not leave half-written goes through :func:`atomic_write`: a
temporary file in the same directory, flushed and fsynced, then ``os.replace``-d over the
target, and the directory fsynced. A temporary file left by a crash mid-write
(``.ckpt_00000042.pt.<random>.tmp``) is removed when the run starts again
(:func:`remove_stale_temp_files`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from typing import IO, Any

import yaml

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "checkpoint_path",
    "git_sha",
    "latest_checkpoint",
    "list_checkpoints",
    "prune_checkpoints",
    "remove_stale_temp_files",
    "write_config",
    "write_run_info",
]


def atomic_write(path: str, write: Callable[[IO[bytes]], Any]) -> None:
    """Create or replace ``path`` atomically with the bytes that ``write(fh)`` writes.

    The file gets the permissions of any new file (``0o666`` less the process umask), not
    the ``0o600`` of a temporary file. An ``OSError`` (read-only directory, full disk) is
    re-raised with ``path`` as its file name, so the error names the file being written.

    Parameters
    ----------
    path : str
        Target file.
    write : callable
        Called with a binary file object open on a temporary file in the same directory.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            os.chmod(tmp, 0o666 & ~current_umask())
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename != path:
            raise OSError(exc.errno, exc.strerror or str(exc), path) from exc
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def current_umask() -> int:
    """The process umask, read from ``/proc/self/status`` where possible (setting and
    restoring it with ``os.umask`` is the fallback; that is not thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_TEMP_FILE = re.compile(
    r"^\.(ckpt_\d{8}\.\w+|config\.yaml|run_info\.json|metrics\.jsonl)\.\w+\.tmp$"
)


def remove_stale_temp_files(run_dir: str) -> list[str]:
    """Delete the temporary files of run files (checkpoints, ``config.yaml``,
    ``run_info.json``, ``metrics.jsonl``) that a crash during :func:`atomic_write` left in
    ``run_dir``; call it when no write of the run is in progress (the main rank, at start).

    Returns
    -------
    list of str
        The paths removed.
    """
    if not os.path.isdir(run_dir):
        return []
    removed = []
    for name in sorted(os.listdir(run_dir)):
        if _TEMP_FILE.match(name):
            path = os.path.join(run_dir, name)
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed


def atomic_write_text(path: str, text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def checkpoint_path(run_dir: str, step: int, ext: str = ".pt") -> str:
    """Path of the checkpoint taken after optimiser step ``step`` (file extension ``ext``:
    ``.pt`` for torch checkpoints, ``.npz`` for the array trainer's)."""
    return os.path.join(run_dir, f"ckpt_{step:08d}{ext}")


def list_checkpoints(run_dir: str, ext: str = ".pt") -> list[tuple[int, str]]:
    """``(step, path)`` of the ``ext`` checkpoints in ``run_dir``, oldest first (temp files
    ignored)."""
    if not os.path.isdir(run_dir):
        return []
    pattern = re.compile(r"^ckpt_(\d{8})" + re.escape(ext) + "$")
    found = []
    for name in os.listdir(run_dir):
        match = pattern.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(run_dir, name)))
    return sorted(found)


def latest_checkpoint(run_dir: str, ext: str = ".pt") -> str | None:
    """Path of the ``ext`` checkpoint with the highest step in ``run_dir``, or ``None``."""
    found = list_checkpoints(run_dir, ext)
    return found[-1][1] if found else None


def prune_checkpoints(run_dir: str, keep: int, ext: str = ".pt") -> None:
    """Delete all but the ``keep`` most recent ``ext`` checkpoints."""
    for _, path in list_checkpoints(run_dir, ext)[:-keep]:
        os.unlink(path)


def git_sha(path: str) -> str:
    """``git rev-parse HEAD`` of the repository holding ``path`` (``+dirty`` if modified),
    or ``"unknown"`` outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=path, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def write_config(run_dir: str, config: Mapping[str, Any]) -> None:
    """Write the resolved configuration (nested plain dict) to ``run_dir/config.yaml``."""
    atomic_write_text(
        os.path.join(run_dir, "config.yaml"), yaml.safe_dump(dict(config), sort_keys=False)
    )


def write_run_info(run_dir: str, info: Mapping[str, Any]) -> None:
    """Write ``info`` (git SHA, command line, ...) to ``run_dir/run_info.json``."""
    atomic_write_text(
        os.path.join(run_dir, "run_info.json"), json.dumps(dict(info), indent=2) + "\n"
    )
