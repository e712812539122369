"""Independent float64 NumPy reference implementations ("oracles").

Nothing here imports ``sigreg``. Every oracle works on float64 NumPy arrays and
reduces one sample axis. Formulas follow the LeJEPA paper / official code and the
closed forms in the project's math notes (Epps-Pulley with weight w = phi, sigma = 1).
"""

from __future__ import annotations

import math

import numpy as np

SQRT2PI = math.sqrt(2.0 * math.pi)

# E[EP] under H0 (sigma = 1): sqrt(2 pi) (1 - 1/sqrt(3)), the same at every N.
EXACT_NULL_MEAN = SQRT2PI * (1.0 - 1.0 / math.sqrt(3.0))  # 1.0594258...
# Null variance of the exact statistic (sigma = 1).


def exact_null_var(n: int) -> float:
    a = 4.0 * math.pi * (1.0 / math.sqrt(2.0) - 2.0 / 3.0) / n
    b = 2.0 * (n - 1) / n * 2.0 * math.pi * (1 / math.sqrt(5) - 2 / math.sqrt(8) + 1 / 3)
    return a + b


# Upper bound on EP / N for the exact statistic: int (1 + phi)^2 phi dt.
EXACT_VALUE_BOUND_PER_SAMPLE = SQRT2PI + 2.0 * math.sqrt(math.pi) + math.sqrt(2.0 * math.pi / 3.0)


def exact_grad_bound(n: int) -> float:
    """sup_i |dEP/dx_i| for the exact statistic, sigma = 1 (attained, see notes)."""
    return 2.0 * SQRT2PI * math.exp(-0.5) * ((1.0 - 1.0 / n) + 0.5)


# --------------------------------------------------------------------------- grid
def official_grid(t_max: float = 3.0, n_points: int = 17):
    """Nodes, phi and weights exactly as the official lejepa ``EppsPulley`` builds them
    (in float64): t = linspace(0, t_max, n), w = 2 dt, w[0] = w[-1] = dt, weights = w * phi."""
    t = np.linspace(0.0, t_max, n_points)
    dt = t_max / (n_points - 1)
    w = np.full(n_points, 2.0 * dt)
    w[[0, -1]] = dt
    phi = np.exp(-0.5 * t**2)
    return t, phi, w * phi


def quad_null_mean(t_max: float = 3.0, n_points: int = 17) -> float:
    """E[EP_quad] under H0 = sum_k W_k (1 - exp(-t_k^2)) (N-independent)."""
    t, _, w = official_grid(t_max, n_points)
    return float(np.sum(w * (1.0 - np.exp(-(t**2)))))


def quad_value_bound_per_sample(t_max: float = 3.0, n_points: int = 17) -> float:
    t, phi, w = official_grid(t_max, n_points)
    return float(np.sum(w * (1.0 + phi) ** 2))


def quad_grad_bound(t_max: float = 3.0, n_points: int = 17) -> float:
    """Crude always-valid bound 2 sum_k W_k t_k (1 + phi_k) on |dEP_quad/dx_i|."""
    t, phi, w = official_grid(t_max, n_points)
    return float(2.0 * np.sum(w * t * (1.0 + phi)))


def _last(x, axis):
    return np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)


# ------------------------------------------------------------------ (a) official
def ep_official(x, axis=0, t_max=3.0, n_points=17, keepdims=False):
    """The official algorithm verbatim (broadcast x[..., None] * t, means of cos/sin,
    err @ weights * N), in float64."""
    x = _last(x, axis)
    n = x.shape[-1]
    t, phi, weights = official_grid(t_max, n_points)
    x_t = x[..., None] * t  # (..., N, P)
    cos_mean = np.cos(x_t).mean(-2)
    sin_mean = np.sin(x_t).mean(-2)
    err = (cos_mean - phi) ** 2 + sin_mean**2
    out = (err @ weights) * n
    if keepdims:
        out = np.expand_dims(out, axis)
    return out


def ep_official_debiased(x, axis=0, t_max=3.0, n_points=17):
    """Trapezoid U-statistic: |phihat|^2 -> (N |phihat|^2 - 1) / (N - 1)."""
    x = _last(x, axis)
    n = x.shape[-1]
    t, phi, weights = official_grid(t_max, n_points)
    x_t = x[..., None] * t
    c = np.cos(x_t).mean(-2)
    s = np.sin(x_t).mean(-2)
    mod2 = (n * (c**2 + s**2) - 1.0) / (n - 1)
    err = mod2 - 2.0 * phi * c + phi**2
    return (err @ weights) * n


# ------------------------------------------------------------- (b) exact closed form
def ep_exact(x, axis=0, debias=False):
    """Direct O(N^2) closed form:
    sqrt(2 pi) [ (1/N) sum_jk e^{-(xj-xk)^2/2} - sqrt(2) sum_j e^{-xj^2/4} + N/sqrt(3) ];
    debias: pair sum over j != k divided by N - 1."""
    x = _last(x, axis)
    n = x.shape[-1]
    d = x[..., :, None] - x[..., None, :]
    pair = np.exp(-0.5 * d**2)
    if debias:
        pair_term = (pair.sum((-1, -2)) - n) / (n - 1)
    else:
        pair_term = pair.sum((-1, -2)) / n
    single = math.sqrt(2.0) * np.exp(-0.25 * x**2).sum(-1)
    return SQRT2PI * (pair_term - single + n / math.sqrt(3.0))


# -------------------------------------------------- (c) high-precision quadrature
def ep_fine_quadrature(x, debias=False, half_width=14.0, h=0.01):
    """N * int_{-inf}^{inf} |phihat - phi|^2 phi dt by a fine trapezoid on
    [-half_width, half_width] (entire, Gaussian-decaying integrand: the trapezoid
    converges exponentially). 1-D x only."""
    x = np.asarray(x, dtype=np.float64)
    assert x.ndim == 1
    n = x.shape[0]
    t = np.arange(0.0, half_width + h / 2, h)  # symmetric: integrate [0, T] and double
    phi = np.exp(-0.5 * t**2)
    w = np.full(t.shape, 2.0 * h)
    w[0] = h
    c = np.empty_like(t)
    s = np.empty_like(t)
    for i0 in range(0, t.size, 256):  # chunk over t to bound memory
        xt = x[:, None] * t[None, i0 : i0 + 256]
        c[i0 : i0 + 256] = np.cos(xt).mean(0)
        s[i0 : i0 + 256] = np.sin(xt).mean(0)
    if debias:
        integrand = (n * (c**2 + s**2) - 1.0) / (n - 1) - 2.0 * phi * c + phi**2
    else:
        integrand = (c - phi) ** 2 + s**2
    return n * float(np.sum(w * integrand * phi))


def ep_scipy_quad(x):
    """Same integral with adaptive scipy.integrate.quad (small N only)."""
    from scipy.integrate import quad

    x = np.asarray(x, dtype=np.float64)
    n = x.size

    def f(t):
        c = np.cos(t * x).mean()
        s = np.sin(t * x).mean()
        return ((c - math.exp(-0.5 * t * t)) ** 2 + s * s) * math.exp(-0.5 * t * t)

    val, _ = quad(f, 0.0, 40.0, epsabs=1e-15, epsrel=1e-13, limit=500)
    return 2.0 * n * val


# ------------------------------------------------------------------ (d) gradients
def grad_official(x, t_max=3.0, n_points=17, debias=False):
    """dEP_quad/dx_i = 2 sum_k W_k t_k [S_k cos(t_k x_i) - (C_k - phi_k) sin(t_k x_i)];
    debias: 2 sum_k W_k t_k [N/(N-1) (S_k cos - C_k sin) + phi_k sin]. 1-D x."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    t, phi, w = official_grid(t_max, n_points)
    xt = x[:, None] * t
    cos, sin = np.cos(xt), np.sin(xt)
    c, s = cos.mean(0), sin.mean(0)
    if debias:
        r = n / (n - 1)
        inner = r * (s * cos - c * sin) + phi * sin
    else:
        inner = s * cos - (c - phi) * sin
    return 2.0 * inner @ (w * t)


def grad_exact(x, debias=False):
    """sqrt(2 pi) [ x_i/sqrt(2) e^{-x_i^2/4} - (2/N) sum_k (x_i - x_k) e^{-(x_i - x_k)^2/2} ]
    (debias: 2/(N-1) instead of 2/N). 1-D x."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    d = x[:, None] - x[None, :]
    pair = (d * np.exp(-0.5 * d**2)).sum(1)
    denom = (n - 1) if debias else n
    return SQRT2PI * (x / math.sqrt(2.0) * np.exp(-0.25 * x**2) - 2.0 / denom * pair)


# ------------------------------------------------------ dispatch on options
def ep(x, integration="trapezoid", debias=False, t_max=3.0, n_points=17):
    """1-D statistic for the given options."""
    x = np.asarray(x, dtype=np.float64)
    if integration == "exact":
        return float(ep_exact(x, debias=debias))
    if debias:
        return float(ep_official_debiased(x, t_max=t_max, n_points=n_points))
    return float(ep_official(x, t_max=t_max, n_points=n_points))


def ep_grad(x, integration="trapezoid", debias=False, t_max=3.0, n_points=17):
    if integration == "exact":
        return grad_exact(x, debias=debias)
    return grad_official(x, t_max=t_max, n_points=n_points, debias=debias)


def ep_nd(x, axis=0, keepdims=False, **opts):
    """Statistic along ``axis`` of an n-d array (loops over the other axes)."""
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    out = np.empty(x.shape[:-1])
    for idx in np.ndindex(*x.shape[:-1]):
        out[idx] = ep(x[idx], **opts)
    if keepdims:
        out = np.expand_dims(out, axis)
    return out


def ep_grad_nd(x, cot, axis=0, keepdims=False, **opts):
    """Vector-Jacobian product of ``ep_nd`` with cotangent ``cot`` (shaped like the value)."""
    x = np.asarray(x, dtype=np.float64)
    cot = np.asarray(cot, dtype=np.float64)
    if keepdims:
        cot = np.squeeze(cot, axis)
    xm = np.moveaxis(x, axis, -1)
    g = np.empty_like(xm)
    for idx in np.ndindex(*xm.shape[:-1]):
        g[idx] = cot[idx] * ep_grad(xm[idx], **opts)
    return np.moveaxis(g, -1, axis)


# -------------------------------------------------------------- sliced / SIGReg
def sliced(x, directions, reduction="mean", **opts):
    """x (..., N, K), directions (K, M). Slice m: EP of (x @ A)[..., :, m] along N."""
    x = np.asarray(x, dtype=np.float64)
    a = np.asarray(directions, dtype=np.float64)
    y = x @ a  # (..., N, M)
    vals = ep_nd(y, axis=-2, **opts)  # (..., M)
    if reduction == "none":
        return vals
    if reduction == "mean":
        return vals.mean(-1)
    if reduction == "sum":
        return vals.sum(-1)
    raise ValueError(reduction)


def sliced_grad(x, directions, cot, reduction="mean", **opts):
    x = np.asarray(x, dtype=np.float64)
    a = np.asarray(directions, dtype=np.float64)
    m = a.shape[1]
    y = x @ a
    cot = np.asarray(cot, dtype=np.float64)
    if reduction == "none":
        cot_m = cot
    else:
        scale = 1.0 / m if reduction == "mean" else 1.0
        cot_m = np.broadcast_to((cot * scale)[..., None], y.shape[:-2] + (m,))
    gy = ep_grad_nd(y, cot_m, axis=-2, **opts)  # (..., N, M)
    return gy @ a.T


# ----------------------------------------------------------------------- LeJEPA
def lejepa(
    global_views, local_views, directions, lamb=0.05, prediction="center", t_max=3.0, n_points=17
):
    """Returns (loss, prediction_loss, sigreg_term)."""
    g = np.asarray(global_views, dtype=np.float64)
    views = (
        g if local_views is None else np.concatenate([g, np.asarray(local_views, np.float64)], 0)
    )
    mu = g.mean(0)
    if prediction == "center":
        pred = float(np.mean((mu[None] - views) ** 2))
    elif prediction == "pairwise":
        pred = float(np.mean((g[:, None] - views[None, :]) ** 2))
    else:
        raise ValueError(prediction)
    sig = float(np.mean([sliced(v, directions, t_max=t_max, n_points=n_points) for v in views]))
    return (1.0 - lamb) * pred + lamb * sig, pred, sig


def lejepa_fd_grads(g_np, l_np, a_np, lamb, prediction, h=1e-6):
    """Central finite differences of the LeJEPA loss oracle w.r.t. every view entry."""

    def f(gv, lv):
        return lejepa(gv, lv, a_np, lamb=lamb, prediction=prediction)[0]

    out = []
    for which, arr in ((0, g_np), (1, l_np)):
        if arr is None:
            out.append(None)
            continue
        fd = np.zeros_like(arr)
        for idx in np.ndindex(*arr.shape):
            e = np.zeros_like(arr)
            e[idx] = h
            if which == 0:
                fd[idx] = (f(g_np + e, l_np) - f(g_np - e, l_np)) / (2 * h)
            else:
                fd[idx] = (f(g_np, l_np + e) - f(g_np, l_np - e)) / (2 * h)
        out.append(fd)
    return out


# ---------------------------------------------------------------- misc helpers
def unit_directions(rng, k, m):
    a = rng.standard_normal((k, m))
    return a / np.linalg.norm(a, axis=0, keepdims=True)


def x_shape_2d(rng, n):
    """n points on the two diagonals of a square, unit variance per coordinate:
    u ~ U(-sqrt 3, sqrt 3), point (u, s u) with a random sign s."""
    u = rng.uniform(-math.sqrt(3.0), math.sqrt(3.0), n)
    s = rng.choice([-1.0, 1.0], n)
    return np.stack([u, s * u], axis=1)


def ep_exact_blocked(x):
    """:func:`ep_exact` of a 1-D sample holding only a (256, N) block of the kernel at a time
    (for N in the thousands); overflow of far samples' squares is exp(-inf) = 0."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    with np.errstate(over="ignore"):
        pairs = sum(
            np.exp(-0.5 * (x[i : i + 256, None] - x[None, :]) ** 2).sum() for i in range(0, n, 256)
        )
        single = math.sqrt(2.0) * np.exp(-0.25 * x**2).sum()
    return SQRT2PI * (pairs / n - single + n / math.sqrt(3.0))
