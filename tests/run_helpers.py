"""Helpers of the end-to-end trainer tests: free ports, subprocess environment, metrics."""

from __future__ import annotations

import json
import os
import socket

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
