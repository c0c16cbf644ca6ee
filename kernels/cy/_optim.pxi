# Fused in-place optimizer update cores (nogil, raw pointers), shared by optim.pyx and
# train.pyx (textual include). Needs _common.pxi included first.

# below this many parameters an update runs serially
cdef double _OPT_PAR_WORK = 65536


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


cdef void _sgd_core(floating* pp, const floating* gp, floating* vp, Py_ssize_t n,
                    double lr, double momentum, bint nesterov,
                    double weight_decay) noexcept nogil:
    """SGD over n >= 1 flat elements; vp NULL: no momentum buffer."""
    cdef Py_ssize_t nchunks = (n + _CHUNK - 1) // _CHUNK, c, lo
    cdef int nt = _threads_for(<double>n, _OPT_PAR_WORK)
    for c in prange(nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1):
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


cdef void _adam_core(floating* pp, const floating* gp, floating* mp, floating* vp,
                     Py_ssize_t n, double lr, double beta1, double beta2, double eps,
                     long step, double weight_decay, bint decoupled) noexcept nogil:
    """Adam / AdamW over n >= 1 flat elements."""
    cdef double bias1 = 1.0 - beta1 ** step
    cdef double bias2_sqrt = sqrt(1.0 - beta2 ** step)
    cdef bint dec = decoupled and weight_decay != 0
    cdef floating shrink = <floating>(1.0 - lr * weight_decay)
    cdef Py_ssize_t nchunks = (n + _CHUNK - 1) // _CHUNK, c, lo
    cdef int nt = _threads_for(<double>n * 3, _OPT_PAR_WORK)
    for c in prange(nchunks, schedule="static", num_threads=nt, use_threads_if=nt > 1):
        lo = c * _CHUNK
        _adam_span(pp + lo, gp + lo, mp + lo, vp + lo, min(<Py_ssize_t>_CHUNK, n - lo),
                   <floating>beta1, <floating>(1.0 - beta1), <floating>beta2,
                   <floating>(1.0 - beta2), <floating>eps, <floating>bias2_sqrt,
                   <floating>(lr / bias1), <floating>weight_decay, shrink, dec)
