/* Mamba-2's causal depthwise conv with document resets, and the SiLU after it, in one pass.

   Row b, position l, channel c, taps s = 0..K-1 (w[K-1] on the current input):
       pre[l][c] = bias[c] + sum_{s < K, l-s in l's document} w[K-1-s][c] x[l-s][c]
       out[l][c] = silu(pre[l][c]) = pre / (1 + exp(-pre))      (or pre itself, act = 0)
   Documents start where doc[l] != doc[l-1]: a window never reaches into an earlier one.

   The torch version (`models.doc_conv`) makes one pass over (b, L, C) per tap and more for
   the activation and the backward; here each position's window is read once from L1, and the
   backward recomputes pre (K multiply-adds) instead of keeping it. Items are rows; the weight
   and bias gradients are summed per block of SUM_BLOCK positions, the blocks into the row's
   own slot, and the caller sums the rows: a fixed order, so results do not depend on threads.
   The weight is given transposed, wt[s][c] (K, C), so every loop runs along contiguous
   channels and vectorises.

   REAL and SUFFIX are set by cpu_precisions.h, which includes this file once per precision. */

#ifndef REAL
#include "cpu_math.h"  /* math, stdint, string; its pragma must come before any function */
#include <stdlib.h>

#define BODY "conv_cpu.c"
#include "cpu_precisions.h"

#else

#define SUM_BLOCK 32

#include "cpu_math.h"  /* exp_, sigmoid_ */

/* pre-activations of position l of a row into o[0..C): taps = how many of the K inputs lie in
   l's document (1..K) */
static inline void FN(window_)(int64_t C, int64_t K, int64_t taps, const REAL *restrict xl,
                               const REAL *restrict wt, const REAL *restrict bias,
                               REAL *restrict o) {
    const REAL *w0 = wt + (K - 1) * C;
    for (int64_t c = 0; c < C; c++) o[c] = bias[c] + w0[c] * xl[c];
    for (int64_t s = 1; s < taps; s++) {
        const REAL *ws = wt + (K - 1 - s) * C, *xs = xl - s * C;
        for (int64_t c = 0; c < C; c++) o[c] += ws[c] * xs[c];
    }
}

void FN(conv_fwd_)(int64_t lo, int64_t hi, int64_t L, int64_t C, int64_t K, int64_t act,
                   const REAL *x, const REAL *wt, const REAL *bias, const int64_t *doc,
                   REAL *out) {
    for (int64_t b = lo; b < hi; b++) {
        int64_t start = 0;
        for (int64_t l = 0; l < L; l++) {
            if (l > 0 && doc[b * L + l] != doc[b * L + l - 1]) start = l;
            const int64_t taps = l - start + 1 < K ? l - start + 1 : K;
            REAL *restrict o = out + (b * L + l) * C;
            FN(window_)(C, K, taps, x + (b * L + l) * C, wt, bias, o);
            if (act)
                for (int64_t c = 0; c < C; c++) o[c] = o[c] / (1 + FN(exp_)(-o[c]));
        }
    }
}

/* dx, and per row b: dwt_rows[b] (K, C), dbias_rows[b] (C). The gradient at the window's
   output, g = dout silu'(pre), is scattered to the window's inputs as position l is passed:
   dx[l] is first written at l and completed by the next K-1 positions (still in L1). */
void FN(conv_bwd_)(int64_t lo, int64_t hi, int64_t L, int64_t C, int64_t K, int64_t act,
                   const REAL *x, const REAL *wt, const REAL *bias, const int64_t *doc,
                   const REAL *dout, REAL *dx, REAL *dwt_rows, REAL *dbias_rows) {
    /* g, and the weight and bias gradients of the current block of positions (summed per
       block, then blocks summed: float32 sums over a whole row lose ~sqrt(block) more bits) */
    REAL *g = malloc(sizeof(REAL) * C), *dw = malloc(sizeof(REAL) * (K + 1) * C);
    REAL *restrict db = dw + K * C;
    for (int64_t b = lo; b < hi; b++) {
        REAL *restrict dw_row = dwt_rows + b * K * C, *restrict db_row = dbias_rows + b * C;
        memset(dw_row, 0, sizeof(REAL) * K * C);
        memset(db_row, 0, sizeof(REAL) * C);
        int64_t start = 0;
        for (int64_t l = 0; l < L; l++) {
            if (l % SUM_BLOCK == 0) memset(dw, 0, sizeof(REAL) * (K + 1) * C);
            if (l > 0 && doc[b * L + l] != doc[b * L + l - 1]) start = l;
            const int64_t taps = l - start + 1 < K ? l - start + 1 : K;
            const REAL *restrict xl = x + (b * L + l) * C, *restrict d = dout + (b * L + l) * C;
            REAL *restrict gl = g;
            if (act) {
                FN(window_)(C, K, taps, xl, wt, bias, gl);
                for (int64_t c = 0; c < C; c++) {  /* silu'(p) = s (1 + p (1 - s)), s = sigmoid */
                    const REAL p = gl[c], sg = FN(sigmoid_)(p);
                    gl[c] = d[c] * sg * (1 + p * (1 - sg));
                }
            } else {
                memcpy(gl, d, sizeof(REAL) * C);
            }
            for (int64_t c = 0; c < C; c++) db[c] += gl[c];
            REAL *restrict dxl = dx + (b * L + l) * C;
            const REAL *w0 = wt + (K - 1) * C;
            REAL *dw0 = dw + (K - 1) * C;
            for (int64_t c = 0; c < C; c++) {
                dxl[c] = gl[c] * w0[c];
                dw0[c] += gl[c] * xl[c];
            }
            for (int64_t s = 1; s < taps; s++) {
                const REAL *ws = wt + (K - 1 - s) * C, *xs = xl - s * C;
                REAL *restrict dxs = dxl - s * C, *restrict dws = dw + (K - 1 - s) * C;
                for (int64_t c = 0; c < C; c++) {
                    dxs[c] += gl[c] * ws[c];
                    dws[c] += gl[c] * xs[c];
                }
            }
            if (l % SUM_BLOCK == SUM_BLOCK - 1 || l == L - 1) {
                for (int64_t i = 0; i < K * C; i++) dw_row[i] += dw[i];
                for (int64_t c = 0; c < C; c++) db_row[c] += db[c];
            }
        }
    }
    free(g);
    free(dw);
}

#undef SUM_BLOCK
#endif
