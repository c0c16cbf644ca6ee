"""Fused in-place optimizer updates (PyTorch formulations) over flat arrays."""

include "_common.pxi"

# below this many parameters an update runs serially
cdef double PAR_WORK = 65536


cdef inline void _sgd_span(floating* p, const floating* g, floating* v, Py_ssize_t n,
                           floating lr, floating mu, bint nesterov,
                           floating wd) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, vi
    if v == NULL:
        for i in range(n):
            gi = g[i] + wd * p[i] if wd != 0 else g[i]
            p[i] = p[i] - lr * gi
    elif nesterov:
        for i in range(n):
            gi = g[i] + wd * p[i] if wd != 0 else g[i]
            vi = v[i] * mu + gi
            v[i] = vi
            p[i] = p[i] - lr * (gi + mu * vi)
    else:
        for i in range(n):
            gi = g[i] + wd * p[i] if wd != 0 else g[i]
            vi = v[i] * mu + gi
            v[i] = vi
            p[i] = p[i] - lr * vi


def sgd_update(floating[::1] param,        # IN/OUT flat parameters
               const floating[::1] grad,   # IN     flat gradient
               floating[::1] velocity,     # IN/OUT flat momentum buffer, or empty
               double lr, double momentum, bint nesterov, double weight_decay):
    """g = grad + wd p; v = mu v + g; p -= lr (g + mu v if nesterov else v)."""
    cdef Py_ssize_t n = param.shape[0], nchunks, c, lo
    cdef floating* vp = NULL
    cdef floating* pp
    cdef const floating* gp
    cdef int nt
    if n == 0:
        return
    if momentum != 0 and velocity.shape[0]:
        vp = &velocity[0]
    pp = &param[0]
    gp = &grad[0]
    nchunks = (n + _CHUNK - 1) // _CHUNK
    nt = _threads_for(<double>n, PAR_WORK)
    for c in prange(nchunks, nogil=True, schedule="static", num_threads=nt,
                    use_threads_if=nt > 1):
        lo = c * _CHUNK
        _sgd_span(pp + lo, gp + lo, vp + lo if vp != NULL else NULL,
                  min(<Py_ssize_t>_CHUNK, n - lo), <floating>lr, <floating>momentum,
                  nesterov, <floating>weight_decay)


cdef inline void _adam_span(floating* p, const floating* g, floating* m, floating* v,
                            Py_ssize_t n, floating b1, floating c1, floating b2,
                            floating c2, floating eps, floating bias2_sqrt,
                            floating step_size, floating wd, floating shrink,
                            bint decoupled) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, mi, vi, pi, denom
    for i in range(n):
        pi = p[i]
        gi = g[i]
        if decoupled:
            pi = pi * shrink
        elif wd != 0:
            gi = gi + wd * pi
        mi = m[i] * b1 + c1 * gi
        vi = v[i] * b2 + c2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        denom = _sqrt(vi) / bias2_sqrt + eps
        p[i] = pi - mi / denom * step_size


def adam_update(floating[::1] param,       # IN/OUT flat parameters
                const floating[::1] grad,  # IN     flat gradient
                floating[::1] m,           # IN/OUT flat first moment
                floating[::1] v,           # IN/OUT flat second moment
                double lr, double beta1, double beta2, double eps, long step,
                double weight_decay, bint decoupled):
    """m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr/(1-b1^t) m/(sqrt(v)/sqrt(1-b2^t)+eps)."""
    cdef Py_ssize_t n = param.shape[0], nchunks, c, lo
    cdef double bias1 = 1.0 - beta1 ** step
    cdef double bias2_sqrt = sqrt(1.0 - beta2 ** step)
    cdef bint dec = decoupled and weight_decay != 0
    cdef floating shrink = <floating>(1.0 - lr * weight_decay)
    cdef int nt
    if n == 0:
        return
    nchunks = (n + _CHUNK - 1) // _CHUNK
    nt = _threads_for(<double>n * 3, PAR_WORK)
    cdef floating* pp = &param[0]
    cdef const floating* gp = &grad[0]
    cdef floating* mp = &m[0]
    cdef floating* vp = &v[0]
    for c in prange(nchunks, nogil=True, schedule="static", num_threads=nt,
                    use_threads_if=nt > 1):
        lo = c * _CHUNK
        _adam_span(pp + lo, gp + lo, mp + lo, vp + lo, min(<Py_ssize_t>_CHUNK, n - lo),
                   <floating>beta1, <floating>(1.0 - beta1), <floating>beta2,
                   <floating>(1.0 - beta2), <floating>eps, <floating>bias2_sqrt,
                   <floating>(lr / bias1), <floating>weight_decay, shrink, dec)
