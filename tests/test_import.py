"""Importing sigreg must not import any array framework; public API surface."""

from __future__ import annotations

import subprocess
import sys

import pytest

PUBLIC = [
    "epps_pulley",
    "epps_pulley_vjp",
    "sliced_epps_pulley",
    "sliced_epps_pulley_vjp",
    "sample_directions",
    "sigreg",
    "lejepa_loss",
    "Collective",
]


def test_import_is_lazy():
    code = (
        "import sys, sigreg; "
        "print([m for m in ('torch','jax','cupy','array_api_strict') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_numpy_call_stays_lazy():
    """Using sigreg on NumPy arrays does not pull in other frameworks (or SciPy) either."""
    code = (
        "import sys, numpy as np, sigreg; "
        "x = np.random.default_rng(0).standard_normal((16, 3)); "
        "sigreg.epps_pulley(x); sigreg.sigreg(x, num_slices=4); "
        "sigreg.epps_pulley_vjp(x)[1](np.ones(3)); "
        "sigreg.epps_pulley_test(x); sigreg.epps_pulley_test(x, standardize=False); "
        "sigreg.epps_pulley_test(x, method='montecarlo', n_resamples=9, rng=0); "
        "print([m for m in ('torch','jax','cupy','array_api_strict','scipy') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_public_api():
    sigreg = pytest.importorskip("sigreg")
    for name in PUBLIC:
        assert hasattr(sigreg, name), name
        assert name in sigreg.__all__, name
    assert all(isinstance(n, str) for n in sigreg.__all__)
    for name in sigreg.__all__:
        assert hasattr(sigreg, name), name
    assert callable(getattr(sigreg.Collective, "all_reduce_sum", None))
    assert hasattr(sigreg, "quadrature") and callable(sigreg.quadrature.trapezoid_rule)
