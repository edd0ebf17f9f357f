/* Elementwise math and 8-lane reductions shared by the C kernels, included once at the top of
   a kernel file (the settings) and once inside each precision's body (REAL, IS_F64 and FN set
   by the file). */

#ifndef REAL
/* FP exceptions are never read here; without this GCC will not if-convert the clamps in exp_
   (a comparison may trap), and the loops calling it stay scalar. Values are unchanged. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <math.h>
#include <stdint.h>
#include <string.h>

#else

/* exp in float as Cephes' expf does it (2^n times a degree-6 polynomial on [-ln2/2, ln2/2],
   ~1 ulp), written so that the loops calling it vectorise; libm's expf would be one call per
   element. Inputs are clamped to [-87, 88.7]: sigmoid and silu need no more
   (exp(-87) < 2^-125). */
static inline REAL FN(exp_)(REAL v) {
#if IS_F64
    return exp(v);
#else
    v = v < -87.0f ? -87.0f : v;
    v = v > 88.7f ? 88.7f : v;
    /* n = round(v / ln2): adding and subtracting 1.5 * 2^23 rounds to an integer */
    float n = (v * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = v - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &e, sizeof scale);
    return p * scale;
#endif
}

/* sigmoid(v) = 1 / (1 + exp(-v)) */
static inline REAL FN(sigmoid_)(REAL v) { return 1 / (1 + FN(exp_)(-v)); }

/* sum of v[0..n) in 8 lanes, then the lanes in order (vectorises without reassociation) */
static inline REAL FN(sum8_)(const REAL *restrict v, int64_t n) {
    REAL acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += v[i + k];
    REAL s = 0;
    for (int k = 0; k < 8; k++) s += acc[k];
    for (; i < n; i++) s += v[i];
    return s;
}

/* max of v[0..n), n >= 1, in 8 lanes (vectorises) */
static inline REAL FN(max8_)(const REAL *restrict v, int64_t n) {
    REAL acc[8];
    for (int k = 0; k < 8; k++) acc[k] = v[0];
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] = v[i + k] > acc[k] ? v[i + k] : acc[k];
    REAL m = acc[0];
    for (int k = 1; k < 8; k++) m = acc[k] > m ? acc[k] : m;
    for (; i < n; i++) m = v[i] > m ? v[i] : m;
    return m;
}

#endif
