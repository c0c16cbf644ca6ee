# Fused softmax cross-entropy cores (nogil, raw pointers), shared by loss.pyx and
# train.pyx (textual include). Needs _common.pxi included first.

# below this many logits a kernel runs serially
cdef double _CE_PAR_WORK = 16384
# rows per parallel work item
cdef enum:
    _CE_ROWS = 32


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


cdef inline double _ce_row(const floating* z, Py_ssize_t K, Py_ssize_t label,
                           floating* e, bint grad, floating scale, floating keep,
                           floating eps_k) noexcept nogil:
    """Row loss log sum exp(z - m) - sum_k t_k (z_k - m); e = exp(z - m) (a row
    buffer), overwritten by scale (p - t) when grad."""
    cdef Py_ssize_t j
    cdef floating m = _row_max(z, K), inv, el
    cdef double s, loss
    _exp_shifted(z, e, K, m)
    s = _lane_sum(e, K, 0)
    loss = log(s) - <double>keep * (z[label] - m)
    if eps_k != 0:
        loss -= <double>eps_k * _lane_sum(z, K, m)
    if grad:
        inv = <floating>(1.0 / s)
        el = e[label]
        for j in range(K):
            e[j] = (e[j] * inv - eps_k) * scale
        e[label] = ((el * inv - eps_k) - keep) * scale
    return loss


cdef inline void _ce_rows(const floating* z, const Py_ssize_t* labels,
                          const floating* w, floating* g, floating* row_out,
                          double* rows, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t n,
                          Py_ssize_t K, floating keep, floating eps_k) noexcept nogil:
    """Rows [i0, i1) of the fused softmax cross-entropy."""
    cdef Py_ssize_t i
    cdef floating scale
    cdef floating inv_n = <floating>(1.0 / n)
    cdef floating* buf = g
    if g == NULL:
        buf = <floating*>malloc(K * sizeof(floating))
        if buf == NULL:  # out of memory: NaN rows (the caller's loss is then NaN)
            for i in range(i0, i1):
                rows[i] = NAN
            return
    for i in range(i0, i1):
        scale = w[i] / <floating>n if w != NULL else inv_n
        rows[i] = _ce_row(z + i * K, K, labels[i], g + i * K if g != NULL else buf,
                          g != NULL, scale, keep, eps_k)
        if row_out != NULL:
            row_out[i] = <floating>rows[i]
    if g == NULL:
        free(buf)


cdef double _sce_core(const floating* z, const Py_ssize_t* labels, const floating* w,
                      floating* g, floating* row_out, double* rows, Py_ssize_t n,
                      Py_ssize_t K, double label_smoothing) noexcept nogil:
    """Mean loss (1/n) sum_i w_i l_i of n >= 1 rows; grad g (NULL: not computed),
    per-row losses to row_out (NULL: not requested); rows: n doubles of scratch."""
    cdef floating keep = <floating>(1.0 - label_smoothing)
    cdef floating eps_k = <floating>(label_smoothing / K) if K else 0
    cdef Py_ssize_t c, i, nchunks = (n + _CE_ROWS - 1) // _CE_ROWS
    cdef double total = 0
    cdef int nt = _threads_for(<double>n * K, _CE_PAR_WORK)
    if nt > nchunks:
        nt = <int>nchunks
    for c in prange(nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1):
        _ce_rows(z, labels, w, g, row_out, rows, c * _CE_ROWS,
                 min(c * _CE_ROWS + _CE_ROWS, n), n, K, keep, eps_k)
    # mean in row order: independent of the thread count
    for i in range(n):
        total += rows[i] * w[i] if w != NULL else rows[i]
    return total / n
