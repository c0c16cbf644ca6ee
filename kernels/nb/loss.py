"""Fused softmax cross-entropy and softmax, one pass per row, parallel over rows.

Per row: m = max z (a NaN anywhere makes m NaN, so it spreads to the whole row: a
plain ``if z > m`` would skip it), s = sum exp(z - m), l = log s - sum_k t_k (z_k - m)
with t = (1 - eps) onehot + eps / K. The row sum s, log s and l are accumulated in
float64 for both dtypes (exp itself stays in the array's dtype); the per-row products
w_i l_i go to a float64 buffer that is summed serially in row order after the parallel
loop, so the mean loss does not depend on the thread count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from . import _options as opt
from ._options import JIT, PARALLEL
from .activations import exp_t


@njit(**JIT)
def _shift_rows(logits, r0, r1, buf, shifted_sum):
    """buf[(i - r0) K + j] = z_ij - m_i with m_i = max_j z_ij, NaN if the row holds one
    (a plain ``if z > m`` would skip it); shifted_sum[i - r0] = sum_j (z_ij - m_i)."""
    k = logits.shape[1]
    for i in range(r0, r1):
        row = logits[i]
        m = row[0]
        for j in range(1, k):
            v = row[j]
            if v > m or v != v:  # once m is NaN, no v > m and it stays NaN
                m = v
        out = buf[(i - r0) * k : (i - r0 + 1) * k]
        acc = 0.0
        for j in range(k):
            d = row[j] - m
            out[j] = d
            acc += d
        shifted_sum[i - r0] = acc


@njit(**JIT)
def _exp_inplace(buf):
    """buf = exp(buf): one flat loop, vectorised for float32."""
    for q in range(buf.size):
        buf[q] = exp_t(buf[q])


@njit(**JIT)
def _sce_rows(logits, labels, sample_weight, grad_flat, row_loss_out, eps, partial,
              r0, r1):  # fmt: skip
    """Rows r0..r1: per-row loss l_i, partial[i] = w_i l_i, grad = w_i (p - t) / n."""
    # IN  logits (n, K), labels (n,) intp, sample_weight (n,) or empty, eps
    # OUT grad_flat (n*K,) or empty, row_loss_out (n,) or empty, partial (n,) float64
    n, k = logits.shape
    t = logits.dtype.type
    has_w = sample_weight.size > 0
    has_g = grad_flat.size > 0
    eps_k = t(eps / k)
    one_m_eps = t(1.0 - eps)
    inv_n = t(1.0 / n)
    # shifted logits, then their exp, in the grad rows (or a scratch block)
    if has_g:
        buf = grad_flat[r0 * k : r1 * k]
    else:
        buf = np.empty((r1 - r0) * k, logits.dtype)
    shifted_sum = np.empty(r1 - r0, np.float64)
    _shift_rows(logits, r0, r1, buf, shifted_sum)
    lab_shift = np.empty(r1 - r0, logits.dtype)
    for i in range(r0, r1):
        lab_shift[i - r0] = buf[(i - r0) * k + labels[i]]
    _exp_inplace(buf)
    for i in range(r0, r1):
        e = buf[(i - r0) * k : (i - r0 + 1) * k]
        s = 0.0  # float64
        for j in range(k):
            s += e[j]
        loss = math.log(s) - (1.0 - eps) * lab_shift[i - r0]
        if eps != 0.0:
            loss -= (eps / k) * shifted_sum[i - r0]
        if row_loss_out.size:
            row_loss_out[i] = loss
        w = sample_weight[i] if has_w else t(1.0)
        partial[i] = w * loss
        if has_g:  # branch-free row loop (vectorises), then the label's entry
            inv = t(1.0 / s)
            scale = w / t(n) if has_w else inv_n
            lab = labels[i]
            el = e[lab]
            for j in range(k):
                e[j] = (e[j] * inv - eps_k) * scale
            e[lab] = ((el * inv - eps_k) - one_m_eps) * scale


@njit(**JIT)
def _sce_serial(logits, labels, sample_weight, grad_out, row_loss_out, eps,
                rows_per_task):  # fmt: skip
    n, k = logits.shape
    partial = np.empty(n, np.float64)
    grad_flat = grad_out.reshape(-1)  # an empty grad_out arrives 1-D
    step = max(1, rows_per_task)
    for r0 in range(0, n, step):  # blocks bound the scratch; same results as parallel
        r1 = min(r0 + step, n)
        _sce_rows(logits, labels, sample_weight, grad_flat, row_loss_out, eps, partial,
                  r0, r1)  # fmt: skip
    total = 0.0
    for i in range(n):
        total += partial[i]
    return total / n


@njit(**PARALLEL)
def _sce_parallel(logits, labels, sample_weight, grad_out, row_loss_out, eps,
                  rows_per_task):  # fmt: skip
    n = logits.shape[0]
    partial = np.empty(n, np.float64)
    grad_flat = grad_out.reshape(-1)
    for c in prange((n + rows_per_task - 1) // rows_per_task):
        r0 = c * rows_per_task
        r1 = min(r0 + rows_per_task, n)
        _sce_rows(logits, labels, sample_weight, grad_flat, row_loss_out, eps, partial,
                  r0, r1)  # fmt: skip
    total = 0.0
    for i in range(n):  # serial, row order: independent of the thread count
        total += partial[i]
    return total / n


def _rows_per_task(k):
    return max(1, opt.SOFTMAX_TASK // k)


def softmax_cross_entropy(logits, labels, sample_weight, grad_out, row_loss_out,
                          label_smoothing):  # fmt: skip
    """Mean weighted loss (1/n) sum_i w_i l_i; grad_out = w (softmax - target) / n."""
    # IN  logits (n, K), labels (n,) intp, sample_weight (n,) or empty, label_smoothing
    # OUT grad_out (n, K) or empty, row_loss_out (n,) or empty; returns the mean loss
    n, k = logits.shape
    if n == 0:
        return math.nan
    eps = float(label_smoothing)
    if n * k * opt.SOFTMAX_COST >= opt.PARALLEL_MIN_WORK and n > 1:
        return _sce_parallel(logits, labels, sample_weight, grad_out, row_loss_out,
                             eps, _rows_per_task(k))  # fmt: skip
    return _sce_serial(logits, labels, sample_weight, grad_out, row_loss_out, eps,
                       _rows_per_task(k))  # fmt: skip


# ---------------------------------------------------------------------------- softmax
@njit(**JIT)
def _softmax_rows(logits, out, r0, r1):
    """Rows r0..r1: out = exp(z - m) / sum exp(z - m) (out may be logits)."""
    # IN  logits (n, K)   OUT out (n, K)
    t = logits.dtype.type
    k = logits.shape[1]
    buf = out.reshape(-1)[r0 * k : r1 * k]
    shifted_sum = np.empty(r1 - r0, np.float64)
    _shift_rows(logits, r0, r1, buf, shifted_sum)
    _exp_inplace(buf)
    for i in range(r1 - r0):
        e = buf[i * k : (i + 1) * k]
        s = 0.0  # float64
        for j in range(k):
            s += e[j]
        st = t(s)
        for j in range(k):
            e[j] = e[j] / st


@njit(**JIT)
def _softmax_serial(logits, out, rows_per_task):
    n = logits.shape[0]
    for r0 in range(0, n, rows_per_task):
        _softmax_rows(logits, out, r0, min(r0 + rows_per_task, n))


@njit(**PARALLEL)
def _softmax_parallel(logits, out, rows_per_task):
    n = logits.shape[0]
    for c in prange((n + rows_per_task - 1) // rows_per_task):
        r0 = c * rows_per_task
        _softmax_rows(logits, out, r0, min(r0 + rows_per_task, n))


def softmax(logits, out):
    """out = exp(z - lse(z)) per row, max-shifted (out may be logits)."""
    # IN  logits (n, K)   OUT out (n, K)
    n, k = logits.shape
    if n == 0 or k == 0:
        return
    if n * k * opt.SOFTMAX_COST >= opt.PARALLEL_MIN_WORK and n > 1:
        _softmax_parallel(logits, out, _rows_per_task(k))
    else:
        _softmax_serial(logits, out, _rows_per_task(k))
