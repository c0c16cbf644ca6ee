"""Fused softmax cross-entropy and softmax, parallel over rows.

Per row: m = max z, s = sum exp(z - m), l = log s - sum_k t_k (z_k - m) with
t = (1 - eps) onehot + eps / K. A NaN anywhere in a row gives a NaN loss and gradient
row: the max itself may skip a NaN (``m = v if v > m else m``, branch-free), but the NaN
then goes through exp(z - m) into s. The row sum s, log s and l are accumulated in
float64 for both dtypes (exp itself stays in the array's dtype, s is summed in column
order); log is ``_log_f64``, fdlibm's log without branches (vectorises; < 1 ulp, within
1 ulp of libm's). The per-row products w_i l_i go to a float64 buffer that is summed
serially in row order after the parallel loop, so the mean loss does not depend on the
thread count.

Layout: with few classes (K < ``_T_MAX_K``, e.g. 10) a row is too short for vector
loops, so rows are taken in blocks transposed into a (K, rows) scratch: every pass (max,
exp, the float64 sums, log, the gradient) is then a unit-stride loop over the block's
rows, and only the copy in and the gradient copy out are strided. With more classes each
row is processed on its own (its shifted logits exponentiated as one flat block). Every
row's arithmetic is the same whatever the blocking, so serial and parallel results (any
block or task size) are bitwise identical.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types

from .. import tuning
from . import _options as opt
from . import _split
from ._options import JIT, PARALLEL, ZERO
from .activations import bitcast, exp_t

# float64 values of a squared-error task's scratch (see _se_block)
_SE_SCRATCH = tuning.SQUARED_ERROR_SCRATCH
# Transposed blocks below this many classes, where they beat the row-by-row kernel
# (measured: docs/performance.md, "Kernel tuning").
_T_MAX_K = 32


# ------------------------------------------------------------------------ float64 log
_f64_as_u64 = bitcast(types.float64, types.uint64)
_u64_as_f64 = bitcast(types.uint64, types.float64)

_U = np.uint64
_I = np.int32
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01


@njit(**JIT)
def _log_f64(x):
    """log(x) for a positive, normal, finite float64 x; NaN stays NaN.

    fdlibm's e_log.c with its branches turned into selects, so a loop over it
    vectorises (libm's log is a scalar call, ~50 instructions a row here).
    x = 2^k m, m in [sqrt(2)/2, sqrt(2)), f = m - 1, log(1 + f) from s = f / (2 + f)
    and a degree-14 polynomial in s. Error < 1 ulp (measured: 0.79 ulp; at most 1 ulp
    from libm's). Here x is a row sum of exp(z - m): 1 <= x <= K, or NaN.
    """
    bits = _f64_as_u64(x)
    hx = bits >> _U(32)
    k = _I(hx >> _U(20)) - _I(1023)
    hx &= _U(0x000FFFFF)
    # normalise x or x/2: m in [sqrt(2)/2, sqrt(2))
    i = (hx + _U(0x95F64)) & _U(0x100000)
    m = _u64_as_f64(((hx | (i ^ _U(0x3FF00000))) << _U(32)) | (bits & _U(0xFFFFFFFF)))
    k += _I(i >> _U(20))
    f = m - 1.0
    s = f / (2.0 + f)
    dk = float(k)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    r = t2 + t1
    hfsq = 0.5 * f * f
    y_mid = dk * _LN2_HI - ((hfsq - (s * (hfsq + r) + dk * _LN2_LO)) - f)
    y_out = dk * _LN2_HI - ((s * (f - r) - dk * _LN2_LO) - f)
    h = _I(hx)
    y = y_mid if ((h - _I(0x6147A)) | (_I(0x6B851) - h)) > _I(0) else y_out
    return y if x == x else x


# ------------------------------------------------------------------- row helpers
@njit(**JIT)
def _shift_rows(logits, r0, r1, buf, mx):
    """buf[(i - r0) K + j] = z_ij - m_i and mx[i - r0] = m_i = max_j z_ij for rows
    r0..r1 (buf may be those rows of logits itself). The max is branch-free and may
    skip a NaN; the NaN then reaches exp(z - m) and the row sum."""
    k = logits.shape[1]
    for r in range(r1 - r0):
        i = r0 + r
        m = logits[i, 0]
        for j in range(1, k):
            v = logits[i, j]
            m = v if v > m else m
        b = r * k
        for j in range(k):
            buf[b + j] = logits[i, j] - m
        mx[r] = m


@njit(**JIT)
def _exp_inplace(buf):
    """buf = exp(buf): one flat loop, vectorised for float32."""
    for q in range(buf.size):
        buf[q] = exp_t(buf[q])


# ----------------------------------------------------------------- cross-entropy
@njit(**JIT)
def _sce_block_t(logits, labels, sample_weight, grad2, row_loss_out, eps, partial,
                 r0, r1, tz, tv, ts):  # fmt: skip
    """Rows r0..r1 with few classes, transposed: tz[j, r] = z[r0 + r, j].

    Scratch: tz (K, >= rows) and tv (3, >= rows) in the logits' dtype, ts (2, >= rows)
    float64. partial[i] = w_i l_i; grad rows w_i (p - t) / n when grad2 is not empty.
    """
    # IN  logits (n, K), labels (n,) intp, sample_weight (n,) or empty, eps
    # OUT grad2 (n, K) or (0, K), row_loss_out (n,) or empty, partial (n,) float64
    n, k = logits.shape
    t = logits.dtype.type
    rows = r1 - r0
    zb = logits[r0:r1]
    lb = labels[r0:r1]
    pb = partial[r0:r1]
    mx, lab_shift, lab_grad = tv[0], tv[1], tv[2]
    s, shifted_sum = ts[0], ts[1]
    rows4 = rows - rows % 4
    for j in range(k):  # copy in, transposed (strided reads, unrolled by hand)
        tj = tz[j]
        for r in range(0, rows4, 4):
            tj[r] = zb[r, j]
            tj[r + 1] = zb[r + 1, j]
            tj[r + 2] = zb[r + 2, j]
            tj[r + 3] = zb[r + 3, j]
        for r in range(rows4, rows):
            tj[r] = zb[r, j]
    t0 = tz[0]
    for r in range(rows):
        mx[r] = t0[r]
    for j in range(1, k):
        tj = tz[j]
        for r in range(rows):
            v = tj[r]
            m = mx[r]
            mx[r] = v if v > m else m
    for r in range(rows):  # labels are validated: unsigned, no negative-index wrap
        lab_shift[r] = zb[r, _U(lb[r])] - mx[r]
    if eps != 0.0:
        for r in range(rows):
            shifted_sum[r] = 0.0
        for j in range(k):
            tj = tz[j]
            for r in range(rows):
                shifted_sum[r] += tj[r] - mx[r]
    for j in range(k):
        tj = tz[j]
        for r in range(rows):
            tj[r] = exp_t(tj[r] - mx[r])
    for r in range(rows):
        s[r] = t0[r]
    for j in range(1, k):
        tj = tz[j]
        for r in range(rows):
            s[r] += tj[r]
    keep = 1.0 - eps
    for r in range(rows):
        pb[r] = _log_f64(s[r]) - keep * lab_shift[r]
    if eps != 0.0:
        eps_over_k = eps / k
        for r in range(rows):
            pb[r] -= eps_over_k * shifted_sum[r]
    if row_loss_out.size:
        rb = row_loss_out[r0:r1]
        for r in range(rows):
            rb[r] = pb[r]
    if sample_weight.size:
        wb = sample_weight[r0:r1]
        for r in range(rows):
            pb[r] = wb[r] * pb[r]
    if grad2.size:
        eps_k = t(eps / k)
        one_m_eps = t(1.0 - eps)
        inv, scale = mx, lab_shift  # reused: 1/s and w/n
        for r in range(rows):
            inv[r] = t(1.0 / s[r])
        if sample_weight.size:
            wb = sample_weight[r0:r1]
            tn = t(n)
            for r in range(rows):
                scale[r] = wb[r] / tn
        else:
            inv_n = t(1.0 / n)
            for r in range(rows):
                scale[r] = inv_n
        for r in range(rows):
            lab_grad[r] = ((tz[_U(lb[r]), r] * inv[r] - eps_k) - one_m_eps) * scale[r]
        for j in range(k):
            tj = tz[j]
            for r in range(rows):
                tj[r] = (tj[r] * inv[r] - eps_k) * scale[r]
        gb = grad2[r0:r1]
        for j in range(k):  # copy out, transposed
            tj = tz[j]
            for r in range(0, rows4, 4):
                gb[r, j] = tj[r]
                gb[r + 1, j] = tj[r + 1]
                gb[r + 2, j] = tj[r + 2]
                gb[r + 3, j] = tj[r + 3]
            for r in range(rows4, rows):
                gb[r, j] = tj[r]
        for r in range(rows):
            gb[r, _U(lb[r])] = lab_grad[r]


@njit(**JIT)
def _sce_block_r(logits, labels, sample_weight, grad_flat, row_loss_out, eps, partial,
                 r0, r1, buf, tv):  # fmt: skip
    """Rows r0..r1 one by one (many classes): shifted rows to buf (the grad rows or a
    scratch block), exp as one flat loop, then per row the loss and the gradient.
    Scratch tv (2, >= rows) in the logits' dtype."""
    # IN  logits (n, K), labels (n,) intp, sample_weight (n,) or empty, eps
    # OUT grad_flat (n*K,) or empty, row_loss_out (n,) or empty, partial (n,) float64
    n, k = logits.shape
    t = logits.dtype.type
    has_w = sample_weight.size > 0
    has_g = grad_flat.size > 0
    eps_k = t(eps / k)
    one_m_eps = t(1.0 - eps)
    inv_n = t(1.0 / n)
    mx, lab_shift = tv[0], tv[1]
    rows = r1 - r0
    _shift_rows(logits, r0, r1, buf, mx)
    for r in range(rows):
        lab_shift[r] = buf[r * k + labels[r0 + r]]
    _exp_inplace(buf[: rows * k])
    for r in range(rows):
        i = r0 + r
        b = r * k
        s = 0.0  # float64
        for j in range(k):
            s += buf[b + j]
        loss = _log_f64(s) - (1.0 - eps) * lab_shift[r]
        if eps != 0.0:
            m = mx[r]
            acc = 0.0
            for j in range(k):
                acc += logits[i, j] - m
            loss -= (eps / k) * acc
        if row_loss_out.size:
            row_loss_out[i] = loss
        w = sample_weight[i] if has_w else t(1.0)
        partial[i] = w * loss
        if has_g:  # branch-free row loop (vectorises), then the label's entry
            inv = t(1.0 / s)
            scale = w / t(n) if has_w else inv_n
            lab = labels[i]
            el = buf[b + lab]
            for j in range(k):
                buf[b + j] = (buf[b + j] * inv - eps_k) * scale
            buf[b + lab] = ((el * inv - eps_k) - one_m_eps) * scale


@njit(**JIT)
def _block_rows(k, rows_per_task):
    """Rows per block: a multiple of 8 (whole vectors) for the transposed kernel."""
    if k < _T_MAX_K:
        return max(8, rows_per_task - rows_per_task % 8)
    return max(1, rows_per_task)


@njit(**JIT)
def _sce_range(logits, labels, sample_weight, grad_out, row_loss_out, eps, partial,
               r0, r1, step):  # fmt: skip
    """Rows r0..r1 in blocks of ``step`` rows, one scratch for all of them."""
    n, k = logits.shape
    grad_flat = grad_out.reshape(-1)  # callers pass it flat: one specialisation
    rows = min(step, r1 - r0)
    if k < _T_MAX_K:
        grad2 = grad_flat.reshape((n if grad_flat.size else 0, k))
        tz = np.empty((k, rows), logits.dtype)
        tv = np.empty((3, rows), logits.dtype)
        ts = np.empty((2, rows), np.float64)
        for b0 in range(r0, r1, step):
            _sce_block_t(logits, labels, sample_weight, grad2, row_loss_out, eps,
                         partial, b0, min(b0 + step, r1), tz, tv, ts)  # fmt: skip
    else:
        scratch = np.empty(0 if grad_flat.size else rows * k, logits.dtype)
        tv = np.empty((2, rows), logits.dtype)
        for b0 in range(r0, r1, step):
            b1 = min(b0 + step, r1)
            buf = grad_flat[b0 * k : b1 * k] if grad_flat.size else scratch
            _sce_block_r(logits, labels, sample_weight, grad_flat, row_loss_out, eps,
                         partial, b0, b1, buf, tv)  # fmt: skip


@njit(**JIT)
def _sce_serial(logits, labels, sample_weight, grad_out, row_loss_out, eps,
                rows_per_task):  # fmt: skip
    n, k = logits.shape
    partial = np.empty(n, np.float64)
    step = _block_rows(k, rows_per_task)  # blocks bound the scratch; same results
    _sce_range(logits, labels, sample_weight, grad_out, row_loss_out, eps, partial,
               ZERO, n, step)  # fmt: skip
    total = 0.0
    for i in range(n):
        total += partial[i]
    return total / n


@njit(**PARALLEL)
def _sce_parallel(logits, labels, sample_weight, grad_out, row_loss_out, eps,
                  rows_per_task):  # fmt: skip
    n, k = logits.shape
    partial = np.empty(n, np.float64)
    step = _block_rows(k, rows_per_task)
    for c in prange((n + step - 1) // step):
        r0 = c * step
        _sce_range(logits, labels, sample_weight, grad_out, row_loss_out, eps, partial,
                   r0, min(r0 + step, n), step)  # fmt: skip
    total = 0.0
    for i in range(n):  # serial, row order: independent of the thread count
        total += partial[i]
    return total / n


def softmax_cross_entropy(logits, labels, sample_weight, grad_out, row_loss_out,
                          label_smoothing):  # fmt: skip
    """Mean weighted loss (1/n) sum_i w_i l_i; grad_out = w (softmax - target) / n."""
    # IN  logits (n, K), labels (n,) intp, sample_weight (n,) or empty, label_smoothing
    # OUT grad_out (n, K) or empty, row_loss_out (n,) or empty; returns the mean loss
    n, k = logits.shape
    if n == 0:
        return math.nan
    eps = float(label_smoothing)
    tune = opt.TUNE
    rows = _split.rows_per_task.py_func(k, tune)
    grad_flat = grad_out.reshape(-1)  # flat: one compiled specialisation
    if _split.softmax.py_func(n, k, tune):
        return _sce_parallel(logits, labels, sample_weight, grad_flat, row_loss_out,
                             eps, rows)  # fmt: skip
    return _sce_serial(logits, labels, sample_weight, grad_flat, row_loss_out, eps,
                       rows)  # fmt: skip


# ---------------------------------------------------------------------- squared error
@njit(**JIT)
def _se_scratch(k):
    """The float64 scratch of one squared-error task (see _se_block)."""
    return np.empty(max(_SE_SCRATCH, k), np.float64)


@njit(**JIT)
def _se_block(pred, target, sample_weight, grad_flat, row_loss_out, n, sq):
    """One block of rows (every argument sliced to it; n the whole batch):
    l_i = 0.5 sum_j d_ij^2 (float64, j in order), d = pred - target; grad = d w_i / n
    when grad_flat is non-empty. Returns sum_i w_i l_i, added in row order. sq: a
    float64 scratch of at least k values (_se_scratch)."""
    # IN  pred, target (rows, K), sample_weight (rows,) or empty
    # OUT grad_flat (rows*K,) or empty, row_loss_out (rows,) or empty
    rows, k = pred.shape
    t = pred.dtype.type
    pf = pred.reshape(-1)
    tf = target.reshape(-1)
    has_w = sample_weight.size > 0
    grad_in_pass = grad_flat.size > 0 and not has_w
    inv_n = t(1.0 / n)
    step = sq.size // k if k else rows  # whole rows of the scratch (k = 0: one fill)
    total = 0.0
    # whole rows at a time: the squares (unweighted: the gradient too) in one flat
    # vector loop into the scratch, then each row's in-order sum from there; short
    # independent add chains, where summing straight from the inputs ran one long
    # convert-multiply-add chain per row. Loops start at 0 (offsets provably >= 0: no
    # wraparound checks).
    for c0 in range(0, rows, step):
        m = min(step, rows - c0)
        pc = pf[c0 * k : (c0 + m) * k]
        tc = tf[c0 * k : (c0 + m) * k]
        if grad_in_pass:
            gc = grad_flat[c0 * k : (c0 + m) * k]
            for q in range(m * k):
                d = pc[q] - tc[q]
                gc[q] = d * inv_n
                sq[q] = np.float64(d) * np.float64(d)
        else:
            for q in range(m * k):
                d = np.float64(pc[q] - tc[q])
                sq[q] = d * d
        rl = row_loss_out[c0 : c0 + m]
        wc = sample_weight[c0 : c0 + m]
        for r in range(m):
            b = r * k
            s = 0.0
            for j in range(k):
                s += sq[b + j]
            row = 0.5 * s
            if rl.size:
                rl[r] = row
            total += row * wc[r] if has_w else row
    if grad_flat.size and has_w:
        tn = t(n)
        for i in range(rows):
            scale = sample_weight[i] / tn
            b = i * k
            for j in range(k):
                grad_flat[b + j] = (pf[b + j] - tf[b + j]) * scale
    return total


@njit(**JIT)
def _bce_block(logits, target, sample_weight, grad_flat, n):
    """One block of rows (as _se_block) of the sigmoid cross-entropy, scikit-learn's
    binary log loss: p = 1 / (1 + exp(-z)) (exp overflow gives p = 0), clipped to
    [eps, 1 - eps] (the dtype's eps) for the loss only, l_i = -sum_j [y log p' +
    (1 - y) log(1 - p')] in float64, j in order; grad = (p - y) w_i / n. A NaN logit
    stays NaN (the clip's comparisons leave it). Returns sum_i w_i l_i."""
    # IN  logits, target (rows, K), sample_weight (rows,) or empty
    # OUT grad_flat (rows*K,) or empty
    rows, k = logits.shape
    t = logits.dtype.type
    one = t(1.0)
    # the dtype's machine epsilon (np.finfo's eps)
    eps = t(2.220446049250313e-16) if logits.itemsize == 8 else t(1.1920929e-07)
    zf = logits.reshape(-1)
    yf = target.reshape(-1)
    inv_n = t(1.0 / n)
    total = 0.0
    for i in range(rows):
        b = i * k
        s = 0.0
        scale = sample_weight[i] / t(n) if sample_weight.size else inv_n
        for j in range(k):
            p = one / (one + exp_t(-zf[b + j]))
            y = yf[b + j]
            if grad_flat.size:
                grad_flat[b + j] = (p - y) * scale
            pc = eps if p < eps else p
            pc = one - eps if pc > one - eps else pc
            yd = np.float64(y)
            s += yd * _log_f64(np.float64(pc)) + (1.0 - yd) * _log_f64(
                np.float64(one - pc)
            )
        total += -s * sample_weight[i] if sample_weight.size else -s
    return total


@njit(**JIT)
def _se_rows(pred, target, sample_weight, grad_flat, row_loss_out, r0, r1, sigmoid,
             sq):  # fmt: skip
    """_se_block (or _bce_block when ``sigmoid``) on rows r0..r1 (empty optional
    arrays stay empty); sq: the task's _se_scratch."""
    k = pred.shape[1]
    if sigmoid:
        return _bce_block(pred[r0:r1], target[r0:r1], sample_weight[r0:r1],
                          grad_flat[r0 * k : r1 * k], pred.shape[0])  # fmt: skip
    return _se_block(pred[r0:r1], target[r0:r1], sample_weight[r0:r1],
                     grad_flat[r0 * k : r1 * k], row_loss_out[r0:r1],
                     pred.shape[0], sq)  # fmt: skip


@njit(**JIT)
def _se_serial(pred, target, sample_weight, grad_out, row_loss_out, rows_per_task,
               sigmoid):  # fmt: skip
    """(1/n) sum_i w_i l_i of the squared error (sigmoid: the sigmoid cross-entropy):
    blocks of ``rows_per_task`` rows, their sums added in order (as _se_parallel, so
    both give the same bits)."""
    n, k = pred.shape
    grad_flat = grad_out.reshape(-1)  # callers pass it flat: one specialisation
    sq = _se_scratch(k)
    total = 0.0
    for r0 in range(0, n, rows_per_task):
        total += _se_rows(pred, target, sample_weight, grad_flat, row_loss_out, r0,
                          min(r0 + rows_per_task, n), sigmoid, sq)  # fmt: skip
    return total / n


@njit(**PARALLEL)
def _se_parallel(pred, target, sample_weight, grad_out, row_loss_out, rows_per_task,
                 sigmoid):  # fmt: skip
    n, k = pred.shape
    n_blocks = (n + rows_per_task - 1) // rows_per_task
    partials = np.empty(n_blocks, np.float64)
    grad_flat = grad_out.reshape(-1)
    for c in prange(n_blocks):
        r0 = np.int64(c) * rows_per_task
        partials[c] = _se_rows(pred, target, sample_weight, grad_flat, row_loss_out,
                               r0, min(r0 + rows_per_task, n), sigmoid,
                               _se_scratch(k))  # fmt: skip
    total = 0.0
    for c in range(n_blocks):  # in order: independent of the thread count
        total += partials[c]
    return total / n


def squared_error(pred, target, sample_weight, grad_out, row_loss_out):
    """Mean weighted loss (1/n) sum_i w_i 0.5 ||pred_i - target_i||^2; grad_out = w
    (pred - target) / n."""
    # IN  pred, target (n, K), sample_weight (n,) or empty
    # OUT grad_out (n, K) or empty, row_loss_out (n,) or empty; returns the mean loss
    n, k = pred.shape
    if n == 0:
        return math.nan
    tune = opt.TUNE
    rows = _split.rows_per_task.py_func(k, tune)
    grad_flat = grad_out.reshape(-1)  # flat: one compiled specialisation
    if _split.squared_error.py_func(n, k, tune):
        return _se_parallel(pred, target, sample_weight, grad_flat, row_loss_out, rows,
                            False)  # fmt: skip
    return _se_serial(pred, target, sample_weight, grad_flat, row_loss_out, rows, False)


# ---------------------------------------------------------------------------- softmax
@njit(**JIT)
def _softmax_rows(logits, out, r0, r1):
    """Rows r0..r1: out = exp(z - m) / sum exp(z - m) (out may be logits)."""
    # IN  logits (n, K)   OUT out (n, K)
    t = logits.dtype.type
    k = logits.shape[1]
    buf = out.reshape(-1)[r0 * k : r1 * k]
    _shift_rows(logits, r0, r1, buf, np.empty(r1 - r0, logits.dtype))
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
    tune = opt.TUNE
    rows = _split.rows_per_task.py_func(k, tune)
    if _split.softmax.py_func(n, k, tune):
        _softmax_parallel(logits, out, rows)
    else:
        _softmax_serial(logits, out, rows)
