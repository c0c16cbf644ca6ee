"""Fused, in-place optimizer steps over flat parameter arrays (PyTorch formulas).

Scalar factors are computed once in Python (float64, exactly as the oracle does) and
cast to the parameter dtype, so each element sees the oracle's operations in the
oracle's order: the results match NumPy bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import _options as opt
from . import _split
from ._options import JIT, PARALLEL

# ----------------------------------------------------------------- squared L2 norm
# _sq_sum's lane count: columns of an element-wise (so vectorised, no fast-math needed)
# float64 accumulation; the lanes are added in order at the end
SQ_LANES = 64


@njit(**JIT)
def _sq_sum(p):
    """Sum of p[i]^2 in float64, in a fixed order: lane j sums p[j::SQ_LANES], then
    the lanes and the tail are added in order."""
    acc = np.zeros(SQ_LANES)
    n = p.size - p.size % SQ_LANES
    for i in range(0, n, SQ_LANES):
        for j in range(SQ_LANES):
            a = np.float64(p[i + j])
            acc[j] += a * a
    s = 0.0
    for j in range(SQ_LANES):
        s += acc[j]
    for i in range(n, p.size):
        a = np.float64(p[i])
        s += a * a
    return s


@njit(**JIT)
def _sum_in_order(partials):
    s = 0.0
    for c in range(partials.size):
        s += partials[c]
    return s


@njit(**JIT)
def _sq_sum_chunks(p, chunk):
    """sum p^2 per ``chunk`` elements, chunks added in order: the same sum whether
    the chunks run in one call or one per parallel task."""
    s = 0.0
    for lo in range(0, p.size, chunk):
        s += _sq_sum(p[lo : lo + chunk])
    return s


@njit(**PARALLEL)
def _sq_sum_parallel(p, chunk):
    """_sq_sum_chunks with one prange task per chunk (the same sum)."""
    n = p.size
    partials = np.empty((n + chunk - 1) // chunk)
    for c in prange((n + chunk - 1) // chunk):
        lo = np.int64(c) * chunk
        partials[c] = _sq_sum(p[lo : min(lo + chunk, n)])
    return _sum_in_order(partials)


# -------------------------------------------------------------------------------- SGD
@njit(**JIT)
def _sgd_slice(p, g, v, lr, mu, nesterov, wd, use_wd, l2, use_l2, use_mu, sq_norm,
               chunk):  # fmt: skip
    """g' = g + l2 p + wd p (the loss's L2 term when the training step leaves it to
    the update, then weight decay, each rounded as added); v = mu v + g'; p -= lr (g'
    + mu v if nesterov else v). Returns sum p^2 before the step (summed per
    ``chunk``) when sq_norm, else 0."""
    # IN  g (n,), lr, mu, wd, l2 (param dtype), flags   IN/OUT p (n,), v (n,) or empty
    sq = _sq_sum_chunks(p, chunk) if sq_norm else 0.0
    for i in range(p.size):
        gi = g[i]
        if use_l2:
            gi = gi + l2 * p[i]
        if use_wd:
            gi = gi + wd * p[i]
        if use_mu:
            vi = mu * v[i] + gi
            v[i] = vi
            step = gi + mu * vi if nesterov else vi
        else:
            step = gi
        p[i] = p[i] - lr * step
    return sq


@njit(**PARALLEL)
def _sgd_parallel(p, g, v, lr, mu, nesterov, wd, use_wd, l2, use_l2, use_mu, sq_norm,
                  chunk):  # fmt: skip
    n = p.size
    partials = np.empty((n + chunk - 1) // chunk)
    for c in prange((n + chunk - 1) // chunk):
        lo = c * chunk
        hi = min(lo + chunk, n)
        # an empty velocity (momentum 0) slices to an empty view
        partials[c] = _sgd_slice(p[lo:hi], g[lo:hi], v[lo:hi], lr, mu, nesterov, wd,
                                 use_wd, l2, use_l2, use_mu, sq_norm,
                                 chunk)  # fmt: skip
    return _sum_in_order(partials)


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay, sq_norm):
    """SGD: g += wd p; v = mu v + g; p -= lr (g + mu v if nesterov else v).
    Returns sum p^2 (float64, before the step) when sq_norm, else 0.0."""
    # IN  grad (n,), lr, momentum, nesterov, weight_decay, sq_norm
    # IN/OUT param (n,), velocity (n,) (empty when momentum == 0)
    if param.size == 0:
        return 0.0
    t = param.dtype.type
    use_wd = weight_decay != 0.0
    use_mu = momentum != 0.0
    args = (param, grad, velocity, t(lr), t(momentum), bool(nesterov),
            t(weight_decay), use_wd, t(0.0), False, use_mu)  # fmt: skip
    tune = opt.TUNE
    if _split.sgd.py_func(param.size, tune):
        return _sgd_parallel(*args, bool(sq_norm), tune.chunk)
    return _sgd_slice(*args, bool(sq_norm), tune.chunk)


# ------------------------------------------------------------------------------- Adam
@njit(**JIT)
def _adam_slice(p, g, m, v, b1, c1, b2, c2, wd, decay, bias2_sqrt, eps, step_size,
                use_wd, decoupled, l2, use_l2, sq_norm, chunk):  # fmt: skip
    """g' = g + l2 p (as _sgd_slice); Adam: g' += wd p; AdamW: p *= decay.
    m = b1 m + c1 g'; v = b2 v + c2 g'^2; p -= (m / (sqrt(v) / bias2_sqrt + eps)) *
    step_size. Returns sum p^2 before the step (summed per ``chunk``) when sq_norm,
    else 0."""
    # IN  g (n,), scalars (param dtype), flags   IN/OUT p, m, v (n,)
    sq = _sq_sum_chunks(p, chunk) if sq_norm else 0.0
    for i in range(p.size):
        gi = g[i]
        pi = p[i]
        if use_l2:
            gi = gi + l2 * pi
        if use_wd:
            if decoupled:
                pi = pi * decay
            else:
                gi = gi + wd * pi
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        denom = math.sqrt(vi) / bias2_sqrt + eps
        p[i] = pi - (mi / denom) * step_size
    return sq


@njit(**PARALLEL)
def _adam_parallel(p, g, m, v, b1, c1, b2, c2, wd, decay, bias2_sqrt, eps, step_size,
                   use_wd, decoupled, l2, use_l2, sq_norm, chunk):  # fmt: skip
    n = p.size
    partials = np.empty((n + chunk - 1) // chunk)
    for c in prange((n + chunk - 1) // chunk):
        lo = c * chunk
        hi = min(lo + chunk, n)
        partials[c] = _adam_slice(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], b1, c1, b2,
                                  c2, wd, decay, bias2_sqrt, eps, step_size, use_wd,
                                  decoupled, l2, use_l2, sq_norm, chunk)  # fmt: skip
    return _sum_in_order(partials)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay,
                decoupled, sq_norm):  # fmt: skip
    """Adam/AdamW, in place: p -= lr/(1-b1^t) m / (sqrt(v)/sqrt(1-b2^t) + eps).
    Returns sum p^2 (float64, before the step) when sq_norm, else 0.0."""
    # IN  grad (n,), lr, beta1, beta2, eps, step (from 1), weight_decay, decoupled,
    #     sq_norm   IN/OUT param, m, v (n,)
    if param.size == 0:
        return 0.0
    t = param.dtype.type
    bias1 = 1.0 - beta1**step
    bias2_sqrt = math.sqrt(1.0 - beta2**step)
    args = (param, grad, m, v, t(beta1), t(1.0 - beta1), t(beta2), t(1.0 - beta2),
            t(weight_decay), t(1.0 - lr * weight_decay), t(bias2_sqrt), t(eps),
            t(lr / bias1), weight_decay != 0.0, bool(decoupled), t(0.0),
            False)  # fmt: skip
    tune = opt.TUNE
    if _split.adam.py_func(param.size, tune):
        return _adam_parallel(*args, bool(sq_norm), tune.chunk)
    return _adam_slice(*args, bool(sq_norm), tune.chunk)
