"""Agreement of the EDF tests' p-values with SciPy and with R's ``nortest`` formulas.

For N in ``--sizes`` and ``--samples`` samples per N drawn from a mix of laws (normal,
t_5, logistic, uniform, slightly skewed), the script compares:

* simple Kolmogorov-Smirnov (Stephens' modified D, Kolmogorov's law) with
  ``scipy.stats.kstest(x, "norm")`` (exact finite-N law);
* simple Cramér-von Mises (Stephens' modified W^2, limiting law) with
  ``scipy.stats.cramervonmises(x, "norm")`` (Csörgő-Faraway finite-N law);
* composite Anderson-Darling with ``scipy.stats.anderson(x, "norm", method="interpolate")``
  (interpolated in Stephens' table; compared where it is not clipped, 0.01 < p < 0.15) and
  with R's
  ``nortest::ad.test`` p-value formula;
* composite Cramér-von Mises with ``nortest::cvm.test``'s formula;
* composite Watson / every test with its own Monte Carlo p-value (exact null, 20000 draws).

Statistics must agree to rounding (they are the same numbers); the table prints the largest
absolute p-value difference, overall and where the reference p is below 0.1.

Usage::

    python benchmarks/edf_agreement.py                  # N = 10 20 50 200, 200 samples each
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from scipy import stats

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sigreg  # noqa: E402


def nortest_ad(a: float, n: int) -> float:
    """``nortest::ad.test``: the modified A^2 and Stephens' piecewise exponential fit."""
    aa = (1 + 0.75 / n + 2.25 / n**2) * a
    if aa < 0.2:
        return 1 - np.exp(-13.436 + 101.14 * aa - 223.73 * aa**2)
    if aa < 0.34:
        return 1 - np.exp(-8.318 + 42.796 * aa - 59.938 * aa**2)
    if aa < 0.6:
        return np.exp(0.9177 - 4.279 * aa - 1.38 * aa**2)
    if aa < 10:
        return np.exp(1.2937 - 5.709 * aa + 0.0186 * aa**2)
    return 3.7e-24


def nortest_cvm(w: float, n: int) -> float:
    """``nortest::cvm.test``: the modified W^2 and Stephens' piecewise exponential fit."""
    ww = (1 + 0.5 / n) * w
    if ww < 0.0275:
        return 1 - np.exp(-13.953 + 775.5 * ww - 12542.61 * ww**2)
    if ww < 0.051:
        return 1 - np.exp(-5.903 + 179.546 * ww - 1515.29 * ww**2)
    if ww < 0.092:
        return np.exp(0.886 - 31.62 * ww + 10.897 * ww**2)
    if ww < 1.1:
        return np.exp(1.111 - 34.242 * ww + 12.832 * ww**2)
    return 7.37e-10


def samples(rng: np.random.Generator, n: int, count: int) -> list[np.ndarray]:
    laws = [
        lambda: rng.standard_normal(n),
        lambda: rng.standard_t(5, n),
        lambda: rng.logistic(size=n),
        lambda: rng.uniform(-2, 2, n),
        lambda: rng.gamma(20.0, size=n) - 20.0,
        lambda: 1.2 * rng.standard_normal(n) + 0.2,
    ]
    return [laws[i % len(laws)]() for i in range(count)]


def compare(rows: list[tuple[str, float, float, float]]) -> tuple[float, float, float]:
    stat_diff = max(abs(r[1]) for r in rows)
    diff = np.array([abs(r[2] - r[3]) for r in rows])
    ref = np.array([r[3] for r in rows])
    low = diff[ref < 0.1]
    return stat_diff, float(diff.max()), float(low.max()) if low.size else float("nan")


def pairs(x: np.ndarray, n: int) -> dict[str, tuple[float, float, float]]:
    """``{comparison: (statistic difference, our p, reference p)}`` for one sample."""
    out = {}
    ks = sigreg.kolmogorov_smirnov_test(x, standardize=False)
    ref = stats.kstest(x, "norm")
    out["KS simple vs scipy.kstest"] = (ks.statistic - ref.statistic, ks.pvalue, ref.pvalue)
    cvm = sigreg.cramer_von_mises_test(x, standardize=False)
    ref = stats.cramervonmises(x, "norm")
    out["CvM simple vs scipy.cramervonmises"] = (
        cvm.statistic - ref.statistic,
        cvm.pvalue,
        ref.pvalue,
    )
    ad = sigreg.anderson_darling_test(x)
    ref = stats.anderson(x, "norm", method="interpolate")
    if 0.01 < ref.pvalue < 0.15:  # inside SciPy's table (clipped outside)
        out["AD composite vs scipy.anderson (interpolate, 0.01 < p < 0.15)"] = (
            ad.statistic - ref.statistic,
            ad.pvalue,
            ref.pvalue,
        )
    out["AD composite vs nortest::ad.test"] = (0.0, ad.pvalue, nortest_ad(ad.statistic, n))
    cvm = sigreg.cramer_von_mises_test(x)
    out["CvM composite vs nortest::cvm.test"] = (0.0, cvm.pvalue, nortest_cvm(cvm.statistic, n))
    return out


def monte_carlo_pairs(x: np.ndarray) -> dict[str, tuple[float, float, float]]:
    out = {}
    for name in ("watson_test", "anderson_darling_test", "kolmogorov_smirnov_test"):
        test = getattr(sigreg, name)
        for standardize in (False, True):
            asym = test(x, standardize=standardize)
            mc = test(x, standardize=standardize, method="montecarlo", n_resamples=20000, rng=1)
            label = f"{name} {'composite' if standardize else 'simple'} vs Monte Carlo"
            out[label] = (0.0, asym.pvalue, mc.pvalue)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 50, 200])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--mc-samples", type=int, default=12)
    args = parser.parse_args()
    print("| comparison | N | max |Δ statistic| | max |Δp| | max |Δp| where p_ref < 0.1 |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(2026)
    for n in args.sizes:
        rows: dict[str, list] = {}
        for i, x in enumerate(samples(rng, n, args.samples)):
            found = pairs(x, n)
            if i < args.mc_samples:
                found.update(monte_carlo_pairs(x))
            for key, (d, p, q) in found.items():
                rows.setdefault(key, []).append((key, float(d), float(p), float(q)))
        for key, values in rows.items():
            s, full, low = compare(values)
            print(f"| {key} | {n} | {s:.1e} | {full:.4f} | {low:.4f} |", flush=True)


if __name__ == "__main__":
    main()
