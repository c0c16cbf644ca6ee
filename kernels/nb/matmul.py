"""GEMM through fastnn's own micro-kernels (the Cython extension's, kernels/gemm.py
says which products) or NumPy's OpenBLAS (kernels/_blas.py), called straight from
nopython code.

The CBLAS addresses are registered with LLVM under our own symbol names and declared as
``types.ExternalFunction``: the compiled code calls them by name, so (unlike a ctypes
function object, a "dynamic global") the kernels stay cacheable on disk.

Thread-count-independent results (the same scheme as the Cython twin, kernels/cy/
_blas.pxi): OpenBLAS's own threaded partition changes the rounding with its thread
count, so a GEMM is split here into fixed blocks of C along its larger dimension (the
split depends only on the shape and the machine's core count, never on the thread
setting) and each block is one *single-threaded* BLAS call. OpenBLAS is switched to one
thread for the duration (openblas_set_num_threads, found by kernels/_blas.py), so the
blocks can run in a prange with one thread pool at a time and no nested parallelism.
Without that control the blocks run serially and BLAS keeps its own threads.
"""

from __future__ import annotations

import ctypes
import os

import llvmlite.binding as llvm
import numpy as np
from numba import njit, prange, types

from .._blas import CBLAS, GEMM_BLOCK_FLOPS
from ._options import JIT, PARALLEL


# cblas_?gemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) of
# the library kernels/_blas.py found. Both integer widths are declared under their own
# symbol names (pointing at the same function) and the width in use is a runtime
# argument, so a cached kernel never bakes in the wrong one.
def _gemm_sig(real, integer):
    return types.void(
        types.intc,
        types.intc,
        types.intc,
        integer,
        integer,
        integer,
        real,
        types.voidptr,
        integer,
        types.voidptr,
        integer,
        real,
        types.voidptr,
        integer,
    )


_GEMMS = {}
for _prefix, _real, _addr in (
    ("s", types.float32, CBLAS.sgemm),
    ("d", types.float64, CBLAS.dgemm),
):
    for _bits, _int in ((32, types.int32), (64, types.int64)):
        _symbol = f"fastnn_nb_cblas_{_prefix}gemm{_bits}"
        llvm.add_symbol(_symbol, _addr)
        _GEMMS[_prefix, _bits] = types.ExternalFunction(_symbol, _gemm_sig(_real, _int))
_sgemm32, _sgemm64 = _GEMMS["s", 32], _GEMMS["s", 64]
_dgemm32, _dgemm64 = _GEMMS["d", 32], _GEMMS["d", 64]


def _own_gemm_plan():
    """(fastnn's own GEMM as the Cython extension exports it (kernels/gemm.py), its
    BLAS pin (kernels/cy/_blas_pin.h), why not): (None, (0, 0), the import error)
    when the extension is not built or not importable; then every product goes to
    BLAS, the blocks run without BLAS thread control, and ``backend_info`` says
    why."""
    try:
        from ..cy import BLAS_PIN, GEMM_PLAN
    except ImportError as exc:
        return None, (0, 0), f"{type(exc).__name__}: {exc}"
    return GEMM_PLAN, BLAS_PIN, None


OWN_GEMM, _PIN_ADDRS, OWN_GEMM_MISSING = _own_gemm_plan()
# The same micro-kernels as the Cython backend, by address (ILP64 cblas signature);
# without the extension the symbols point at BLAS and are never called (mode 0).
for _prefix, _real, _addr in (
    ("s", types.float32, OWN_GEMM.sgemm if OWN_GEMM else CBLAS.sgemm),
    ("d", types.float64, OWN_GEMM.dgemm if OWN_GEMM else CBLAS.dgemm),
):
    _symbol = f"fastnn_nb_own_{_prefix}gemm"
    llvm.add_symbol(_symbol, _addr)
    _GEMMS[_prefix, "own"] = types.ExternalFunction(
        _symbol, _gemm_sig(_real, types.int64)
    )
_own_sgemm, _own_dgemm = _GEMMS["s", "own"], _GEMMS["d", "own"]
# The measured plan's table (kernels/cy/_gemm.h fnn_plan_lookup): 1 own, 0 BLAS, -1 no
# entry; without the extension a stand-in that has none (mode 0 never asks anyway).
if OWN_GEMM:
    _LOOKUP_ADDR = OWN_GEMM.lookup
else:
    _LOOKUP_TYPE = ctypes.CFUNCTYPE(
        ctypes.c_int, *(ctypes.c_int64,) * 3, *(ctypes.c_int,) * 3
    )
    _no_lookup = _LOOKUP_TYPE(lambda m, n, k, ta, tb, dbl: -1)
    _LOOKUP_ADDR = ctypes.cast(_no_lookup, ctypes.c_void_p).value
llvm.add_symbol("fastnn_nb_plan_lookup", _LOOKUP_ADDR)
_plan_lookup = types.ExternalFunction(
    "fastnn_nb_plan_lookup",
    types.intc(
        types.int64, types.int64, types.int64, types.intc, types.intc, types.intc
    ),
)

# BLAS on one thread around the blocks: the process-wide pin the Cython kernels use
# too (one depth for every kernel of every thread; see kernels/cy/_blas_pin.h)
_HAS_CONTROL = all(_PIN_ADDRS)
if not _HAS_CONTROL:  # harmless stand-ins so the symbols resolve; never called
    _noop_pin = ctypes.CFUNCTYPE(ctypes.c_int)(lambda: 0)
    _noop_unpin = ctypes.CFUNCTYPE(None, ctypes.c_int)(lambda token: None)
    _PIN_ADDRS = tuple(
        ctypes.cast(f, ctypes.c_void_p).value for f in (_noop_pin, _noop_unpin)
    )
llvm.add_symbol("fastnn_nb_blas_pin", _PIN_ADDRS[0])
llvm.add_symbol("fastnn_nb_blas_unpin", _PIN_ADDRS[1])
_blas_pin = types.ExternalFunction("fastnn_nb_blas_pin", types.intc())
_blas_unpin = types.ExternalFunction("fastnn_nb_blas_unpin", types.void(types.intc))
BLAS_CONTROL = CBLAS.path if _HAS_CONTROL else None

try:
    _CORES = len(os.sched_getaffinity(0))
except AttributeError:  # not Linux
    _CORES = os.cpu_count() or 1


def gemm_flags(ilp64: bool, own_mode: int, max_k: int, min_n: int) -> int:
    """GEMM_CONFIG[3]: bit 0 the BLAS's 64-bit integers, bits 1-2 the own-GEMM mode
    of kernels/gemm.py (0 BLAS, 1 the plan, 2 own), bits 3-26 the plan's max_k, bits
    27- its min_n. One integer, so the kernels that pass it on keep their
    signatures."""
    if not 0 <= max_k < 1 << 24:
        raise ValueError(f"max_k={max_k} does not fit the GEMM flags")
    return int(ilp64) | (int(own_mode) << 1) | (int(max_k) << 3) | (int(min_n) << 27)


@njit(**JIT)
def _own_takes(m, n, k, trans_a, trans_b, dbl, int64):
    """The plan on gemm_flags (kernels/gemm.py): own mode 2 takes every product, mode 1
    those the measured plan gives it or, where it has no entry, those with
    k <= max_k and n >= min_n and one-row products with B not transposed."""
    own_mode = (int64 >> 1) & 3
    if own_mode == 1:
        measured = _plan_lookup(
            np.int64(m), np.int64(n), np.int64(k), np.intc(trans_a), np.intc(trans_b),
            np.intc(dbl),
        )  # fmt: skip
        if measured >= 0:
            return measured == 1
        return (k <= ((int64 >> 3) & 0xFFFFFF) and n >= (int64 >> 27)) or (
            m == 1 and not trans_b
        )
    return own_mode == 2


#: GEMM_CONFIG[1]: no BLAS thread control (the blocks run one after the other, BLAS
#: keeps its threads), control (each block a single-threaded BLAS call, the blocks in
#: parallel), or control with the blocks one after the other (a forked child, where no
#: parallel region may run: the same blocks, so the same bits).
NO_CONTROL, CONTROL, CONTROL_SERIAL = 0, 1, 2

#: Passed to every compiled GEMM (an argument, not a frozen global, so the disk cache
#: stays valid on another machine): (most blocks = cores, BLAS thread control (above),
#: flops per block, gemm_flags: 64-bit BLAS integers and the own-GEMM plan).
GEMM_CONFIG = (
    max(1, _CORES),
    CONTROL if _HAS_CONTROL else NO_CONTROL,
    float(GEMM_BLOCK_FLOPS),
    gemm_flags(
        CBLAS.int64,
        1 if OWN_GEMM else 0,  # kernels/gemm.py MODE_PLAN
        OWN_GEMM.max_k if OWN_GEMM else 0,
        OWN_GEMM.min_n if OWN_GEMM else 0,
    ),
)


@njit(**JIT)
def _gemm_call(
    trans_a,
    trans_b,
    m,
    n,
    k,
    alpha,
    a,
    a_off,
    lda,
    b,
    b_off,
    ldb,
    beta,
    c,
    c_off,
    ldc,
    int64,
):
    """One row-major CBLAS call on blocks: C = alpha op(A) op(B) + beta C.

    a, b, c are flat arrays, *_off the element offset of each block, ld* row lengths;
    int64 is GEMM_CONFIG[3] (gemm_flags) with the plan resolved for the whole product
    (_whole_product_plan): own mode 2 runs fastnn's own GEMM, any other the BLAS.
    """
    ta = 112 if trans_a else 111  # CblasTrans / CblasNoTrans
    tb = 112 if trans_b else 111
    ap, bp, cp = a[a_off:].ctypes, b[b_off:].ctypes, c[c_off:].ctypes
    own = ((int64 >> 1) & 3) == 2
    int64 = int64 & 1
    # fmt: off
    if own:
        if c.itemsize == 4:
            _own_sgemm(101, ta, tb, np.int64(m), np.int64(n), np.int64(k),
                       np.float32(alpha), ap, np.int64(lda), bp, np.int64(ldb),
                       np.float32(beta), cp, np.int64(ldc))
        else:
            _own_dgemm(101, ta, tb, np.int64(m), np.int64(n), np.int64(k),
                       np.float64(alpha), ap, np.int64(lda), bp, np.int64(ldb),
                       np.float64(beta), cp, np.int64(ldc))
        return
    if c.itemsize == 4:  # a compile-time constant: one branch survives
        al, be = np.float32(alpha), np.float32(beta)
        if int64:
            _sgemm64(101, ta, tb, np.int64(m), np.int64(n), np.int64(k), al, ap,
                     np.int64(lda), bp, np.int64(ldb), be, cp, np.int64(ldc))
        else:
            _sgemm32(101, ta, tb, np.int32(m), np.int32(n), np.int32(k), al, ap,
                     np.int32(lda), bp, np.int32(ldb), be, cp, np.int32(ldc))
    else:
        al, be = np.float64(alpha), np.float64(beta)
        if int64:
            _dgemm64(101, ta, tb, np.int64(m), np.int64(n), np.int64(k), al, ap,
                     np.int64(lda), bp, np.int64(ldb), be, cp, np.int64(ldc))
        else:
            _dgemm32(101, ta, tb, np.int32(m), np.int32(n), np.int32(k), al, ap,
                     np.int32(lda), bp, np.int32(ldb), be, cp, np.int32(ldc))
    # fmt: on


@njit(**JIT)
def _whole_product_plan(m, n, k, trans_a, trans_b, dbl, int64):
    """gemm_flags with the plan resolved for the whole m x n x k product: mode 2
    (own) or 0 (BLAS)."""
    own = _own_takes(m, n, k, trans_a, trans_b, dbl, int64)
    return (int64 & ~6) | ((2 if own else 0) << 1)


@njit(**JIT)
def _gemm_block(p, size, by_rows, a, b, c, trans_a, trans_b, alpha, beta, int64):
    """Block p of C: rows (or columns) [p*size, p*size + size), cut at the edge. The
    plan judges the whole product, so every block runs the same kernel whatever the
    split (the bits of C must not depend on how it is cut)."""
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    int64 = _whole_product_plan(m, n, k, trans_a, trans_b, c.itemsize == 8, int64)
    lda = a.shape[1]
    ldb = b.shape[1]
    af = a.reshape(-1)
    bf = b.reshape(-1)
    cf = c.reshape(-1)
    lo = p * size
    a_off = b_off = c_off = 0
    if by_rows:
        m = min(size, m - lo)
        a_off = lo if trans_a else lo * lda
        c_off = lo * n
    else:
        b_off = lo * ldb if trans_b else lo
        c_off = lo
        n = min(size, n - lo)
    ldc = c.shape[1]
    # fmt: off
    _gemm_call(trans_a, trans_b, m, n, k, alpha, af, a_off, lda, bf, b_off, ldb,
               beta, cf, c_off, ldc, int64)
    # fmt: on


@njit(**PARALLEL)
def _gemm_blocks_parallel(
    parts, size, by_rows, a, b, c, trans_a, trans_b, alpha, beta, int64
):
    for p in prange(parts):
        # prange's index is uint64, range's int64: one type, one compiled callee
        _gemm_block(np.int64(p), size, by_rows, a, b, c, trans_a, trans_b, alpha, beta,
                    int64)  # fmt: skip


@njit(**JIT)
def gemm_split(m, n, k, config):
    """(parts, size, by_rows): C cut into fixed blocks of ``size`` rows (or columns)
    along its larger dimension, from the shape and the core count only (never the
    thread count), one block per ``block_flops``, at most one per core."""
    parts_max, _, block_flops, _ = config
    by_rows = m >= n
    dim = m if by_rows else n
    parts = int(2.0 * m * n * k / block_flops)
    parts = max(1, min(parts, parts_max, dim // 16))
    size = ((dim + parts - 1) // parts + 15) // 16 * 16
    return (dim + size - 1) // size, size, by_rows


@njit(**JIT)
def blas_single_begin(config):
    """BLAS on one thread (when we control it) until blas_single_end(config, the
    token returned)."""
    if config[1]:
        return _blas_pin()
    return np.intc(0)


@njit(**JIT)
def blas_single_end(config, token):
    if config[1] and token:
        _blas_unpin(token)


@njit(**JIT)
def gemm(a, b, c, trans_a, trans_b, alpha, beta, config):
    """c = alpha op(a) @ op(b) + beta c (beta == 0: c is overwritten, NaNs too)."""
    # IN  a, b (2-D, C order), trans flags, alpha, beta, config = GEMM_CONFIG
    # OUT c (m, n), C order
    m = c.shape[0]
    n = c.shape[1]
    k = a.shape[0] if trans_a else a.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:  # BLAS rejects ld < 1; the product is zero
        if beta == 0.0:
            c[:] = 0.0
        elif beta != 1.0:
            c *= c.dtype.type(beta)
        return
    parts, size, by_rows = gemm_split(m, n, k, config)
    int64 = config[3]
    pin = blas_single_begin(config)
    if config[1] == CONTROL and parts > 1:  # one thread: the prange runs them in order
        _gemm_blocks_parallel(
            parts, size, by_rows, a, b, c, trans_a, trans_b, alpha, beta, int64
        )
    else:
        for p in range(parts):
            _gemm_block(p, size, by_rows, a, b, c, trans_a, trans_b, alpha, beta, int64)
    blas_single_end(config, pin)


@njit(**JIT)
def _matmul(a, b, out, trans_a, trans_b, accumulate, config):
    gemm(a, b, out, trans_a, trans_b, 1.0, 1.0 if accumulate else 0.0, config)


def matmul(a, b, out, trans_a, trans_b, accumulate):
    """out = op(a) @ op(b) (+ out when accumulate)."""
    # IN  a, b (2-D), trans_a, trans_b, accumulate   OUT out (m, n)
    _matmul(a, b, out, bool(trans_a), bool(trans_b), bool(accumulate), GEMM_CONFIG)
