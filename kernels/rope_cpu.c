/* Attention's q, k, v from the fused projection, with partial RoPE on q and k, in one pass.

   qkv (B, L, 3, H, hd) is wqkv's output; q, k, v (B, H, L, hd) are what attention takes. On
   the first R dims of each q and k head, with half = R/2, c = cos[b][l][i], s = sin[b][l][i]:
       y[i]        = x[i] c - x[half+i] s
       y[half + i] = x[half+i] c + x[i] s           (i < half; dims R.. and all of v copied)
   and the backward rotates the other way, into dqkv (B, L, 3, H, hd):
       dx[i]        = dy[i] c + dy[half+i] s
       dx[half + i] = dy[half+i] c - dy[i] s
   The torch version (`models.attention.rope` after a permute) makes a dozen passes and copies
   per layer. Each product is rounded before the sum, as torch's separate multiplies and adds
   do (no fused multiply-add), so both give the same bits. Items are positions (b, l).

   REAL and SUFFIX are set by cpu_precisions.h, which includes this file once per precision. */

#ifndef REAL
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#include <stdint.h>
#include <string.h>

#define BODY "rope_cpu.c"
#include "cpu_precisions.h"

#else

static inline void FN(rotate_)(int64_t half, const REAL *restrict x, const REAL *restrict c,
                               const REAL *restrict s, REAL sign, REAL *restrict y) {
    /* sign +1: forward rotation; -1: its transpose (the backward) */
    for (int64_t i = 0; i < half; i++) {
        const REAL a = x[i] * c[i], b = x[half + i] * s[i];
        y[i] = sign > 0 ? a - b : a + b;
    }
    for (int64_t i = 0; i < half; i++) {
        const REAL a = x[half + i] * c[i], b = x[i] * s[i];
        y[half + i] = sign > 0 ? a + b : a - b;
    }
}

void FN(rope_fwd_)(int64_t lo, int64_t hi, int64_t L, int64_t H, int64_t hd, int64_t R,
                   const REAL *qkv, const REAL *cos_, const REAL *sin_, REAL *q, REAL *k,
                   REAL *v) {
    const int64_t half = R / 2;
    for (int64_t t = lo; t < hi; t++) {  /* t = b * L + l */
        const int64_t b = t / L, l = t % L;
        const REAL *c = cos_ + t * half, *s = sin_ + t * half;
        REAL *outs[3] = {q, k, v};
        for (int64_t j = 0; j < 3; j++)
            for (int64_t h = 0; h < H; h++) {
                const REAL *x = qkv + ((t * 3 + j) * H + h) * hd;
                REAL *y = outs[j] + ((b * H + h) * L + l) * hd;
                if (j < 2) {
                    FN(rotate_)(half, x, c, s, 1, y);
                    memcpy(y + R, x + R, (size_t)(hd - R) * sizeof(REAL));
                } else {
                    memcpy(y, x, (size_t)hd * sizeof(REAL));
                }
            }
    }
}

void FN(rope_bwd_)(int64_t lo, int64_t hi, int64_t L, int64_t H, int64_t hd, int64_t R,
                   const REAL *dq, const REAL *dk, const REAL *dv, const REAL *cos_,
                   const REAL *sin_, REAL *dqkv) {
    const int64_t half = R / 2;
    for (int64_t t = lo; t < hi; t++) {
        const int64_t b = t / L, l = t % L;
        const REAL *c = cos_ + t * half, *s = sin_ + t * half;
        const REAL *ins[3] = {dq, dk, dv};
        for (int64_t j = 0; j < 3; j++)
            for (int64_t h = 0; h < H; h++) {
                const REAL *dy = ins[j] + ((b * H + h) * L + l) * hd;
                REAL *dx = dqkv + ((t * 3 + j) * H + h) * hd;
                if (j < 2) {
                    FN(rotate_)(half, dy, c, s, -1, dx);
                    memcpy(dx + R, dy + R, (size_t)(hd - R) * sizeof(REAL));
                } else {
                    memcpy(dx, dy, (size_t)hd * sizeof(REAL));
                }
            }
    }
}

#endif
