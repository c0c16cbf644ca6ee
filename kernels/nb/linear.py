"""Fully connected layer: BLAS GEMM plus fused Numba passes (bias, activation, dz, db).

Forward: y = x @ w (BLAS), then one pass over row blocks: z = y + b, z_out = z when
requested, y = f(z). Backward: one pass over column blocks computes dz = dy f'(z) and
db = column sums of dz (each column summed over the rows in order, so db does not
depend on the thread count), then dw = x^T dz (+ wd w) and dx = dz w^T by BLAS.
"""

from __future__ import annotations

from numba import njit, prange

from . import _options as opt
from ._options import JIT, PARALLEL
from .activations import _backward_parallel, act_backward_slice, act_forward_slice
from .matmul import GEMM_CONFIG, gemm


# ---------------------------------------------------------------------------- forward
@njit(**JIT)
def _bias_act_rows(y, b, z_out, m, act, alpha, r0, r1):
    """Rows r0..r1 of y: z = y + b; z_out = z (if non-empty); y = f(z). Flat arrays."""
    # IN  b (m,) or empty, act, alpha   IN/OUT y (n*m,)   OUT z_out (n*m,) or empty
    for i in range(r0, r1):
        row = y[i * m : (i + 1) * m]
        if b.size:
            for j in range(m):
                row[j] = row[j] + b[j]
        if z_out.size:
            zrow = z_out[i * m : (i + 1) * m]
            for j in range(m):
                zrow[j] = row[j]
        if act != 0:
            act_forward_slice(row, row, act, alpha)


@njit(**PARALLEL)
def _bias_act_parallel(y, b, z_out, m, act, alpha, rows_per_task):
    n = y.size // m
    for c in prange((n + rows_per_task - 1) // rows_per_task):
        r0 = c * rows_per_task
        _bias_act_rows(y, b, z_out, m, act, alpha, r0, min(r0 + rows_per_task, n))


@njit(**JIT)
def _linear_forward(x, w, b, y_out, z_out, act, alpha, parallel, rows_per_task, cfg):
    gemm(x, w, y_out, False, False, 1.0, 0.0, cfg)
    n, m = y_out.shape
    if n == 0 or m == 0:
        return
    yf = y_out.reshape(-1)
    zf = z_out.reshape(-1)
    if parallel:
        _bias_act_parallel(yf, b, zf, m, act, alpha, rows_per_task)
    else:
        _bias_act_rows(yf, b, zf, m, act, alpha, 0, n)


def linear_forward(x, w, b, y_out, z_out, act, alpha):
    """z = x @ w + b; y_out = f(z); z_out = z when non-empty."""
    # IN  x (n, k), w (k, m), b (m,) or empty, act, alpha
    # OUT y_out (n, m), z_out (n, m) or empty
    n, m = y_out.shape
    work = n * m * opt.ACT_COST[act]
    parallel = work >= opt.PARALLEL_MIN_WORK and n > 1
    rows_per_task = max(1, opt.CHUNK // max(m, 1))
    _linear_forward(
        x, w, b, y_out, z_out, act, y_out.dtype.type(alpha), parallel, rows_per_task,
        GEMM_CONFIG,
    )  # fmt: skip


# --------------------------------------------------------------------------- backward
@njit(**JIT)
def _dz_db_cols(dy, z, y, dz, db, act, alpha, j0, j1):
    """Columns j0..j1: dz = dy f'(z); db[j] = sum over rows i (in order) of dz[i, j]."""
    # IN  dy, z, y (n, m), act, alpha   OUT dz (n, m), db (m,)
    for j in range(j0, j1):
        db[j] = 0.0
    for i in range(dy.shape[0]):
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
            _dz_db_cols(dy, z, y, dz_out, db_out, act, alpha, 0, dy.shape[1])
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
    gemm(x, dz_out, dw_out, True, False, 1.0, 0.0, cfg)
    if weight_decay != 0.0:
        wd = dw_out.dtype.type(weight_decay)
        if par_dw:
            _add_scaled_parallel(dw_out.reshape(-1), w.reshape(-1), wd, chunk)
        else:
            _add_scaled_slice(dw_out.reshape(-1), w.reshape(-1), wd)
    # 3. dx = dz w^T
    if dx_out.size:  # (an empty dx_out arrives 1-D: reshape for typing)
        dx = dx_out.reshape((x.shape[0], x.shape[1]))
        gemm(dz_out, w, dx, False, True, 1.0, 0.0, cfg)


def linear_backward(dy, x, w, z, y, dz_out, dw_out, db_out, dx_out, act, alpha,
                    weight_decay):  # fmt: skip
    """dz = dy f'(z); dw = x^T dz + wd w; db = sum_rows dz; dx = dz w^T."""
    # IN  dy, z, y (n, m), x (n, k), w (k, m), act, alpha, weight_decay
    # OUT dz_out (n, m; may be dy), dw_out (k, m), db_out (m,) or empty,
    #     dx_out (n, k) or empty
    n, m = dy.shape
    work = n * m * opt.ACT_COST[act]
    if db_out.size:  # column blocks: parallel only when there are several
        par_dz = work >= opt.PARALLEL_MIN_WORK and m > opt.COL_BLOCK
    else:
        par_dz = work >= opt.PARALLEL_MIN_WORK
    par_dw = w.size >= opt.PARALLEL_MIN_WORK
    _linear_backward(
        dy, x, w, z, y, dz_out, dw_out, db_out, dx_out, act,
        dy.dtype.type(alpha), float(weight_decay), par_dz, par_dw,
        opt.CHUNK, opt.COL_BLOCK, GEMM_CONFIG,
    )  # fmt: skip
