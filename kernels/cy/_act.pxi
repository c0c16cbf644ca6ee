# Activation functions and derivatives on contiguous spans (used by activations.pyx and
# linear.pyx). Codes: 0 identity, 1 relu, 2 leaky_relu, 3 sigmoid, 4 tanh, 5 gelu.
# The act switch sits outside the loops so each loop vectorises. NaN propagates:
# relu(NaN) = NaN and dy * f'(z) keeps a NaN dy.

cdef double _SQRT_HALF = 0.70710678118654752440
cdef double _INV_SQRT_2PI = 0.39894228040143267794

# work units per element (tuning.ACT_COST), to decide serial vs parallel
cdef inline double _act_cost(int act) noexcept nogil:
    return _ACT_COST[act]


cdef inline void _forward_span(const floating* z, floating* y, Py_ssize_t n, int act,
                               floating alpha) noexcept nogil:
    """y = f(z) for n elements (y may be z)."""
    cdef Py_ssize_t i
    cdef floating zi, c
    cdef floating one = 1, zero = 0, half = 0.5
    cdef floating sh = <floating>_SQRT_HALF
    if act == 0:
        if y != z:
            memcpy(y, z, n * sizeof(floating))
    elif act == 1:
        for i in range(n):
            zi = z[i]
            y[i] = zero if zi < zero else zi
    elif act == 2:
        for i in range(n):
            zi = z[i]
            y[i] = zi if zi > zero else zi * alpha
    elif act == 3:
        if floating is float:
            fnn_sigmoid_f32(z, y, n)
        else:
            for i in range(n):
                y[i] = one / (one + _exp(-z[i]))
    elif act == 4:
        if floating is float:
            fnn_tanh_f32(z, y, n)
        else:
            for i in range(n):
                y[i] = _tanh(z[i])
    elif act == 5:
        if floating is float:
            fnn_gelu_f32(z, y, n)
        else:
            for i in range(n):
                zi = z[i]
                c = _erf(zi * sh) + one
                y[i] = zi * c * half


cdef inline void _backward_span(const floating* dy, const floating* z, const floating* y,
                                floating* out, Py_ssize_t n, int act,
                                floating alpha) noexcept nogil:
    """out = dy * f'(z) for n elements (out may be dy)."""
    cdef Py_ssize_t i
    cdef floating zi, yi, g, pdf
    cdef floating one = 1, zero = 0, half = 0.5, mhalf = -0.5
    cdef floating sh = <floating>_SQRT_HALF, isp = <floating>_INV_SQRT_2PI
    if act == 0:
        if out != dy:
            memcpy(out, dy, n * sizeof(floating))
    elif act == 1:
        for i in range(n):
            out[i] = dy[i] * (one if z[i] > zero else zero)
    elif act == 2:
        for i in range(n):
            out[i] = dy[i] * (one if z[i] > zero else alpha)
    elif act == 3:
        for i in range(n):
            yi = y[i]
            out[i] = dy[i] * (yi * (one - yi))
    elif act == 4:
        for i in range(n):
            yi = y[i]
            out[i] = dy[i] * (one - yi * yi)
    elif act == 5:
        if floating is float:
            fnn_gelu_grad_f32(dy, z, out, n)
        else:
            for i in range(n):
                zi = z[i]
                g = (_erf(zi * sh) + one) * half
                pdf = _exp(zi * zi * mhalf) * zi * isp
                out[i] = dy[i] * (g + pdf)
