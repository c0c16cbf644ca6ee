/* fastnn's own GEMM: register-blocked micro-kernels for AVX-512F, AVX2+FMA and a
 * portable one (GCC vector extensions: SSE2 on x86-64, NEON on arm64), chosen at run
 * time from the CPU's features (never from build flags: each kernel carries its own
 * target attribute). Included by gemm.pyx only; every other module calls
 * fnn_sgemm / fnn_dgemm through their addresses (kernels/gemm.py hands them out).
 *
 * fnn_?gemm has the signature of an ILP64 cblas_?gemm (row-major only), so a call
 * site can use either. Single-threaded: callers split C into fixed blocks between
 * their own threads (each element of C is computed the same way in any block).
 */
#ifndef FASTNN_GEMM_H
#define FASTNN_GEMM_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <unistd.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define FNN_X86 1
#include <immintrin.h>
#else
#define FNN_X86 0
#endif

enum { FNN_ISA_GENERIC = 0, FNN_ISA_AVX2 = 1, FNN_ISA_AVX512 = 2 };

/* ---------------- portable kernel (vector extensions, 16-byte vectors) ---------- */
typedef float fnn_v4sf __attribute__((vector_size(16)));
typedef double fnn_v2df __attribute__((vector_size(16)));

static inline fnn_v4sf fnn_g_set1_s(float x) { return (fnn_v4sf){x, x, x, x}; }
static inline fnn_v2df fnn_g_set1_d(double x) { return (fnn_v2df){x, x}; }
static inline fnn_v4sf fnn_g_loadu_s(const float *p)
{ fnn_v4sf r; memcpy(&r, p, sizeof r); return r; }
static inline fnn_v2df fnn_g_loadu_d(const double *p)
{ fnn_v2df r; memcpy(&r, p, sizeof r); return r; }
static inline void fnn_g_storeu_s(float *p, fnn_v4sf v) { memcpy(p, &v, sizeof v); }
static inline void fnn_g_storeu_d(double *p, fnn_v2df v) { memcpy(p, &v, sizeof v); }

#define ATTR
#define MR 6
#define NV 2
#define V_MUL(a, b) ((a) * (b))
#define V_FMA(a, b, c) ((a) * (b) + (c))
#define S_FMA(a, b, c) ((a) * (b) + (c))

#define REAL float
#define VEC fnn_v4sf
#define VLEN 4
#define SFX(name) fnn_##name##_generic_s
#define V_ZERO() fnn_g_set1_s(0.0f)
#define V_SET1(x) fnn_g_set1_s(x)
#define V_LOAD(p) (*(const fnn_v4sf *)(p))
#define V_LOADU(p) fnn_g_loadu_s(p)
#define V_STOREU(p, v) fnn_g_storeu_s(p, v)
#include "_gemm_tmpl.h"

#define REAL double
#define VEC fnn_v2df
#define VLEN 2
#define SFX(name) fnn_##name##_generic_d
#define V_ZERO() fnn_g_set1_d(0.0)
#define V_SET1(x) fnn_g_set1_d(x)
#define V_LOAD(p) (*(const fnn_v2df *)(p))
#define V_LOADU(p) fnn_g_loadu_d(p)
#define V_STOREU(p, v) fnn_g_storeu_d(p, v)
#include "_gemm_tmpl.h"

#undef ATTR
#undef MR
#undef NV
#undef V_MUL
#undef V_FMA
#undef S_FMA

#if FNN_X86
/* dst[q * ldd + j] = src[j * ld + q], 8 x 8 floats, in registers (unpack, shuffle,
 * lane swap); AVX-512F implies AVX2, so its kernels use it too. */
static inline __attribute__((always_inline, target("avx2"))) void
fnn_transpose8_avx2(const float *src, int64_t ld, float *dst, int64_t ldd)
{
    __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ld);
    __m256 r2 = _mm256_loadu_ps(src + 2 * ld), r3 = _mm256_loadu_ps(src + 3 * ld);
    __m256 r4 = _mm256_loadu_ps(src + 4 * ld), r5 = _mm256_loadu_ps(src + 5 * ld);
    __m256 r6 = _mm256_loadu_ps(src + 6 * ld), r7 = _mm256_loadu_ps(src + 7 * ld);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(dst + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* ---------------- AVX2 + FMA: 6 x 16 float, 6 x 8 double (BLIS's Haswell shapes) --- */
#define ATTR __attribute__((target("avx2,fma")))
#define MR 6
#define NV 2

#define REAL float
#define VEC __m256
#define VLEN 8
#define SFX(name) fnn_##name##_avx2_s
#define TRANSPOSE8 fnn_transpose8_avx2
#define V_ZERO() _mm256_setzero_ps()
#define V_SET1(x) _mm256_set1_ps(x)
#define V_LOAD(p) _mm256_load_ps(p)
#define V_LOADU(p) _mm256_loadu_ps(p)
#define V_STOREU(p, v) _mm256_storeu_ps(p, v)
#define V_MUL(a, b) _mm256_mul_ps(a, b)
#define V_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define S_FMA(a, b, c) fmaf(a, b, c)
#include "_gemm_tmpl.h"
#undef V_MUL
#undef V_FMA
#undef S_FMA

#define REAL double
#define VEC __m256d
#define VLEN 4
#define SFX(name) fnn_##name##_avx2_d
#define V_ZERO() _mm256_setzero_pd()
#define V_SET1(x) _mm256_set1_pd(x)
#define V_LOAD(p) _mm256_load_pd(p)
#define V_LOADU(p) _mm256_loadu_pd(p)
#define V_STOREU(p, v) _mm256_storeu_pd(p, v)
#define V_MUL(a, b) _mm256_mul_pd(a, b)
#define V_FMA(a, b, c) _mm256_fmadd_pd(a, b, c)
#define S_FMA(a, b, c) fma(a, b, c)
#include "_gemm_tmpl.h"
#undef V_MUL
#undef V_FMA
#undef S_FMA
#undef ATTR
#undef MR
#undef NV

/* ---------------- AVX-512F: 12 x 32 float, 12 x 16 double (24 of 32 registers) ---- */
#ifdef FNN_AVX512_EMULATED
/* tests/gemm_avx512_emulated.c: these kernels on a CPU without AVX-512, their
 * _mm512 operations defined there as pairs of AVX2 ones */
#define ATTR __attribute__((target("avx2,fma")))
#else
#define ATTR __attribute__((target("avx512f,fma")))
#endif
#define MR 12
#define NV 2

#define REAL float
#define VEC __m512
#define VLEN 16
#define SFX(name) fnn_##name##_avx512_s
#define TRANSPOSE8 fnn_transpose8_avx2
#define V_ZERO() _mm512_setzero_ps()
#define V_SET1(x) _mm512_set1_ps(x)
#define V_LOAD(p) _mm512_load_ps(p)
#define V_LOADU(p) _mm512_loadu_ps(p)
#define V_STOREU(p, v) _mm512_storeu_ps(p, v)
#define V_MUL(a, b) _mm512_mul_ps(a, b)
#define V_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define S_FMA(a, b, c) fmaf(a, b, c)
#include "_gemm_tmpl.h"
#undef V_MUL
#undef V_FMA
#undef S_FMA

#define REAL double
#define VEC __m512d
#define VLEN 8
#define SFX(name) fnn_##name##_avx512_d
#define V_ZERO() _mm512_setzero_pd()
#define V_SET1(x) _mm512_set1_pd(x)
#define V_LOAD(p) _mm512_load_pd(p)
#define V_LOADU(p) _mm512_loadu_pd(p)
#define V_STOREU(p, v) _mm512_storeu_pd(p, v)
#define V_MUL(a, b) _mm512_mul_pd(a, b)
#define V_FMA(a, b, c) _mm512_fmadd_pd(a, b, c)
#define S_FMA(a, b, c) fma(a, b, c)
#include "_gemm_tmpl.h"
#undef V_MUL
#undef V_FMA
#undef S_FMA
#undef ATTR
#undef MR
#undef NV
#endif /* FNN_X86 */

/* ---------------- run-time dispatch ---------------------------------------------- */

typedef void (*fnn_gemm_s_impl)(int, int, int64_t, int64_t, int64_t, float,
                                const float *, int64_t, const float *, int64_t, float,
                                float *, int64_t, float *, int64_t, int64_t, int64_t,
                                int, int);
typedef void (*fnn_gemm_d_impl)(int, int, int64_t, int64_t, int64_t, double,
                                const double *, int64_t, const double *, int64_t,
                                double, double *, int64_t, double *, int64_t, int64_t,
                                int64_t, int, int);

typedef struct {
    const char *name;
    int mr_s, nr_s, mr_d, nr_d; /* register tile of each type */
    fnn_gemm_s_impl s;
    fnn_gemm_d_impl d;
} fnn_isa_info;

static const fnn_isa_info fnn_isas[3] = {
    {"generic", 6, 8, 6, 4, fnn_gemm_generic_s, fnn_gemm_generic_d},
#if FNN_X86
    {"avx2", 6, 16, 6, 8, fnn_gemm_avx2_s, fnn_gemm_avx2_d},
    {"avx512", 12, 32, 12, 16, fnn_gemm_avx512_s, fnn_gemm_avx512_d},
#else
    {"avx2", 0, 0, 0, 0, NULL, NULL},
    {"avx512", 0, 0, 0, 0, NULL, NULL},
#endif
};

static int fnn_isa_current = -1;
static int64_t fnn_l1_bytes = 32 * 1024;
static int64_t fnn_l2_bytes = 256 * 1024;

/* The best instruction set this CPU (and OS) runs, for every kernel family: the
 * element-wise builds of avx512 (kernels/isa.py) also need BW, DQ and VL. */
static int fnn_gemm_cpu_isa(void)
{
#if FNN_X86
    __builtin_cpu_init();
#ifdef FNN_AVX512_EMULATED
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FNN_ISA_AVX512;
#endif
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")
        && __builtin_cpu_supports("fma"))
        return FNN_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FNN_ISA_AVX2;
#endif
    return FNN_ISA_GENERIC;
}

/* Use `isa` (<= the CPU's best); -1 picks the best. Returns the ISA in use, or -1
 * (nothing changed) when the CPU lacks it. */
static int fnn_gemm_set_isa(int isa)
{
    int best = fnn_gemm_cpu_isa();
    if (isa < 0)
        isa = best;
    if (isa > best)
        return -1;
    __atomic_store_n(&fnn_isa_current, isa, __ATOMIC_SEQ_CST);
    return isa;
}

static int fnn_gemm_get_isa(void)
{
    int isa = __atomic_load_n(&fnn_isa_current, __ATOMIC_SEQ_CST);
    return isa < 0 ? fnn_gemm_set_isa(-1) : isa;
}

/* The L1d and L2 sizes the blocking is sized from (bytes; <= 0: read from the OS,
 * else sane defaults). */
static void fnn_gemm_set_caches(int64_t l1, int64_t l2)
{
    if (l1 <= 0) {
        l1 = 32 * 1024;
#ifdef _SC_LEVEL1_DCACHE_SIZE
        long v = sysconf(_SC_LEVEL1_DCACHE_SIZE);
        if (v >= 8 * 1024 && v <= 1024 * 1024)
            l1 = v;
#endif
    }
    if (l2 <= 0) {
        l2 = 256 * 1024;
#ifdef _SC_LEVEL2_CACHE_SIZE
        long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
        if (v >= 64 * 1024 && v <= 64L * 1024 * 1024)
            l2 = v;
#endif
    }
    __atomic_store_n(&fnn_l1_bytes, l1 < 1024 ? 1024 : l1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&fnn_l2_bytes, l2 < 4096 ? 4096 : l2, __ATOMIC_SEQ_CST);
}

static int64_t fnn_gemm_l1(void) { return __atomic_load_n(&fnn_l1_bytes, __ATOMIC_SEQ_CST); }
static int64_t fnn_gemm_l2(void) { return __atomic_load_n(&fnn_l2_bytes, __ATOMIC_SEQ_CST); }

/* Packing space of the calling thread, kept for its next call (OpenMP and Numba
 * threads live as long as the process; no per-call malloc). */
static __thread void *fnn_work;
static __thread size_t fnn_work_bytes;

static void *fnn_gemm_work(size_t bytes)
{
    if (bytes > fnn_work_bytes) {
        void *p = NULL;
        bytes = (bytes + 4095) & ~(size_t)4095;
        if (posix_memalign(&p, 64, bytes) != 0)
            return NULL;
        free(fnn_work);
        fnn_work = p;
        fnn_work_bytes = bytes;
    }
    return fnn_work;
}

/* Block sizes from the L2: A's block (mc x k, reread for every panel of B) and B's
 * block (k x nc, streamed through L1 panel by panel) in half of it each. */
static void fnn_gemm_blocks(int64_t m, int64_t n, int64_t k, int mr, int nr,
                            size_t elem, int64_t *mc, int64_t *nc)
{
    int64_t l2 = fnn_gemm_l2();
    int64_t rows = l2 / 2 / (k * (int64_t)elem) / mr * mr;
    int64_t cols = l2 / 2 / (k * (int64_t)elem) / nr * nr;
    int64_t n_up = (n + nr - 1) / nr * nr;
    if (rows < mr)
        rows = mr;
    if (cols < nr)
        cols = nr;
    *mc = rows < m ? rows : m;
    *nc = cols < n_up ? cols : n_up;
}

/* The rows of k a tile runs before its sums go back to C: all of k, unless a k x NR
 * panel of B would not fit in half of L1d (then A's and B's blocks would stream
 * from L2 or further for every tile) and C may hold raw partial sums (beta == 0);
 * then k in near-equal blocks that fit. */
static int64_t fnn_gemm_kc(int64_t k, int beta_zero, int nr, size_t elem)
{
    int64_t rows = fnn_gemm_l1() / 2 / (nr * (int64_t)elem);
    if (!beta_zero || k <= rows)
        return k;
    if (rows < 8)
        rows = 8;
    int64_t blocks = (k + rows - 1) / rows;
    return (k + blocks - 1) / blocks;
}

#define FNN_GEMM_ENTRY(NAME, REAL, FIELD, MRF, NRF)                                  \
    static void NAME(int order, int ta, int tb, int64_t m, int64_t n, int64_t k,     \
                     REAL alpha, const REAL *a, int64_t lda, const REAL *b,          \
                     int64_t ldb, REAL beta, REAL *c, int64_t ldc)                   \
    {                                                                                \
        const fnn_isa_info *isa = &fnn_isas[fnn_gemm_get_isa()];                     \
        int64_t i, j, mc, nc;                                                        \
        (void)order; /* row-major (101) only */                                      \
        if (m <= 0 || n <= 0)                                                        \
            return;                                                                  \
        if (k <= 0 || alpha == 0) {                                                  \
            for (i = 0; i < m; i++)                                                  \
                for (j = 0; j < n; j++)                                              \
                    c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j];          \
            return;                                                                  \
        }                                                                            \
        int64_t kc = fnn_gemm_kc(k, beta == 0, isa->NRF, sizeof(REAL));              \
        fnn_gemm_blocks(m, n, kc, isa->MRF, isa->NRF, sizeof(REAL), &mc, &nc);       \
        /* packing space: B's block when transposed, else one narrow panel */     \
        int b_in_l1 = (int64_t)isa->NRF * kc * (int64_t)sizeof(REAL) <= fnn_gemm_l1() / 2; \
        /* B packed when transposed, or when a panel is reused from L1 (read in    \
         * place, rows a power-of-two apart fall in few cache sets): by more than   \
         * one row tile (a copy of B for a few rows costs what the product does)   \
         */                                                                         \
        int pack = tb == 112 || (b_in_l1 && m > isa->MRF);                           \
        REAL *bp = (REAL *)fnn_gemm_work((size_t)(pack ? nc : isa->NRF) * kc *       \
                                         sizeof(REAL));                              \
        if (bp == NULL) { /* no packing space: a plain loop, same result order */   \
            for (i = 0; i < m; i++)                                                  \
                for (j = 0; j < n; j++) {                                            \
                    REAL acc = 0;                                                    \
                    for (int64_t p = 0; p < k; p++)                                  \
                        acc += (ta == 112 ? a[p * lda + i] : a[i * lda + p]) *       \
                               (tb == 112 ? b[j * ldb + p] : b[p * ldb + j]);        \
                    c[i * ldc + j] = alpha * acc + (beta == 0 ? 0 : beta * c[i * ldc + j]); \
                }                                                                    \
            return;                                                                  \
        }                                                                            \
        isa->FIELD(ta == 112, tb == 112, m, n, k, alpha, a, lda, b, ldb, beta, c,    \
                   ldc, bp, mc, nc, kc, b_in_l1, pack);                              \
    }

FNN_GEMM_ENTRY(fnn_sgemm, float, s, mr_s, nr_s)
FNN_GEMM_ENTRY(fnn_dgemm, double, d, mr_d, nr_d)
#undef FNN_GEMM_ENTRY

/* The measured plan (kernels/gemm.py, fastnn/_gemm_wisdom.py): which kernel a product
 * of a given shape runs, where measurement decided it. An insert-only open-addressing
 * table of 64-bit words, one per product: m, n, k (20 bits each), trans_a, trans_b,
 * float64, and the choice in the top bit; 0 marks a free slot. A word is written
 * whole with one atomic store, so the compiled kernels read it without a lock from
 * any thread while Python adds entries (under the GIL). */
#define FNN_PLAN_SLOTS 4096
#define FNN_PLAN_DIM_MAX ((int64_t)1 << 20)
static uint64_t fnn_plan_slots[FNN_PLAN_SLOTS];
static size_t fnn_plan_used; /* at most half the slots: probes stay short */

static uint64_t fnn_plan_key(int64_t m, int64_t n, int64_t k, int ta, int tb, int dbl)
{
    if (m < 1 || n < 1 || k < 1 || m >= FNN_PLAN_DIM_MAX || n >= FNN_PLAN_DIM_MAX ||
        k >= FNN_PLAN_DIM_MAX)
        return 0;
    return (uint64_t)m | (uint64_t)n << 20 | (uint64_t)k << 40 |
           (uint64_t)(ta != 0) << 60 | (uint64_t)(tb != 0) << 61 | (uint64_t)(dbl != 0) << 62;
}

static size_t fnn_plan_home(uint64_t key)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 52) % FNN_PLAN_SLOTS;
}

/* Products looked up and not found, kept while recording is on (tests check that
 * planning a model's step covers every product it runs). */
#define FNN_PLAN_MISSED_MAX 256
static int fnn_plan_recording;
static uint64_t fnn_plan_missed[FNN_PLAN_MISSED_MAX];
static size_t fnn_plan_nmissed;

static int fnn_plan_miss(uint64_t key)
{
    if (__atomic_load_n(&fnn_plan_recording, __ATOMIC_RELAXED)) {
        size_t at = __atomic_fetch_add(&fnn_plan_nmissed, 1, __ATOMIC_RELAXED);
        if (at < FNN_PLAN_MISSED_MAX)
            __atomic_store_n(&fnn_plan_missed[at], key, __ATOMIC_RELAXED);
    }
    return -1;
}

/* 1: fastnn's own GEMM, 0: BLAS, -1: no entry (the caller applies the rule). */
static int fnn_plan_lookup(int64_t m, int64_t n, int64_t k, int ta, int tb, int dbl)
{
    uint64_t key = fnn_plan_key(m, n, k, ta, tb, dbl);
    if (key == 0)
        return fnn_plan_miss(key);
    size_t i = fnn_plan_home(key);
    for (size_t probe = 0; probe < FNN_PLAN_SLOTS; probe++) {
        uint64_t word = __atomic_load_n(&fnn_plan_slots[i], __ATOMIC_ACQUIRE);
        if (word == 0)
            break;
        if ((word & ~((uint64_t)1 << 63)) == key)
            return (int)(word >> 63);
        i = (i + 1) % FNN_PLAN_SLOTS;
    }
    return fnn_plan_miss(key);
}

/* Record the choice for a product (own: 1 or 0); 0 on success, -1 when the shape is
 * out of the table's range or the table is half full. Callers serialise (the GIL). */
static int fnn_plan_set(int64_t m, int64_t n, int64_t k, int ta, int tb, int dbl, int own)
{
    uint64_t key = fnn_plan_key(m, n, k, ta, tb, dbl);
    if (key == 0)
        return -1;
    uint64_t word = key | (uint64_t)(own != 0) << 63;
    size_t i = fnn_plan_home(key);
    for (;;) { /* ends: at most half the slots are taken */
        uint64_t old = __atomic_load_n(&fnn_plan_slots[i], __ATOMIC_ACQUIRE);
        if ((old & ~((uint64_t)1 << 63)) == key) {
            __atomic_store_n(&fnn_plan_slots[i], word, __ATOMIC_RELEASE);
            return 0;
        }
        if (old == 0) {
            if (fnn_plan_used >= FNN_PLAN_SLOTS / 2)
                return -1;
            fnn_plan_used++;
            __atomic_store_n(&fnn_plan_slots[i], word, __ATOMIC_RELEASE);
            return 0;
        }
        i = (i + 1) % FNN_PLAN_SLOTS;
    }
}

/* Forget every entry (a new ISA or cache sizes: the measurements no longer hold). Only
 * while no kernel runs (tests, configure at import). */
static void fnn_plan_clear(void)
{
    for (size_t i = 0; i < FNN_PLAN_SLOTS; i++)
        __atomic_store_n(&fnn_plan_slots[i], 0, __ATOMIC_RELEASE);
    fnn_plan_used = 0;
}

#endif /* FASTNN_GEMM_H */
