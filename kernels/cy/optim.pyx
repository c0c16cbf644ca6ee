"""Fused in-place optimizer updates (PyTorch formulations) over flat arrays.

The nogil cores live in _optim.pxi (shared with train.pyx).
"""

include "_common.pxi"
include "_optim.pxi"


cdef double* _partials(bint sq_norm, Py_ssize_t n) except? NULL:
    """One double per _CHUNK elements when sq_norm, else NULL."""
    cdef double* partials
    if not sq_norm:
        return NULL
    partials = <double*>malloc(((n + _CHUNK - 1) // _CHUNK) * sizeof(double))
    if partials == NULL:
        raise MemoryError()
    return partials


def sgd_update(floating[::1] param,        # IN/OUT flat parameters
               const floating[::1] grad,   # IN     flat gradient
               floating[::1] velocity,     # IN/OUT flat momentum buffer, or empty
               double lr, double momentum, bint nesterov, double weight_decay,
               bint sq_norm):
    """g = grad + wd p; v = mu v + g; p -= lr (g + mu v if nesterov else v).
    Returns sum p^2 (float64, before the step) when sq_norm, else 0.0."""
    cdef Py_ssize_t n = param.shape[0]
    cdef floating* vp = NULL
    cdef double* partials
    cdef double sq
    if n == 0:
        return 0.0
    if momentum != 0 and velocity.shape[0]:
        vp = &velocity[0]
    partials = _partials(sq_norm, n)
    with nogil:
        sq = _sgd_core(&param[0], &grad[0], vp, n, lr, momentum, nesterov, weight_decay,
                       0.0, partials)
    free(partials)
    return sq


def adam_update(floating[::1] param,       # IN/OUT flat parameters
                const floating[::1] grad,  # IN     flat gradient
                floating[::1] m,           # IN/OUT flat first moment
                floating[::1] v,           # IN/OUT flat second moment
                double lr, double beta1, double beta2, double eps, long step,
                double weight_decay, bint decoupled, bint sq_norm):
    """m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr/(1-b1^t) m/(sqrt(v)/sqrt(1-b2^t)+eps).
    Returns sum p^2 (float64, before the step) when sq_norm, else 0.0."""
    cdef Py_ssize_t n = param.shape[0]
    cdef double* partials
    cdef double sq
    if n == 0:
        return 0.0
    partials = _partials(sq_norm, n)
    with nogil:
        sq = _adam_core(&param[0], &grad[0], &m[0], &v[0], n, lr, beta1, beta2, eps,
                        step, weight_decay, decoupled, 0.0, partials)
    free(partials)
    return sq
