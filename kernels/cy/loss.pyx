"""Fused softmax cross-entropy (loss + gradient in one pass per row) and softmax."""

include "_common.pxi"

# below this many logits a kernel runs serially
cdef double PAR_WORK = 16384
# rows per parallel work item
cdef enum:
    _ROWS = 32


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


def softmax_cross_entropy(const floating[:, ::1] logits,    # IN  (n, K)
                          const Py_ssize_t[::1] labels,     # IN  (n,) in [0, K)
                          const floating[::1] sample_weight,  # IN (n,) or empty
                          grad_out,                 # OUT (n, K) or empty: not requested
                          floating[::1] row_loss_out,  # OUT (n,) or empty
                          double label_smoothing):
    """loss = (1/n) sum_i w_i l_i; grad = w_i (softmax - t) / n; t = (1-eps) 1_y + eps/K."""
    cdef Py_ssize_t n = logits.shape[0], K = logits.shape[1], i
    cdef floating[:, ::1] gv
    cdef floating* gp = NULL
    cdef floating* rp = NULL
    cdef const floating* wp = NULL
    cdef floating keep = <floating>(1.0 - label_smoothing)
    cdef floating eps_k = <floating>(label_smoothing / K) if K else 0
    cdef Py_ssize_t c, nchunks
    cdef double total = 0
    cdef double* rows
    cdef int nt
    if n == 0:
        return float("nan")
    if grad_out.size:
        gv = grad_out
        gp = &gv[0, 0]
    if row_loss_out.shape[0]:
        rp = &row_loss_out[0]
    if sample_weight.shape[0]:
        wp = &sample_weight[0]
    rows = <double*>malloc(n * sizeof(double))
    if rows == NULL:
        raise MemoryError()
    nchunks = (n + _ROWS - 1) // _ROWS
    nt = _threads_for(<double>n * K, PAR_WORK)
    if nt > nchunks:
        nt = <int>nchunks
    with nogil:
        for c in prange(nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1):
            _ce_rows(&logits[0, 0], &labels[0], wp, gp, rp, rows, c * _ROWS,
                     min(c * _ROWS + _ROWS, n), n, K, keep, eps_k)
        # mean in row order: independent of the thread count
        for i in range(n):
            total += rows[i] * wp[i] if wp != NULL else rows[i]
    free(rows)
    return total / n


cdef inline void _softmax_row(const floating* z, floating* out, Py_ssize_t K) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating inv
    _exp_shifted(z, out, K, _row_max(z, K))
    inv = <floating>(1.0 / _lane_sum(out, K, 0))
    for j in range(K):
        out[j] = out[j] * inv


def softmax(const floating[:, ::1] logits,  # IN  (n, K)
            floating[:, ::1] out):          # OUT (n, K) (may be logits)
    """out = exp(z - m) / sum exp(z - m) per row, m = max z."""
    cdef Py_ssize_t n = logits.shape[0], K = logits.shape[1], i
    cdef int nt
    if n == 0 or K == 0:
        return
    nt = _threads_for(<double>n * K, PAR_WORK)
    if nt > n:
        nt = <int>n
    for i in prange(n, nogil=True, schedule="static", num_threads=nt,
                    use_threads_if=nt > 1):
        _softmax_row(&logits[i, 0], &out[i, 0], K)
