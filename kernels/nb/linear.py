"""Fully connected layer: BLAS GEMM plus fused Numba passes (bias, activation, dz, db).

Forward: y = x @ w by the GEMM's fixed blocks (BLAS), each block followed at once by
its epilogue z = y + b, z_out = z when requested, y = f(z) (one parallel region).
Backward: one pass over column blocks computes dz = dy f'(z) and db = column sums
of dz (each column summed over the rows in order, so db does not depend on the thread
count), then dw = x^T dz (+ wd w) and dx = dz w^T by BLAS.
"""

from __future__ import annotations

import importlib

import numpy as np
from numba import njit, prange

from . import _options as opt
from . import _split
from ._options import FALSE, JIT, PARALLEL, TRUE, ZERO
from .activations import _backward_parallel, act_backward_slice, act_forward_slice
from .matmul import (
    CONTROL,
    _gemm_block,
    blas_single_begin,
    blas_single_end,
    gemm,
    gemm_split,
)

# the module, read at call time (the package's "matmul" is the kernel of that name);
# GEMM_CONFIG changes in a forked child (see __init__._serial_only)
_matmul = importlib.import_module(".matmul", __package__)


# ---------------------------------------------------------------------------- forward
@njit(**JIT)
def _bias_act_rows(y, b, z_out, m, act, alpha, r0, r1):
    """Rows r0..r1 of y: z = y + b; z_out = z (if non-empty); y = f(z). Flat arrays."""
    # IN  b (m,) or empty, act, alpha   IN/OUT y (n*m,)   OUT z_out (n*m,) or empty
    lo = r0 * m
    hi = r1 * m
    if b.size:
        for i in range(r0, r1):
            for j in range(m):
                y[i * m + j] += b[j]
    if z_out.size:
        for q in range(lo, hi):
            z_out[q] = y[q]
    if act != 0:  # one flat pass over the block: no per-row call for narrow rows
        act_forward_slice(y[lo:hi], y[lo:hi], act, alpha)


@njit(**JIT)
def _bias_act_cols(y, b, z_out, act, alpha, j0, j1):
    """Columns j0..j1 of every row of y (n, m): the epilogue of a column block."""
    m = y.shape[1]
    yf = y.reshape(-1)
    for i in range(y.shape[0]):
        row = yf[i * m + j0 : i * m + j1]
        if b.size:
            for j in range(j1 - j0):
                row[j] += b[j0 + j]
        if z_out.size:  # a loop, not a slice assignment: Numba's shape-mismatch error
            # path for that formats strings, ~100 functions linked into every caller
            zi = z_out[i * m + j0 : i * m + j1]
            for j in range(j1 - j0):
                zi[j] = row[j]
        if act != 0:
            act_forward_slice(row, row, act, alpha)


@njit(**JIT)
def _forward_block(p, size, by_rows, x, w, b, y, z_out, act, alpha, int64):
    """GEMM block p of y = x @ w, then its epilogue while the block is in cache."""
    _gemm_block(p, size, by_rows, x, w, y, FALSE, FALSE, 1.0, 0.0, int64)
    n, m = y.shape
    lo = p * size
    if by_rows:
        _bias_act_rows(y.reshape(-1), b, z_out, m, act, alpha, lo, min(lo + size, n))
    else:
        _bias_act_cols(y, b, z_out, act, alpha, lo, min(lo + size, m))


@njit(**PARALLEL)
def _forward_blocks_parallel(parts, size, by_rows, x, w, b, y, z_out, act, alpha,
                             int64):  # fmt: skip
    for p in prange(parts):
        # prange's index is uint64, range's int64: one type, one compiled callee
        _forward_block(np.int64(p), size, by_rows, x, w, b, y, z_out, act, alpha,
                       int64)  # fmt: skip


@njit(**JIT)
def _linear_forward(x, w, b, y_out, z_out, act, alpha, cfg):
    n, m = y_out.shape
    k = x.shape[1]
    zf = z_out.reshape(-1)
    if n == 0 or m == 0:
        return
    if k == 0:  # BLAS rejects ld < 1: the product is zero
        y_out[:] = 0.0
        _bias_act_rows(y_out.reshape(-1), b, zf, m, act, alpha, ZERO, n)
        return
    # the GEMM's own fixed blocks (matmul.gemm_split), each with its epilogue
    parts, size, by_rows = gemm_split(n, m, k, cfg)
    pin = blas_single_begin(cfg)
    if cfg[1] == CONTROL and parts > 1:
        _forward_blocks_parallel(parts, size, by_rows, x, w, b, y_out, zf, act,
                                 alpha, cfg[3])  # fmt: skip
    else:
        for p in range(parts):
            _forward_block(p, size, by_rows, x, w, b, y_out, zf, act, alpha, cfg[3])
    blas_single_end(cfg, pin)


def linear_forward(x, w, b, y_out, z_out, act, alpha):
    """z = x @ w + b; y_out = f(z); z_out = z when non-empty."""
    # IN  x (n, k), w (k, m), b (m,) or empty, act, alpha
    # OUT y_out (n, m), z_out (n, m) or empty
    # z_out flat, as the training step passes it: one compiled specialisation
    _linear_forward(
        x, w, b, y_out, z_out.reshape(-1), act, y_out.dtype.type(alpha),
        _matmul.GEMM_CONFIG,
    )  # fmt: skip


# --------------------------------------------------------------------------- backward
@njit(**JIT)
def _dz_db_cols(dy, z, y, dz, db, act, alpha, j0, j1):
    """Columns j0..j1: dz = dy f'(z); db[j] = sum over rows i (in order) of dz[i, j]."""
    # IN  dy, z, y (n, m), act, alpha   OUT dz (n, m), db (m,)
    for j in range(j0, j1):
        db[j] = 0.0
    n, m = dy.shape
    if j1 - j0 == m:  # all columns: one flat pass (no per-row call for narrow rows)
        dzf = dz.reshape(-1)
        act_backward_slice(dy.reshape(-1), z.reshape(-1), y.reshape(-1), dzf, act,
                           alpha)  # fmt: skip
        for i in range(n):
            for j in range(m):
                db[j] += dzf[i * m + j]
        return
    for i in range(n):
        dzi = dz[i, j0:j1]
        act_backward_slice(dy[i, j0:j1], z[i, j0:j1], y[i, j0:j1], dzi, act, alpha)
        for j in range(j1 - j0):
            db[j0 + j] += dzi[j]


@njit(**PARALLEL)
def _dz_db_parallel(dy, z, y, dz, db, act, alpha, col_block):
    m = dy.shape[1]
    for c in prange((m + col_block - 1) // col_block):
        j0 = c * col_block
        _dz_db_cols(dy, z, y, dz, db, act, alpha, j0, min(j0 + col_block, m))


@njit(**JIT)
def _add_scaled_slice(y, x, a):
    """y += x * a (flat slices)."""
    for i in range(y.size):
        y[i] = y[i] + x[i] * a


@njit(**PARALLEL)
def _add_scaled_parallel(y, x, a, chunk):
    n = y.size
    for c in prange((n + chunk - 1) // chunk):
        lo = c * chunk
        hi = min(lo + chunk, n)
        _add_scaled_slice(y[lo:hi], x[lo:hi], a)


@njit(**JIT)
def _linear_backward(dy, x, w, z, y, dz_out, dw_out, db_out, dx_out, act, alpha,
                     weight_decay, par_dz, par_dw, chunk, col_block, cfg):  # fmt: skip
    # 1. dz = dy f'(z) and db (fused, by column blocks), or dz alone (flat chunks)
    if db_out.size:
        if par_dz:
            _dz_db_parallel(dy, z, y, dz_out, db_out, act, alpha, col_block)
        else:
            _dz_db_cols(dy, z, y, dz_out, db_out, act, alpha, ZERO, dy.shape[1])
    else:
        dyf = dy.reshape(-1)
        zf = z.reshape(-1)
        yf = y.reshape(-1)
        dzf = dz_out.reshape(-1)
        if par_dz:
            _backward_parallel(dyf, zf, yf, dzf, act, alpha, chunk)
        else:
            act_backward_slice(dyf, zf, yf, dzf, act, alpha)
    # 2. dw = x^T dz (+ weight_decay w, added after the product like the oracle)
    gemm(x, dz_out, dw_out, TRUE, FALSE, 1.0, 0.0, cfg)
    if weight_decay != 0.0:
        wd = dw_out.dtype.type(weight_decay)
        if par_dw:
            _add_scaled_parallel(dw_out.reshape(-1), w.reshape(-1), wd, chunk)
        else:
            _add_scaled_slice(dw_out.reshape(-1), w.reshape(-1), wd)
    # 3. dx = dz w^T
    if dx_out.size:  # dx_out arrives flat
        dx = dx_out.reshape((x.shape[0], x.shape[1]))
        gemm(dz_out, w, dx, FALSE, TRUE, 1.0, 0.0, cfg)


def linear_backward(dy, x, w, z, y, dz_out, dw_out, db_out, dx_out, act, alpha,
                    weight_decay):  # fmt: skip
    """dz = dy f'(z); dw = x^T dz + wd w; db = sum_rows dz; dx = dz w^T."""
    # IN  dy, z, y (n, m), x (n, k), w (k, m), act, alpha, weight_decay
    # OUT dz_out (n, m; may be dy), dw_out (k, m), db_out (m,) or empty,
    #     dx_out (n, k) or empty
    n, m = dy.shape
    tune = opt.TUNE
    # dx_out flat, as the training step passes it: one compiled specialisation
    _linear_backward(
        dy, x, w, z, y, dz_out, dw_out, db_out, dx_out.reshape(-1), act,
        dy.dtype.type(alpha), float(weight_decay),
        _split.dz.py_func(n, m, act, db_out.size > 0, tune),
        _split.scale_add.py_func(w.size, tune), tune.chunk, tune.col_block,
        _matmul.GEMM_CONFIG,
    )  # fmt: skip
