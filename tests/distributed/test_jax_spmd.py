"""JAX data parallelism on 2 simulated CPU devices: pmap and shard_map vs one device.

The checks run in a subprocess (``jax_spmd_check.py``) because the device count flag must
be set before JAX is imported. Every metric is an absolute error against the single-device
loss or parameter gradient on the concatenated batch, in float64.
"""

from __future__ import annotations

import os

import pytest
from helpers import run_json_script, run_once

pytest.importorskip("jax")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOL = 1e-6  # the brief's tolerance; observed errors are ~1e-15
TIMEOUT = 300


def _run_script():
    return run_json_script(os.path.join(HERE, "jax_spmd_check.py"), ROOT, TIMEOUT)


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    """The two-device script's JSON metrics (the script runs once per session)."""
    return run_once(tmp_path_factory, "jax_spmd_metrics", _run_script)


def test_two_devices_and_sharded_batch(metrics):
    assert metrics["devices"] == 2
    assert metrics["local_batch"] == 8  # each device holds half of N = 16


STAT_NAMES = [
    "stat_cramer_von_mises",
    "stat_anderson_darling",
    "stat_watson",
    "stat_extended_jarque_bera",
    "stat_mean_variance",
]


def test_reference_equals_core(metrics):
    # the one-device custom_vjp values equal the numpy core (given / PCG64 directions)
    assert metrics["ref_lejepa_vs_core"] <= 1e-10
    assert metrics["ref_sig_pcg_vs_core"] <= 1e-10
    for name in STAT_NAMES:  # loss.statistic: JAX autodiff path == numpy core
        assert metrics[f"ref_{name}_vs_core"] <= 1e-10, name


def test_gradients_are_not_trivial(metrics):
    for name in ("lejepa", "sig_key", "sig_pcg", *STAT_NAMES):
        assert metrics[f"ref_{name}_grad_norm"] > 0.1, name
    # one device's own gradient differs from the full-batch gradient, so the averaged
    # gradient comparisons below are able to fail
    assert metrics["pmap_own_grad_rel_diff"] > 1e-2


@pytest.mark.parametrize("name", ["lejepa", "sig_key", *STAT_NAMES])
def test_pmap_loss_equals_concatenated_batch(metrics, name):
    assert metrics[f"pmap_{name}_value"] <= TOL
    assert metrics["pmap_per_device_value_spread"] <= TOL


@pytest.mark.parametrize("name", ["lejepa", "sig_key", *STAT_NAMES])
def test_pmap_pmean_gradient_equals_single_device(metrics, name):
    assert metrics[f"pmap_{name}_grad"] <= TOL


@pytest.mark.parametrize("name", ["lejepa", "sig_key", "sig_pcg", *STAT_NAMES])
def test_shard_map_loss_equals_concatenated_batch(metrics, name):
    assert metrics[f"shmap_{name}_value"] <= TOL


@pytest.mark.parametrize("name", ["lejepa", "sig_key", "sig_pcg", *STAT_NAMES])
def test_shard_map_gradient_is_already_summed(metrics, name):
    # check_vma=True: replicated-parameter gradients come back summed; no pmean applied
    assert metrics[f"shmap_{name}_grad"] <= TOL


def test_shard_map_without_vma_needs_pmean(metrics):
    # check_vma=False behaves like pmap: pmean of per-device gradients
    assert metrics["shmap_novma_lejepa_value"] <= TOL
    assert metrics["shmap_novma_lejepa_grad"] <= TOL
