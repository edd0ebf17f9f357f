/* The SwiGLU MLP's activation, one pass per row, forward and backward.

   h (M, 2D) is the first projection's output, gate g = h[:, :D] and value u = h[:, D:]:
       y = silu(g) u = g s u,   s = sigmoid(g)
   Backward, from dy (M, D) into dh (M, 2D):
       dg = dy u s (1 + g (1 - s)),   du = dy g s
   The torch version (`models.mlp.SwiGLU`: chunk, silu, multiply) makes 2 passes forward and
   ~5 backward, the last a concatenation of the two halves' gradients; it was ~10% of a BPE
   Transformer step at cpu-tiny. Items are blocks of ROWS_PER_ITEM rows.

   REAL and SUFFIX are set by cpu_precisions.h, which includes this file once per precision. */

#ifndef REAL
#include "cpu_math.h"  /* math, stdint, string; its pragma must come before any function */

#define BODY "swiglu_cpu.c"
#include "cpu_precisions.h"

#else

#include "cpu_math.h"  /* exp_, sigmoid_ */

/* rows [lo * rows_per_item, min(hi * rows_per_item, M)) */
void FN(swiglu_fwd_)(int64_t lo, int64_t hi, int64_t M, int64_t D, int64_t rows_per_item,
                     const REAL *h, REAL *y) {
    const int64_t end = hi * rows_per_item < M ? hi * rows_per_item : M;
    for (int64_t m = lo * rows_per_item; m < end; m++) {
        const REAL *restrict g = h + m * 2 * D, *restrict u = g + D;
        REAL *restrict ym = y + m * D;
        for (int64_t c = 0; c < D; c++) ym[c] = g[c] * FN(sigmoid_)(g[c]) * u[c];
    }
}

void FN(swiglu_bwd_)(int64_t lo, int64_t hi, int64_t M, int64_t D, int64_t rows_per_item,
                     const REAL *h, const REAL *dy, REAL *dh) {
    const int64_t end = hi * rows_per_item < M ? hi * rows_per_item : M;
    for (int64_t m = lo * rows_per_item; m < end; m++) {
        const REAL *restrict g = h + m * 2 * D, *restrict u = g + D;
        const REAL *restrict dym = dy + m * D;
        REAL *restrict dg = dh + m * 2 * D, *restrict du = dg + D;
        for (int64_t c = 0; c < D; c++) {
            const REAL s = FN(sigmoid_)(g[c]);
            dg[c] = dym[c] * u[c] * s * (1 + g[c] * (1 - s));
            du[c] = dym[c] * g[c] * s;
        }
    }
}

#endif
