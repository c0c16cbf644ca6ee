# Fused in-place optimizer update cores (nogil, raw pointers), shared by optim.pyx and
# train.pyx (textual include). Needs _common.pxi included first.

cdef enum:
    _SQ_LANES = 64  # as nb/optim.py SQ_LANES


cdef inline double _sq_sum(const floating* p, Py_ssize_t n) noexcept nogil:
    """Sum of p[i]^2 in float64, in a fixed order: lane j sums p[j::_SQ_LANES] (an
    element-wise, so vectorised, accumulation), then the lanes and the tail in order."""
    cdef double acc[_SQ_LANES]
    cdef double s = 0, a
    cdef Py_ssize_t i, j, blk, n_full = n - n % _SQ_LANES
    for j in range(_SQ_LANES):
        acc[j] = 0
    for blk in range(n // _SQ_LANES):
        i = blk * _SQ_LANES
        for j in range(_SQ_LANES):
            a = p[i + j]
            acc[j] += a * a
    for j in range(_SQ_LANES):
        s += acc[j]
    for i in range(n_full, n):
        a = p[i]
        s += a * a
    return s


cdef inline double _sum_partials(const double* partials, Py_ssize_t n) noexcept nogil:
    cdef double s = 0
    cdef Py_ssize_t c
    for c in range(n):
        s += partials[c]
    return s


cdef double _sq_norm_core(const floating* pp, Py_ssize_t n,
                         double* partials) noexcept nogil:
    """sum p^2 over n >= 1 flat elements in float64: per _CHUNK (in parallel above
    the threshold), the chunks added in order, as _sgd_core / _adam_core return it."""
    cdef Py_ssize_t nchunks = (n + _CHUNK - 1) // _CHUNK, c, lo
    cdef int nt = _threads_for(<double>n * _SGD_COST)
    if nt == 1:  # no OpenMP region: even a one-thread one costs ~1.6 us
        for c in range(nchunks):
            lo = c * _CHUNK
            partials[c] = _sq_sum(pp + lo, min(<Py_ssize_t>_CHUNK, n - lo))
    else:
        for c in prange(nchunks, schedule="static", num_threads=nt):
            lo = c * _CHUNK
            partials[c] = _sq_sum(pp + lo, min(<Py_ssize_t>_CHUNK, n - lo))
    return _sum_partials(partials, nchunks)


cdef inline void _sgd_span(floating* p, const floating* g, floating* v, Py_ssize_t n,
                           floating lr, floating mu, bint nesterov, floating wd,
                           floating l2) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, vi
    if v == NULL:
        for i in range(n):
            gi = g[i] + l2 * p[i] if l2 != 0 else g[i]
            gi = gi + wd * p[i] if wd != 0 else gi
            p[i] = p[i] - lr * gi
    elif nesterov:
        for i in range(n):
            gi = g[i] + l2 * p[i] if l2 != 0 else g[i]
            gi = gi + wd * p[i] if wd != 0 else gi
            vi = v[i] * mu + gi
            v[i] = vi
            p[i] = p[i] - lr * (gi + mu * vi)
    else:
        for i in range(n):
            gi = g[i] + l2 * p[i] if l2 != 0 else g[i]
            gi = gi + wd * p[i] if wd != 0 else gi
            vi = v[i] * mu + gi
            v[i] = vi
            p[i] = p[i] - lr * vi


cdef inline void _sgd_chunk(floating* pp, const floating* gp, floating* vp,
                            Py_ssize_t n, Py_ssize_t c, double lr, double momentum,
                            bint nesterov, double weight_decay, double l2,
                            double* partials) noexcept nogil:
    """Chunk c of _sgd_core: its sum p^2 before the step (with partials), the step."""
    cdef Py_ssize_t lo = c * _CHUNK
    cdef Py_ssize_t size = min(<Py_ssize_t>_CHUNK, n - lo)
    if partials != NULL:
        partials[c] = _sq_sum(pp + lo, size)
    _sgd_span(pp + lo, gp + lo, vp + lo if vp != NULL else NULL, size, <floating>lr,
              <floating>momentum, nesterov, <floating>weight_decay, <floating>l2)


cdef double _sgd_core(floating* pp, const floating* gp, floating* vp, Py_ssize_t n,
                      double lr, double momentum, bint nesterov, double weight_decay,
                      double l2, double* partials) noexcept nogil:
    """SGD over n >= 1 flat elements; vp NULL: no momentum buffer. The gradient is
    gp + l2 p (the loss's L2 term, when the training step leaves it to the update:
    the sums round as linear backward's gp + l2 p would), then + weight_decay p. With
    ``partials`` (one double per _CHUNK elements) returns sum p^2 before the step,
    else 0."""
    cdef Py_ssize_t nchunks = (n + _CHUNK - 1) // _CHUNK, c
    cdef int nt = _threads_for(<double>n * _SGD_COST)
    if nt == 1:  # no OpenMP region (see _sq_norm_core)
        for c in range(nchunks):
            _sgd_chunk(pp, gp, vp, n, c, lr, momentum, nesterov, weight_decay, l2,
                       partials)
    else:
        for c in prange(nchunks, schedule="static", num_threads=nt):
            _sgd_chunk(pp, gp, vp, n, c, lr, momentum, nesterov, weight_decay, l2,
                       partials)
    return _sum_partials(partials, nchunks) if partials != NULL else 0


cdef inline void _adam_span(floating* p, const floating* g, floating* m, floating* v,
                            Py_ssize_t n, floating b1, floating c1, floating b2,
                            floating c2, floating eps, floating bias2_sqrt,
                            floating step_size, floating wd, floating shrink,
                            bint decoupled, floating l2) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, mi, vi, pi, denom
    for i in range(n):
        pi = p[i]
        gi = g[i] + l2 * pi if l2 != 0 else g[i]
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


cdef inline void _adam_chunk(floating* pp, const floating* gp, floating* mp,
                             floating* vp, Py_ssize_t n, Py_ssize_t c, double lr,
                             double beta1, double beta2, double eps, double bias1,
                             double bias2_sqrt, double weight_decay, floating shrink,
                             bint dec, double l2, double* partials) noexcept nogil:
    """Chunk c of _adam_core: its sum p^2 before the step (with partials), the step."""
    cdef Py_ssize_t lo = c * _CHUNK
    cdef Py_ssize_t size = min(<Py_ssize_t>_CHUNK, n - lo)
    if partials != NULL:
        partials[c] = _sq_sum(pp + lo, size)
    _adam_span(pp + lo, gp + lo, mp + lo, vp + lo, size, <floating>beta1,
               <floating>(1.0 - beta1), <floating>beta2, <floating>(1.0 - beta2),
               <floating>eps, <floating>bias2_sqrt, <floating>(lr / bias1),
               <floating>weight_decay, shrink, dec, <floating>l2)


cdef double _adam_core(floating* pp, const floating* gp, floating* mp, floating* vp,
                       Py_ssize_t n, double lr, double beta1, double beta2, double eps,
                       long step, double weight_decay, bint decoupled, double l2,
                       double* partials) noexcept nogil:
    """Adam / AdamW over n >= 1 flat elements; l2 and sum p^2 as _sgd_core."""
    cdef double bias1 = 1.0 - beta1 ** step
    cdef double bias2_sqrt = sqrt(1.0 - beta2 ** step)
    cdef bint dec = decoupled and weight_decay != 0
    cdef floating shrink = <floating>(1.0 - lr * weight_decay)
    cdef Py_ssize_t nchunks = (n + _CHUNK - 1) // _CHUNK, c
    cdef int nt = _threads_for(<double>n * _ADAM_COST)
    if nt == 1:  # no OpenMP region (see _sq_norm_core)
        for c in range(nchunks):
            _adam_chunk(pp, gp, mp, vp, n, c, lr, beta1, beta2, eps, bias1, bias2_sqrt,
                        weight_decay, shrink, dec, l2, partials)
    else:
        for c in prange(nchunks, schedule="static", num_threads=nt):
            _adam_chunk(pp, gp, mp, vp, n, c, lr, beta1, beta2, eps, bias1, bias2_sqrt,
                        weight_decay, shrink, dec, l2, partials)
    return _sum_partials(partials, nchunks) if partials != NULL else 0
