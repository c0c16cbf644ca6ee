# Row-major GEMM through the CBLAS that kernels/_blas.py found (NumPy's OpenBLAS), or
# fastnn's own GEMM where the plan of kernels/gemm.py says it is faster.
#
# Thread-count-independent results: OpenBLAS's own threaded partition changes the
# rounding with its thread count, so a GEMM is split here into fixed blocks of C (along
# its larger dimension; the split depends only on the shape and the machine's core
# count, never on the thread setting), and each block is one single-threaded BLAS call.
# The blocks run in an OpenMP prange: OpenBLAS is switched to 1 thread for the duration
# (the process-wide pin of kernels/cy/_blas_pin.h over its openblas_set_num_threads,
# found by kernels/_blas.py), so there is one thread pool at a time and no nested
# parallelism. Without that control the blocks run serially and BLAS keeps its own
# threads (never BLAS threads inside prange).

from libc.stdint cimport int64_t

# cblas_?gemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) of
# the library kernels/_blas.py found (NumPy's OpenBLAS), LP64 or ILP64.
ctypedef void (*_sgemm32_fn)(int, int, int, int, int, int, float, const float*, int,
                             const float*, int, float, float*, int) noexcept nogil
ctypedef void (*_dgemm32_fn)(int, int, int, int, int, int, double, const double*, int,
                             const double*, int, double, double*, int) noexcept nogil
ctypedef void (*_sgemm64_fn)(int, int, int, int64_t, int64_t, int64_t, float,
                             const float*, int64_t, const float*, int64_t, float,
                             float*, int64_t) noexcept nogil
ctypedef void (*_dgemm64_fn)(int, int, int, int64_t, int64_t, int64_t, double,
                             const double*, int64_t, const double*, int64_t, double,
                             double*, int64_t) noexcept nogil
ctypedef int (*_blas_pin_fn)() noexcept nogil
ctypedef void (*_blas_unpin_fn)(int) noexcept nogil

cdef enum:
    _ROW_MAJOR = 101
    _NO_TRANS = 111
    _TRANS = 112

cdef size_t _sgemm_addr = 0
cdef size_t _dgemm_addr = 0
cdef bint _blas_int64 = False
cdef _blas_pin_fn _blas_pin = NULL
cdef _blas_unpin_fn _blas_unpin = NULL
cdef Py_ssize_t _gemm_parts_max = 1
# a block is worth a thread from about this many flops up (kernels/_blas.py)
cdef double _GEMM_BLOCK_FLOPS = 5e5


def _configure_gemm(Py_ssize_t parts_max, double block_flops, size_t sgemm_addr,
                    size_t dgemm_addr, bint int64, size_t pin_addr, size_t unpin_addr):
    """Machine core count (the most GEMM blocks), the least flops of a block, the
    CBLAS GEMMs and the BLAS pin (kernels/cy/gemm.pyx blas_pin; 0: no control)."""
    global _gemm_parts_max, _sgemm_addr, _dgemm_addr, _blas_int64, _blas_pin, _blas_unpin
    global _GEMM_BLOCK_FLOPS
    _gemm_parts_max = parts_max if parts_max > 0 else 1
    _GEMM_BLOCK_FLOPS = block_flops
    _sgemm_addr = sgemm_addr
    _dgemm_addr = dgemm_addr
    _blas_int64 = int64
    if pin_addr and unpin_addr:
        _blas_pin = <_blas_pin_fn>pin_addr
        _blas_unpin = <_blas_unpin_fn>unpin_addr
    else:
        _blas_pin = NULL
        _blas_unpin = NULL


# fastnn's own GEMM (kernels/cy/_gemm.h, addresses from kernels/gemm.py): an ILP64
# cblas_?gemm signature, single-threaded. The plan (kernels/gemm.py) says which
# products it takes: mode 0 none, 1 the measured plan's choice for a product it holds
# (the table of kernels/cy/_gemm.h, read through _own_lookup), else the rule: those
# with k <= _own_max_k and n >= _own_min_n, and one-row products with B not
# transposed; 2 all.
ctypedef int (*_plan_lookup_fn)(int64_t, int64_t, int64_t, int, int,
                                int) noexcept nogil
cdef size_t _own_sgemm_addr = 0
cdef size_t _own_dgemm_addr = 0
cdef _plan_lookup_fn _own_lookup = NULL
cdef int _own_mode = 0
cdef Py_ssize_t _own_max_k = 0
cdef Py_ssize_t _own_min_n = 0


def _configure_own_gemm(int mode, Py_ssize_t max_k, Py_ssize_t min_n,
                        size_t sgemm_addr, size_t dgemm_addr, size_t lookup_addr):
    """Which products go to fastnn's own GEMM (see kernels/gemm.py), its address, and
    the measured plan's lookup (0: the rule alone)."""
    global _own_mode, _own_max_k, _own_min_n, _own_sgemm_addr, _own_dgemm_addr
    global _own_lookup
    _own_sgemm_addr = sgemm_addr
    _own_dgemm_addr = dgemm_addr
    _own_lookup = <_plan_lookup_fn>lookup_addr if lookup_addr else NULL
    _own_mode = mode if sgemm_addr and dgemm_addr else 0
    _own_max_k = max_k
    _own_min_n = min_n


cdef inline bint _own_takes(int mode, bint trans_a, bint trans_b, bint dbl,
                            Py_ssize_t m, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """The plan: own GEMM for all (2), for the products the measured plan gives it or,
    where it has no entry, short-k wide-n and one-row products (1), or none."""
    cdef int measured
    if mode == 2:
        return True
    if mode != 1:
        return False
    if _own_lookup != NULL:
        measured = _own_lookup(m, n, k, trans_a, trans_b, dbl)
        if measured >= 0:
            return measured == 1
    return (k <= _own_max_k and n >= _own_min_n) or (m == 1 and not trans_b)


cdef inline void _gemm_with(int mode, bint trans_a, bint trans_b, Py_ssize_t m,
                            Py_ssize_t n, Py_ssize_t k, floating alpha,
                            const floating* a, Py_ssize_t lda, const floating* b,
                            Py_ssize_t ldb, floating beta, floating* c,
                            Py_ssize_t ldc) noexcept nogil:
    """_gemm with the own-GEMM mode given (0 BLAS, 1 the plan, 2 own)."""
    cdef int ta = _TRANS if trans_a else _NO_TRANS
    cdef int tb = _TRANS if trans_b else _NO_TRANS
    if _own_takes(mode, trans_a, trans_b, floating is double, m, n, k):
        if floating is float:
            (<_sgemm64_fn>_own_sgemm_addr)(_ROW_MAJOR, ta, tb, m, n, k, alpha, a, lda,
                                           b, ldb, beta, c, ldc)
        else:
            (<_dgemm64_fn>_own_dgemm_addr)(_ROW_MAJOR, ta, tb, m, n, k, alpha, a, lda,
                                           b, ldb, beta, c, ldc)
        return
    if floating is float:
        if _blas_int64:
            (<_sgemm64_fn>_sgemm_addr)(_ROW_MAJOR, ta, tb, m, n, k, alpha, a, lda, b,
                                       ldb, beta, c, ldc)
        else:
            (<_sgemm32_fn>_sgemm_addr)(_ROW_MAJOR, ta, tb, <int>m, <int>n, <int>k,
                                       alpha, a, <int>lda, b, <int>ldb, beta, c,
                                       <int>ldc)
    else:
        if _blas_int64:
            (<_dgemm64_fn>_dgemm_addr)(_ROW_MAJOR, ta, tb, m, n, k, alpha, a, lda, b,
                                       ldb, beta, c, ldc)
        else:
            (<_dgemm32_fn>_dgemm_addr)(_ROW_MAJOR, ta, tb, <int>m, <int>n, <int>k,
                                       alpha, a, <int>lda, b, <int>ldb, beta, c,
                                       <int>ldc)


cdef inline void _gemm(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n,
                       Py_ssize_t k, floating alpha, const floating* a, Py_ssize_t lda,
                       const floating* b, Py_ssize_t ldb, floating beta, floating* c,
                       Py_ssize_t ldc) noexcept nogil:
    """C (m x n, row-major, ld ldc) = alpha op(A) op(B) + beta C; m, n, k >= 1."""
    _gemm_with(_own_mode, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
               ldc)


cdef struct _Split:
    Py_ssize_t parts     # number of blocks
    Py_ssize_t size      # block size along the split dimension (a multiple of 16)
    Py_ssize_t dim       # length of the split dimension
    bint rows            # split C's rows (else its columns)


cdef inline _Split _gemm_split(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Fixed blocks of the m x n output: from the shape and the core count only."""
    cdef _Split s
    cdef Py_ssize_t parts = <Py_ssize_t>(2.0 * m * n * k / _GEMM_BLOCK_FLOPS)
    s.rows = m >= n
    s.dim = m if s.rows else n
    if parts > _gemm_parts_max:
        parts = _gemm_parts_max
    if parts > s.dim // 16:
        parts = s.dim // 16
    if parts < 1:
        parts = 1
    s.size = ((s.dim + parts - 1) // parts + 15) // 16 * 16
    s.parts = (s.dim + s.size - 1) // s.size
    return s


cdef inline void _gemm_block_with(int mode, _Split* s, Py_ssize_t p, bint trans_a,
                                  bint trans_b, Py_ssize_t m, Py_ssize_t n,
                                  Py_ssize_t k, floating alpha, const floating* a,
                                  Py_ssize_t lda, const floating* b, Py_ssize_t ldb,
                                  floating beta, floating* c,
                                  Py_ssize_t ldc) noexcept nogil:
    """Block p of the split: rows (or columns) [p*size, p*size + cnt) of C. The plan
    judges the whole product, so every block runs the same kernel whatever the split
    (the bits of C must not depend on how it is cut)."""
    cdef Py_ssize_t lo = p * s.size
    cdef Py_ssize_t cnt = min(s.size, s.dim - lo)
    mode = 2 if _own_takes(mode, trans_a, trans_b, floating is double, m, n, k) else 0
    if s.rows:
        _gemm_with(mode, trans_a, trans_b, cnt, n, k, alpha,
                   a + (lo if trans_a else lo * lda), lda, b, ldb, beta, c + lo * ldc,
                   ldc)
    else:
        _gemm_with(mode, trans_a, trans_b, m, cnt, k, alpha, a, lda,
                   b + (lo * ldb if trans_b else lo), ldb, beta, c + lo, ldc)


cdef inline void _gemm_block(_Split* s, Py_ssize_t p, bint trans_a, bint trans_b,
                             Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, floating alpha,
                             const floating* a, Py_ssize_t lda, const floating* b,
                             Py_ssize_t ldb, floating beta, floating* c,
                             Py_ssize_t ldc) noexcept nogil:
    _gemm_block_with(_own_mode, s, p, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
                     beta, c, ldc)


cdef inline int _blas_single_begin() noexcept nogil:
    """BLAS on one thread until _blas_single_end(the token returned; 0: no control)."""
    if _blas_pin != NULL:
        return _blas_pin()
    return 0


cdef inline void _blas_single_end(int token) noexcept nogil:
    if token:
        _blas_unpin(token)


cdef inline int _gemm_threads(_Split* s) noexcept nogil:
    """Threads for the blocks: 1 without BLAS thread control or with one block."""
    if _blas_pin == NULL or s.parts < 2 or _num_threads <= 1:
        return 1
    return <int>min(<Py_ssize_t>_num_threads, s.parts)


cdef inline void _gemm_par_with(int mode, bint trans_a, bint trans_b, Py_ssize_t m,
                                Py_ssize_t n, Py_ssize_t k, floating alpha,
                                const floating* a, Py_ssize_t lda, const floating* b,
                                Py_ssize_t ldb, floating beta, floating* c,
                                Py_ssize_t ldc) noexcept nogil:
    """_gemm split in fixed blocks run in parallel (see the top of this file)."""
    cdef _Split s = _gemm_split(m, n, k)
    cdef int nt = _gemm_threads(&s)
    cdef int pin = _blas_single_begin()
    cdef Py_ssize_t p
    if nt == 1:  # no OpenMP region at all: even a one-thread one costs ~1.6 us
        for p in range(s.parts):
            _gemm_block_with(mode, &s, p, trans_a, trans_b, m, n, k, alpha, a, lda, b,
                             ldb, beta, c, ldc)
    else:
        for p in prange(s.parts, schedule="static", num_threads=nt):
            _gemm_block_with(mode, &s, p, trans_a, trans_b, m, n, k, alpha, a, lda, b,
                             ldb, beta, c, ldc)
    _blas_single_end(pin)


cdef inline void _gemm_par(bint trans_a, bint trans_b, Py_ssize_t m, Py_ssize_t n,
                           Py_ssize_t k, floating alpha, const floating* a,
                           Py_ssize_t lda, const floating* b, Py_ssize_t ldb,
                           floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    _gemm_par_with(_own_mode, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c,
                   ldc)


cdef inline void _fill(floating* c, Py_ssize_t size, floating value) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(size):
        c[i] = value
