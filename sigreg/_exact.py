"""The untruncated Epps-Pulley statistic (weight ``w = phi``) in closed form.

``EP = sqrt(2 pi) [ P / N - sqrt(2) sum_j exp(-x_j^2 / 4) + N / sqrt(3) ]`` with the
Gaussian-kernel pair sum ``P = sum_jk exp(-(x_j - x_k)^2 / 2)``. Two evaluations of ``P``,
both exact to rounding and neither forming an ``N x N`` matrix:

* :func:`series_pair_sum`, ``O(N * terms)`` time and ``O(N)`` memory: the positive-term
  series ``P = sum_m (1/m!) (sum_j x_j^m exp(-x_j^2/2))^2`` of the centred samples, cut
  where a proven bound puts the remainder below rounding (:func:`series_terms`);
* :func:`pair_sum`, ``O(N^2)`` time: row blocks, memory ``O(N * block)`` with
  ``block * N`` capped by ``PAIR_BUDGET`` elements.

:func:`fast_pair_sum` picks the series whenever it is cheaper (concentrated samples and
``N`` beyond a few hundred). For spread-out samples (far-apart clusters, heavy tails) with
``N >= BOXES_FROM`` it sorts them into the occupied boxes of width 12 and sums series over
neighbouring pairs of boxes (:func:`boxed_pair_sum`, ``O(N log N)`` plus ``O(N * terms)``
time and ``O(N)`` memory however far apart the samples are); small ``N``
and traces such as ``jax.jit`` (where the number of terms cannot be chosen) use the blocks.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from sigreg._namespace import _to_host, device_of, is_traced

SQRT_2PI = math.sqrt(2.0 * math.pi)
PAIR_BUDGET = 1 << 22  # elements of one (..., block, N) kernel block
SERIES_CHUNK = 1 << 15  # samples per cache-resident chunk of the series
BOX_WIDTH = 12.0  # boxed pair sum: samples two boxes apart interact below exp(-72)
BOXES_FROM = 4096  # below this N the direct pair sum is as cheap as the boxes


def _host_float(value: Any) -> float:
    """``float(value)`` for a host-side decision (which method, how many terms): the value
    may carry an autograd graph, which this read does not use (torch would warn)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
        return float(value)


def _block_rows(z: Any) -> int:
    batch = math.prod(z.shape[:-1])
    return max(1, PAIR_BUDGET // max(1, batch * z.shape[-1]))


def pair_sum(xp: Any, z: Any) -> Any:
    """``sum_jk exp(-(z_j - z_k)^2 / 2)`` over the last axis, using the kernel's symmetry."""
    n = z.shape[-1]
    block = _block_rows(z)
    total = None
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = xp.expand_dims(z[..., start:stop], axis=-1)
        cols = xp.expand_dims(z[..., start:], axis=-2)
        d = rows - cols
        kernel = xp.exp(-0.5 * (d * d))
        width = stop - start
        part = xp.sum(kernel[..., :width], axis=(-2, -1))
        if stop < n:
            part = part + 2.0 * xp.sum(kernel[..., width:], axis=(-2, -1))
        total = part if total is None else total + part
    return total


def _log_poisson_tail(lam: float, k: int) -> float:
    """Chernoff bound on ``log P(Poisson(lam) >= k)`` for ``k > lam``."""
    return -lam + k * (1.0 + math.log(lam / k)) if lam > 0 else -math.inf


def series_terms(half_range: float, n: int, lower: float, eps: float) -> int | None:
    """Number of series terms after which the remainder is below ``eps * lower``.

    With ``|x_j| <= a`` (``a = half_range``) every summand obeys
    ``|x^m exp(-x^2/2)| / sqrt(m!) <= a^m exp(-a^2/2) / sqrt(m!)`` once ``m >= a^2``, so the
    remainder after ``M`` terms is at most ``N^2 P(Poisson(a^2) >= M)`` (bounded by
    Chernoff); ``lower`` is a lower bound on the pair sum. Returns ``None`` when more than
    ``N / 4`` terms would be needed (the blocked pair sum is then as cheap).
    """
    lam = half_range * half_range
    budget = math.log(eps * lower) - 2.0 * math.log(n)
    k = max(1, math.ceil(lam))
    while _log_poisson_tail(lam, k) > budget:
        k += 1
        if k > n // 4:
            return None
    return k


def series_pair_sum(xp: Any, x: Any, q: Any, terms: int, half_range: float) -> Any:
    """``sum_jk exp(-(x_j - x_k)^2 / 2)`` over the last axis from the first ``terms`` terms.

    ``P = sum_m (c_m S_m)^2``, ``S_m = sum_j u_j^m exp(-x_j^2/2)`` with ``u = x / a``,
    ``c_m = a^m / sqrt(m!)`` (the scaling keeps every power in range) and ``q`` holding
    ``exp(-x^2/2)``. Even and odd orders share one running power ``u^(2k) exp(-x^2/2)``;
    the samples are processed in cache-sized chunks, all orders per chunk.
    """
    a = half_range if half_range > 0 else 1.0
    orders = np.arange(terms)
    coef = np.exp(orders * math.log(a) - 0.5 * np.array([math.lgamma(m + 1.0) for m in orders]))
    coef = xp.asarray(coef, dtype=x.dtype, device=device_of(x))
    n = x.shape[-1]
    chunk = max(1, SERIES_CHUNK // max(1, math.prod(x.shape[:-1])))
    sums = None
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        u = x[..., start:stop] / a
        u2 = u * u
        power = q[..., start:stop]
        parts = []
        for m in range(0, terms, 2):
            parts.append(xp.sum(power, axis=-1))
            if m + 1 < terms:
                parts.append(xp.vecdot(u, power, axis=-1))
                power = power * u2
        block = xp.stack(parts, axis=-1)
        sums = block if sums is None else sums + block
    scaled = sums * coef
    return xp.sum(scaled * scaled, axis=-1)


def _series_or_none(xp: Any, z: Any) -> Any:
    """The series pair sum of the rows of ``z``, or ``None`` where it does not pay off.

    The series runs on samples centred at their mid-range, only if ``a^2 < -log(tiny)``
    (``a`` the half range, ``tiny`` the smallest normal number) so that ``exp(-x^2/2)``
    keeps full precision, and only if it needs at most ``N / 4`` terms.
    """
    n = z.shape[-1]
    if n < 64:
        return None
    hi, lo = xp.max(z, axis=-1), xp.min(z, axis=-1)
    half_range = _host_float(xp.max((hi - lo) / 2.0))
    finfo = xp.finfo(z.dtype)
    if not half_range * half_range < -math.log(float(finfo.smallest_normal)):  # NaN, inf too
        return None
    x = z - xp.expand_dims((hi + lo) / 2.0, axis=-1)
    q = xp.exp(-0.5 * (x * x))
    first = xp.sum(q, axis=-1)
    lower = max(float(n), _host_float(xp.min(first * first)))
    terms = series_terms(half_range, n, lower, float(finfo.eps))
    if terms is None:
        return None
    return series_pair_sum(xp, x, q, terms, half_range)


def _exact_part(xp: Any, z: Any) -> Any:
    out = _series_or_none(xp, z)
    return pair_sum(xp, z) if out is None else out


def occupied_boxes(s: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Cut the sorted host values ``s`` into occupied boxes of width at most ``BOX_WIDTH``.

    A gap of ``BOX_WIDTH`` or more between consecutive samples starts a new cluster; inside
    a cluster, box ``k`` holds the samples with ``floor((s - origin) / BOX_WIDTH) = k``
    (``origin``: the cluster's first sample, so the quotient stays below ``N`` and exact
    whatever the magnitudes). Only boxes that hold samples exist: at most ``N`` of them
    however spread out the samples are. Returns the cut positions ``cuts`` (box ``i`` is
    ``s[cuts[i]:cuts[i + 1]]``) and, for each pair of consecutive boxes, whether they are
    neighbours (same cluster, hence boxes ``k`` and ``k + 1``) and so interact.
    """
    n = s.shape[0]
    cluster_start = np.r_[True, np.diff(s) >= BOX_WIDTH]
    origin = s[np.maximum.accumulate(np.where(cluster_start, np.arange(n), 0))]
    local = np.floor((s - origin) / BOX_WIDTH)
    starts = np.flatnonzero(cluster_start | np.r_[True, local[1:] != local[:-1]])
    return [*starts.tolist(), n], ~cluster_start[starts[1:]]


def boxed_pair_sum(xp: Any, z: Any) -> Any:
    """The pair sum of one row ``z`` (1-D) from the occupied boxes of its sorted values.

    Samples in boxes ``k`` and ``k + 2`` (or further apart) are at least
    ``BOX_WIDTH = 12`` apart, so their kernel is below ``exp(-72)``: dropping those pairs
    changes ``P >= N`` by less than ``N^2 exp(-72) < eps N`` for any ``N < 10^15``. With
    ``B_i`` the pair sum of occupied box ``i`` and ``U_i`` that of neighbouring boxes ``i``
    and ``i + 1`` together, ``P = sum_i B_i + sum_{neighbours} (U_i - B_i - B_{i+1})``.
    Every part has half range at most 12, so the series evaluates it in ``O(n_part)`` time
    (small parts: the direct pair sum); each sample lies in at most three parts, so the
    whole sum takes ``O(N log N)`` time and ``O(N)`` memory for any spread of the samples.
    """
    s = xp.sort(z)
    cuts, neighbours = occupied_boxes(np.asarray(_to_host(s), dtype=np.float64))
    singles = [_exact_part(xp, s[cuts[i] : cuts[i + 1]]) for i in range(len(cuts) - 1)]
    total = singles[0]
    for i, joined in enumerate(neighbours.tolist()):
        total = total + singles[i + 1]
        if joined:
            both = _exact_part(xp, s[cuts[i] : cuts[i + 2]])
            total = total + (both - singles[i] - singles[i + 1])
    return total


def fast_pair_sum(xp: Any, z: Any) -> Any:
    """The pair sum by the cheapest exact method (see the module docstring)."""
    n = z.shape[-1]
    if n < 64 or is_traced(z):
        return pair_sum(xp, z)
    out = _series_or_none(xp, z)
    if out is not None:
        return out
    if n < BOXES_FROM:
        return pair_sum(xp, z)
    rows = xp.reshape(z, (-1, n))
    sums = [boxed_pair_sum(xp, rows[i, ...]) for i in range(rows.shape[0])]
    return xp.reshape(xp.stack(sums), z.shape[:-1])


def exact_statistic(xp: Any, z: Any, *, debias: bool) -> Any:
    """Closed-form EP of the samples on the last axis of ``z``; shape ``z.shape[:-1]``."""
    n = z.shape[-1]
    pairs = fast_pair_sum(xp, z)
    first = (pairs - n) / (n - 1) if debias else pairs / n
    second = math.sqrt(2.0) * xp.sum(xp.exp(-0.25 * (z * z)), axis=-1)
    return SQRT_2PI * (first - second + n / math.sqrt(3.0))


def exact_gradient(xp: Any, z: Any, *, debias: bool) -> Any:
    """Gradient of :func:`exact_statistic` with respect to each sample; shape of ``z``.

    ``dEP/dz_i = sqrt(2 pi) [ z_i exp(-z_i^2/4) / sqrt(2)
    - (2/N') sum_k (z_i - z_k) exp(-(z_i - z_k)^2 / 2) ]`` with ``N' = N`` (or ``N - 1``
    for the U-statistic).
    """
    n = z.shape[-1]
    denom = n - 1 if debias else n
    block = _block_rows(z)
    cols = xp.expand_dims(z, axis=-2)
    pieces = []
    for start in range(0, n, block):
        rows = xp.expand_dims(z[..., start : min(start + block, n)], axis=-1)
        d = rows - cols
        pieces.append(xp.sum(d * xp.exp(-0.5 * (d * d)), axis=-1))
    pair_term = pieces[0] if len(pieces) == 1 else xp.concat(pieces, axis=-1)
    own = z * xp.exp(-0.25 * (z * z)) / math.sqrt(2.0)
    return SQRT_2PI * (own - (2.0 / denom) * pair_term)
