"""Two JAX processes on loopback (``jax.distributed``, gloo CPU collectives), 1 device each.

Each process runs ``jax_multiprocess_worker.py`` and reports the global LeJEPA loss and
parameter gradient from ``jax.shard_map`` over the 2-process mesh, compared with the
single-device values on the concatenated batch (float64).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from helpers import run_once

pytest.importorskip("jax")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOL = 1e-6
TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_pair() -> list:
    """Start both processes, wait for them (killing them on timeout), return their output."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.join(HERE, "jax_multiprocess_worker.py"), port, str(i)],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
            outputs.append((proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outputs


def _reports():
    results = []
    for code, stdout, stderr in _run_pair():
        assert code == 0, stderr[-4000:]
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Both processes' JSON reports (the pair runs once per session)."""
    results = run_once(tmp_path_factory, "jax_multiprocess_reports", _reports)
    if any("unsupported" in r for r in results):
        pytest.skip(f"multi-process CPU collectives unsupported: {results[0]['unsupported']}")
    return results


def test_two_processes_one_device_each(reports):
    assert sorted(r["process_id"] for r in reports) == [0, 1]
    for r in reports:
        assert r["process_count"] == 2
        assert r["global_devices"] == 2 and r["local_devices"] == 1
        assert r["local_batch"] == 8


def test_global_loss_equals_concatenated_batch(reports):
    for r in reports:
        assert r["ref_vs_core"] <= 1e-10
        assert r["value_err"] <= TOL
    assert abs(reports[0]["value"] - reports[1]["value"]) <= TOL


def test_global_gradient_equals_single_device(reports):
    for r in reports:
        assert r["ref_grad_norm"] > 0.1
        assert r["grad_err"] <= TOL
