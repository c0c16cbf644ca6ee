# Shared by every kernel module (textual include: cimports between .pyx modules break
# with the package-dir mapping). Fused float type, OpenMP shim, thread setting, and a
# vectorisable float32 exp/tanh (glibc's expf/tanhf are scalar calls).

from libc.math cimport exp, log, sqrt, sqrtf, tanh, erf, erff, fabs, NAN
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from cython.parallel cimport prange

ctypedef fused floating:
    float
    double

cdef extern from *:
    """
    #include <stdint.h>
    #include <math.h>
    #ifdef _OPENMP
    #include <omp.h>
    #define FNN_OPENMP 1
    static inline int fnn_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define FNN_OPENMP 0
    static inline int fnn_omp_max_threads(void) { return 1; }
    #endif

    /* The float32 numerics spec of kernels/tuning.py, compiled in by setup.py. */
    #if !defined(FNN_EXP_F32_MAX) || !defined(FNN_EXP_F32_MIN) || \
        !defined(FNN_TANH_F32_SMALL) || !defined(FNN_ERF_F32_CLAMP)
    #error "build through setup.py: it defines the numerics of kernels/tuning.py"
    #endif

    /* exp for float32, <= 2 ulp, branch-free so loops calling it vectorise.
       Cody-Waite reduction x = n ln2 + r, Cephes polynomial, 2^n applied as two
       factors (gradual underflow and overflow to inf come out of the multiply).
       NaN in -> NaN out; +inf -> inf; -inf -> 0. The Numba twin is the same. */
    static inline float fnn_expf(float x) {
        union { float f; uint32_t u; } t, s1, s2;
        float xc = x > FNN_EXP_F32_MAX ? FNN_EXP_F32_MAX : x;  /* NaN passes both */
        xc = xc < FNN_EXP_F32_MIN ? FNN_EXP_F32_MIN : xc;
        t.f = xc * 1.44269504088896341f + 12582912.0f;   /* round to nearest int */
        float fn = t.f - 12582912.0f;
        int32_t n = (int32_t)(t.u - 0x4B400000u);
        float r = xc - fn * 0.693359375f;
        r = r - fn * -2.12194440e-4f;
        float p = 1.9875691500e-4f;
        p = p * r + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        p = p * (r * r) + r + 1.0f;
        int32_t n1 = n >> 1;
        s1.u = (uint32_t)(n1 + 127) << 23;
        s2.u = (uint32_t)(n - n1 + 127) << 23;
        return (p * s1.f) * s2.f;
    }

    /* tanh for float32: Cephes tanhf's odd polynomial below |x| = FNN_TANH_F32_SMALL,
       1 - 2/(e^{2|x|}+1) above (saturates to exactly +-1; NaN propagates). The
       Numba twin is the same. */
    static inline float fnn_tanhf(float x) {
        float a = fabsf(x);
        float e = fnn_expf(a + a);
        float big = copysignf(1.0f - 2.0f / (e + 1.0f), x);
        float z = x * x;
        float p = -5.70498872745e-3f;
        p = p * z + 2.06390887954e-2f;
        p = p * z - 5.37397155531e-2f;
        p = p * z + 1.33314422036e-1f;
        p = p * z - 3.33332819422e-1f;
        float small = p * z * x + x;
        return a < FNN_TANH_F32_SMALL ? small : big;
    }

    /* erf for float32, branch-free: the rational minimax fit Eigen and XLA use, on x
       clamped to [-4, 4] (erf is +-1 in float32 beyond); max abs error ~4e-7, odd,
       NaN passes the clamps and propagates. The Numba twin uses the same fit. */
    static inline float fnn_erff(float x) {
        float xc = x > FNN_ERF_F32_CLAMP ? FNN_ERF_F32_CLAMP : x;
        xc = xc < -FNN_ERF_F32_CLAMP ? -FNN_ERF_F32_CLAMP : xc;
        float x2 = xc * xc;
        float p = -2.72614225801306e-10f;
        p = p * x2 + 2.77068142495902e-08f;
        p = p * x2 + -2.10102402082508e-06f;
        p = p * x2 + -5.69250639462346e-05f;
        p = p * x2 + -7.34990630326855e-04f;
        p = p * x2 + -2.95459980854025e-03f;
        p = p * x2 + -1.60960333262415e-02f;
        float q = -1.45660718464996e-05f;
        q = q * x2 + -2.13374055278905e-04f;
        q = q * x2 + -1.68282697438203e-03f;
        q = q * x2 + -7.37332916720468e-03f;
        q = q * x2 + -1.42647390514189e-02f;
        return xc * p / q;
    }

    /* The hot float32 loops, in C. Each ISA gets its own build of the module
       (kernels/isa.py), so no target_clones here: FASTNN_ISA must rule them too.
       noinline: inlined into the Cython span functions, GCC's AVX2 code for them
       ran slower (docs/performance.md). */
    #define FNN_UNUSED __attribute__((unused, noinline))
    FNN_UNUSED static void fnn_sigmoid_f32(const float* z, float* y, ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + fnn_expf(-z[i]));
    }
    FNN_UNUSED static void fnn_tanh_f32(const float* z, float* y, ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) y[i] = fnn_tanhf(z[i]);
    }
    /* gelu (exact): z (1 + erf(z / sqrt 2)) / 2, and dy * (Phi(z) + z phi(z)) */
    FNN_UNUSED static void fnn_gelu_f32(const float* z, float* y, ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) {
            float zi = z[i];
            y[i] = zi * (fnn_erff(zi * 0.70710678118654752f) + 1.0f) * 0.5f;
        }
    }
    FNN_UNUSED static void fnn_gelu_grad_f32(const float* dy, const float* z, float* out,
                                             ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) {
            float zi = z[i];
            float cdf = (fnn_erff(zi * 0.70710678118654752f) + 1.0f) * 0.5f;
            float pdf = fnn_expf(zi * zi * -0.5f) * zi * 0.39894228040143268f;
            out[i] = dy[i] * (cdf + pdf);
        }
    }
    FNN_UNUSED static void fnn_exp_shift_f32(const float* z, float* e, ptrdiff_t n,
                                             float m) {
        for (ptrdiff_t i = 0; i < n; i++) e[i] = fnn_expf(z[i] - m);
    }
    /* in place: a separate loop, since e == z would defeat the alias check above */
    FNN_UNUSED static void fnn_exp_inplace_f32(float* e, ptrdiff_t n) {
        for (ptrdiff_t i = 0; i < n; i++) e[i] = fnn_expf(e[i]);
    }
    """
    int FNN_OPENMP
    int fnn_omp_max_threads() noexcept nogil
    float fnn_expf(float x) noexcept nogil
    float fnn_tanhf(float x) noexcept nogil
    void fnn_sigmoid_f32(const float* z, float* y, Py_ssize_t n) noexcept nogil
    void fnn_tanh_f32(const float* z, float* y, Py_ssize_t n) noexcept nogil
    void fnn_exp_shift_f32(const float* z, float* e, Py_ssize_t n, float m) noexcept nogil
    void fnn_exp_inplace_f32(float* e, Py_ssize_t n) noexcept nogil
    void fnn_gelu_f32(const float* z, float* y, Py_ssize_t n) noexcept nogil
    void fnn_gelu_grad_f32(const float* dy, const float* z, float* out,
                           Py_ssize_t n) noexcept nogil

# The work split and serial thresholds of kernels/tuning.py, set at import by
# cy/__init__.py (_configure_tuning); results never depend on them.
cdef Py_ssize_t _CHUNK = 1          # elements per element-wise task (tuning.CHUNK)
cdef double _MIN_WORK = 1e300       # serial below (tuning.PARALLEL_MIN_WORK)
cdef double _ACT_COST[6]            # work units per element, by activation code
cdef double _SGD_COST = 1, _ADAM_COST = 1, _SOFTMAX_COST = 1, _SE_COST = 1
cdef Py_ssize_t _LOSS_TASK = 1      # values per row-wise loss task (tuning.LOSS_TASK)

# Threads for this module's parallel loops (set through the package's set_num_threads).
cdef int _num_threads = fnn_omp_max_threads()


def _configure_tuning(Py_ssize_t chunk, double min_work, act_cost, double sgd_cost,
                      double adam_cost, double softmax_cost, double se_cost,
                      Py_ssize_t loss_task):
    """This module's copy of the tuning table (see kernels/tuning.py)."""
    global _CHUNK, _MIN_WORK, _SGD_COST, _ADAM_COST, _SOFTMAX_COST, _SE_COST
    global _LOSS_TASK
    cdef int i
    _CHUNK = chunk
    _MIN_WORK = min_work
    for i in range(6):
        _ACT_COST[i] = act_cost[i]
    _SGD_COST, _ADAM_COST = sgd_cost, adam_cost
    _SOFTMAX_COST, _SE_COST = softmax_cost, se_cost
    _LOSS_TASK = loss_task


def _set_threads(int n):
    """Use n threads in this module's parallel loops."""
    global _num_threads
    _num_threads = n if n > 0 else 1


cdef inline Py_ssize_t _loss_rows(Py_ssize_t K) noexcept nogil:
    """Rows of K values per row-wise loss task (whole rows, about _LOSS_TASK values)."""
    cdef Py_ssize_t rows = _LOSS_TASK // K if K > 0 else _LOSS_TASK
    return rows if rows > 1 else 1


cdef inline int _threads_for(double work) noexcept nogil:
    """The one serial-or-parallel decision: 1 thread below tuning.PARALLEL_MIN_WORK
    work units (waking the workers costs more), else all."""
    if work < _MIN_WORK or _num_threads <= 1:
        return 1
    return _num_threads


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return fnn_expf(x)
    else:
        return exp(x)


cdef inline floating _tanh(floating x) noexcept nogil:
    if floating is float:
        return fnn_tanhf(x)
    else:
        return tanh(x)


cdef inline floating _erf(floating x) noexcept nogil:
    if floating is float:
        return erff(x)
    else:
        return erf(x)


cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)
