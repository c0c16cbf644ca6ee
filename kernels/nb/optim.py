"""Fused, in-place optimizer steps over flat parameter arrays (PyTorch formulas).

Scalar factors are computed once in Python (float64, exactly as the oracle does) and
cast to the parameter dtype, so each element sees the oracle's operations in the
oracle's order: the results match NumPy bit for bit.
"""

from __future__ import annotations

import math

from numba import njit, prange

from . import _options as opt
from ._options import JIT, PARALLEL


# -------------------------------------------------------------------------------- SGD
@njit(**JIT)
def _sgd_slice(p, g, v, lr, mu, nesterov, wd, use_wd, use_mu):
    """g' = g + wd p; v = mu v + g'; p -= lr (g' + mu v if nesterov else v)."""
    # IN  g (n,), lr, mu, wd (param dtype), flags   IN/OUT p (n,), v (n,) or empty
    for i in range(p.size):
        gi = g[i]
        if use_wd:
            gi = gi + wd * p[i]
        if use_mu:
            vi = mu * v[i] + gi
            v[i] = vi
            step = gi + mu * vi if nesterov else vi
        else:
            step = gi
        p[i] = p[i] - lr * step


@njit(**PARALLEL)
def _sgd_parallel(p, g, v, lr, mu, nesterov, wd, use_wd, use_mu, chunk):
    n = p.size
    for c in prange((n + chunk - 1) // chunk):
        lo = c * chunk
        hi = min(lo + chunk, n)
        # an empty velocity (momentum 0) slices to an empty view
        _sgd_slice(p[lo:hi], g[lo:hi], v[lo:hi], lr, mu, nesterov, wd, use_wd, use_mu)


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """SGD: g += wd p; v = mu v + g; p -= lr (g + mu v if nesterov else v)."""
    # IN  grad (n,), lr, momentum, nesterov, weight_decay
    # IN/OUT param (n,), velocity (n,) (empty when momentum == 0)
    if param.size == 0:
        return
    t = param.dtype.type
    use_wd = weight_decay != 0.0
    use_mu = momentum != 0.0
    args = (param, grad, velocity, t(lr), t(momentum), bool(nesterov),
            t(weight_decay), use_wd, use_mu)  # fmt: skip
    if param.size * opt.SGD_COST >= opt.PARALLEL_MIN_WORK:
        _sgd_parallel(*args, opt.CHUNK)
    else:
        _sgd_slice(*args)


# ------------------------------------------------------------------------------- Adam
@njit(**JIT)
def _adam_slice(p, g, m, v, b1, c1, b2, c2, wd, decay, bias2_sqrt, eps, step_size,
                use_wd, decoupled):  # fmt: skip
    """Adam: g' = g + wd p; AdamW: p *= decay. m = b1 m + c1 g'; v = b2 v + c2 g'^2;
    p -= (m / (sqrt(v) / bias2_sqrt + eps)) * step_size."""
    # IN  g (n,), scalars (param dtype), flags   IN/OUT p, m, v (n,)
    for i in range(p.size):
        gi = g[i]
        pi = p[i]
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


@njit(**PARALLEL)
def _adam_parallel(p, g, m, v, b1, c1, b2, c2, wd, decay, bias2_sqrt, eps, step_size,
                   use_wd, decoupled, chunk):  # fmt: skip
    n = p.size
    for c in prange((n + chunk - 1) // chunk):
        lo = c * chunk
        hi = min(lo + chunk, n)
        _adam_slice(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], b1, c1, b2, c2, wd, decay,
                    bias2_sqrt, eps, step_size, use_wd, decoupled)  # fmt: skip


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay,
                decoupled):  # fmt: skip
    """Adam/AdamW, in place: p -= lr/(1-b1^t) m / (sqrt(v)/sqrt(1-b2^t) + eps)."""
    # IN  grad (n,), lr, beta1, beta2, eps, step (from 1), weight_decay, decoupled
    # IN/OUT param, m, v (n,)
    if param.size == 0:
        return
    t = param.dtype.type
    bias1 = 1.0 - beta1**step
    bias2_sqrt = math.sqrt(1.0 - beta2**step)
    args = (param, grad, m, v, t(beta1), t(1.0 - beta1), t(beta2), t(1.0 - beta2),
            t(weight_decay), t(1.0 - lr * weight_decay), t(bias2_sqrt), t(eps),
            t(lr / bias1), weight_decay != 0.0, bool(decoupled))  # fmt: skip
    if param.size * opt.ADAM_COST >= opt.PARALLEL_MIN_WORK:
        _adam_parallel(*args, opt.CHUNK)
    else:
        _adam_slice(*args)
