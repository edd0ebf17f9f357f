/* The smoothing EMA over chunks (paper Eq. 5) as one sequential pass per row, on CPU.

   Row b has M chunks of D channels, boundary probabilities p and a = 1 - p:
       h_m = p_m x_m + a_m h_{m-1},   h_{-1} = 0
   A chunk with p = 1 (every document's first) restarts the EMA exactly: a = 0.
   Backward, from g = dL/dh: the adjoint runs the same recurrence in reverse,
       e_m = g_m + a_{m+1} e_{m+1}   (e = 0 after the last chunk)
       dx_m = p_m e_m,   dp_m = e_m . x_m - e_m . h_{m-1}
   `kernels.ema.ema_reference` is the loop this is tested against. The torch path
   (`kernels.ema.ema_chunked`, a two-level blocked scan of ~2 sqrt(M) small steps) spent ~1 ms
   per call forward and as much backward on Python and small tensors at the presets' sizes.
   Items are rows; each is computed alone, so results do not depend on threads.

   REAL and SUFFIX are set by cpu_precisions.h, which includes this file once per precision. */

#ifndef REAL
#include "cpu_math.h"  /* math, stdint, string; its pragma must come before any function */

#define BODY "ema_cpu.c"
#include "cpu_precisions.h"

#else

/* rows [lo, hi) of x, h (B, M, D) and p (B, M) */
void FN(ema_fwd_)(int64_t lo, int64_t hi, int64_t M, int64_t D, const REAL *x, const REAL *p,
                  REAL *h) {
    for (int64_t b = lo; b < hi; b++) {
        const REAL *pb = p + b * M;
        for (int64_t m = 0; m < M; m++) {
            const REAL pm = pb[m], am = 1 - pm;
            const REAL *restrict xm = x + (b * M + m) * D;
            REAL *restrict hm = h + (b * M + m) * D;
            if (m == 0) {
                for (int64_t d = 0; d < D; d++) hm[d] = pm * xm[d];
            } else {
                const REAL *restrict prev = hm - D;
                for (int64_t d = 0; d < D; d++) hm[d] = pm * xm[d] + am * prev[d];
            }
        }
    }
}

/* sum_d u[d] v[d] in 8 lanes (vectorises without reassociating across lanes) */
static inline REAL FN(dot8_)(const REAL *restrict u, const REAL *restrict v, int64_t n) {
    REAL acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += u[i + k] * v[i + k];
    REAL s = 0;
    for (int k = 0; k < 8; k++) s += acc[k];
    for (; i < n; i++) s += u[i] * v[i];
    return s;
}

/* e: (B, D) scratch, zero on entry; dx (B, M, D), dp (B, M) written */
void FN(ema_bwd_)(int64_t lo, int64_t hi, int64_t M, int64_t D, const REAL *x, const REAL *p,
                  const REAL *h, const REAL *g, REAL *e, REAL *dx, REAL *dp) {
    for (int64_t b = lo; b < hi; b++) {
        const REAL *pb = p + b * M;
        REAL *restrict eb = e + b * D;
        for (int64_t m = M - 1; m >= 0; m--) {
            const REAL pm = pb[m], an = m + 1 < M ? 1 - pb[m + 1] : 0;
            const int64_t off = (b * M + m) * D;
            const REAL *restrict gm = g + off, *restrict xm = x + off;
            REAL *restrict dxm = dx + off;
            for (int64_t d = 0; d < D; d++) {
                eb[d] = gm[d] + an * eb[d];
                dxm[d] = pm * eb[d];
            }
            REAL s = FN(dot8_)(eb, xm, D);
            if (m > 0) s -= FN(dot8_)(eb, h + off - D, D);
            dp[b * M + m] = s;
        }
    }
}

#endif
