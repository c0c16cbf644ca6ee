/* One instruction set's GEMM for one real type: included by _gemm.h once per (ISA,
 * type) with these macros defined (it undefines REAL, SFX, VEC, VLEN, TRANSPOSE8 and
 * the V_ load/store/set macros itself at its end; _gemm.h the rest):
 *
 *   REAL        float or double
 *   SFX(name)   name with the ISA and type appended (fnn_tile_avx2_s, ...)
 *   ATTR        the function attribute that enables the ISA (target("avx2,fma"))
 *   VEC, VLEN   the vector type and its lanes
 *   MR, NV      register tile: MR rows of C by NV vectors (NR = NV * VLEN columns)
 *   V_ZERO(), V_SET1(x), V_LOAD(p) (aligned), V_LOADU(p), V_STOREU(p, v),
 *   TRANSPOSE8(src, ld, dst, ldd) (optional): dst[q * ldd + j] = src[j * ld + q] for
 *   an 8 x 8 block
 *   V_FMA(a, b, c) = a * b + c, V_MUL(a, b), S_FMA(a, b, c) its scalar twin (fused
 *   exactly when V_FMA is, so edge tiles round as full ones)
 *
 * C (m x n, row-major, ldc) = alpha op(A) op(B) + beta C, single-threaded. Each element
 * of C is the FMA chain over k in order 0..k-1 (then alpha, then beta C): the same
 * value whatever the tile or block it falls in, so any split of C between threads
 * gives bitwise the same result.
 */

#define NR (NV * VLEN)

/* The register tile: acc[i][v] = sum over p of op(A)[i][p] * B panel row p, over the
 * whole k, then stored once (beta == 0: C is never read). op(A)[i][p] is a[p * lda + i]
 * when A is transposed (at == 1), a[i * lda + p] when not: A is read where it lies,
 * unpacked. Row p of the B panel is bp[p * sb ...] (a packed panel: sb = NR; B itself:
 * sb = ldb). mr <= MR rows, nc <= NR columns (nc < NR: only a packed, zero-padded panel;
 * only nc columns are stored). Called with constant mr and at from SFX(tile) so each
 * case gets its own unrolled copy. */
static inline __attribute__((always_inline)) ATTR void
SFX(tile_body)(const int mr, const int at, int64_t nc, int64_t k, const REAL *a,
               int64_t lda, const REAL *bp, int64_t sb, REAL alpha, REAL beta,
               REAL *c, int64_t ldc, int kfirst, int klast)
{
    VEC acc[MR][NV];
    int i, v;
    int64_t p, j;
    if (kfirst) {
#pragma GCC unroll 16
        for (i = 0; i < MR; i++)
#pragma GCC unroll 4
            for (v = 0; v < NV; v++)
                acc[i][v] = V_ZERO();
    } else { /* a later block of k: the chain goes on from the raw sums in C */
        REAL t[NR] __attribute__((aligned(64)));
#pragma GCC unroll 16
        for (i = 0; i < MR; i++) {
            if (i < mr) {
                const REAL *cr = c + i * ldc;
                if (nc == NR) {
#pragma GCC unroll 4
                    for (v = 0; v < NV; v++)
                        acc[i][v] = V_LOADU(cr + v * VLEN);
                } else {
                    for (j = 0; j < NR; j++)
                        t[j] = j < nc ? cr[j] : 0;
#pragma GCC unroll 4
                    for (v = 0; v < NV; v++)
                        acc[i][v] = V_LOADU(t + v * VLEN);
                }
            }
        }
    }
#pragma GCC unroll 2
    for (p = 0; p < k; p++) {
        VEC b[NV];
#pragma GCC unroll 4
        for (v = 0; v < NV; v++)
            b[v] = V_LOADU(bp + v * VLEN);
#pragma GCC unroll 16
        for (i = 0; i < MR; i++) {
            if (i < mr) {
                VEC ai = V_SET1(at ? a[i] : a[i * lda]);
#pragma GCC unroll 4
                for (v = 0; v < NV; v++)
                    acc[i][v] = V_FMA(ai, b[v], acc[i][v]);
            }
        }
        a += at ? lda : 1;
        bp += sb;
    }
    /* not the last block of k: store the raw sums (beta is 0 when k is blocked) */
    VEC va = V_SET1(klast ? alpha : (REAL)1);
    if (!klast)
        beta = 0;
    if (nc == NR) {
#pragma GCC unroll 16
        for (i = 0; i < MR; i++) {
            if (i < mr) {
#pragma GCC unroll 4
                for (v = 0; v < NV; v++) {
                    REAL *cp = c + i * ldc + v * VLEN;
                    VEC r = V_MUL(va, acc[i][v]);
                    if (beta != 0)
                        r = V_FMA(V_SET1(beta), V_LOADU(cp), r);
                    V_STOREU(cp, r);
                }
            }
        }
    } else {
        REAL t[NR] __attribute__((aligned(64)));
#pragma GCC unroll 16
        for (i = 0; i < MR; i++) {
            if (i < mr) {
#pragma GCC unroll 4
                for (v = 0; v < NV; v++)
                    V_STOREU(t + v * VLEN, V_MUL(va, acc[i][v]));
                REAL *cr = c + i * ldc;
                if (beta != 0) {
                    for (j = 0; j < nc; j++)
                        cr[j] = S_FMA(beta, cr[j], t[j]);
                } else {
                    for (j = 0; j < nc; j++)
                        cr[j] = t[j];
                }
            }
        }
    }
}

static ATTR void
SFX(tile)(int mr, int at, int64_t nc, int64_t k, const REAL *a, int64_t lda,
          const REAL *bp, int64_t sb, REAL alpha, REAL beta, REAL *c, int64_t ldc,
          int kfirst, int klast)
{
    switch (mr * 2 + (at != 0)) {
#define FNN_TILE_CASE(r)                                                            \
    case 2 * r:                                                                     \
        SFX(tile_body)(r, 0, nc, k, a, lda, bp, sb, alpha, beta, c, ldc, kfirst,    \
                       klast);                                                      \
        break;                                                                      \
    case 2 * r + 1:                                                                 \
        SFX(tile_body)(r, 1, nc, k, a, lda, bp, sb, alpha, beta, c, ldc, kfirst,    \
                       klast);                                                      \
        break;
    FNN_TILE_CASE(1) FNN_TILE_CASE(2) FNN_TILE_CASE(3) FNN_TILE_CASE(4)
#if MR > 4
    FNN_TILE_CASE(5) FNN_TILE_CASE(6)
#endif
#if MR > 6
    FNN_TILE_CASE(7) FNN_TILE_CASE(8)
#endif
#if MR > 8
    FNN_TILE_CASE(9) FNN_TILE_CASE(10) FNN_TILE_CASE(11) FNN_TILE_CASE(12)
#endif
#if MR > 12
#error "MR > 12 needs more cases"
#endif
#undef FNN_TILE_CASE
    default: break;
    }
}

/* op(B)[:, j0:j0+nc] (k x nc) into NR-column panels, each k x NR, zero-padded. */
static ATTR void
SFX(pack_b)(int tb, int64_t k, int64_t nc, const REAL *b, int64_t ldb, int64_t j0,
            REAL *bp)
{
    int64_t jp, p, j, w;
    for (jp = 0; jp < nc; jp += NR) {
        w = nc - jp < NR ? nc - jp : NR;
        REAL *dst = bp + jp * k;
        if (!tb) {
            const REAL *src = b + j0 + jp;
            if (w == NR) {
                for (p = 0; p < k; p++)
#pragma GCC unroll 4
                    for (j = 0; j < NV; j++)
                        V_STOREU(dst + p * NR + j * VLEN,
                                 V_LOADU(src + p * ldb + j * VLEN));
            } else {
                for (p = 0; p < k; p++) {
                    for (j = 0; j < w; j++)
                        dst[p * NR + j] = src[p * ldb + j];
                    for (; j < NR; j++)
                        dst[p * NR + j] = 0;
                }
            }
        } else { /* op(B)[p][j] = B[j][p]: read each row of B once, scatter by NR */
            int64_t p0 = 0;
#ifdef TRANSPOSE8
            /* full panels: 8 x 8 blocks transposed in registers */
            if (w == NR) {
                for (; p0 + 8 <= k; p0 += 8)
                    for (j = 0; j < NR; j += 8)
                        TRANSPOSE8(b + (j0 + jp + j) * ldb + p0, ldb,
                                   dst + p0 * NR + j, NR);
            }
#endif
            for (j = 0; j < w; j++) {
                const REAL *src = b + (j0 + jp + j) * ldb;
                for (p = p0; p < k; p++)
                    dst[p * NR + j] = src[p];
            }
            for (; j < NR; j++)
                for (p = 0; p < k; p++)
                    dst[p * NR + j] = 0;
        }
    }
}

/* One row of C (m == 1) with B not transposed, read where it lies: RV vectors of
 * columns at a time (4 tiles' width, so enough independent FMA chains to hide the
 * latency that a one-row tile of NV accumulators waits on), then the last whole
 * vectors side by side, then the last columns side by side (one after another, each
 * a chain over k waiting on the FMA latency, a 1 x 31 x 1024 float32 product took
 * 4x as long, 13 us against OpenBLAS's 11). Each element is the tile's FMA chain
 * over k in order, from zero, then alpha, then beta C (S_FMA rounds as a V_FMA
 * lane), so the row has the bits it has in any tile. B streams from memory once,
 * like a GEMV. */
#define RV (4 * NV)
static ATTR void
SFX(row)(int at, int64_t n, int64_t k, REAL alpha, const REAL *a, int64_t lda,
         const REAL *b, int64_t ldb, REAL beta, REAL *c)
{
    int64_t astep = at ? lda : 1, j = 0, p;
    int v;
    for (; j + RV * VLEN <= n; j += RV * VLEN) {
        VEC acc[RV];
        const REAL *bp = b + j;
#pragma GCC unroll 16
        for (v = 0; v < RV; v++)
            acc[v] = V_ZERO();
        for (p = 0; p < k; p++, bp += ldb) {
            VEC ap = V_SET1(a[p * astep]);
#pragma GCC unroll 16
            for (v = 0; v < RV; v++)
                acc[v] = V_FMA(ap, V_LOADU(bp + v * VLEN), acc[v]);
        }
#pragma GCC unroll 16
        for (v = 0; v < RV; v++) {
            VEC r = V_MUL(V_SET1(alpha), acc[v]);
            if (beta != 0)
                r = V_FMA(V_SET1(beta), V_LOADU(c + j + v * VLEN), r);
            V_STOREU(c + j + v * VLEN, r);
        }
    }
    /* the last whole vectors (fewer than RV), side by side: one pass over k with
     * an independent chain each, not one latency-bound chain after another */
    int nv = (int)((n - j) / VLEN);
    if (nv > 0) {
        VEC acc[RV];
        const REAL *bp = b + j;
#pragma GCC unroll 16
        for (v = 0; v < RV; v++)
            acc[v] = V_ZERO();
        for (p = 0; p < k; p++, bp += ldb) {
            VEC ap = V_SET1(a[p * astep]);
#pragma GCC unroll 16
            for (v = 0; v < RV - 1; v++)
                if (v < nv)
                    acc[v] = V_FMA(ap, V_LOADU(bp + v * VLEN), acc[v]);
        }
#pragma GCC unroll 16
        for (v = 0; v < RV - 1; v++) {
            if (v < nv) {
                VEC r = V_MUL(V_SET1(alpha), acc[v]);
                if (beta != 0)
                    r = V_FMA(V_SET1(beta), V_LOADU(c + j + v * VLEN), r);
                V_STOREU(c + j + v * VLEN, r);
            }
        }
        j += (int64_t)nv * VLEN;
    }
    /* the last columns (fewer than VLEN), side by side likewise */
    if (j < n) {
        int w = (int)(n - j), q;
        REAL acc[VLEN];
#pragma GCC unroll 16
        for (q = 0; q < VLEN; q++)
            acc[q] = 0;
        for (p = 0; p < k; p++) {
            REAL ap = a[p * astep];
            const REAL *br = b + p * ldb + j;
#pragma GCC unroll 16
            for (q = 0; q < VLEN - 1; q++)
                if (q < w)
                    acc[q] = S_FMA(ap, br[q], acc[q]);
        }
        for (q = 0; q < w; q++) {
            REAL r = alpha * acc[q];
            c[j + q] = beta != 0 ? S_FMA(beta, c[j + q], r) : r;
        }
    }
}
#undef RV

/* Rows of the next row tile when `left` rows of the block remain: MR, except that a
 * last pair of tiles with a short remainder (fewer than MR / 2 rows) splits evenly:
 * 32 rows by MR = 6 are 6, 6, 6, 6, 4, 4, not 6, 6, 6, 6, 6, 2. A tile of few rows has
 * few accumulators, too few to hide the FMA latency (a 2-row AVX2 tile runs at about
 * half speed); rows per tile change no bit of C. */
static inline int
SFX(tile_rows)(int64_t left)
{
    if (left <= MR)
        return (int)left;
    if (left < 2 * MR && left - MR < MR / 2)
        return (int)((left + 1) / 2);
    return MR;
}

/* The blocked loops, nothing packed but what must be: B in blocks of nc_max columns
 * (a multiple of NR) by kc_max rows of k, each packed into bp when transposed or
 * reused from L1 (pack_b), else read where it lies (a packed copy only for a last,
 * narrower panel). A is read in place, mc_max rows at a time (its block stays in L2
 * across B's panels). The tiles run panel by panel of B when one (kc x NR) fits in L1
 * (b_in_l1), else row tile by row tile of A (kc x MR, the smaller). Each MR x NR tile
 * of C runs a block of k in registers; a later block of k reloads the raw sums from C
 * and goes on with the same FMA chain (kc_max < k only when beta == 0), so blocking
 * k changes no bit of C. */
static ATTR void
SFX(gemm)(int ta, int tb, int64_t m, int64_t n, int64_t k, REAL alpha, const REAL *a,
          int64_t lda, const REAL *b, int64_t ldb, REAL beta, REAL *c, int64_t ldc,
          REAL *bp, int64_t mc_max, int64_t nc_max, int64_t kc_max, int b_in_l1,
          int pack_b)
{
    int64_t jc, pc, ic, jr, ir, nc, mc, kc;
    int h;
    int in_place = !tb && !pack_b; /* B's full panels read where they lie */
    if (m == 1 && !tb) {
        SFX(row)(ta, n, k, alpha, a, lda, b, ldb, beta, c);
        return;
    }
    for (jc = 0; jc < n; jc += nc_max) {
        nc = n - jc < nc_max ? n - jc : nc_max;
        int64_t full = in_place ? nc / NR * NR : 0;
        for (pc = 0; pc < k; pc += kc_max) {
            kc = k - pc < kc_max ? k - pc : kc_max;
            int kfirst = pc == 0, klast = pc + kc == k;
            /* rows pc.. of op(B): B's rows when not transposed, its columns when */
            const REAL *bk = tb ? b + pc : b + pc * ldb;
            if (full < nc)
                SFX(pack_b)(tb, kc, nc - full, bk, ldb, jc + full, bp);
            for (ic = 0; ic < m; ic += mc_max) {
                mc = m - ic < mc_max ? m - ic : mc_max;
                const REAL *ablk = ta ? a + ic + pc * lda : a + ic * lda + pc;
                int64_t rstep = ta ? 1 : lda; /* offset between rows of A */
                if (b_in_l1) { /* a panel of B stays in L1 while A's tiles pass */
                    for (jr = 0; jr < nc; jr += NR) {
                        int64_t w = nc - jr < NR ? nc - jr : NR;
                        const REAL *panel =
                            jr < full ? bk + jc + jr : bp + (jr - full) * kc;
                        int64_t sb = jr < full ? ldb : NR;
                        for (ir = 0; ir < mc; ir += h) {
                            h = SFX(tile_rows)(mc - ir);
                            SFX(tile)(h, ta, w, kc, ablk + ir * rstep, lda,
                                      panel, sb, alpha, beta,
                                      c + (ic + ir) * ldc + jc + jr, ldc, kfirst,
                                      klast);
                        }
                    }
                } else { /* a row tile of A stays in L1 while B's panels pass */
                    for (ir = 0; ir < mc; ir += h) {
                        h = SFX(tile_rows)(mc - ir);
                        for (jr = 0; jr < nc; jr += NR) {
                            int64_t w = nc - jr < NR ? nc - jr : NR;
                            const REAL *panel =
                                jr < full ? bk + jc + jr : bp + (jr - full) * kc;
                            int64_t sb = jr < full ? ldb : NR;
                            SFX(tile)(h, ta, w, kc, ablk + ir * rstep, lda,
                                      panel, sb, alpha, beta,
                                      c + (ic + ir) * ldc + jc + jr, ldc, kfirst,
                                      klast);
                        }
                    }
                }
            }
        }
    }
}

#undef NR
/* the per-type parameters, so the next instantiation defines its own */
#undef REAL
#undef VEC
#undef VLEN
#undef SFX
#undef TRANSPOSE8
#undef V_ZERO
#undef V_SET1
#undef V_LOAD
#undef V_LOADU
#undef V_STOREU
