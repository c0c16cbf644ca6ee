"""Fully connected layer: GEMM (OpenBLAS) + fused bias/activation epilogue, backward."""

include "_common.pxi"
include "_act.pxi"
include "_blas.pxi"

# below this many relu-equivalent element operations a pass runs serially
cdef double PAR_WORK = 65536


cdef inline void _epilogue_row(floating* y, floating* z, const floating* b,
                               Py_ssize_t j0, Py_ssize_t j1, int act,
                               floating alpha) noexcept nogil:
    """y += b; z = y (when z); y = f(y) on columns [j0, j1) of one row."""
    cdef Py_ssize_t j
    if b != NULL:
        for j in range(j0, j1):
            y[j] = y[j] + b[j]
    if z != NULL:
        memcpy(z + j0, y + j0, (j1 - j0) * sizeof(floating))
    _forward_span(y + j0, y + j0, j1 - j0, act, alpha)


def linear_forward(const floating[:, ::1] x,  # IN  (n, k)
                   const floating[:, ::1] w,  # IN  (k, m)
                   const floating[::1] b,     # IN  (m,) or empty: no bias
                   floating[:, ::1] y_out,    # OUT (n, m) f(z)
                   z_out,                     # OUT (n, m) z, or empty: not requested
                   int act, double alpha):
    """z = x @ w + b; y_out = f(z); z_out = z when non-empty."""
    cdef Py_ssize_t n = x.shape[0], k = x.shape[1], m = w.shape[1], i, p, lo, cnt
    cdef floating a = <floating>alpha
    cdef floating[:, ::1] zv
    cdef floating* zp = NULL
    cdef const floating* bp = NULL
    cdef floating* yp
    cdef bint epilogue
    cdef _Split s
    cdef int nt, prev
    if n == 0 or m == 0:
        return
    if z_out.size:
        zv = z_out
        zp = &zv[0, 0]
    if b.shape[0]:
        bp = &b[0]
    yp = &y_out[0, 0]
    epilogue = bp != NULL or zp != NULL or act != 0
    with nogil:
        if k == 0:
            _fill(yp, n * m, 0)
            for i in range(n):
                _epilogue_row(yp + i * m, zp + i * m if zp != NULL else NULL, bp, 0, m,
                              act, a)
        else:
            # fixed GEMM blocks; each block's epilogue runs right after its GEMM
            s = _gemm_split(n, m, k)
            nt = _gemm_threads(&s)
            prev = _blas_single_begin()
            for p in prange(s.parts, schedule="static", num_threads=nt,
                            use_threads_if=nt > 1):
                _gemm_block(&s, p, False, False, n, m, k, 1, &x[0, 0], k, &w[0, 0], m,
                            0, yp, m)
                if epilogue:
                    lo = p * s.size
                    cnt = min(s.size, s.dim - lo)
                    if s.rows:
                        _epilogue_rows(yp, zp, bp, lo, lo + cnt, 0, m, m, act, a)
                    else:
                        _epilogue_rows(yp, zp, bp, 0, n, lo, lo + cnt, m, act, a)
            _blas_single_end(prev)


cdef inline void _epilogue_rows(floating* y, floating* z, const floating* b,
                                Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t j0,
                                Py_ssize_t j1, Py_ssize_t m, int act,
                                floating alpha) noexcept nogil:
    """The epilogue on rows [i0, i1), columns [j0, j1) of an (., m) output."""
    cdef Py_ssize_t i
    for i in range(i0, i1):
        _epilogue_row(y + i * m, z + i * m if z != NULL else NULL, b, j0, j1, act, alpha)


cdef inline void _dz_db_block(const floating* dy, const floating* z, const floating* y,
                              floating* dz, floating* db, Py_ssize_t n, Py_ssize_t m,
                              Py_ssize_t j0, Py_ssize_t j1, int act,
                              floating alpha) noexcept nogil:
    """dz = dy * f'(z) on columns [j0, j1); db[j] = sum of dz[:, j] in row order."""
    cdef Py_ssize_t i, j, off, width = j1 - j0
    if db != NULL:
        for j in range(j0, j1):
            db[j] = 0
    for i in range(n):
        off = i * m + j0
        _backward_span(dy + off, z + off, y + off, dz + off, width, act, alpha)
        if db != NULL:
            for j in range(width):
                db[j0 + j] = db[j0 + j] + dz[off + j]


cdef inline void _scale_into(floating* dst, const floating* src, Py_ssize_t size,
                             floating s) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(size):
        dst[i] = s * src[i]


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
    cdef Py_ssize_t width, nblocks, c, j0, kc, nkc, lo
    cdef floating a = <floating>alpha
    cdef floating wd = <floating>weight_decay
    cdef floating beta = 0
    cdef floating[:, ::1] dxv
    cdef floating* dxp = NULL
    cdef floating* dbp = NULL
    cdef floating* dzp = NULL
    cdef floating* dwp = NULL
    cdef const floating* wp = NULL
    cdef int nt
    if db_out.shape[0]:
        dbp = &db_out[0]
    if dx_out.size:
        dxv = dx_out
        dxp = &dxv[0, 0]
    if k * m:
        dwp = &dw_out[0, 0]
        wp = &w[0, 0]
    with nogil:
        # dz and db: parallel over column blocks, each column summed in row order
        if n and m:
            dzp = &dz_out[0, 0]
            nt = _threads_for(<double>n * m * (1.0 + _act_cost(act)), PAR_WORK)
            width = m
            if nt > 1:
                width = ((m + nt - 1) // nt + 15) // 16 * 16
            nblocks = (m + width - 1) // width
            if nt > nblocks:
                nt = <int>nblocks
            for c in prange(nblocks, schedule="static", num_threads=nt,
                            use_threads_if=nt > 1):
                j0 = c * width
                _dz_db_block(&dy[0, 0], &z[0, 0], &y[0, 0], dzp, dbp, n, m, j0,
                             min(j0 + width, m), act, a)
        elif dbp != NULL:
            _fill(dbp, m, 0)
        # dw = x^T dz (+ wd * w, prefilled, beta = 1)
        if dwp != NULL:
            if wd != 0:
                nkc = (k * m + _CHUNK - 1) // _CHUNK
                nt = _threads_for(<double>k * m, PAR_WORK * 2)
                for kc in prange(nkc, schedule="static", num_threads=nt,
                                 use_threads_if=nt > 1):
                    lo = kc * _CHUNK
                    _scale_into(dwp + lo, wp + lo, min(<Py_ssize_t>_CHUNK, k * m - lo),
                                wd)
                beta = 1
            if n:
                _gemm_par(True, False, k, m, n, 1, &x[0, 0], k, dzp, m, beta, dwp, m)
            elif wd == 0:
                _fill(dwp, k * m, 0)
        # dx = dz w^T
        if dxp != NULL and n and k:
            if m:
                _gemm_par(False, True, n, k, m, 1, dzp, m, wp, m, 0, dxp, k)
            else:
                _fill(dxp, n * k, 0)
