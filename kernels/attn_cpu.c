/* Causal attention on CPU where each query attends one contiguous range of keys, forward and
   backward, for the small head dims of these models.

   Query i of a (batch row, head) attends keys j in [lo[i], i]: causal, and lo[i] is where its
   document (or its sliding window) starts. With scale = 1 / sqrt(hd):
       s[i][j] = scale q[i].k[j],   p[i][j] = exp(s[i][j] - lse[i]),   y[i] = sum_j p[i][j] v[j]
   where lse[i] = log sum_j exp(s[i][j]) is kept for the backward, which recomputes p:
       D[i] = dy[i].y[i],   dp[i][j] = dy[i].v[j],   ds[i][j] = p[i][j] (dp[i][j] - D[i]) scale
       dq[i] = sum_j ds[i][j] k[j],   dk[j] = sum_i ds[i][j] q[i],   dv[j] = sum_i p[i][j] dy[i]
   torch's CPU SDPA takes the mask as a full (L, L) matrix and computes every score, masked or
   not; here only the ranges are computed (about half of the square for one document per row).
   Queries go RB at a time; their scores against K^T (hd, L) are register tiles of RB x JW.
   Items are (batch row, head) pairs: dk and dv of an item are summed by one thread in query
   order, so results do not depend on threads.

   q, k, v, dq, dk, dv: (B, H, L, hd); y, dy: (B, L, H, hd) (the output projection's layout);
   lse: (B, H, L); lo: (B, L) int64.
   REAL and SUFFIX are set by cpu_precisions.h, which includes this file once per precision. */

#ifndef REAL
#include "cpu_math.h"  /* math, stdint, string; its pragma must come before any function */
#include <stdlib.h>

#define RB 6  /* query rows per tile */

#define BODY "attn_cpu.c"
#include "cpu_precisions.h"

#else

#include "cpu_math.h"  /* exp_, sum8_, max8_ */

/* one 32-byte register of REAL (GCC and clang vector extension): 8 floats or 4 doubles */
typedef REAL FN(vec_) __attribute__((vector_size(32), aligned(sizeof(REAL))));
#define VEC FN(vec_)
#define VL ((int64_t)(32 / sizeof(REAL)))
#define JW (2 * VL)  /* key columns per score tile; K^T, V^T are padded with zeros to it */

/* S[r][j] = sum_c A[r][c] Bt[c][j] for r < RB, j in [j0, j1) (multiples of JW) */
static inline void FN(tile_dot_)(const REAL *restrict A, int64_t lda, int64_t n,
                                 const REAL *restrict Bt, int64_t ldb, int64_t j0, int64_t j1,
                                 REAL *restrict S, int64_t lds) {
    for (int64_t j = j0; j < j1; j += JW) {
        VEC acc[RB][2] = {{{0}}};
        for (int64_t c = 0; c < n; c++) {
            const VEC b0 = *(const VEC *)(Bt + c * ldb + j);
            const VEC b1 = *(const VEC *)(Bt + c * ldb + j + VL);
            for (int r = 0; r < RB; r++) {
                const REAL a = A[r * lda + c];
                acc[r][0] += a * b0;
                acc[r][1] += a * b1;
            }
        }
        for (int r = 0; r < RB; r++) {
            *(VEC *)(S + r * lds + j) = acc[r][0];
            *(VEC *)(S + r * lds + j + VL) = acc[r][1];
        }
    }
}

/* O[r][c] = sum_{j in [j0, j1)} P[r][j] M[j][c] for r < RB, c < hdp (a multiple of VL) */
static inline void FN(tile_mix_)(const REAL *restrict P, int64_t ldp, int64_t j0, int64_t j1,
                                 const REAL *restrict M, int64_t hdp, REAL *restrict O) {
    int64_t c = 0;
    for (; c + 2 * VL <= hdp; c += 2 * VL) {
        VEC acc[RB][2] = {{{0}}};
        for (int64_t j = j0; j < j1; j++) {
            const VEC m0 = *(const VEC *)(M + j * hdp + c);
            const VEC m1 = *(const VEC *)(M + j * hdp + c + VL);
            for (int r = 0; r < RB; r++) {
                const REAL w = P[r * ldp + j];
                acc[r][0] += w * m0;
                acc[r][1] += w * m1;
            }
        }
        for (int r = 0; r < RB; r++) {
            *(VEC *)(O + r * hdp + c) = acc[r][0];
            *(VEC *)(O + r * hdp + c + VL) = acc[r][1];
        }
    }
    if (c < hdp) {  /* one register left */
        VEC acc[RB] = {{0}};
        for (int64_t j = j0; j < j1; j++) {
            const VEC m0 = *(const VEC *)(M + j * hdp + c);
            for (int r = 0; r < RB; r++) acc[r] += P[r * ldp + j] * m0;
        }
        for (int r = 0; r < RB; r++) *(VEC *)(O + r * hdp + c) = acc[r];
    }
}

/* G[j][c] += sum_r P[r][j] A[r][c] for j in [j0, j1), c < hdp */
static inline void FN(tile_scatter_)(const REAL *restrict P, int64_t ldp, int64_t j0,
                                     int64_t j1, const REAL *restrict A, int64_t hdp,
                                     REAL *restrict G) {
    for (int64_t c = 0; c < hdp; c += VL) {
        VEC a[RB];
        for (int r = 0; r < RB; r++) a[r] = *(const VEC *)(A + r * hdp + c);
        for (int64_t j = j0; j < j1; j++) {
            VEC g = *(VEC *)(G + j * hdp + c);
            for (int r = 0; r < RB; r++) g += P[r * ldp + j] * a[r];
            *(VEC *)(G + j * hdp + c) = g;
        }
    }
}

/* Xt (hd, ld) = X^T of X (L, hd); the padding of Xt stays as it was (zeros) */
static inline void FN(transpose_)(const REAL *restrict X, int64_t L, int64_t hd,
                                  REAL *restrict Xt, int64_t ld) {
    for (int64_t j = 0; j < L; j++)
        for (int64_t c = 0; c < hd; c++) Xt[c * ld + j] = X[j * hd + c];
}

/* Xp (L, hdp) = X (L, hd) with zero columns up to hdp */
static inline void FN(pad_cols_)(const REAL *restrict X, int64_t L, int64_t hd, int64_t hdp,
                                 REAL *restrict Xp) {
    for (int64_t j = 0; j < L; j++) {
        memcpy(Xp + j * hdp, X + j * hd, sizeof(REAL) * hd);
        memset(Xp + j * hdp + hd, 0, sizeof(REAL) * (hdp - hd));
    }
}

/* out (RB, hdp): rows i0.. of X, whose row i starts at X + i * stride; zeros elsewhere */
static inline void FN(gather_rows_)(const REAL *X, int64_t stride, int64_t i0, int64_t nr,
                                    int64_t hd, int64_t hdp, REAL mul, REAL *restrict out) {
    memset(out, 0, sizeof(REAL) * RB * hdp);
    for (int64_t r = 0; r < nr; r++)
        for (int64_t c = 0; c < hd; c++) out[r * hdp + c] = X[(i0 + r) * stride + c] * mul;
}

/* the block's key range: [j0, j1) rounded out to JW for the tiles, [jmin, jmax) exact */
static inline void FN(block_range_)(const int64_t *lo, int64_t i0, int64_t nr, int64_t *j0,
                                    int64_t *j1, int64_t *jmin, int64_t *jmax) {
    int64_t m = lo[i0];
    for (int64_t r = 1; r < nr; r++) m = lo[i0 + r] < m ? lo[i0 + r] : m;
    *jmin = m;
    *jmax = i0 + nr;
    *j0 = m / JW * JW;
    *j1 = (i0 + nr + JW - 1) / JW * JW;
}

static void *FN(zalloc_)(int64_t n) {  /* n REALs, zeroed, 32-byte aligned */
    void *p = aligned_alloc(32, (size_t)((n * (int64_t)sizeof(REAL) + 31) / 32 * 32));
    memset(p, 0, (size_t)(n * (int64_t)sizeof(REAL)));
    return p;
}

void FN(attn_fwd_)(int64_t item_lo, int64_t item_hi, int64_t H, int64_t L, int64_t hd,
                   REAL scale, const REAL *q, const REAL *k, const REAL *v, const int64_t *lo,
                   REAL *y, REAL *lse) {
    const int64_t Lp = (L + JW - 1) / JW * JW, hdp = (hd + VL - 1) / VL * VL;
    REAL *kt = FN(zalloc_)(hd * Lp), *vp = FN(zalloc_)(L * hdp), *s = FN(zalloc_)(RB * Lp);
    REAL *qr = FN(zalloc_)(RB * hdp), *o = FN(zalloc_)(RB * hdp);
    for (int64_t item = item_lo; item < item_hi; item++) {
        const int64_t b = item / H, h = item % H;
        const REAL *Q = q + item * L * hd;
        const int64_t *lob = lo + b * L;
        FN(transpose_)(k + item * L * hd, L, hd, kt, Lp);
        FN(pad_cols_)(v + item * L * hd, L, hd, hdp, vp);
        for (int64_t i0 = 0; i0 < L; i0 += RB) {
            const int64_t nr = L - i0 < RB ? L - i0 : RB;
            int64_t j0, j1, jmin, jmax;
            FN(block_range_)(lob, i0, nr, &j0, &j1, &jmin, &jmax);
            FN(gather_rows_)(Q, hd, i0, nr, hd, hdp, scale, qr);
            FN(tile_dot_)(qr, hdp, hd, kt, Lp, j0, j1, s, Lp);
            REAL inv[RB];
            for (int64_t r = 0; r < RB; r++) {
                REAL *sr = s + r * Lp;
                if (r >= nr) {  /* past the last query: no weights */
                    memset(sr + jmin, 0, sizeof(REAL) * (jmax - jmin));
                    continue;
                }
                const int64_t i = i0 + r, a = lob[i], n = i + 1 - a;
                const REAL m = FN(max8_)(sr + a, n);
                for (int64_t j = a; j <= i; j++) sr[j] = FN(exp_)(sr[j] - m);
                const REAL l = FN(sum8_)(sr + a, n);
                for (int64_t j = jmin; j < a; j++) sr[j] = 0;
                for (int64_t j = i + 1; j < jmax; j++) sr[j] = 0;
                inv[r] = 1 / l;
                lse[item * L + i] = m + log(l);
            }
            FN(tile_mix_)(s, Lp, jmin, jmax, vp, hdp, o);
            for (int64_t r = 0; r < nr; r++) {
                REAL *yi = y + ((b * L + i0 + r) * H + h) * hd;
                for (int64_t c = 0; c < hd; c++) yi[c] = o[r * hdp + c] * inv[r];
            }
        }
    }
    free(kt);
    free(vp);
    free(s);
    free(qr);
    free(o);
}

void FN(attn_bwd_)(int64_t item_lo, int64_t item_hi, int64_t H, int64_t L, int64_t hd,
                   REAL scale, const REAL *q, const REAL *k, const REAL *v, const int64_t *lo,
                   const REAL *y, const REAL *dy, const REAL *lse, REAL *dq, REAL *dk,
                   REAL *dv) {
    const int64_t Lp = (L + JW - 1) / JW * JW, hdp = (hd + VL - 1) / VL * VL;
    REAL *kt = FN(zalloc_)(hd * Lp), *vt = FN(zalloc_)(hd * Lp), *kp = FN(zalloc_)(L * hdp);
    REAL *gk = FN(zalloc_)(L * hdp), *gv = FN(zalloc_)(L * hdp);
    REAL *p = FN(zalloc_)(RB * Lp), *ds = FN(zalloc_)(RB * Lp);
    REAL *qr = FN(zalloc_)(RB * hdp), *dyr = FN(zalloc_)(RB * hdp), *yr = FN(zalloc_)(RB * hdp);
    REAL *o = FN(zalloc_)(RB * hdp);
    for (int64_t item = item_lo; item < item_hi; item++) {
        const int64_t b = item / H, h = item % H;
        const REAL *Q = q + item * L * hd;
        const REAL *dyb = dy + (b * L * H + h) * hd, *yb = y + (b * L * H + h) * hd;
        const int64_t *lob = lo + b * L;
        FN(transpose_)(k + item * L * hd, L, hd, kt, Lp);
        FN(transpose_)(v + item * L * hd, L, hd, vt, Lp);
        FN(pad_cols_)(k + item * L * hd, L, hd, hdp, kp);
        memset(gk, 0, sizeof(REAL) * L * hdp);
        memset(gv, 0, sizeof(REAL) * L * hdp);
        for (int64_t i0 = 0; i0 < L; i0 += RB) {
            const int64_t nr = L - i0 < RB ? L - i0 : RB;
            int64_t j0, j1, jmin, jmax;
            FN(block_range_)(lob, i0, nr, &j0, &j1, &jmin, &jmax);
            FN(gather_rows_)(Q, hd, i0, nr, hd, hdp, scale, qr);
            FN(gather_rows_)(dyb, H * hd, i0, nr, hd, hdp, 1, dyr);
            FN(gather_rows_)(yb, H * hd, i0, nr, hd, hdp, 1, yr);
            FN(tile_dot_)(qr, hdp, hd, kt, Lp, j0, j1, p, Lp);
            FN(tile_dot_)(dyr, hdp, hd, vt, Lp, j0, j1, ds, Lp);
            for (int64_t r = 0; r < RB; r++) {
                REAL *pr = p + r * Lp, *dsr = ds + r * Lp;
                if (r >= nr) {
                    memset(pr + jmin, 0, sizeof(REAL) * (jmax - jmin));
                    memset(dsr + jmin, 0, sizeof(REAL) * (jmax - jmin));
                    continue;
                }
                const int64_t i = i0 + r, a = lob[i];
                REAL D = 0;
                for (int64_t c = 0; c < hd; c++) D += dyr[r * hdp + c] * yr[r * hdp + c];
                const REAL m = lse[item * L + i];
                for (int64_t j = a; j <= i; j++) {
                    pr[j] = FN(exp_)(pr[j] - m);
                    dsr[j] = pr[j] * (dsr[j] - D);
                }
                /* one key (a document's first position): the softmax is 1 whatever the score,
                   so its gradient is exactly 0, not dy.v - dy.y summed in two orders */
                if (a == i) dsr[i] = 0;
                for (int64_t j = jmin; j < a; j++) pr[j] = dsr[j] = 0;
                for (int64_t j = i + 1; j < jmax; j++) pr[j] = dsr[j] = 0;
            }
            FN(tile_mix_)(ds, Lp, jmin, jmax, kp, hdp, o);
            for (int64_t r = 0; r < nr; r++)
                for (int64_t c = 0; c < hd; c++)
                    dq[(item * L + i0 + r) * hd + c] = o[r * hdp + c] * scale;
            FN(tile_scatter_)(ds, Lp, jmin, jmax, qr, hdp, gk);
            FN(tile_scatter_)(p, Lp, jmin, jmax, dyr, hdp, gv);
        }
        for (int64_t j = 0; j < L; j++) {
            memcpy(dk + (item * L + j) * hd, gk + j * hdp, sizeof(REAL) * hd);
            memcpy(dv + (item * L + j) * hd, gv + j * hdp, sizeof(REAL) * hd);
        }
    }
    free(kt);
    free(vt);
    free(kp);
    free(gk);
    free(gv);
    free(p);
    free(ds);
    free(qr);
    free(dyr);
    free(yr);
    free(o);
}

#undef VEC
#undef VL
#undef JW

#endif
