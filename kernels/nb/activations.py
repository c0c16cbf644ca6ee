"""Element-wise activations (forward, backward): flat arrays, serial or prange.

The scalar helpers here (``exp_t``, ``act_forward_slice``, ``act_backward_slice``) are
also used by linear.py and loss.py. float32 stays float32: constants are cast with
``dtype.type``. libm's float32 exp/tanh/erf are scalar calls, so float32 uses the
branch-free approximations of kernels/tuning.py's numerics spec (the Cython backend
uses the same), which LLVM vectorises, accurate to a few ulp; float64 keeps libm.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from ..tuning import ERF_F32_CLAMP, EXP_F32_MAX, EXP_F32_MIN, TANH_F32_SMALL
from . import _options as opt
from . import _split
from ._options import JIT, PARALLEL

_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def bitcast(src, dst):
    """An intrinsic reinterpreting the bits of a ``src`` value (a Numba type) as a
    ``dst`` value of the same width: no conversion, one LLVM bitcast."""

    @intrinsic
    def reinterpret(typingctx, x):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(dst))

        return dst(src), codegen

    return reinterpret


_int32_as_float32 = bitcast(types.int32, types.float32)
_float32_as_int32 = bitcast(types.float32, types.int32)


@njit(**JIT)
def _exp_f32(x):
    """exp(x) for float32, branch-free (vectorisable), as kernels/tuning.py specifies
    (the Cython twin is the same C): x clamped to [EXP_F32_MIN, EXP_F32_MAX], then
    x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6 Cephes polynomial, 2^n applied as
    two factors (overflow to inf and gradual underflow come out of the multiplies).
    NaN passes the clamps and stays NaN."""
    f = np.float32
    xc = f(EXP_F32_MAX) if x > f(EXP_F32_MAX) else x
    xc = f(EXP_F32_MIN) if xc < f(EXP_F32_MIN) else xc
    big = f(12582912.0)  # 1.5 * 2^23: adding it rounds to the nearest integer
    tf = xc * f(1.44269504088896341) + big
    fn = tf - big
    n = _float32_as_int32(tf) - np.int32(0x4B400000)
    r = xc - fn * f(0.693359375)
    r = r - fn * f(-2.12194440e-4)
    p = f(1.9875691500e-4)
    p = p * r + f(1.3981999507e-3)
    p = p * r + f(8.3334519073e-3)
    p = p * r + f(4.1665795894e-2)
    p = p * r + f(1.6666665459e-1)
    p = p * r + f(5.0000001201e-1)
    p = p * (r * r) + r + f(1.0)
    n1 = n >> np.int32(1)
    s1 = _int32_as_float32((n1 + np.int32(127)) << np.int32(23))
    s2 = _int32_as_float32((n - n1 + np.int32(127)) << np.int32(23))
    return (p * s1) * s2


def exp_t(x):
    """exp(x) in x's own float type (fast polynomial for float32, libm for float64)."""
    return math.exp(x)


@overload(exp_t)
def _exp_t_overload(x):
    if x == types.float32:
        return lambda x: _exp_f32(x)
    return lambda x: math.exp(x)


@njit(**JIT)
def _tanh_f32(x):
    """tanh(x) for float32, branch-free: odd polynomial for |x| < TANH_F32_SMALL
    (Cephes tanhf), else 1 - 2 / (exp(2|x|) + 1) with x's sign (kernels/tuning.py).
    NaN stays NaN, +-inf gives +-1."""
    f = np.float32
    a = abs(x)
    z = x * x
    p = f(-5.70498872745e-3)
    p = p * z + f(2.06390887954e-2)
    p = p * z - f(5.37397155531e-2)
    p = p * z + f(1.33314422036e-1)
    p = p * z - f(3.33332819422e-1)
    small = p * z * x + x
    big = f(1.0) - f(2.0) / (_exp_f32(a + a) + f(1.0))
    big = math.copysign(big, x)
    return small if a < f(TANH_F32_SMALL) else big


def tanh_t(x):
    """tanh(x) in x's own float type (fast polynomial for float32, libm for float64)."""
    return math.tanh(x)


@overload(tanh_t)
def _tanh_t_overload(x):
    if x == types.float32:
        return lambda x: _tanh_f32(x)
    return lambda x: math.tanh(x)


@njit(**JIT)
def _erf_f32(x):
    """erf(x) for float32, branch-free: the odd/even rational minimax fit used by Eigen
    and XLA on x clamped to [-ERF_F32_CLAMP, ERF_F32_CLAMP] (erf is +-1 in float32
    beyond). Max abs error ~4e-7 (a few ulp), exact odd symmetry, NaN stays NaN."""
    f = np.float32
    xc = min(max(x, f(-ERF_F32_CLAMP)), f(ERF_F32_CLAMP))
    x2 = xc * xc
    p = f(-2.72614225801306e-10)
    p = p * x2 + f(2.77068142495902e-08)
    p = p * x2 + f(-2.10102402082508e-06)
    p = p * x2 + f(-5.69250639462346e-05)
    p = p * x2 + f(-7.34990630326855e-04)
    p = p * x2 + f(-2.95459980854025e-03)
    p = p * x2 + f(-1.60960333262415e-02)
    q = f(-1.45660718464996e-05)
    q = q * x2 + f(-2.13374055278905e-04)
    q = q * x2 + f(-1.68282697438203e-03)
    q = q * x2 + f(-7.37332916720468e-03)
    q = q * x2 + f(-1.42647390514189e-02)
    y = xc * p / q
    return x if x != x else y


def erf_t(x):
    """erf(x) in x's own float type (rational fit for float32, libm for float64)."""
    return math.erf(x)


@overload(erf_t)
def _erf_t_overload(x):
    if x == types.float32:
        return lambda x: _erf_f32(x)
    return lambda x: math.erf(x)


@njit(**JIT)
def act_forward_slice(z, out, act, alpha):
    """out = f(z) for flat slices; alpha already of z's dtype. out may be z."""
    # IN  z (n,), act code, alpha   OUT out (n,)
    t = z.dtype.type
    zero = t(0.0)
    one = t(1.0)
    n = z.size
    if act == 0:  # identity
        for i in range(n):
            out[i] = z[i]
    elif act == 1:  # relu: NaN and -0.0 pass through like np.maximum(z, 0)
        for i in range(n):
            v = z[i]
            out[i] = zero if v < zero else v
    elif act == 2:  # leaky_relu
        for i in range(n):
            v = z[i]
            out[i] = v if v > zero else v * alpha
    elif act == 3:  # sigmoid 1 / (1 + exp(-z)); overflow gives 1/inf = 0
        for i in range(n):
            out[i] = one / (one + exp_t(-z[i]))
    elif act == 4:  # tanh
        for i in range(n):
            out[i] = tanh_t(z[i])
    else:  # gelu (exact): (z (1 + erf(z / sqrt 2))) * 0.5
        c = t(_SQRT_HALF)
        half = t(0.5)
        for i in range(n):
            v = z[i]
            out[i] = v * (erf_t(v * c) + one) * half


@njit(**JIT)
def act_backward_slice(dy, z, y, out, act, alpha):
    """out = dy * f'(z) for flat slices (sigmoid/tanh read y). out may be dy."""
    # IN  dy, z, y (n,), act code, alpha   OUT out (n,)
    t = dy.dtype.type
    zero = t(0.0)
    one = t(1.0)
    n = dy.size
    if act == 0:  # identity
        for i in range(n):
            out[i] = dy[i]
    elif act == 1:  # relu: dy * (z > 0), so a NaN dy stays NaN
        for i in range(n):
            out[i] = dy[i] * (one if z[i] > zero else zero)
    elif act == 2:  # leaky_relu
        for i in range(n):
            out[i] = dy[i] * (one if z[i] > zero else alpha)
    elif act == 3:  # sigmoid: y (1 - y)
        for i in range(n):
            v = y[i]
            out[i] = dy[i] * (v * (one - v))
    elif act == 4:  # tanh: 1 - y^2
        for i in range(n):
            v = y[i]
            out[i] = dy[i] * (one - v * v)
    else:  # gelu: Phi(z) + z phi(z)
        c = t(_SQRT_HALF)
        c2 = t(_INV_SQRT_2PI)
        half = t(0.5)
        mhalf = t(-0.5)
        for i in range(n):
            v = z[i]
            cdf = (erf_t(v * c) + one) * half
            pdf = exp_t((v * v) * mhalf) * v * c2
            out[i] = dy[i] * (cdf + pdf)


# ----------------------------------------------------------------- serial / parallel
@njit(**JIT)
def _forward_serial(z, out, act, alpha):
    act_forward_slice(z, out, act, alpha)


@njit(**PARALLEL)
def _forward_parallel(z, out, act, alpha, chunk):
    n = z.size
    for c in prange((n + chunk - 1) // chunk):
        lo = c * chunk
        hi = min(lo + chunk, n)
        act_forward_slice(z[lo:hi], out[lo:hi], act, alpha)


@njit(**JIT)
def _backward_serial(dy, z, y, out, act, alpha):
    act_backward_slice(dy, z, y, out, act, alpha)


@njit(**PARALLEL)
def _backward_parallel(dy, z, y, out, act, alpha, chunk):
    n = dy.size
    for c in prange((n + chunk - 1) // chunk):
        lo = c * chunk
        hi = min(lo + chunk, n)
        act_backward_slice(dy[lo:hi], z[lo:hi], y[lo:hi], out[lo:hi], act, alpha)


# ------------------------------------------------------------------------ raw kernels
def activation_forward(z, out, act, alpha):
    """out = f(z), element-wise (flat arrays; out may be z)."""
    a = z.dtype.type(alpha)
    tune = opt.TUNE
    if _split.activation.py_func(z.size, act, tune):
        _forward_parallel(z, out, act, a, tune.chunk)
    elif z.size:
        _forward_serial(z, out, act, a)


def activation_backward(dy, z, y, out, act, alpha):
    """out = dy * f'(z) (sigmoid/tanh read y; flat arrays; out may be dy)."""
    a = dy.dtype.type(alpha)
    tune = opt.TUNE
    if _split.activation.py_func(dy.size, act, tune):
        _backward_parallel(dy, z, y, out, act, a, tune.chunk)
    elif dy.size:
        _backward_serial(dy, z, y, out, act, a)
