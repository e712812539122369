"""One JAX trainer step on 2 simulated devices equals one step on 1 device (float64).

The check runs in a subprocess (``jax_trainer_step_check.py``) because the CPU device count
must be set before JAX starts. The global batch, the augmentation keys (per dataset index)
and the SIGReg directions (per step) are the same in every run; batch norm is synchronised
and the LeJEPA statistics are reduced over the device axis, so the states agree to rounding.
The ``shard_map`` variant (observed error 1e-10, like ``pmap``) is slow-marked to keep the
default run within its time budget.
"""

from __future__ import annotations

import os

import pytest
from helpers import run_json_script, run_once

pytest.importorskip("flax")
pytest.importorskip("optax")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOL = 1e-6
TIMEOUT = 600


def _metrics(kind: str, *overrides: str) -> dict:
    script = os.path.join(HERE, "jax_trainer_step_check.py")
    return run_json_script(script, ROOT, TIMEOUT, kind, *overrides)


def _check_equal(metrics: dict) -> None:
    assert metrics["devices"] == 2 and metrics["dtype"] == "float64"
    assert metrics["step_change"] > 1e-3  # the step moves the weights: the comparison can fail
    for key in ("params", "batch_stats", "opt_state", "loss_diff"):
        assert metrics[key] <= TOL, key


def test_pmap_two_device_step_equals_one_device_step(tmp_path_factory):
    _check_equal(run_once(tmp_path_factory, "jax_trainer_step_pmap", lambda: _metrics("pmap")))


@pytest.mark.slow
@pytest.mark.parametrize("statistic", ["anderson_darling", "extended_jarque_bera"])
def test_pmap_step_with_another_statistic(statistic):
    """loss.statistic in the JAX trainer: an EDF statistic (gathered over the device axis)
    and a moment statistic (psum of power sums), 2 devices == 1 device (observed 1e-10).
    Slow (~3 min of compilation each); the loss's own 2-device check is in
    tests/distributed/test_jax_spmd.py."""
    _check_equal(_metrics("pmap", f"loss.statistic={statistic}"))


@pytest.mark.slow
def test_shard_map_two_device_step_equals_one_device_step():
    _check_equal(_metrics("shard_map"))
