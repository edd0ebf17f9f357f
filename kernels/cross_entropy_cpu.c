/* The language-model loss, sum over rows of -log softmax(x)[t], one pass per row each way.

   Per row n of logits x (N, V) with target t[n] (IGNORE: the row is not scored), with the
   row's max m[n] and ls[n] = log sum_v exp(x[n][v] - m[n]):
       nats[n] = (m[n] - x[n][t[n]]) + ls[n]
   Backward, for the upstream gradient g of the sum:
       dx[n][v] = g (exp((x[n][v] - m[n]) - ls[n]) - [v == t[n]])       (0 for ignored rows)
   m and ls are kept apart (stats (N, 2)), as torch's log_softmax does: x - (m + ls) would lose
   the small differences of large logits to rounding.
   The torch version (log_softmax, then nll_loss; backward: zeros, a scatter and log_softmax's
   backward) makes ~5 passes over (N, V). Items are rows; each row's nats are written apart
   and summed by the caller, so results do not depend on threads.

   REAL and SUFFIX are set by cpu_precisions.h, which includes this file once per precision. */

#ifndef REAL
#include "cpu_math.h"  /* math, stdint, string; its pragma must come before any function */

#define IGNORE (-100)
#define BODY "cross_entropy_cpu.c"
#include "cpu_precisions.h"

#else

#include "cpu_math.h"  /* exp_, max8_ */

/* sum of exp(v[i] - m), in 8 lanes (vectorises without reassociating across lanes) */
static inline REAL FN(sum_exp8_)(const REAL *restrict v, int64_t n, REAL m) {
    REAL acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += FN(exp_)(v[i + k] - m);
    REAL s = 0;
    for (int k = 0; k < 8; k++) s += acc[k];
    for (; i < n; i++) s += FN(exp_)(v[i] - m);
    return s;
}

void FN(xent_fwd_)(int64_t lo, int64_t hi, int64_t V, const REAL *x, const int64_t *t,
                   REAL *nats, REAL *stats) {
    for (int64_t n = lo; n < hi; n++) {
        if (t[n] == IGNORE) {
            nats[n] = stats[2 * n] = stats[2 * n + 1] = 0;
            continue;
        }
        const REAL *restrict row = x + n * V;
        const REAL m = FN(max8_)(row, V), ls = log(FN(sum_exp8_)(row, V, m));
        stats[2 * n] = m;
        stats[2 * n + 1] = ls;
        nats[n] = (m - row[t[n]]) + ls;
    }
}

void FN(xent_bwd_)(int64_t lo, int64_t hi, int64_t V, const REAL *x, const int64_t *t,
                   const REAL *stats, const REAL *g, REAL *dx) {
    const REAL gs = *g;
    for (int64_t n = lo; n < hi; n++) {
        REAL *restrict d = dx + n * V;
        if (t[n] == IGNORE) {
            memset(d, 0, sizeof(REAL) * V);
            continue;
        }
        const REAL *restrict row = x + n * V;
        const REAL m = stats[2 * n], ls = stats[2 * n + 1];
        for (int64_t v = 0; v < V; v++) d[v] = gs * FN(exp_)((row[v] - m) - ls);
        d[t[n]] -= gs;
    }
}

#endif
