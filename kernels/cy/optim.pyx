"""Fused in-place optimizer updates (PyTorch formulations) over flat arrays.

The nogil cores live in _optim.pxi (shared with train.pyx).
"""

include "_common.pxi"
include "_optim.pxi"


def sgd_update(floating[::1] param,        # IN/OUT flat parameters
               const floating[::1] grad,   # IN     flat gradient
               floating[::1] velocity,     # IN/OUT flat momentum buffer, or empty
               double lr, double momentum, bint nesterov, double weight_decay):
    """g = grad + wd p; v = mu v + g; p -= lr (g + mu v if nesterov else v)."""
    cdef Py_ssize_t n = param.shape[0]
    cdef floating* vp = NULL
    if n == 0:
        return
    if momentum != 0 and velocity.shape[0]:
        vp = &velocity[0]
    with nogil:
        _sgd_core(&param[0], &grad[0], vp, n, lr, momentum, nesterov, weight_decay)


def adam_update(floating[::1] param,       # IN/OUT flat parameters
                const floating[::1] grad,  # IN     flat gradient
                floating[::1] m,           # IN/OUT flat first moment
                floating[::1] v,           # IN/OUT flat second moment
                double lr, double beta1, double beta2, double eps, long step,
                double weight_decay, bint decoupled):
    """m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr/(1-b1^t) m/(sqrt(v)/sqrt(1-b2^t)+eps)."""
    cdef Py_ssize_t n = param.shape[0]
    if n == 0:
        return
    with nogil:
        _adam_core(&param[0], &grad[0], &m[0], &v[0], n, lr, beta1, beta2, eps, step,
                   weight_decay, decoupled)
