/* fastnn's AVX-512 GEMM kernels (kernels/cy/_gemm.h) built for a CPU without AVX-512,
 * so that their tiling, edge tiles, packing and K-blocking at the AVX-512 tile shapes
 * (12 x 32 float, 12 x 16 double) run on the machines the tests run on. A 512-bit
 * vector is a pair of AVX2 vectors here and each _mm512 operation the kernels use is
 * the same operation on both halves: element-wise operations, so each lane gets the
 * bits the AVX-512 instruction gives it (an FMA stays one rounding). The one thing not
 * exercised is the compiler's AVX-512 code generation.
 * tests/test_gemm_avx512_emulated.py compiles this file with the extension's flags (a
 * shared library; no -m flags: the functions carry their own target attributes) and
 * checks it. */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct { __m256 lo, hi; } fnn_emu_m512;
typedef struct { __m256d lo, hi; } fnn_emu_m512d;

#define FNN_EMU static inline __attribute__((always_inline, target("avx2,fma")))

FNN_EMU fnn_emu_m512 fnn_emu_pair_ps(__m256 lo, __m256 hi)
{
    fnn_emu_m512 r = {lo, hi};
    return r;
}

FNN_EMU fnn_emu_m512d fnn_emu_pair_pd(__m256d lo, __m256d hi)
{
    fnn_emu_m512d r = {lo, hi};
    return r;
}

/* the aligned loads fault on a pointer that is not 64-byte aligned, as on hardware */
FNN_EMU const void *fnn_emu_aligned64(const void *p)
{
    if ((uintptr_t)p % 64)
        abort();
    return p;
}

FNN_EMU fnn_emu_m512 fnn_emu_setzero_ps(void)
{ return fnn_emu_pair_ps(_mm256_setzero_ps(), _mm256_setzero_ps()); }
FNN_EMU fnn_emu_m512 fnn_emu_set1_ps(float x)
{ return fnn_emu_pair_ps(_mm256_set1_ps(x), _mm256_set1_ps(x)); }
FNN_EMU fnn_emu_m512 fnn_emu_loadu_ps(const float *p)
{ return fnn_emu_pair_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)); }
FNN_EMU fnn_emu_m512 fnn_emu_load_ps(const float *p)
{ return fnn_emu_loadu_ps((const float *)fnn_emu_aligned64(p)); }
FNN_EMU void fnn_emu_storeu_ps(float *p, fnn_emu_m512 v)
{ _mm256_storeu_ps(p, v.lo); _mm256_storeu_ps(p + 8, v.hi); }
FNN_EMU fnn_emu_m512 fnn_emu_mul_ps(fnn_emu_m512 a, fnn_emu_m512 b)
{ return fnn_emu_pair_ps(_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)); }
FNN_EMU fnn_emu_m512 fnn_emu_fmadd_ps(fnn_emu_m512 a, fnn_emu_m512 b, fnn_emu_m512 c)
{
    return fnn_emu_pair_ps(_mm256_fmadd_ps(a.lo, b.lo, c.lo),
                           _mm256_fmadd_ps(a.hi, b.hi, c.hi));
}

FNN_EMU fnn_emu_m512d fnn_emu_setzero_pd(void)
{ return fnn_emu_pair_pd(_mm256_setzero_pd(), _mm256_setzero_pd()); }
FNN_EMU fnn_emu_m512d fnn_emu_set1_pd(double x)
{ return fnn_emu_pair_pd(_mm256_set1_pd(x), _mm256_set1_pd(x)); }
FNN_EMU fnn_emu_m512d fnn_emu_loadu_pd(const double *p)
{ return fnn_emu_pair_pd(_mm256_loadu_pd(p), _mm256_loadu_pd(p + 4)); }
FNN_EMU fnn_emu_m512d fnn_emu_load_pd(const double *p)
{ return fnn_emu_loadu_pd((const double *)fnn_emu_aligned64(p)); }
FNN_EMU void fnn_emu_storeu_pd(double *p, fnn_emu_m512d v)
{ _mm256_storeu_pd(p, v.lo); _mm256_storeu_pd(p + 4, v.hi); }
FNN_EMU fnn_emu_m512d fnn_emu_mul_pd(fnn_emu_m512d a, fnn_emu_m512d b)
{ return fnn_emu_pair_pd(_mm256_mul_pd(a.lo, b.lo), _mm256_mul_pd(a.hi, b.hi)); }
FNN_EMU fnn_emu_m512d fnn_emu_fmadd_pd(fnn_emu_m512d a, fnn_emu_m512d b, fnn_emu_m512d c)
{
    return fnn_emu_pair_pd(_mm256_fmadd_pd(a.lo, b.lo, c.lo),
                           _mm256_fmadd_pd(a.hi, b.hi, c.hi));
}

/* every AVX-512 name the kernels use, from here on the emulated one (a name the
 * kernels come to use and this list lacks calls the real instruction from an AVX2
 * function: the compiler refuses to inline it, so this file no longer builds) */
#define __m512 fnn_emu_m512
#define __m512d fnn_emu_m512d
#define _mm512_setzero_ps fnn_emu_setzero_ps
#define _mm512_set1_ps fnn_emu_set1_ps
#define _mm512_load_ps fnn_emu_load_ps
#define _mm512_loadu_ps fnn_emu_loadu_ps
#define _mm512_storeu_ps fnn_emu_storeu_ps
#define _mm512_mul_ps fnn_emu_mul_ps
#define _mm512_fmadd_ps fnn_emu_fmadd_ps
#define _mm512_setzero_pd fnn_emu_setzero_pd
#define _mm512_set1_pd fnn_emu_set1_pd
#define _mm512_load_pd fnn_emu_load_pd
#define _mm512_loadu_pd fnn_emu_loadu_pd
#define _mm512_storeu_pd fnn_emu_storeu_pd
#define _mm512_mul_pd fnn_emu_mul_pd
#define _mm512_fmadd_pd fnn_emu_fmadd_pd

#define FNN_AVX512_EMULATED
#include "_gemm.h"

/* The entry points the test calls through ctypes. */
int fnn_emu_set_isa(int isa) { return fnn_gemm_set_isa(isa); }

const char *fnn_emu_isa_name(void) { return fnn_isas[fnn_gemm_get_isa()].name; }

/* the register tile of the ISA in use: rows (MR) or columns (NR) of a float32 or
 * float64 tile */
int fnn_emu_tile(int dbl, int columns)
{
    const fnn_isa_info *i = &fnn_isas[fnn_gemm_get_isa()];
    if (dbl)
        return columns ? i->nr_d : i->mr_d;
    return columns ? i->nr_s : i->mr_s;
}

void fnn_emu_set_caches(int64_t l1, int64_t l2) { fnn_gemm_set_caches(l1, l2); }

void fnn_emu_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,
                   const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                   float *c, int64_t ldc)
{
    fnn_sgemm(101, ta ? 112 : 111, tb ? 112 : 111, m, n, k, alpha, a, lda, b, ldb,
              beta, c, ldc);
}

void fnn_emu_dgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, double alpha,
                   const double *a, int64_t lda, const double *b, int64_t ldb,
                   double beta, double *c, int64_t ldc)
{
    fnn_dgemm(101, ta ? 112 : 111, tb ? 112 : 111, m, n, k, alpha, a, lda, b, ldb,
              beta, c, ldc);
}
