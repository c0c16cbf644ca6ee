"""fastnn's own GEMM (kernels/cy/_gemm.h): run-time ISA selection and a raw kernel.

The other kernel modules call the micro-kernels through the addresses returned by
``addresses()`` (kernels/gemm.py hands them to the Cython modules and to Numba); the
plan of which products use them lives in kernels/gemm.py.
"""

from libc.stdint cimport int64_t, uint64_t

include "_common.pxi"
include "_blas.pxi"

cdef extern from "_gemm.h" nogil:
    int fnn_gemm_cpu_isa()
    int fnn_gemm_set_isa(int isa)
    int fnn_gemm_get_isa()
    void fnn_gemm_set_caches(int64_t l1, int64_t l2)
    int64_t fnn_gemm_l1()
    int64_t fnn_gemm_l2()
    ctypedef struct fnn_isa_info:
        const char* name
        int mr_s, nr_s, mr_d, nr_d
    const fnn_isa_info* fnn_isas
    void fnn_sgemm(int, int, int, int64_t, int64_t, int64_t, float, const float*,
                   int64_t, const float*, int64_t, float, float*, int64_t)
    void fnn_dgemm(int, int, int, int64_t, int64_t, int64_t, double, const double*,
                   int64_t, const double*, int64_t, double, double*, int64_t)
    int fnn_plan_lookup(int64_t m, int64_t n, int64_t k, int ta, int tb, int dbl)
    int fnn_plan_set(int64_t m, int64_t n, int64_t k, int ta, int tb, int dbl, int own)
    void fnn_plan_clear()
    int fnn_plan_recording
    uint64_t fnn_plan_missed[]
    size_t fnn_plan_nmissed
    int FNN_PLAN_MISSED_MAX

cdef extern from "_blas_pin.h" nogil:
    void fnn_blas_pin_configure(size_t set, size_t get)
    int fnn_blas_pin()
    void fnn_blas_unpin(int token)
    void fnn_blas_pin_after_fork()
    int fnn_blas_count()
    int fnn_blas_set_count(int count)

#: Instruction sets in order, as fnn_gemm_*_isa numbers them.
ISAS = ("generic", "avx2", "avx512")


def cpu_isa():
    """The best instruction set of this CPU the GEMM has kernels for."""
    return ISAS[fnn_gemm_cpu_isa()]


def get_isa():
    """The instruction set the GEMM runs now."""
    return ISAS[fnn_gemm_get_isa()]


def _set_isa(int isa):
    """Run instruction set ``isa`` (-1: the CPU's best); -1 back when the CPU lacks it."""
    return fnn_gemm_set_isa(isa)


def _set_caches(int64_t l1, int64_t l2):
    """Size the blocking for these L1d and L2 bytes (<= 0: the OS's); returns both."""
    fnn_gemm_set_caches(l1, l2)
    return fnn_gemm_l1(), fnn_gemm_l2()


def tile(int isa, bint double_precision):
    """(rows, columns) of the register tile of ``isa`` for float32 or float64."""
    cdef const fnn_isa_info* info = &fnn_isas[isa]
    if double_precision:
        return info.mr_d, info.nr_d
    return info.mr_s, info.nr_s


def addresses():
    """(fnn_sgemm, fnn_dgemm): ILP64 cblas_?gemm signature, row-major, one thread."""
    return <size_t>&fnn_sgemm, <size_t>&fnn_dgemm


def blas_pin(size_t set_addr, size_t get_addr):
    """The process-wide BLAS pin (kernels/cy/_blas_pin.h) over BLAS's thread count
    setter and getter: (fnn_blas_pin, fnn_blas_unpin) addresses, (0, 0) when BLAS has
    no thread control."""
    if not (set_addr and get_addr):
        return 0, 0
    fnn_blas_pin_configure(set_addr, get_addr)
    return <size_t>&fnn_blas_pin, <size_t>&fnn_blas_unpin


def blas_count():
    """BLAS's thread count outside the kernels' pins (what they will restore); None
    before blas_pin configured the pin."""
    cdef int count = fnn_blas_count()
    return None if count < 0 else count


def set_blas_count(int count):
    """Set BLAS's thread count (while kernels are pinned: the count they restore);
    False before blas_pin configured the pin."""
    return fnn_blas_set_count(count) == 0


def _blas_pin_after_fork():
    """In a forked child: undo the pins of the parent's other threads."""
    fnn_blas_pin_after_fork()


def plan_lookup_address():
    """fnn_plan_lookup: int (int64 m, n, k, int trans_a, trans_b, float64): 1 own GEMM,
    0 BLAS, -1 no entry."""
    return <size_t>&fnn_plan_lookup


def _plan_set(int64_t m, int64_t n, int64_t k, bint trans_a, bint trans_b, bint dbl,
              bint own):
    """Enter the measured choice for one product; False when the table cannot hold it
    (a dimension of 2**20 or more, or the table half full)."""
    return fnn_plan_set(m, n, k, trans_a, trans_b, dbl, own) == 0


def _plan_lookup(int64_t m, int64_t n, int64_t k, bint trans_a, bint trans_b,
                 bint dbl):
    """The table's entry for a product: True (own), False (BLAS), None (the rule)."""
    cdef int r = fnn_plan_lookup(m, n, k, trans_a, trans_b, dbl)
    return None if r < 0 else r == 1


def _plan_clear():
    """Forget every entry (only while no kernel runs)."""
    fnn_plan_clear()


def _plan_record(bint on):
    """Start (on) or stop recording the products looked up and not found; returns
    those recorded so far as (m, n, k, trans_a, trans_b, float64) tuples (the keys of
    out-of-range shapes as zeros) and empties the record."""
    global fnn_plan_nmissed, fnn_plan_recording
    cdef size_t i, count = min(fnn_plan_nmissed, <size_t>FNN_PLAN_MISSED_MAX)
    cdef uint64_t key
    missed = []
    for i in range(count):
        key = fnn_plan_missed[i]
        missed.append((int(key & 0xFFFFF), int((key >> 20) & 0xFFFFF),
                       int((key >> 40) & 0xFFFFF), bool((key >> 60) & 1),
                       bool((key >> 61) & 1), bool((key >> 62) & 1)))
    fnn_plan_nmissed = 0
    fnn_plan_recording = on
    return missed


fnn_gemm_set_caches(0, 0)
_configure_own_gemm(0, 0, 0, <size_t>&fnn_sgemm, <size_t>&fnn_dgemm, 0)


cdef bint _rows_ok(Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t row_stride,
                   Py_ssize_t col_stride, Py_ssize_t size):
    """Unit column stride and rows that do not overlap (any row stride above that)."""
    return ((cols <= 1 or col_stride == size) and row_stride % size == 0
            and (rows <= 1 or row_stride >= cols * size))


def gemm(const floating[:, :] a,  # IN  (m, k), or (k, m) when trans_a; rows strided
         const floating[:, :] b,  # IN  (k, n), or (n, k) when trans_b; rows strided
         floating[:, :] out,      # IN/OUT (m, n); rows strided
         bint trans_a, bint trans_b, double alpha, double beta, int mode,
         bint serial=False):
    """out = alpha op(a) @ op(b) + beta out in the fixed blocks of the compiled kernels.

    mode: 0 OpenBLAS, 1 the plan (kernels/gemm.py), 2 fastnn's own GEMM. Every array
    needs unit stride along its rows (any row stride: the leading dimension). serial:
    the blocks one after the other in the calling thread (how the measured plan times
    the kernels), else in parallel as the training kernels run them.
    """
    cdef Py_ssize_t m = out.shape[0], n = out.shape[1]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef Py_ssize_t size = sizeof(floating)
    if (a.shape[1] if trans_a else a.shape[0]) != m or (
            b.shape[0] if trans_b else b.shape[1]) != n or (
            b.shape[1] if trans_b else b.shape[0]) != k:
        raise ValueError("gemm: shapes of a, b and out do not match")
    if not (_rows_ok(a.shape[0], a.shape[1], a.strides[0], a.strides[1], size)
            and _rows_ok(b.shape[0], b.shape[1], b.strides[0], b.strides[1], size)
            and _rows_ok(out.shape[0], out.shape[1], out.strides[0], out.strides[1],
                         size)):
        raise ValueError("gemm: each array needs contiguous, non-overlapping rows")
    if m == 0 or n == 0:
        return
    cdef Py_ssize_t lda = max(a.strides[0] // size, a.shape[1])
    cdef Py_ssize_t ldb = max(b.strides[0] // size, b.shape[1])
    cdef Py_ssize_t ldc = max(out.strides[0] // size, n)
    cdef Py_ssize_t i, j, p
    cdef _Split split
    cdef int pin
    with nogil:
        if k == 0:
            for i in range(m):
                for j in range(n):
                    out[i, j] = 0 if beta == 0 else <floating>beta * out[i, j]
        elif serial:
            split = _gemm_split(m, n, k)
            pin = _blas_single_begin()
            for p in range(split.parts):
                _gemm_block_with(mode, &split, p, trans_a, trans_b, m, n, k,
                                 <floating>alpha, &a[0, 0], lda, &b[0, 0], ldb,
                                 <floating>beta, &out[0, 0], ldc)
            _blas_single_end(pin)
        else:
            _gemm_par_with(mode, trans_a, trans_b, m, n, k, <floating>alpha,
                           &a[0, 0], lda, &b[0, 0], ldb, <floating>beta, &out[0, 0],
                           ldc)
