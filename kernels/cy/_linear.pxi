# Fully connected layer cores (nogil, raw pointers), shared by linear.pyx and train.pyx
# (textual include: cimports between .pyx modules break with the package layout).
# Needs _common.pxi, _act.pxi and _blas.pxi included first.

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


cdef inline void _epilogue_rows(floating* y, floating* z, const floating* b,
                                Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t j0,
                                Py_ssize_t j1, Py_ssize_t m, int act,
                                floating alpha) noexcept nogil:
    """The epilogue on rows [i0, i1), columns [j0, j1) of an (., m) output."""
    cdef Py_ssize_t i
    for i in range(i0, i1):
        _epilogue_row(y + i * m, z + i * m if z != NULL else NULL, b, j0, j1, act, alpha)


cdef inline void _forward_block(_Split* s, Py_ssize_t p, bint epilogue,
                                const floating* x, const floating* w,
                                const floating* b, floating* y, floating* z,
                                Py_ssize_t n, Py_ssize_t k, Py_ssize_t m, int act,
                                floating a) noexcept nogil:
    """Fixed GEMM block p of y = x @ w, then its epilogue while it is in cache."""
    cdef Py_ssize_t lo, cnt
    _gemm_block(s, p, False, False, n, m, k, 1, x, k, w, m, 0, y, m)
    if epilogue:
        lo = p * s.size
        cnt = min(s.size, s.dim - lo)
        if s.rows:
            _epilogue_rows(y, z, b, lo, lo + cnt, 0, m, m, act, a)
        else:
            _epilogue_rows(y, z, b, 0, n, lo, lo + cnt, m, act, a)


cdef void _linear_forward_core(const floating* x, const floating* w,
                               const floating* b, floating* y, floating* z,
                               Py_ssize_t n, Py_ssize_t k, Py_ssize_t m, int act,
                               floating a) noexcept nogil:
    """z = x @ w + b; y = f(z); z stored when z != NULL; b NULL: no bias.

    x (n, k), w (k, m), y and z (n, m), row-major; n, m >= 1.
    """
    cdef Py_ssize_t i, p
    cdef bint epilogue = b != NULL or z != NULL or act != 0
    cdef _Split s
    cdef int nt, pin
    if k == 0:
        _fill(y, n * m, 0)
        for i in range(n):
            _epilogue_row(y + i * m, z + i * m if z != NULL else NULL, b, 0, m, act, a)
        return
    # fixed GEMM blocks; each block's epilogue runs right after its GEMM
    s = _gemm_split(n, m, k)
    nt = _gemm_threads(&s)
    pin = _blas_single_begin()
    if nt == 1:  # no OpenMP region (see _gemm_par_with)
        for p in range(s.parts):
            _forward_block(&s, p, epilogue, x, w, b, y, z, n, k, m, act, a)
    else:
        for p in prange(s.parts, schedule="static", num_threads=nt):
            _forward_block(&s, p, epilogue, x, w, b, y, z, n, k, m, act, a)
    _blas_single_end(pin)


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


cdef inline void _add_scaled(floating* dst, const floating* src, Py_ssize_t size,
                             floating s) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(size):
        dst[i] = dst[i] + s * src[i]


cdef void _linear_backward_core(const floating* dy, const floating* x,
                                const floating* w, const floating* z,
                                const floating* y, floating* dz, floating* dw,
                                floating* db, floating* dx, Py_ssize_t n,
                                Py_ssize_t k, Py_ssize_t m, int act, floating a,
                                floating wd) noexcept nogil:
    """dz = dy*f'(z) (dz may be dy); dw = x^T dz + wd*w; db = sum_rows dz; dx = dz w^T.

    db / dx NULL: not computed. dy, z, y, dz (n, m); x, dx (n, k); w, dw (k, m).
    """
    cdef Py_ssize_t width, nblocks, c, kc, nkc
    cdef int nt
    if k * m == 0:
        dw = NULL
    # dz and db: parallel over column blocks, each column summed in row order
    if n and m:
        nt = _threads_for(<double>n * m * _act_cost(act))
        width = m
        if nt > 1:
            width = ((m + nt - 1) // nt + 15) // 16 * 16
        nblocks = (m + width - 1) // width
        if nt > nblocks:
            nt = <int>nblocks
        if nt == 1:  # no OpenMP region (see _gemm_par_with)
            for c in range(nblocks):
                _dz_db_block(dy, z, y, dz, db, n, m, c * width,
                             min(c * width + width, m), act, a)
        else:
            for c in prange(nblocks, schedule="static", num_threads=nt):
                _dz_db_block(dy, z, y, dz, db, n, m, c * width,
                             min(c * width + width, m), act, a)
    elif db != NULL:
        _fill(db, m, 0)
    # dw = x^T dz, then + wd * w: after the product, as the oracle and the training
    # step's update (which adds the L2 term itself) round it
    if dw != NULL:
        if n:
            _gemm_par(True, False, k, m, n, 1, x, k, dz, m, 0, dw, m)
        else:
            _fill(dw, k * m, 0)
        if wd != 0:
            nkc = (k * m + _CHUNK - 1) // _CHUNK
            nt = _threads_for(<double>k * m)
            if nt == 1:  # no OpenMP region (see _gemm_par_with)
                for kc in range(nkc):
                    _add_scaled(dw + kc * _CHUNK, w + kc * _CHUNK,
                                min(<Py_ssize_t>_CHUNK, k * m - kc * _CHUNK), wd)
            else:
                for kc in prange(nkc, schedule="static", num_threads=nt):
                    _add_scaled(dw + kc * _CHUNK, w + kc * _CHUNK,
                                min(<Py_ssize_t>_CHUNK, k * m - kc * _CHUNK), wd)
    # dx = dz w^T
    if dx != NULL and n and k:
        if m:
            _gemm_par(False, True, n, k, m, 1, dz, m, w, m, 0, dx, k)
        else:
            _fill(dx, n * k, 0)
