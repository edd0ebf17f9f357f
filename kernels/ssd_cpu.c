/* The Mamba-2 SSD scan as its plain recurrence, one (row, head) at a time, forward and backward.

   Per head h of group g = h / R, position t of row b (scalar decay a_t = exp(la_t)):
       S_t = a_t S_{t-1} + B_t (dt_t x_t)^T        S: N x P, stored [n][p] so every update
       y_t = S_t^T C_t                               runs along p (contiguous in x and y)
   A document start (doc[t] != doc[t-1]) makes a_t = 0: nothing older reaches t.
   The caller passes ea = exp(la) (one vectorised pass in torch; calling exp here, once per
   position and head in each of the forward, the recomputation and the backward, cost ~10%).

   On this CPU the sequential form beats the chunked matmul form at byte-level widths
   (P, N <= 64): each step is ~3 N P multiply-adds on a state that stays in L1, with no Q x Q
   matrices and no passes over (b, L, H, P) temporaries. The backward runs the adjoint
   recurrence G_t = C_t dy_t^T + a_{t+1} G_{t+1} from the end; the states it needs are
   recomputed block by block from checkpoints the forward saved every K positions.

   REAL (float or double) and SUFFIX are set by cpu_precisions.h, which includes this file
   once per precision. Reductions keep a fixed order (lanes of 8, then summed in order):
   results do not depend on threads or on how the caller splits the (row, head) range. */

#ifndef REAL  /* the file itself: include the body once per precision */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#define LANES 8
#define BODY "ssd_cpu.c"
#include "cpu_precisions.h"

#else  /* the body, for one REAL */

/* sum_p u[p] v[p] with LANES partial sums (vectorisable without reassociation flags) */
static inline REAL FN(dot_)(const REAL *u, const REAL *v, int64_t n) {
    REAL acc[LANES] = {0};
    int64_t p = 0;
    for (; p + LANES <= n; p += LANES)
        for (int k = 0; k < LANES; k++) acc[k] += u[p + k] * v[p + k];
    REAL s = 0;
    for (int k = 0; k < LANES; k++) s += acc[k];
    for (; p < n; p++) s += u[p] * v[p];
    return s;
}

/* The vector path: P a multiple of the vector width VL (8 floats or 4 doubles in 32 bytes),
   1, 2, 4 or 8 vectors wide; PV = P / VL is a literal at each call site, so the loops over a
   row of the state unroll into registers. Other widths take the scalar loops further down. */
#define VL ((int64_t)(32 / sizeof(REAL)))
typedef REAL FN(V_) __attribute__((vector_size(32), aligned(sizeof(REAL))));
#define V FN(V_)
#define LD(ptr) (*(const V *)(ptr))
#define ST(ptr, v) (*(V *)(ptr) = (v))

static inline REAL FN(hsum_)(V v) {
    REAL s = 0;
    for (int k = 0; k < VL; k++) s += v[k];
    return s;
}

/* VL vectors -> one vector of their lane sums, r[j] = sum_k v[j][k], by pairwise adds of
   shuffled halves (what AVX's hadd + vperm2f128 do): ~2 instructions per sum instead of ~7 */
static inline V FN(hsums_)(const V *v) {
#if IS_F64
    V x = __builtin_shufflevector(v[0], v[1], 0, 4, 2, 6)
        + __builtin_shufflevector(v[0], v[1], 1, 5, 3, 7);
    V y = __builtin_shufflevector(v[2], v[3], 0, 4, 2, 6)
        + __builtin_shufflevector(v[2], v[3], 1, 5, 3, 7);
    return __builtin_shufflevector(x, y, 0, 1, 4, 5) + __builtin_shufflevector(x, y, 2, 3, 6, 7);
#else
    V h[4];
    for (int k = 0; k < 4; k++)
        h[k] = __builtin_shufflevector(v[2 * k], v[2 * k + 1], 0, 2, 8, 10, 4, 6, 12, 14)
             + __builtin_shufflevector(v[2 * k], v[2 * k + 1], 1, 3, 9, 11, 5, 7, 13, 15);
    V x = __builtin_shufflevector(h[0], h[1], 0, 2, 8, 10, 4, 6, 12, 14)
        + __builtin_shufflevector(h[0], h[1], 1, 3, 9, 11, 5, 7, 13, 15);
    V y = __builtin_shufflevector(h[2], h[3], 0, 2, 8, 10, 4, 6, 12, 14)
        + __builtin_shufflevector(h[2], h[3], 1, 3, 9, 11, 5, 7, 13, 15);
    return __builtin_shufflevector(x, y, 0, 1, 2, 3, 8, 9, 10, 11)
         + __builtin_shufflevector(x, y, 4, 5, 6, 7, 12, 13, 14, 15);
#endif
}

/* a_t of row b: 0 where a document starts (nothing older reaches t), else exp(la_t) */
static inline REAL FN(decay_)(const int64_t *doc, const REAL *ea, int64_t b, int64_t L,
                              int64_t t, int64_t row) {
    return (t > 0 && doc[b * L + t] != doc[b * L + t - 1]) ? 0 : ea[row];
}

/* The scalar path's steps, same contract as fwd_steps_ below (any P). */
static void FN(scalar_fwd_steps_)(
        int64_t P, int64_t t0, int64_t t1, int64_t b, int64_t h, int64_t g, int64_t L,
        int64_t H, int64_t N, const REAL *x, const REAL *dt, const REAL *ea,
        const REAL *Bm, const REAL *Cm, int64_t bc_sb, int64_t bc_sl, const int64_t *doc,
        REAL *S, REAL *y, REAL *hist, REAL Dh) {
    for (int64_t t = t0; t < t1; t++) {
        const int64_t row = (b * L + t) * H + h;
        const REAL a = FN(decay_)(doc, ea, b, L, t, row), d = dt[row];
        const REAL *xt = x + row * P;
        const REAL *Bt = Bm + b * bc_sb + t * bc_sl + g * N;
        const REAL *Ct = Cm + b * bc_sb + t * bc_sl + g * N;
        REAL *out = hist ? hist + (t - t0) * N * P : S;
        REAL *yt = y ? y + row * P : NULL;
        if (yt)
            for (int64_t p = 0; p < P; p++) yt[p] = Dh * xt[p];
        for (int64_t n = 0; n < N; n++) {
            const REAL bn = Bt[n] * d, cn = Ct[n];
            for (int64_t p = 0; p < P; p++) {
                out[n * P + p] = a * S[n * P + p] + bn * xt[p];
                if (yt) yt[p] += cn * out[n * P + p];
            }
        }
        if (hist) S = out;
    }
}

static inline __attribute__((always_inline)) void FN(fwd_steps_)(
        const int PV, int64_t t0, int64_t t1, int64_t b, int64_t h, int64_t g, int64_t L,
        int64_t H, int64_t N, const REAL *x, const REAL *dt, const REAL *ea,
        const REAL *Bm, const REAL *Cm, int64_t bc_sb, int64_t bc_sl, const int64_t *doc,
        REAL *S, REAL *y, REAL *hist, REAL Dh) {
    /* Steps t0 <= t < t1 from the state in S (N x P). y (may be NULL) gets the outputs, with
       the skip Dh x_t; hist (may be NULL) gets S_t after each step at hist + (t - t0) N P. */
    const int64_t P = PV * VL;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t row = (b * L + t) * H + h;
        const REAL a = FN(decay_)(doc, ea, b, L, t, row);
        const REAL d = dt[row];
        const REAL *Bt = Bm + b * bc_sb + t * bc_sl + g * N;
        const REAL *Ct = Cm + b * bc_sb + t * bc_sl + g * N;
        V xv[8], yv[8];
        for (int k = 0; k < PV; k++) { xv[k] = LD(x + row * P + k * VL); yv[k] = Dh * xv[k]; }
        REAL *out = hist ? hist + (t - t0) * N * P : S;
        for (int64_t n = 0; n < N; n++) {
            const REAL bn = Bt[n] * d, cn = Ct[n];
            for (int k = 0; k < PV; k++) {
                V sv = a * LD(S + n * P + k * VL) + bn * xv[k];
                ST(out + n * P + k * VL, sv);
                yv[k] += cn * sv;
            }
        }
        if (hist) S = out;
        if (y)
            for (int k = 0; k < PV; k++) ST(y + row * P + k * VL, yv[k]);
    }
}

static inline __attribute__((always_inline)) void FN(bwd_steps_)(
        const int PV, int64_t t0, int64_t t1, int64_t b, int64_t h, int64_t g, int64_t L,
        int64_t H, int64_t G, int64_t N, const REAL *x, const REAL *dt, const REAL *ea,
        const REAL *Bm, const REAL *Cm, int64_t bc_sb, int64_t bc_sl, const int64_t *doc,
        const REAL *hist, const REAL *dy, REAL *Gs, REAL *a_next, REAL *dx, REAL *ddt,
        REAL *dla, REAL *dB, REAL *dC, int acc, REAL Dh, REAL *dDh) {
    /* Adjoint steps t = t1-1 down to t0; hist holds S_{t0-1}, S_t0, ..., S_{t1-1}. Gs holds
       G_{t+1} unscaled and *a_next = a_{t+1}: the decay is applied as the next step reads it
       (G_t = a_{t+1} G_{t+1} + C_t dy_t^T in one multiply-add instead of a separate pass).
       dB, dC are per group: acc = 0 for the group's first head writes them, later heads add.
       The skip y += Dh x adds Dh dy to dx and sum dy.x to *dDh. */
    V dDv = {0};
    const int64_t P = PV * VL, NP = N * P;
    for (int64_t t = t1 - 1; t >= t0; t--) {
        const int64_t row = (b * L + t) * H + h, grow = (b * L + t) * G + g;
        const REAL a = FN(decay_)(doc, ea, b, L, t, row);
        const REAL d = dt[row];
        const REAL *Bt = Bm + b * bc_sb + t * bc_sl + g * N;
        const REAL *Ct = Cm + b * bc_sb + t * bc_sl + g * N;
        const REAL *Sp = hist + (t - t0) * NP, *Sc = Sp + NP;
        const REAL an = *a_next;
        V xv[8], dyv[8], uv[8], duv[8], dav = {0};
        for (int k = 0; k < PV; k++) {
            xv[k] = LD(x + row * P + k * VL);
            dyv[k] = LD(dy + row * P + k * VL);
            uv[k] = d * xv[k];
            duv[k] = (V){0};
        }
        for (int64_t n0 = 0; n0 < N; n0 += VL) {
            const int nt = (N - n0 < VL) ? (int)(N - n0) : (int)VL;
            V cvs[VL], bvs[VL];  /* per n: dC's and dB's products, summed over lanes below */
            for (int j = 0; j < nt; j++) {
                const int64_t n = n0 + j;
                const REAL cn = Ct[n], bn = Bt[n];
                V cv = {0}, bv = {0};
                for (int k = 0; k < PV; k++) {
                    const int64_t o = n * P + k * VL;
                    cv += LD(Sc + o) * dyv[k];
                    V gv = an * LD(Gs + o) + cn * dyv[k];
                    duv[k] += bn * gv;
                    bv += gv * uv[k];
                    dav += gv * LD(Sp + o);
                    ST(Gs + o, gv);
                }
                cvs[j] = cv;
                bvs[j] = bv;
            }
            REAL *dCt = dC + grow * N + n0, *dBt = dB + grow * N + n0;
            if (nt == VL) {
                const V zero = {0};
                ST(dCt, (acc ? LD(dCt) : zero) + FN(hsums_)(cvs));
                ST(dBt, (acc ? LD(dBt) : zero) + FN(hsums_)(bvs));
            } else {
                for (int j = 0; j < nt; j++) {
                    dCt[j] = (acc ? dCt[j] : 0) + FN(hsum_)(cvs[j]);
                    dBt[j] = (acc ? dBt[j] : 0) + FN(hsum_)(bvs[j]);
                }
            }
        }
        dla[row] = a * FN(hsum_)(dav);
        *a_next = a;
        V tv = {0};
        for (int k = 0; k < PV; k++) {
            ST(dx + row * P + k * VL, d * duv[k] + Dh * dyv[k]);
            tv += duv[k] * xv[k];
            dDv += dyv[k] * xv[k];
        }
        ddt[row] = FN(hsum_)(tv);
    }
    *dDh += FN(hsum_)(dDv);
}

/* Shapes: x, y, dy, dx (b, L, H, P) contiguous; dt, ea (= exp(la)), ddt, dla (b, L, H)
   contiguous; B, C (b, L, G, N) with strides (sb, sl, N, 1) given as bc_sb, bc_sl (B and C
   alike);
   dB, dC (b, L, G, N) contiguous (the backward's items are (row, group), heads inside);
   doc (b, L) int64; final, dfinal (b, H, P, N) contiguous; ckpt (b, H, nblocks, N, P);
   D (H,) the skip y_t += D_h x_t; dD (b, H). */

/* vectors per row of the state for the vector path (1, 2, 4 or 8), else 0: the scalar path */
static int FN(pv_)(int64_t P) {
    const int64_t pv = P / VL;
    return (P % VL == 0 && (pv == 1 || pv == 2 || pv == 4 || pv == 8)) ? (int)pv : 0;
}

#define SWITCH_PV(PV, CALL)                                                                   \
    switch (PV) {                                                                              \
    case 1: CALL(1); break; case 2: CALL(2); break; case 4: CALL(4); break;                   \
    default: CALL(8); break;                                                                   \
    }

/* Forward for flat (row, head) items lo <= i < hi. */
void FN(ssd_fwd_)(int64_t lo, int64_t hi, int64_t L, int64_t H, int64_t P, int64_t G,
                  int64_t N, int64_t K, const REAL *x, const REAL *dt, const REAL *ea,
                  const REAL *Bm, const REAL *Cm, int64_t bc_sb, int64_t bc_sl,
                  const int64_t *doc, REAL *y, REAL *final, REAL *ckpt, const REAL *D) {
    const int64_t R = H / G, nblocks = (L + K - 1) / K, NP = N * P;
    const int PV = FN(pv_)(P);
    REAL *S = malloc(sizeof(REAL) * NP);
    for (int64_t i = lo; i < hi; i++) {
        const int64_t b = i / H, h = i % H, g = h / R;
        memset(S, 0, sizeof(REAL) * NP);
        for (int64_t c = 0; c < nblocks; c++) {
            const int64_t t0 = c * K, t1 = (t0 + K < L) ? t0 + K : L;
            memcpy(ckpt + (i * nblocks + c) * NP, S, sizeof(REAL) * NP);
            if (PV) {
#define FWD(pv) FN(fwd_steps_)(pv, t0, t1, b, h, g, L, H, N, x, dt, ea, Bm, Cm, bc_sb, bc_sl, \
                               doc, S, y, NULL, D[h])
                SWITCH_PV(PV, FWD)
#undef FWD
                continue;
            }
            FN(scalar_fwd_steps_)(P, t0, t1, b, h, g, L, H, N, x, dt, ea, Bm, Cm, bc_sb, bc_sl,
                                  doc, S, y, NULL, D[h]);
        }
        REAL *fin = final + i * NP;  /* (P, N) from S's (N, P) */
        for (int64_t n = 0; n < N; n++)
            for (int64_t p = 0; p < P; p++) fin[p * N + n] = S[n * P + p];
    }
    free(S);
}

/* Backward for items lo <= i < hi; dfinal may be NULL (the final state was not used). */
void FN(ssd_bwd_)(int64_t lo, int64_t hi, int64_t L, int64_t H, int64_t P, int64_t G,
                  int64_t N, int64_t K, const REAL *x, const REAL *dt, const REAL *ea,
                  const REAL *Bm, const REAL *Cm, int64_t bc_sb, int64_t bc_sl,
                  const int64_t *doc, const REAL *ckpt, const REAL *dy, const REAL *dfinal,
                  REAL *dx, REAL *ddt, REAL *dla, REAL *dB, REAL *dC, const REAL *D,
                  REAL *dD) {
    /* items lo <= i < hi are (row, group) pairs; the group's heads run in order inside */
    const int64_t R = H / G, nblocks = (L + K - 1) / K, NP = N * P;
    const int PV = FN(pv_)(P);
    REAL *buf = malloc(sizeof(REAL) * (K + 1) * NP);  /* S_{t0-1}, S_t0, ..., of one block */
    REAL *Gs = malloc(sizeof(REAL) * NP);             /* adjoint dLoss/dS_t, (N, P) */
    REAL *u = malloc(sizeof(REAL) * P), *du = malloc(sizeof(REAL) * P);
    for (int64_t ig = lo * R; ig < hi * R; ig++) {
        const int64_t b = ig / H, h = ig % H, g = h / R, i = ig;
        const int acc = (h % R) != 0;
        if (dfinal) {
            const REAL *fin = dfinal + i * NP;
            for (int64_t n = 0; n < N; n++)
                for (int64_t p = 0; p < P; p++) Gs[n * P + p] = fin[p * N + n];
        } else {
            memset(Gs, 0, sizeof(REAL) * NP);
        }
        REAL a_next = 1;  /* the vector path's pending decay of Gs */
        REAL dDh = 0;
        for (int64_t c = nblocks - 1; c >= 0; c--) {
            const int64_t t0 = c * K, t1 = (t0 + K < L) ? t0 + K : L;
            memcpy(buf, ckpt + (i * nblocks + c) * NP, sizeof(REAL) * NP);
            if (PV) {
#define REFWD(pv) FN(fwd_steps_)(pv, t0, t1, b, h, g, L, H, N, x, dt, ea, Bm, Cm, bc_sb, \
                                 bc_sl, doc, buf, NULL, buf + NP, 0)
#define BWD(pv) FN(bwd_steps_)(pv, t0, t1, b, h, g, L, H, G, N, x, dt, ea, Bm, Cm, bc_sb, \
                               bc_sl, doc, buf, dy, Gs, &a_next, dx, ddt, dla, dB, dC, acc, D[h], &dDh)
                SWITCH_PV(PV, REFWD)
                SWITCH_PV(PV, BWD)
#undef REFWD
#undef BWD
                continue;
            }
            /* scalar path: recompute the block's states, buf[k] = S_{t0+k-1} */
            FN(scalar_fwd_steps_)(P, t0, t1, b, h, g, L, H, N, x, dt, ea, Bm, Cm, bc_sb, bc_sl,
                                  doc, buf, NULL, buf + NP, 0);
            for (int64_t t = t1 - 1; t >= t0; t--) {
                const int64_t row = (b * L + t) * H + h;
                const REAL a = FN(decay_)(doc, ea, b, L, t, row);
                const REAL d = dt[row];
                const REAL *xt = x + row * P, *dyt = dy + row * P;
                const REAL *Bt = Bm + b * bc_sb + t * bc_sl + g * N;
                const REAL *Ct = Cm + b * bc_sb + t * bc_sl + g * N;
                const REAL *Sp = buf + (t - t0) * NP, *Sc = buf + (t - t0 + 1) * NP;
                for (int64_t p = 0; p < P; p++) { u[p] = d * xt[p]; du[p] = 0; }
                REAL da = 0;
                for (int64_t n = 0; n < N; n++) {
                    REAL *Gn = Gs + n * P;
                    const REAL cn = Ct[n], bn = Bt[n];
                    const int64_t gn = ((b * L + t) * G + g) * N + n;
                    dC[gn] = (acc ? dC[gn] : 0) + FN(dot_)(Sc + n * P, dyt, P);
                    for (int64_t p = 0; p < P; p++) {
                        Gn[p] += cn * dyt[p];
                        du[p] += bn * Gn[p];
                    }
                    dB[gn] = (acc ? dB[gn] : 0) + FN(dot_)(Gn, u, P);
                    da += FN(dot_)(Gn, Sp + n * P, P);
                    for (int64_t p = 0; p < P; p++) Gn[p] *= a;
                }
                dla[row] = a * da;
                for (int64_t p = 0; p < P; p++) dx[row * P + p] = d * du[p] + D[h] * dyt[p];
                ddt[row] = FN(dot_)(du, xt, P);
                dDh += FN(dot_)(dyt, xt, P);
            }
        }
        dD[b * H + h] = dDh;  /* per row; the caller sums the rows */
    }
    free(buf); free(Gs); free(u); free(du);
}

#undef V
#undef VL
#undef LD
#undef ST
#undef SWITCH_PV
#endif
