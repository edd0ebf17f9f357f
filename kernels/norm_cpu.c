/* The RMSNorms, one pass per position, forward and backward: the gated one that closes a
   Mamba-2 mixer, and the plain one before every block's mixer and MLP.

   Gated, per position (a row of D channels) and group of GS channels (D / GS groups):
       g = x silu(z),   r = 1 / sqrt(mean(g^2) + eps),   h = g r,   y = h w
   Backward, with dh = dy w:
       dg = r (dh - h mean(dh h)),   dx = dg silu(z),   dz = dg x silu'(z),   dw = sum dy h
   Plain: the same with g = x and one group (dx = dg).

   The torch versions (`models.norm._GatedRMSNorm`, `F.rms_norm`) make ~6 passes over
   (positions, D) forward and ~10 backward; here each position's row is read once from memory
   and worked on in L1. The forward keeps r per (position, group) for the backward (one float
   per group). Items are blocks of ROWS_PER_ITEM positions; each block writes its own dw
   partial (the caller sums them in order), so results do not depend on threads.

   REAL and SUFFIX are set by cpu_precisions.h, which includes this file once per precision. */

#ifndef REAL
#include "cpu_math.h"  /* math, stdint, string; its pragma must come before any function */
#include <stdlib.h>

#define BODY "norm_cpu.c"
#include "cpu_precisions.h"

#else

#include "cpu_math.h"  /* exp_, sigmoid_, sum8_ */

/* positions [lo * rows_per_item, min(hi * rows_per_item, M)) */
void FN(gnorm_fwd_)(int64_t lo, int64_t hi, int64_t M, int64_t D, int64_t GS,
                    int64_t rows_per_item, REAL eps, const REAL *x, const REAL *z,
                    const REAL *w, REAL *y, REAL *rs) {
    REAL *sq = malloc(sizeof(REAL) * GS);
    const int64_t end = hi * rows_per_item < M ? hi * rows_per_item : M;
    for (int64_t m = lo * rows_per_item; m < end; m++) {
        const REAL *restrict xm = x + m * D, *restrict zm = z + m * D;
        REAL *restrict ym = y + m * D;
        for (int64_t c = 0; c < D; c++) ym[c] = xm[c] * (zm[c] / (1 + FN(exp_)(-zm[c])));
        for (int64_t g0 = 0; g0 < D; g0 += GS) {
            REAL *restrict yg = ym + g0;
            for (int64_t c = 0; c < GS; c++) sq[c] = yg[c] * yg[c];
            const REAL r = 1 / sqrt(FN(sum8_)(sq, GS) / GS + eps);
            rs[m * (D / GS) + g0 / GS] = r;
            for (int64_t c = 0; c < GS; c++) yg[c] = yg[c] * r * w[g0 + c];
        }
    }
    free(sq);
}

/* dx, dz, and per item its dw partial dw_items[item] (D) */
void FN(gnorm_bwd_)(int64_t lo, int64_t hi, int64_t M, int64_t D, int64_t GS,
                    int64_t rows_per_item, const REAL *x, const REAL *z, const REAL *w,
                    const REAL *rs, const REAL *dy, REAL *dx, REAL *dz, REAL *dw_items) {
    REAL *s = malloc(sizeof(REAL) * 4 * D), *h = s + D, *dh = h + D, *prod = dh + D;
    for (int64_t it = lo; it < hi; it++) {
        REAL *restrict dw = dw_items + it * D;
        memset(dw, 0, sizeof(REAL) * D);
        const int64_t m1 = (it + 1) * rows_per_item < M ? (it + 1) * rows_per_item : M;
        for (int64_t m = it * rows_per_item; m < m1; m++) {
            const REAL *restrict xm = x + m * D, *restrict zm = z + m * D;
            const REAL *restrict dym = dy + m * D;
            REAL *restrict dxm = dx + m * D, *restrict dzm = dz + m * D;
            for (int64_t c = 0; c < D; c++) s[c] = FN(sigmoid_)(zm[c]);
            for (int64_t g0 = 0; g0 < D; g0 += GS) {
                const REAL r = rs[m * (D / GS) + g0 / GS];
                REAL *restrict hg = h + g0, *restrict dhg = dh + g0;
                const REAL *restrict sg = s + g0, *restrict xg = xm + g0, *restrict zg = zm + g0;
                const REAL *restrict wg = w + g0, *restrict dyg = dym + g0;
                for (int64_t c = 0; c < GS; c++) {
                    hg[c] = xg[c] * (zg[c] * sg[c]) * r;
                    dhg[c] = dyg[c] * wg[c];
                    dw[g0 + c] += dyg[c] * hg[c];
                }
                REAL *restrict pg = prod + g0;
                for (int64_t c = 0; c < GS; c++) pg[c] = dhg[c] * hg[c];
                const REAL mean = FN(sum8_)(pg, GS) / GS;  /* mean(dh h) */
                for (int64_t c = 0; c < GS; c++) {
                    const REAL dg = r * (dhg[c] - hg[c] * mean);
                    const REAL sl = sg[c], zl = zg[c];
                    dxm[g0 + c] = dg * zl * sl;  /* dg silu(z) */
                    dzm[g0 + c] = dg * xg[c] * sl * (1 + zl * (1 - sl));  /* dg x silu'(z) */
                }
            }
        }
    }
    free(s);
}

/* the plain RMSNorm: y = x r w, r = 1 / sqrt(mean(x^2) + eps) kept per position */
void FN(rms_fwd_)(int64_t lo, int64_t hi, int64_t M, int64_t D, int64_t rows_per_item,
                  REAL eps, const REAL *x, const REAL *w, REAL *y, REAL *rs) {
    REAL *sq = malloc(sizeof(REAL) * D);
    const int64_t end = hi * rows_per_item < M ? hi * rows_per_item : M;
    for (int64_t m = lo * rows_per_item; m < end; m++) {
        const REAL *restrict xm = x + m * D;
        REAL *restrict ym = y + m * D;
        for (int64_t c = 0; c < D; c++) sq[c] = xm[c] * xm[c];
        const REAL r = 1 / sqrt(FN(sum8_)(sq, D) / D + eps);
        rs[m] = r;
        for (int64_t c = 0; c < D; c++) ym[c] = xm[c] * r * w[c];
    }
    free(sq);
}

/* dx, and per item its dw partial dw_items[item] (D) */
void FN(rms_bwd_)(int64_t lo, int64_t hi, int64_t M, int64_t D, int64_t rows_per_item,
                  const REAL *x, const REAL *w, const REAL *rs, const REAL *dy, REAL *dx,
                  REAL *dw_items) {
    REAL *h = malloc(sizeof(REAL) * 3 * D), *dh = h + D, *prod = dh + D;
    for (int64_t it = lo; it < hi; it++) {
        REAL *restrict dw = dw_items + it * D;
        memset(dw, 0, sizeof(REAL) * D);
        const int64_t m1 = (it + 1) * rows_per_item < M ? (it + 1) * rows_per_item : M;
        for (int64_t m = it * rows_per_item; m < m1; m++) {
            const REAL *restrict xm = x + m * D, *restrict dym = dy + m * D;
            REAL *restrict dxm = dx + m * D;
            const REAL r = rs[m];
            for (int64_t c = 0; c < D; c++) {
                h[c] = xm[c] * r;
                dh[c] = dym[c] * w[c];
                dw[c] += dym[c] * h[c];
                prod[c] = dh[c] * h[c];
            }
            const REAL mean = FN(sum8_)(prod, D) / D;  /* mean(dh h) */
            for (int64_t c = 0; c < D; c++) dxm[c] = r * (dh[c] - h[c] * mean);
        }
    }
    free(h);
}

#endif
