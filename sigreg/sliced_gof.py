"""Sliced goodness-of-fit to N(0, I): any univariate statistic averaged over projections,
and the corresponding test with a Monte Carlo p-value.

By the Cramér-Wold theorem ``x ~ N(0, I_K)`` iff every projection ``x . a`` on a unit vector
is N(0, 1); :func:`sliced_statistic` evaluates one of the simple-hypothesis univariate
statistics on the projections on the columns of ``directions`` (fixed, so numerics are
testable apart from randomness) and reduces over the slices. With
``statistic="epps_pulley"`` and ``reduction="mean"`` it equals
:func:`sigreg.sliced_epps_pulley` with its defaults.
"""

from __future__ import annotations

from typing import Any

from sigreg import sliced as _sliced
from sigreg._monte_carlo import monte_carlo_pvalue, with_nan_policy
from sigreg._namespace import pick_namespace, prepare_array
from sigreg._result import GoodnessOfFitResult, make_result
from sigreg._test_options import check_method, check_nan_policy, montecarlo_options
from sigreg._validation import check_choice, poison
from sigreg.edf import anderson_darling, cramer_von_mises, watson
from sigreg.moments import extended_jarque_bera, mean_variance
from sigreg.univariate import _finish, epps_pulley

DEFAULT_RESAMPLES = 999
STATISTICS = {
    "epps_pulley": epps_pulley,
    "extended_jarque_bera": extended_jarque_bera,
    "mean_variance": mean_variance,
    "cramer_von_mises": cramer_von_mises,
    "anderson_darling": anderson_darling,
    "watson": watson,
}


def _prepare(x: Any, directions: Any, statistic: Any, reduction: Any, backend: Any):
    check_choice(statistic, "statistic", tuple(STATISTICS))
    # the shape, dtype, finiteness and unit-norm checks of sliced_epps_pulley (default rule)
    xp, x, directions, out_dtype, reduction, _, checks = _sliced._setup(
        x, directions, reduction, 3.0, 17, "trapezoid", False, None, backend
    )
    return xp, x, directions, out_dtype, reduction, checks


def _evaluate(xp, x, directions, statistic, reduction, checks):
    """Reduced per-slice statistics of ``x`` (compute dtype), poisoned by failed checks."""
    per_slice = STATISTICS[statistic](_sliced._project(xp, x, directions), axis=-1)
    return poison(xp, _sliced._reduce(xp, per_slice, reduction), *checks)


def sliced_statistic(
    x: Any,
    directions: Any,
    /,
    *,
    statistic: str = "epps_pulley",
    reduction: str = "mean",
    backend: Any = None,
) -> Any:
    """A univariate N(0, 1) statistic of the projections ``x @ directions``, reduced over
    the slices.

    Parameters
    ----------
    x : array, shape (..., N, K)
        ``N`` samples of dimension ``K`` (leading axes are batch axes).
    directions : array, shape (K, M)
        Unit-norm columns, same namespace as ``x`` (cast to its dtype); e.g. from
        :func:`sigreg.sample_directions` with a seed and the training step.
    statistic : str, default "epps_pulley"
        The per-slice statistic, by the name of its function: ``"epps_pulley"`` (official
        LeJEPA grid), ``"extended_jarque_bera"``, ``"mean_variance"``,
        ``"cramer_von_mises"``, ``"anderson_darling"`` or ``"watson"``.
    reduction : {"mean", "sum", "none"}, default "mean"
        How to combine the ``M`` per-slice statistics.
    backend : str or namespace, optional
        Convert ``x`` and ``directions`` to this namespace first.

    Returns
    -------
    array
        Shape ``x.shape[:-2]`` (``"mean"``, ``"sum"``) or ``x.shape[:-2] + (M,)``
        (``"none"``), in the namespace, dtype and device of ``x``. Differentiable in ``x``
        by torch/JAX autodiff.

    Raises
    ------
    ValueError
        Unknown ``statistic``, wrong shapes, non-unit or non-finite directions, non-finite
        ``x``, too few samples for the statistic.
    TypeError
        ``x`` and ``directions`` from different namespaces, complex input.

    Examples
    --------
    >>> import numpy as np
    >>> from sigreg import sample_directions, sliced_epps_pulley, sliced_statistic
    >>> x = np.random.default_rng(0).standard_normal((512, 8))
    >>> a = sample_directions(8, 16, seed=0, step=0, backend="numpy")
    >>> bool(np.isclose(sliced_statistic(x, a), sliced_epps_pulley(x, a)))
    True
    >>> sliced_statistic(x, a, statistic="anderson_darling", reduction="none").shape
    (16,)
    """
    xp, x, directions, out_dtype, reduction, checks = _prepare(
        x, directions, statistic, reduction, backend
    )
    value = _evaluate(xp, x, directions, statistic, reduction, checks)
    return _finish(xp, value, 0, False, out_dtype)


def sliced_test(
    x: Any,
    directions: Any,
    /,
    *,
    statistic: str = "epps_pulley",
    method: str = "montecarlo",
    n_resamples: int | None = None,
    rng: Any = None,
    nan_policy: str = "propagate",
    backend: Any = None,
) -> GoodnessOfFitResult:
    """Sliced test of ``x ~ N(0, I_K)`` with a Monte Carlo p-value.

    The statistic is ``sliced_statistic(x, directions, statistic=statistic)`` (mean over
    slices). Its null distribution, for the given directions, is simulated with
    ``n_resamples`` samples of N(0, I_K) of the shape ``(N, K)``:
    ``p = (1 + #{T_r >= T}) / (R + 1)``. Runs under ``jax.jit`` (the null draws are made on
    the host); a NaN statistic gets a NaN p-value there too.

    Parameters
    ----------
    x : array or array-like, shape (..., N, K)
        Samples; a batch gets one p-value per batch element (all compared with the same
        simulated null).
    directions : array, shape (K, M)
        Unit-norm columns, as for :func:`sliced_statistic`.
    statistic : str, default "epps_pulley"
        The per-slice statistic, as for :func:`sliced_statistic`.
    method : {"montecarlo"}, default "montecarlo"
        The only method (the null law depends on the directions); accepted for the
        convention every ``*_test`` shares (``"monte-carlo"`` warns ``DeprecationWarning``).
    n_resamples : int, optional
        Number of simulated null statistics ``R``; default 999.
    rng : numpy.random.Generator or int, optional
        Source of the null samples (an int seeds a fresh ``numpy.random.default_rng``);
        default: the fixed seed 0.
    nan_policy : {"propagate", "omit", "raise"}, default "propagate"
        A sample holding NaN: NaN statistic and p-value, drop the points holding NaN, or
        raise ``ValueError``. Inside ``jax.jit`` NaN always propagates (``"omit"`` raises).
    backend : str or namespace, optional
        Convert ``x`` and ``directions`` to this namespace first.

    Returns
    -------
    GoodnessOfFitResult
        ``(statistic, pvalue)``, each of shape ``x.shape[:-2]`` in the namespace, dtype
        and device of ``x`` (numpy scalars for one numpy sample).

    Raises
    ------
    ValueError
        As for :func:`sliced_statistic` (except NaN, see ``nan_policy``), a bad option, a
        negative seed, or ``n_resamples < 1``.
    TypeError
        As for :func:`sliced_statistic`, or ``rng`` is not a Generator or an int.

    Examples
    --------
    >>> import numpy as np
    >>> from sigreg import sample_directions, sliced_test
    >>> rng = np.random.default_rng(0)
    >>> a = sample_directions(4, 8, seed=0, backend="numpy")
    >>> res = sliced_test(rng.standard_normal((256, 4)), a, n_resamples=99, rng=1)
    >>> bool(res.pvalue > 0.01)
    True
    >>> stat, p = sliced_test(rng.uniform(-2, 2, (256, 4)), a, statistic="watson",
    ...                       n_resamples=99, rng=1)
    >>> float(p)  # no null draw exceeds the statistic: 1 / (R + 1)
    0.01
    """
    check_method(method, ("montecarlo",))
    nan_policy = check_nan_policy(nan_policy)
    resample = montecarlo_options(n_resamples, rng, DEFAULT_RESAMPLES)
    xp = pick_namespace(x, "x", backend)
    x, out_dtype = prepare_array(x, "x", xp, convert_input=backend is not None)
    zeroed = xp.where(xp.isnan(x), xp.zeros_like(x), x)  # validate all but NaN (nan_policy)
    xp, _, directions, _, reduction, checks = _prepare(
        zeroed, directions, statistic, "mean", backend
    )

    def evaluate(z: Any) -> Any:
        return _evaluate(xp, z, directions, statistic, reduction, checks)

    def run(sample: Any) -> tuple[Any, Any]:
        return monte_carlo_pvalue(xp, evaluate, sample, resample)

    result = with_nan_policy(xp, x, nan_policy, run)
    return make_result(xp, *result, out_dtype)
