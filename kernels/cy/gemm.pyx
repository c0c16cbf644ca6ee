"""fastnn's own GEMM (kernels/cy/_gemm.h): run-time ISA selection and a raw kernel.

The other kernel modules call the micro-kernels through the addresses returned by
``addresses()`` (kernels/gemm.py hands them to the Cython modules and to Numba); the
plan of which products use them lives in kernels/gemm.py.
"""

from libc.stdint cimport int64_t

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


fnn_gemm_set_caches(0, 0)
_configure_own_gemm(0, 0, 0, <size_t>&fnn_sgemm, <size_t>&fnn_dgemm)


cdef bint _rows_ok(Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t row_stride,
                   Py_ssize_t col_stride, Py_ssize_t size):
    """Unit column stride and rows that do not overlap (any row stride above that)."""
    return ((cols <= 1 or col_stride == size) and row_stride % size == 0
            and (rows <= 1 or row_stride >= cols * size))


def gemm(const floating[:, :] a,  # IN  (m, k), or (k, m) when trans_a; rows strided
         const floating[:, :] b,  # IN  (k, n), or (n, k) when trans_b; rows strided
         floating[:, :] out,      # IN/OUT (m, n); rows strided
         bint trans_a, bint trans_b, double alpha, double beta, int mode):
    """out = alpha op(a) @ op(b) + beta out in the fixed blocks of the compiled kernels.

    mode: 0 OpenBLAS, 1 the plan (kernels/gemm.py), 2 fastnn's own GEMM. Every array
    needs unit stride along its rows (any row stride: the leading dimension).
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
    cdef Py_ssize_t i, j
    with nogil:
        if k == 0:
            for i in range(m):
                for j in range(n):
                    out[i, j] = 0 if beta == 0 else <floating>beta * out[i, j]
        else:
            _gemm_par_with(mode, trans_a, trans_b, m, n, k, <floating>alpha,
                           &a[0, 0], lda, &b[0, 0], ldb, <floating>beta, &out[0, 0],
                           ldc)
