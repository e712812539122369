"""One JAX trainer step on 2 simulated devices equals one step on 1 device (float64).

The check runs in a subprocess (``jax_trainer_step_check.py``) because the CPU device count
must be set before JAX starts. The global batch, the augmentation keys (per dataset index)
and the SIGReg directions (per step) are the same in every run; batch norm is synchronised
and the LeJEPA statistics are reduced over the device axis, so the states agree to rounding.
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


def _run_script():
    return run_json_script(os.path.join(HERE, "jax_trainer_step_check.py"), ROOT, TIMEOUT)


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    """The script's JSON metrics (run once per session)."""
    return run_once(tmp_path_factory, "jax_trainer_step_metrics", _run_script)


def test_runs_in_float64_on_two_devices(metrics):
    assert metrics["devices"] == 2 and metrics["dtype"] == "float64"
    assert metrics["step_change"] > 1e-3  # the step moves the weights: the comparison can fail


@pytest.mark.parametrize("kind", ["pmap2", "shard2"])
def test_two_device_step_equals_one_device_step(metrics, kind):
    assert metrics[f"{kind}_params"] <= TOL
    assert metrics[f"{kind}_batch_stats"] <= TOL


def test_optimizer_state_and_losses_agree(metrics):
    assert metrics["pmap2_opt_state"] <= TOL
    assert metrics["loss_diff"] <= TOL
