"""Fused softmax cross-entropy and squared error (loss + gradient in one pass per row),
and softmax.

The loss cores live in _loss.pxi (shared with train.pyx).
"""

include "_common.pxi"
include "_loss.pxi"


def softmax_cross_entropy(const floating[:, ::1] logits,    # IN  (n, K)
                          const Py_ssize_t[::1] labels,     # IN  (n,) in [0, K)
                          const floating[::1] sample_weight,  # IN (n,) or empty
                          grad_out,                 # OUT (n, K) or empty: not requested
                          floating[::1] row_loss_out,  # OUT (n,) or empty
                          double label_smoothing):
    """loss = (1/n) sum_i w_i l_i; grad = w_i (softmax - t) / n; t = (1-eps) 1_y + eps/K."""
    cdef Py_ssize_t n = logits.shape[0], K = logits.shape[1]
    cdef floating[:, ::1] gv
    cdef floating* gp = NULL
    cdef floating* rp = NULL
    cdef const floating* wp = NULL
    cdef double total
    cdef double* rows
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
    with nogil:
        total = _sce_core(&logits[0, 0], &labels[0], wp, gp, rp, rows, n, K,
                          label_smoothing)
    free(rows)
    return total


def squared_error(const floating[:, ::1] pred,          # IN  (n, K)
                  const floating[:, ::1] target,        # IN  (n, K)
                  const floating[::1] sample_weight,    # IN  (n,) or empty
                  grad_out,                 # OUT (n, K) or empty: not requested
                  floating[::1] row_loss_out):          # OUT (n,) or empty
    """loss = (1/n) sum_i w_i 0.5 ||p_i - t_i||^2; grad = w_i (p_i - t_i) / n."""
    cdef Py_ssize_t n = pred.shape[0], K = pred.shape[1]
    cdef floating[:, ::1] gv
    cdef floating* gp = NULL
    cdef floating* rp = NULL
    cdef const floating* wp = NULL
    cdef double total
    cdef double* rows
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
    with nogil:
        total = _se_core(&pred[0, 0], &target[0, 0], wp, gp, rp, rows, n, K)
    free(rows)
    return total


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
    nt = _threads_for(<double>n * K * _SOFTMAX_COST)
    if nt > n:
        nt = <int>n
    for i in prange(n, nogil=True, schedule="static", num_threads=nt,
                    use_threads_if=nt > 1):
        _softmax_row(&logits[i, 0], &out[i, 0], K)
