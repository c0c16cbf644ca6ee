"""Fully connected layer: GEMM (OpenBLAS) + fused bias/activation epilogue, backward.

The nogil cores live in _linear.pxi (shared with train.pyx); these are the raw kernels.
"""

include "_common.pxi"
include "_act.pxi"
include "_blas.pxi"
include "_linear.pxi"


def linear_forward(const floating[:, ::1] x,  # IN  (n, k)
                   const floating[:, ::1] w,  # IN  (k, m)
                   const floating[::1] b,     # IN  (m,) or empty: no bias
                   floating[:, ::1] y_out,    # OUT (n, m) f(z)
                   z_out,                     # OUT (n, m) z, or empty: not requested
                   int act, double alpha):
    """z = x @ w + b; y_out = f(z); z_out = z when non-empty."""
    cdef Py_ssize_t n = x.shape[0], k = x.shape[1], m = w.shape[1]
    cdef floating[:, ::1] zv
    cdef floating* zp = NULL
    cdef const floating* bp = NULL
    if n == 0 or m == 0:
        return
    if z_out.size:
        zv = z_out
        zp = &zv[0, 0]
    if b.shape[0]:
        bp = &b[0]
    with nogil:
        _linear_forward_core(&x[0, 0], &w[0, 0], bp, &y_out[0, 0], zp, n, k, m, act,
                             <floating>alpha)


def linear_backward(const floating[:, ::1] dy,  # IN  (n, m) upstream gradient
                    const floating[:, ::1] x,   # IN  (n, k)
                    const floating[:, ::1] w,   # IN  (k, m)
                    const floating[:, ::1] z,   # IN  (n, m) pre-activation
                    const floating[:, ::1] y,   # IN  (n, m) f(z)
                    floating[:, ::1] dz_out,    # OUT (n, m) dz (may be dy itself)
                    floating[:, ::1] dw_out,    # OUT (k, m)
                    floating[::1] db_out,       # OUT (m,) or empty: not requested
                    dx_out,                     # OUT (n, k) or empty: not requested
                    int act, double alpha, double weight_decay):
    """dz = dy*f'(z); dw = x^T dz + wd*w; db = sum_rows dz; dx = dz w^T."""
    cdef Py_ssize_t n = x.shape[0], k = x.shape[1], m = w.shape[1]
    cdef floating[:, ::1] dxv
    cdef floating* dxp = NULL
    cdef floating* dbp = NULL
    if db_out.shape[0]:
        dbp = &db_out[0]
    if dx_out.size:
        dxv = dx_out
        dxp = &dxv[0, 0]
    with nogil:
        _linear_backward_core(&dy[0, 0], &x[0, 0], &w[0, 0], &z[0, 0], &y[0, 0],
                              &dz_out[0, 0], &dw_out[0, 0], dbp, dxp, n, k, m, act,
                              <floating>alpha, <floating>weight_decay)
