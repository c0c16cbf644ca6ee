"""Element-wise activations, forward and backward, over flat arrays."""

include "_common.pxi"
include "_act.pxi"

def activation_forward(const floating[::1] z,  # IN  flat
                       floating[::1] out,      # OUT flat (may be z)
                       int act, double alpha):
    """out = f(z)."""
    cdef Py_ssize_t n = z.shape[0], nchunks, c, lo
    cdef floating a = <floating>alpha
    cdef int nt
    if n == 0:
        return
    nchunks = (n + _CHUNK - 1) // _CHUNK
    nt = _threads_for(n * _act_cost(act))
    cdef const floating* zp = &z[0]
    cdef floating* yp = &out[0]
    if nt == 1:  # no OpenMP region: even a one-thread one costs ~1.6 us
        with nogil:
            _forward_span(zp, yp, n, act, a)
    else:
        for c in prange(nchunks, nogil=True, schedule="static", num_threads=nt):
            lo = c * _CHUNK
            _forward_span(zp + lo, yp + lo, min(<Py_ssize_t>_CHUNK, n - lo), act, a)


def activation_backward(const floating[::1] dy,  # IN  flat upstream gradient
                        const floating[::1] z,   # IN  flat pre-activation
                        const floating[::1] y,   # IN  flat f(z) (sigmoid, tanh)
                        floating[::1] out,       # OUT flat dz (may be dy)
                        int act, double alpha):
    """out = dy * f'(z) (sigmoid/tanh from y)."""
    cdef Py_ssize_t n = dy.shape[0], nchunks, c, lo
    cdef floating a = <floating>alpha
    cdef int nt
    if n == 0:
        return
    nchunks = (n + _CHUNK - 1) // _CHUNK
    nt = _threads_for(n * _act_cost(act))
    cdef const floating* dp = &dy[0]
    cdef const floating* zp = &z[0]
    cdef const floating* yp = &y[0]
    cdef floating* op = &out[0]
    if nt == 1:  # no OpenMP region (see activation_forward)
        with nogil:
            _backward_span(dp, zp, yp, op, n, act, a)
    else:
        for c in prange(nchunks, nogil=True, schedule="static", num_threads=nt):
            lo = c * _CHUNK
            _backward_span(dp + lo, zp + lo, yp + lo, op + lo,
                           min(<Py_ssize_t>_CHUNK, n - lo), act, a)
