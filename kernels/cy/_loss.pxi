# Fused loss cores (softmax cross-entropy, squared error, sigmoid cross-entropy;
# nogil, raw pointers), shared by loss.pyx and train.pyx (textual include). Needs
# _common.pxi included first.

from libc.float cimport DBL_EPSILON, FLT_EPSILON

# rows per softmax-CE block within a task (the bound of _ce_rows's stack scratch)
cdef enum:
    _CE_ROWS = 32

# float64 values of a squared-error task's scratch (tuning.SQUARED_ERROR_SCRATCH,
# compiled in by setup.py)
cdef extern from *:
    enum: FNN_SE_SCRATCH


cdef inline floating _row_max(const floating* z, Py_ssize_t K) noexcept nogil:
    """max z; a NaN is skipped here but then spreads through exp(z - m)."""
    cdef Py_ssize_t j
    cdef floating m = z[0]
    for j in range(1, K):
        if z[j] > m:
            m = z[j]
    return m


cdef inline double _lane_sum(const floating* e, Py_ssize_t K, floating shift) noexcept nogil:
    """sum_j (e_j - shift) over 8 fixed lanes (vectorises; fixed order)."""
    cdef floating acc[8]
    cdef Py_ssize_t j = 0, u
    cdef double total
    for u in range(8):
        acc[u] = 0
    while j + 8 <= K:
        for u in range(8):
            acc[u] = acc[u] + (e[j + u] - shift)
        j += 8
    total = ((<double>acc[0] + acc[1]) + (<double>acc[2] + acc[3])) + (
        (<double>acc[4] + acc[5]) + (<double>acc[6] + acc[7]))
    while j < K:
        total += e[j] - shift
        j += 1
    return total


cdef inline void _exp_shifted(const floating* z, floating* e, Py_ssize_t K,
                              floating m) noexcept nogil:
    cdef Py_ssize_t j
    if floating is float:
        fnn_exp_shift_f32(z, e, K, m)
    else:
        for j in range(K):
            e[j] = _exp(z[j] - m)


cdef inline void _ce_rows(const floating* z, const Py_ssize_t* labels,
                          const floating* w, floating* g, floating* row_out,
                          double* rows, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t n,
                          Py_ssize_t K, floating keep, floating eps_k) noexcept nogil:
    """Rows [i0, i1), at most _CE_ROWS, of the fused softmax cross-entropy.

    Per row l = log sum exp(z - m) - sum_k t_k (z_k - m). The shifted rows z - m go
    to the gradient rows (or a scratch block) and are exponentiated as one flat block:
    with few classes (K = 10) a per-row exp would be mostly scalar remainder. Then per
    row: the loss, and scale (p - t) in place when g != NULL.
    """
    cdef Py_ssize_t i, j, r, cnt = i1 - i0
    cdef double zl[_CE_ROWS]  # shifted label logit of each row
    cdef double zs[_CE_ROWS]  # sum of each row's shifted logits (label smoothing)
    cdef floating m, inv, el, scale
    cdef floating inv_n = <floating>(1.0 / n)
    cdef floating* e
    cdef floating* buf = g + i0 * K if g != NULL else NULL
    cdef double s, loss
    if buf == NULL:
        buf = <floating*>malloc(cnt * K * sizeof(floating))
        if buf == NULL:  # out of memory: NaN rows (the caller's loss is then NaN)
            for i in range(i0, i1):
                rows[i] = NAN
            return
    for r in range(cnt):
        e = buf + r * K
        m = _row_max(z + (i0 + r) * K, K)
        for j in range(K):
            e[j] = z[(i0 + r) * K + j] - m
        zl[r] = e[labels[i0 + r]]
        zs[r] = _lane_sum(e, K, 0) if eps_k != 0 else 0
    if floating is float:
        fnn_exp_inplace_f32(buf, cnt * K)
    else:
        for j in range(cnt * K):
            buf[j] = _exp(buf[j])
    for r in range(cnt):
        i = i0 + r
        e = buf + r * K
        s = _lane_sum(e, K, 0)
        loss = log(s) - <double>keep * zl[r] - <double>eps_k * zs[r]
        rows[i] = loss
        if row_out != NULL:
            row_out[i] = <floating>loss
        if g != NULL:
            scale = w[i] / <floating>n if w != NULL else inv_n
            inv = <floating>(1.0 / s)
            el = e[labels[i]]
            for j in range(K):
                e[j] = (e[j] * inv - eps_k) * scale
            e[labels[i]] = ((el * inv - eps_k) - keep) * scale
    if g == NULL:
        free(buf)


cdef inline void _ce_task(const floating* z, const Py_ssize_t* labels,
                         const floating* w, floating* g, floating* row_out,
                         double* rows, Py_ssize_t c, Py_ssize_t per_task, Py_ssize_t n,
                         Py_ssize_t K, floating keep, floating eps_k) noexcept nogil:
    """Task c: rows [c * per_task, ...) in blocks of _CE_ROWS (_ce_rows's scratch)."""
    cdef Py_ssize_t i0 = c * per_task
    cdef Py_ssize_t i1 = min(i0 + per_task, n)
    cdef Py_ssize_t b = i0
    while b < i1:
        _ce_rows(z, labels, w, g, row_out, rows, b, min(b + _CE_ROWS, i1), n, K, keep,
                 eps_k)
        b = b + _CE_ROWS


cdef double _sce_core(const floating* z, const Py_ssize_t* labels, const floating* w,
                      floating* g, floating* row_out, double* rows, Py_ssize_t n,
                      Py_ssize_t K, double label_smoothing) noexcept nogil:
    """Mean loss (1/n) sum_i w_i l_i of n >= 1 rows; grad g (NULL: not computed),
    per-row losses to row_out (NULL: not requested); rows: n doubles of scratch."""
    cdef floating keep = <floating>(1.0 - label_smoothing)
    cdef floating eps_k = <floating>(label_smoothing / K) if K else 0
    cdef Py_ssize_t per_task = _loss_rows(K)
    cdef Py_ssize_t c, i, nchunks = (n + per_task - 1) // per_task
    cdef double total = 0
    cdef int nt = _threads_for(<double>n * K * _SOFTMAX_COST)
    if nt > nchunks or n < 2:
        nt = <int>nchunks if n > 1 else 1
    if nt == 1:  # no OpenMP region: even a one-thread one costs more than small ops
        for c in range(nchunks):
            _ce_task(z, labels, w, g, row_out, rows, c, per_task, n, K, keep, eps_k)
    else:
        for c in prange(nchunks, schedule="static", num_threads=nt):
            _ce_task(z, labels, w, g, row_out, rows, c, per_task, n, K, keep, eps_k)
    # mean in row order: independent of the thread count
    for i in range(n):
        total += rows[i] * w[i] if w != NULL else rows[i]
    return total / n


cdef inline double _se_block(const floating* p, const floating* t, const floating* w,
                            floating* g, floating* row_out, Py_ssize_t i0,
                            Py_ssize_t i1, Py_ssize_t n, Py_ssize_t K, double* sq,
                            Py_ssize_t sq_size) noexcept nogil:
    """Rows [i0, i1) of the fused squared error: l_i = 0.5 sum_j d_ij^2 (float64, j in
    order), d = p - t; g = d w_i / n when g != NULL. Returns sum_i w_i l_i over the
    rows, added in row order. sq: float64 scratch of sq_size >= K values."""
    cdef Py_ssize_t i, j, b, q, lo, m, c0 = i0
    # whole rows of the scratch per fill (K = 0: one fill)
    cdef Py_ssize_t step = sq_size // K if K > 0 else i1 - i0
    cdef floating scale, dt
    cdef floating inv_n = <floating>(1.0 / n)
    cdef double s, d, row, total = 0
    cdef bint grad_in_pass = g != NULL and w == NULL
    # whole rows at a time: the squares (unweighted: the gradient too) in one flat
    # vector loop into the scratch, then each row's in-order sum from there; short
    # independent add chains, where summing straight from the inputs ran one long
    # convert-multiply-add chain per row (the Numba twin is the same)
    while c0 < i1:
        m = min(step, i1 - c0)
        lo = c0 * K
        if grad_in_pass:
            for q in range(m * K):
                dt = p[lo + q] - t[lo + q]
                g[lo + q] = dt * inv_n
                sq[q] = <double>dt * <double>dt
        else:
            for q in range(m * K):
                d = <double>(p[lo + q] - t[lo + q])
                sq[q] = d * d
        for i in range(m):
            b = i * K
            s = 0
            for j in range(K):
                s += sq[b + j]
            row = 0.5 * s
            if row_out != NULL:
                row_out[c0 + i] = <floating>row
            total += row * w[c0 + i] if w != NULL else row
        c0 += m
    if g != NULL and w != NULL:
        for i in range(i0, i1):
            scale = w[i] / <floating>n
            b = i * K
            for j in range(K):
                g[b + j] = (p[b + j] - t[b + j]) * scale
    return total


cdef inline double _bce_block(const floating* z, const floating* t, const floating* w,
                             floating* g, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t n,
                             Py_ssize_t K) noexcept nogil:
    """Rows [i0, i1) of the fused sigmoid cross-entropy, scikit-learn's binary log
    loss: p = 1 / (1 + exp(-z)) (exp overflow gives p = 0), clipped to [eps, 1 - eps]
    (the dtype's eps) for the loss only, l_i = -sum_j [y log p' + (1 - y) log(1 - p')]
    in float64, j in order; g = (p - y) w_i / n when g != NULL. A NaN logit stays NaN
    (the clip's comparisons leave it). Returns sum_i w_i l_i, added in row order."""
    cdef Py_ssize_t i, j, b
    cdef floating scale, p, pc, y
    cdef floating one = 1
    cdef floating eps
    cdef floating inv_n = <floating>(1.0 / n)
    cdef double s, total = 0
    if floating is float:
        eps = FLT_EPSILON
    else:
        eps = DBL_EPSILON
    for i in range(i0, i1):
        b = i * K
        s = 0
        scale = w[i] / <floating>n if w != NULL else inv_n
        for j in range(K):
            p = one / (one + _exp(-z[b + j]))
            y = t[b + j]
            if g != NULL:
                g[b + j] = (p - y) * scale
            pc = eps if p < eps else p
            pc = one - eps if pc > one - eps else pc
            s += <double>y * log(<double>pc) + (1.0 - <double>y) * log(<double>(one - pc))
        total += -s * w[i] if w != NULL else -s
    return total


cdef inline double _se_task(const floating* p, const floating* t, const floating* w,
                            floating* g, floating* row_out, Py_ssize_t c,
                            Py_ssize_t per_task, Py_ssize_t n, Py_ssize_t K,
                            bint sigmoid) noexcept nogil:
    """Task c of _se_core: rows [c per_task, (c + 1) per_task) of n, with _se_block's
    scratch on the stack (on the heap for rows longer than it)."""
    cdef Py_ssize_t i0 = c * per_task
    cdef Py_ssize_t i1 = min(i0 + per_task, n)
    cdef double small[FNN_SE_SCRATCH]
    cdef double* sq = small
    cdef double total
    if sigmoid:
        return _bce_block(p, t, w, g, i0, i1, n, K)
    if K > FNN_SE_SCRATCH:
        sq = <double*>malloc(K * sizeof(double))
        if sq == NULL:
            return NAN  # out of memory: a NaN loss, never a wrong number
        total = _se_block(p, t, w, g, row_out, i0, i1, n, K, sq, K)
        free(sq)
        return total
    return _se_block(p, t, w, g, row_out, i0, i1, n, K, sq, FNN_SE_SCRATCH)


cdef double _se_core(const floating* p, const floating* t, const floating* w,
                     floating* g, floating* row_out, double* rows, Py_ssize_t n,
                     Py_ssize_t K, bint sigmoid=False) noexcept nogil:
    """Mean loss (1/n) sum_i w_i l_i of n >= 1 rows (see _se_block; _bce_block when
    sigmoid): tasks of _loss_rows(K) rows, their sums added in order (as the Numba
    twin); rows: n doubles of scratch."""
    cdef Py_ssize_t per_task = _loss_rows(K)
    cdef Py_ssize_t c, nchunks = (n + per_task - 1) // per_task
    cdef double total = 0
    cdef int nt = _threads_for(<double>n * K * _SE_COST)
    if nt > nchunks or n < 2:
        nt = <int>nchunks if n > 1 else 1
    if nt == 1:  # not even a one-thread OpenMP region: it costs more than small ops
        for c in range(nchunks):
            rows[c] = _se_task(p, t, w, g, row_out, c, per_task, n, K, sigmoid)
    else:
        for c in prange(nchunks, schedule="static", num_threads=nt):
            rows[c] = _se_task(p, t, w, g, row_out, c, per_task, n, K, sigmoid)
    # in block order: independent of the thread count
    for c in range(nchunks):
        total += rows[c]
    return total / n
