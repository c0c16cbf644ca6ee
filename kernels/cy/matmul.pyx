"""GEMM through scipy's OpenBLAS (cython_blas), row-major."""

include "_common.pxi"
include "_blas.pxi"


def matmul(const floating[:, ::1] a,  # IN  (m, k), or (k, m) when trans_a
           const floating[:, ::1] b,  # IN  (k, n), or (n, k) when trans_b
           floating[:, ::1] out,      # OUT (m, n)
           bint trans_a, bint trans_b, bint accumulate):
    """out = op(a) @ op(b) (+ out when accumulate)."""
    cdef Py_ssize_t m = out.shape[0], n = out.shape[1]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef floating beta = 1 if accumulate else 0
    if m == 0 or n == 0:
        return
    with nogil:
        if k == 0:
            if not accumulate:
                _fill(&out[0, 0], m * n, 0)
        else:
            _gemm_par(trans_a, trans_b, m, n, k, 1, &a[0, 0], a.shape[1], &b[0, 0],
                      b.shape[1], beta, &out[0, 0], n)
