"""Power of the Epps-Pulley tests against SciPy's normality tests (alpha = 0.05).

Every alternative is scaled to mean 0 and variance 1 (by its population moments), so the
simple tests (against exactly N(0, 1)) see only the shape, except the two rows that shift
or scale a normal law. Tests:

* ``EP comp.``: ``sigreg.epps_pulley_test(x)`` (composite, unknown mean and variance);
* ``EP simple``: ``sigreg.epps_pulley_test(x, standardize=False)`` (exactly N(0, 1));
* ``shapiro``, ``anderson`` (``method="interpolate"``), ``normaltest``, ``jarque_bera``: the
  composite tests of ``scipy.stats``;
* ``CvM simple``: ``scipy.stats.cramervonmises(x, "norm")``, the simple Cramer-von Mises test
  against N(0, 1) (SciPy has no composite one), the counterpart of ``EP simple``.

Power = rejection rate over ``--reps`` samples; its Monte Carlo SE is at most
``0.5 / sqrt(reps)`` (printed). Composite tests cannot see a shift or a scale change: their
rate on those rows is their size, about 0.05.

Usage::

    python benchmarks/power_study.py               # reps = 1000, N = 50 and 200
    python benchmarks/power_study.py --reps 200
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings

import numpy as np
import scipy.stats as st

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sigreg  # noqa: E402

ALPHA = 0.05


def _standard(draw, mean, var):
    return lambda rng, size: (draw(rng, size) - mean) / math.sqrt(var)


def _mixture(p, mu, sd):
    """``p N(mu, sd^2) + (1 - p) N(0, 1)``."""

    def draw(rng, size):
        pick = rng.random(size) < p
        return np.where(pick, mu + sd * rng.standard_normal(size), rng.standard_normal(size))

    mean = p * mu
    var = p * (sd**2 + mu**2) + (1 - p) - mean**2
    return _standard(draw, mean, var)


ALTERNATIVES = {
    "t5": _standard(lambda r, s: r.standard_t(5, s), 0.0, 5.0 / 3.0),
    "Laplace": _standard(lambda r, s: r.laplace(size=s), 0.0, 2.0),
    "uniform": _standard(lambda r, s: r.uniform(size=s), 0.5, 1.0 / 12.0),
    "chi2(4)": _standard(lambda r, s: r.chisquare(4, s), 4.0, 8.0),
    "lognormal": _standard(
        lambda r, s: r.lognormal(size=s), math.exp(0.5), (math.e - 1.0) * math.e
    ),
    "mix: 0.5 N(3,1)": _mixture(0.5, 3.0, 1.0),
    "mix: 0.1 N(0,9)": _mixture(0.1, 0.0, 3.0),
    "N(0.3, 1)": lambda r, s: 0.3 + r.standard_normal(s),
    "N(0, 1.3^2)": lambda r, s: 1.3 * r.standard_normal(s),
}


def _anderson_rejects(column: np.ndarray) -> bool:
    return bool(st.anderson(column, method="interpolate").pvalue <= ALPHA)


def power(samples: np.ndarray) -> dict[str, float]:
    """Rejection rates of every test for the columns of ``samples`` (shape ``(N, reps)``)."""
    rates = {
        "EP comp.": sigreg.epps_pulley_test(samples).pvalue,
        "EP simple": sigreg.epps_pulley_test(samples, standardize=False).pvalue,
        "shapiro": st.shapiro(samples, axis=0).pvalue,
        "normaltest": st.normaltest(samples, axis=0).pvalue,
        "jarque_bera": st.jarque_bera(samples, axis=0).pvalue,
        "CvM simple": np.asarray(st.cramervonmises(samples, "norm", axis=0).pvalue),
    }
    out = {name: float(np.mean(np.asarray(p) <= ALPHA)) for name, p in rates.items()}
    out["anderson"] = float(np.mean([_anderson_rejects(c) for c in samples.T]))
    return out


ORDER = ["EP comp.", "shapiro", "anderson", "normaltest", "jarque_bera", "EP simple", "CvM simple"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # scipy's small-sample / p-value-range notes
    print(f"alpha = {ALPHA}, reps = {args.reps}, Monte Carlo SE <= {0.5 / args.reps**0.5:.3f}")
    print("| alternative | N | " + " | ".join(ORDER) + " |")
    print("|---|---|" + "---|" * len(ORDER))
    rows = [("N(0, 1) (size)", lambda r, s: r.standard_normal(s))] + list(ALTERNATIVES.items())
    for n in args.sizes:
        for name, draw in rows:
            rng = np.random.default_rng([args.seed, n, len(name)])
            rates = power(draw(rng, (n, args.reps)))
            print(
                f"| {name} | {n} | " + " | ".join(f"{rates[k]:.3f}" for k in ORDER) + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
