"""Fused softmax cross-entropy and squared error (loss + gradient in one pass per row),
and softmax.

The loss cores live in _loss.pxi (shared with train.pyx).
"""

cimport numpy as cnp

include "_common.pxi"
include "_loss.pxi"

cnp.import_array()

# _se_call's per-task sums on the stack up to this many tasks (more: malloc)
cdef enum:
    _STACK_TASKS = 64


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


cdef int _float_array(object a, str name, int typenum, int ndim, bint out) except -1:
    """What a typed memoryview argument would guarantee, checked in C: an ndarray of
    the float type ``typenum`` (NPY_FLOAT32 or NPY_FLOAT64; native order, aligned),
    C-contiguous, ``ndim``-D (-1: any), writeable when ``out``."""
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    cdef int found = cnp.PyArray_TYPE(arr)
    if found != typenum or not cnp.PyArray_ISNOTSWAPPED(arr):
        raise TypeError(f"{name} has dtype {a.dtype}, expected "
                        f"{'float32' if typenum == cnp.NPY_FLOAT32 else 'float64'}")
    if ndim >= 0 and cnp.PyArray_NDIM(arr) != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not cnp.PyArray_ISCARRAY_RO(arr):
        raise ValueError(f"{name} must be C-contiguous and aligned")
    if out and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"{name} is read-only")
    return 0


cdef double _se_call(const floating* p, const floating* t, const floating* w,
                     floating* g, floating* row_out, Py_ssize_t n,
                     Py_ssize_t K) except? -1:
    """_se_core with its per-task scratch on the stack up to _STACK_TASKS tasks."""
    cdef double small[_STACK_TASKS]
    cdef double* rows = small
    cdef Py_ssize_t per_task = _loss_rows(K)
    cdef Py_ssize_t nchunks = (n + per_task - 1) // per_task
    cdef double total
    if nchunks > _STACK_TASKS:
        rows = <double*>malloc(nchunks * sizeof(double))
        if rows == NULL:
            raise MemoryError()
    with nogil:
        total = _se_core(p, t, w, g, row_out, rows, n, K)
    if rows != small:
        free(rows)
    return total


def squared_error(pred,          # IN  (n, K)
                  target,        # IN  (n, K)
                  sample_weight,  # IN  (n,) or empty
                  grad_out,      # OUT (n, K) or empty: not requested
                  row_loss_out):  # OUT (n,) or empty
    """loss = (1/n) sum_i w_i 0.5 ||p_i - t_i||^2; grad = w_i (p_i - t_i) / n.

    Plain arguments checked in C (_float_array), not fused memoryviews: matching a
    fused signature and acquiring five buffers costs more than the whole kernel on
    small batches.
    """
    if not cnp.PyArray_Check(pred):
        raise TypeError(f"pred must be a numpy.ndarray, got {type(pred).__name__}")
    cdef int typenum = cnp.PyArray_TYPE(<cnp.ndarray>pred)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        raise TypeError(f"pred must be float32 or float64, got dtype {pred.dtype}")
    _float_array(pred, "pred", typenum, 2, False)
    cdef cnp.ndarray p = <cnp.ndarray>pred
    _float_array(target, "target", typenum, 2, False)
    _float_array(sample_weight, "sample_weight", typenum, 1, False)
    _float_array(grad_out, "grad_out", typenum, -1, True)
    _float_array(row_loss_out, "row_loss_out", typenum, 1, True)
    cdef Py_ssize_t n = cnp.PyArray_DIM(p, 0), K = cnp.PyArray_DIM(p, 1)
    cdef Py_ssize_t nw = cnp.PyArray_SIZE(<cnp.ndarray>sample_weight)
    cdef Py_ssize_t ng = cnp.PyArray_SIZE(<cnp.ndarray>grad_out)
    cdef Py_ssize_t nr = cnp.PyArray_SIZE(<cnp.ndarray>row_loss_out)
    if cnp.PyArray_SIZE(<cnp.ndarray>target) != n * K or (nw and nw != n) or (
            ng and ng != n * K) or (nr and nr != n):
        raise ValueError("target, sample_weight, grad_out or row_loss_out does not "
                         "match pred's shape")
    if n == 0:
        return float("nan")
    cdef void* pp = cnp.PyArray_DATA(p)
    cdef void* tp = cnp.PyArray_DATA(<cnp.ndarray>target)
    cdef void* wp = cnp.PyArray_DATA(<cnp.ndarray>sample_weight) if nw else NULL
    cdef void* gp = cnp.PyArray_DATA(<cnp.ndarray>grad_out) if ng else NULL
    cdef void* rp = cnp.PyArray_DATA(<cnp.ndarray>row_loss_out) if nr else NULL
    if typenum == cnp.NPY_FLOAT32:
        return _se_call(<const float*>pp, <const float*>tp, <const float*>wp,
                        <float*>gp, <float*>rp, n, K)
    return _se_call(<const double*>pp, <const double*>tp, <const double*>wp,
                    <double*>gp, <double*>rp, n, K)


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
    if nt == 1:  # no OpenMP region: even a one-thread one costs ~1.6 us
        with nogil:
            for i in range(n):
                _softmax_row(&logits[i, 0], &out[i, 0], K)
    else:
        for i in prange(n, nogil=True, schedule="static", num_threads=nt):
            _softmax_row(&logits[i, 0], &out[i, 0], K)
