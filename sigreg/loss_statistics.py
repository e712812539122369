"""The per-slice statistic of the LeJEPA regulariser: Epps-Pulley or another N(0, 1) statistic,
normalised so that ``lamb`` means the same for every choice.

:func:`sigreg.lejepa_loss` (``statistic=``) slices the embeddings along the same random
directions for every statistic and averages the per-slice values. The Epps-Pulley value is
used as it is; any other statistic ``T`` of a slice of ``N`` samples (the *global* batch with a
collective) enters the loss as

    ``T * E_0[EP_grid] / E_0[T; N]``,

with ``E_0`` the expectation under N(0, 1): ``E_0[EP_grid]`` is the null mean of the
Epps-Pulley statistic on the quadrature grid in use (1.052464 on the official grid,
:func:`sigreg.null_expectation`) and ``E_0[T; N]`` the null mean of ``T`` at sample size
``N`` (:func:`null_mean`, exact at every ``N``). So every statistic is ``~1.05`` on Gaussian
embeddings and ``lamb`` weighs "one null mean of SIGReg" whatever the statistic.

Cross-rank reduction (``collective=``): the moment statistics reduce power sums
(``all_reduce_sum`` of the sums of ``z`` and then of ``(z - mean)^k``, ``k = 2, 3, 4``; ranks
may hold unequal numbers of samples); the EDF statistics need the global sorted sample of
each slice and gather the projections with ``collective.all_gather`` (equal per-rank
batches), see :mod:`sigreg.collective`. Every rank then holds the statistic of the global
batch.

Gradients: torch and JAX differentiate the forward (:func:`forward`) through autodiff (the
collective must be differentiable); :func:`forward_vjp` gives the analytic pullback for
numpy/cupy (with a collective: the gradient of the global statistic with respect to this
rank's samples).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

from array_api_compat import is_torch_array

from sigreg._special import log_ndtr_pair, ndtr
from sigreg.collective import all_gather_checked, check_gather, reduce_sums
from sigreg.edf import _anderson_darling, _cramer_von_mises, _watson

__all__ = ["EDF_STATISTICS", "LOSS_STATISTICS", "check_statistic", "forward", "forward_vjp"]

LOSS_STATISTICS = (
    "epps_pulley",
    "cramer_von_mises",
    "anderson_darling",
    "watson",
    "extended_jarque_bera",
    "mean_variance",
)
"""The choices of ``statistic=`` (the first is the default, SIGReg's own)."""
EDF_STATISTICS = ("cramer_von_mises", "anderson_darling", "watson")
"""The statistics that need each slice's global sorted sample (``collective.all_gather``)."""
_MOMENT_STATISTICS = ("extended_jarque_bera", "mean_variance")
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def check_statistic(statistic: Any, engine: Any) -> str:
    """Validate ``statistic``; ``engine`` (an Epps-Pulley option) must stay ``"auto"`` otherwise.

    Raises
    ------
    ValueError
        An unknown statistic, or a non-default ``engine`` with a statistic other than
        ``"epps_pulley"``.
    """
    if not isinstance(statistic, str) or statistic not in LOSS_STATISTICS:
        raise ValueError(f"statistic must be one of {list(LOSS_STATISTICS)}, got {statistic!r}")
    if statistic != "epps_pulley" and engine != "auto":
        raise ValueError(
            f"engine={engine!r} is an option of statistic='epps_pulley' only; "
            f"statistic={statistic!r} needs engine='auto'"
        )
    return statistic


def null_mean(statistic: str, n: Any) -> Any:
    """Expectation of the statistic of ``n`` i.i.d. N(0, 1) samples, exact at every ``n``.

    ``n`` may be a number or an array (the global count of a collective). Cramér-von Mises
    ``1/6``, Anderson-Darling ``1`` and Watson ``1/12`` at every ``n`` (``E (F_n - Phi)^2 =
    Phi (1 - Phi) / n``; Watson subtracts ``n Var(mean u) = 1/12``); mean/variance
    ``2 - 1/(2n)`` (``n m^2 ~ chi2(1)``, ``n m_2 ~ chi2(n - 1)``); Extended Jarque-Bera adds
    the Jarque-Bera mean ``n/6 (E g1^2 + E (b2 - 3)^2 / 4)`` from the exact normal moments
    ``E g1^2 = 6(n-2)/((n+1)(n+3))``, ``E b2 = 3(n-1)/(n+1)``,
    ``Var b2 = 24n(n-2)(n-3)/((n+1)^2 (n+3)(n+5))`` (Pearson 1930); it tends to 4.
    """
    if statistic == "cramer_von_mises":
        return 1.0 / 6.0
    if statistic == "anderson_darling":
        return 1.0
    if statistic == "watson":
        return 1.0 / 12.0
    mv = 2.0 - 0.5 / n
    if statistic == "mean_variance":
        return mv
    skew2 = 6.0 * (n - 2.0) / ((n + 1.0) * (n + 3.0))
    var_b2 = 24.0 * n * (n - 2.0) * (n - 3.0) / ((n + 1.0) ** 2 * (n + 3.0) * (n + 5.0))
    excess2 = var_b2 + 36.0 / (n + 1.0) ** 2
    return mv + (n / 6.0) * (skew2 + 0.25 * excess2)


# ---------------------------------------------------------------------- moment statistics
def _moments(xp: Any, z: Any, collective: Any) -> tuple[Any, Any, Any, Any]:
    """Global ``(count, mean, centred samples, [m2, m3, m4])`` of each slice (last axis)."""
    n = z.shape[-1]
    total = xp.sum(z, axis=-1, keepdims=True)
    if collective is None:
        count: Any = float(n)
    else:
        (total,), counts = reduce_sums(collective, xp, [total], n)
        count = counts[(0,) * counts.ndim]
    mean = total / count
    centred = z - mean
    c2 = centred * centred
    powers = [xp.sum(c2, axis=-1), xp.sum(c2 * centred, axis=-1), xp.sum(c2 * c2, axis=-1)]
    if collective is not None:
        (stacked,), _ = reduce_sums(collective, xp, [xp.stack(powers, axis=-1)], n)
        powers = [stacked[..., k] for k in range(3)]
    return count, xp.squeeze(mean, axis=-1), centred, [p / count for p in powers]


def _moment_statistic(xp: Any, statistic: str, count: Any, mean: Any, m: list) -> tuple[Any, list]:
    """The statistic and its partial derivatives in ``(mean, m2, m3, m4)``.

    The Jarque-Bera part divides by ``m2^4``: ``m2`` is floored there at
    ``smallest_normal^(1/4)`` (~1e-9.5 in float32), so a collapsed slice gives a large
    finite loss (its moments ~0: ``~0.375 N``) instead of NaN.
    """
    m2, m3, m4 = m
    value = count * (mean * mean) + 0.5 * count * (m2 - 1.0) ** 2
    partial = [2.0 * count * mean, count * (m2 - 1.0), 0.0 * m3, 0.0 * m4]
    if statistic == "extended_jarque_bera":
        m2 = xp.clip(m2, min=float(xp.finfo(m2.dtype).smallest_normal) ** 0.25)
        m2c = m2 * m2 * m2
        excess = m4 / (m2 * m2) - 3.0
        value = value + (count / 6.0) * (m3 * m3 / m2c + 0.25 * excess * excess)
        partial[1] = partial[1] - (count / 6.0) * (3.0 * m3 * m3 / (m2c * m2) + excess * m4 / m2c)
        partial[2] = count * m3 / (3.0 * m2c)
        partial[3] = count * excess / (12.0 * m2 * m2)
    return value, partial


def _moment_gradient(xp: Any, count: Any, centred: Any, m: list, partial: list) -> Any:
    """``dT/dz_j = (T_mean + 2 T_2 c_j + 3 T_3 (c_j^2 - m2) + 4 T_4 (c_j^3 - m3)) / N``."""
    t_mean, t2, t3, t4 = (xp.expand_dims(p, axis=-1) for p in partial)
    m2, m3 = (xp.expand_dims(v, axis=-1) for v in m[:2])
    c2 = centred * centred
    inner = t_mean + 2.0 * t2 * centred + 3.0 * t3 * (c2 - m2) + 4.0 * t4 * (c2 * centred - m3)
    return inner / count


# ------------------------------------------------------------------------- EDF statistics
def _torch_ndtr(xp: Any, x: Any) -> Any:
    return 0.5 * sys.modules["torch"].special.erfc(-math.sqrt(0.5) * x)


def _torch_log_ndtr_pair(xp: Any, x: Any) -> tuple[Any, Any]:
    special = sys.modules["torch"].special
    return special.log_ndtr(x), special.log_ndtr(-x)


def _edf_value(xp: Any, statistic: str, z: Any) -> Any:
    """The EDF statistic of every slice (last axis).

    On torch tensors ``Phi`` and ``log Phi`` are the native ``torch.special`` functions
    (absolute error ~1e-16 in float64, what these statistics need; the library's
    array-API versions, ~30 eager operations each, made the statistic ~4x slower than
    Epps-Pulley in a training step); elsewhere the library's (:mod:`sigreg._special`).
    """
    native = is_torch_array(z)
    if statistic == "anderson_darling":
        return _anderson_darling(
            xp, z, log_cdf_pair=_torch_log_ndtr_pair if native else log_ndtr_pair
        )
    kernel = _cramer_von_mises if statistic == "cramer_von_mises" else _watson
    return kernel(xp, z, cdf=_torch_ndtr if native else ndtr)


def _gather(xp: Any, z: Any, collective: Any) -> Any:
    """Every rank's ``z`` (``(..., n)``) concatenated along the last axis in rank order."""
    stacked = all_gather_checked(collective, z)
    return xp.concat([stacked[r, ...] for r in range(stacked.shape[0])], axis=-1)


def _edf_gradient(xp: Any, statistic: str, z: Any) -> Any:
    """Gradient of the EDF statistic of every slice (last axis) with respect to ``z``.

    Each sample's derivative depends on its value and its rank ``i`` in the slice (stable
    ``argsort``: tied samples get consecutive ranks, as the sort's own gradient does).
    """
    n = z.shape[-1]
    rank = xp.astype(xp.argsort(xp.argsort(z, axis=-1, stable=True), axis=-1), z.dtype) + 1.0
    log_density = -0.5 * (z * z) - _LOG_SQRT_2PI
    if statistic == "anderson_darling":
        log_lower, log_upper = log_ndtr_pair(xp, z)
        lower = (2.0 * rank - 1.0) * xp.exp(log_density - log_lower)
        upper = (2.0 * (n - rank) + 1.0) * xp.exp(log_density - log_upper)
        return (upper - lower) / n
    u = ndtr(xp, z)
    gap = u - (2.0 * rank - 1.0) / (2.0 * n)
    if statistic == "watson":
        gap = gap - (xp.mean(u, axis=-1, keepdims=True) - 0.5)
    return 2.0 * gap * xp.exp(log_density)


# ----------------------------------------------------------------------------- the API
def _raw_forward(xp: Any, z: Any, statistic: str, collective: Any, with_gradient: bool):
    """Unnormalised per-slice values, the global count, and (optionally) the local gradient."""
    if statistic in _MOMENT_STATISTICS:
        count, mean, centred, m = _moments(xp, z, collective)
        value, partial = _moment_statistic(xp, statistic, count, mean, m)
        gradient = _moment_gradient(xp, count, centred, m, partial) if with_gradient else None
        return value, count, gradient
    if collective is None:
        full, count = z, float(z.shape[-1])
    else:
        full = _gather(xp, z, collective)
        count = float(full.shape[-1])
    value = _edf_value(xp, statistic, full)
    if not with_gradient:
        return value, count, None
    gradient = _edf_gradient(xp, statistic, full)
    if collective is not None:
        n, rank = z.shape[-1], collective.rank
        gradient = gradient[..., rank * n : (rank + 1) * n]
    return value, count, gradient


def forward(xp: Any, z: Any, statistic: str, scale: float, collective: Any = None) -> Any:
    """Normalised per-slice statistics of ``z`` (samples on the last axis).

    Parameters
    ----------
    xp : namespace
        Array namespace of ``z``.
    z : array, shape (..., M, n)
        Projections, samples on the last axis (this rank's with a collective).
    statistic : str
        One of :data:`LOSS_STATISTICS` other than ``"epps_pulley"`` (the engine's).
    scale : float
        The Epps-Pulley null mean of the grid in use (:func:`sigreg.null_expectation`).
    collective : Collective, optional
        Reduce over ranks: the statistic of the global batch. The EDF statistics need
        ``collective.all_gather``.

    Returns
    -------
    array, shape (..., M)
        ``T * scale / null_mean(T, N)`` with ``N`` the global sample count. Differentiable
        by autodiff (with a differentiable collective).
    """
    if statistic in EDF_STATISTICS and collective is not None:
        check_gather(collective, statistic, need_rank=False)
    value, count, _ = _raw_forward(xp, z, statistic, collective, False)
    return value * (scale / null_mean(statistic, count))


def forward_vjp(
    xp: Any, z: Any, statistic: str, scale: float, collective: Any = None
) -> tuple[Any, Callable[[Any], Any]]:
    """:func:`forward` and its analytic pullback.

    Returns
    -------
    values : array, shape (..., M)
        As :func:`forward`.
    pullback : callable
        ``pullback(cotangent)`` with ``cotangent`` of shape ``(..., M)`` returns the gradient
        of ``sum(cotangent * values)`` with respect to ``z`` (this rank's samples; with an
        EDF statistic the collective must also have an integer ``rank``).
    """
    if statistic in EDF_STATISTICS and collective is not None:
        check_gather(collective, statistic, need_rank=True)
    value, count, gradient = _raw_forward(xp, z, statistic, collective, True)
    factor = scale / null_mean(statistic, count)

    def pullback(cotangent: Any) -> Any:
        return xp.expand_dims(cotangent * factor, axis=-1) * gradient

    return value * factor, pullback
