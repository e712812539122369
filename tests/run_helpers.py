"""Helpers of the end-to-end trainer tests: free ports, subprocess environment, metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING = {
    "imgs_per_s",
    "data_time",
    "step_time",
    "loss_share",
    "wall_time",
    "train_time",
    "data_time_fraction",
}
"""Record fields that measure time (they differ between otherwise identical runs)."""


def free_port() -> int:
    """A TCP port that was free a moment ago (for torchrun's ``--master_port``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env() -> dict[str, str]:
    """This process's environment for a trainer subprocess: the worktree on PYTHONPATH,
    one OpenMP thread, no inherited torchrun rank variables."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def read_records(run_dir: str) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl``."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def without_timing(records: list[dict]) -> list[dict]:
    """``records`` without their :data:`TIMING` fields."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def kill_tree_when(proc: subprocess.Popen, path: str, timeout: float) -> None:
    """SIGKILL ``proc`` and all its descendants as soon as ``path`` exists (a kill -9 of a
    whole training job, data workers included); fails if ``proc`` ended before that."""
    deadline = time.monotonic() + timeout
    try:
        while not os.path.exists(path) and proc.poll() is None:
            assert time.monotonic() < deadline, f"no {path} in time"
            time.sleep(0.01)
        for pid in [*descendants(proc.pid), proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"


def kill_then_resume(
    command: list[str],
    resume: Callable[[], list[str]],
    checkpoint: str,
    timeout: float,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Start the training ``command``, SIGKILL it with all its processes as soon as the file
    ``checkpoint`` exists (:func:`kill_tree_when`), then run the command ``resume()`` to the
    end; its completed process (a kill -9 mid-run and ``--resume auto``). Both run in ``env``
    (default :func:`subprocess_env`)."""
    env = subprocess_env() if env is None else env
    victim = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_tree_when(victim, checkpoint, timeout)
    assert not any(r["kind"] == "summary" for r in read_records(os.path.dirname(checkpoint)))
    return subprocess.run(
        resume(), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
