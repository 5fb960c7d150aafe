/*
moescope - core/Vec.c
Vector kernels with function multiversioning (GCC target_clones). optimize("O3") turns
on the vectorizer's full cost model for these loops only, and -fno-trapping-math lets it
if-convert their branches; neither changes a result (no fast-math: nothing is
reassociated; the float lanes of the reductions are explicit in the code).
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/Vec.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define KERNEL                                                                                \
    __attribute__((target_clones("arch=x86-64-v3", "default"),                                \
                   optimize("O3", "-fno-trapping-math")))
#else
#define KERNEL
#endif
#define INLINE static inline __attribute__((always_inline))

/* Cephes-style expf: x = n ln2 + r, |r| <= ln2 / 2, exp(r) by a degree-6 polynomial. */
INLINE float expPoly(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    /* round to nearest by the 1.5 * 2^23 trick (vectorizable, unlike roundf) */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* log(1 + e) for e in [0, 1]: 2 atanh(s), s = e / (2 + e) <= 1/3 (no cancellation). */
INLINE float log1pSmall(float e) {
    float s = e / (2.0f + e), s2 = s * s;
    float p = 1.0f / 15;
    p = p * s2 + 1.0f / 13;
    p = p * s2 + 1.0f / 11;
    p = p * s2 + 1.0f / 9;
    p = p * s2 + 1.0f / 7;
    p = p * s2 + 1.0f / 5;
    p = p * s2 + 1.0f / 3;
    return 2.0f * s * (1.0f + s2 * p);
}

float Vec_expf(float x) {
    return expPoly(x);
}

KERNEL void Vec_axpy(int n, float a, const float *restrict x, float *restrict y) {
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

KERNEL double Vec_axpyNorm(int n, float a, const float *restrict x, float *restrict y) {
    float acc[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) {
            float v = y[i + k] + a * x[i + k];
            y[i + k] = v;
            acc[k] += v * v;
        }
    double s = 0.0;
    for (int k = 0; k < 16; k++)
        s += acc[k];
    for (; i < n; i++) {
        y[i] += a * x[i];
        s += (double)y[i] * y[i];
    }
    return s;
}

KERNEL void Vec_scale(int n, float a, const float *restrict x, float *restrict y) {
    for (int i = 0; i < n; i++)
        y[i] = a * x[i];
}

KERNEL float Vec_max(long n, const float *x) {
    float acc[16];
    for (int k = 0; k < 16; k++)
        acc[k] = -INFINITY;
    long i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++)
            acc[k] = x[i + k] > acc[k] ? x[i + k] : acc[k];
    float mx = -INFINITY;
    for (int k = 0; k < 16; k++)
        mx = acc[k] > mx ? acc[k] : mx;
    for (; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    return mx;
}

KERNEL double Vec_sumSquares(int n, const float *x) {
    float acc[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++)
            acc[k] += x[i + k] * x[i + k];
    double s = 0.0;
    for (int k = 0; k < 16; k++)
        s += acc[k];
    for (; i < n; i++)
        s += (double)x[i] * x[i];
    return s;
}

KERNEL double Vec_sum(long n, const float *x) {
    float acc[16] = {0};
    long i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++)
            acc[k] += x[i + k];
    double s = 0.0;
    for (int k = 0; k < 16; k++)
        s += acc[k];
    for (; i < n; i++)
        s += x[i];
    return s;
}

KERNEL void Vec_tanh(float *v, long n) {
    for (long i = 0; i < n; i++) {
        float x = v[i], ax = fabsf(x), x2 = x * x;
        float t = expPoly(-2.0f * ax);
        float y = (1.0f - t) / (1.0f + t);
        /* near 0, 1 - t cancels: the odd series is exact to float there */
        float small = ax * (1.0f + x2 * (-1.0f / 3 + x2 * (2.0f / 15 - x2 * (17.0f / 315))));
        y = ax < 0.0625f ? small : y;
        v[i] = x < 0.0f ? -y : y;
    }
}

KERNEL void Vec_bceWithLogits(long n, const float *restrict z, const float *restrict y,
                              float yscale, float gscale, float *restrict loss,
                              float *restrict grad) {
    for (long i = 0; i < n; i++) {
        float zi = z[i], t = y[i] * yscale;
        float e = expPoly(-fabsf(zi));
        float inv = 1.0f / (1.0f + e);
        float sig = zi >= 0.0f ? inv : e * inv;
        grad[i] = (sig - t) * gscale;
        loss[i] = (zi > 0.0f ? zi : 0.0f) - zi * t + log1pSmall(e);
    }
}

/* Adam needs sqrt, and GCC keeps errno-setting sqrtf calls scalar inside target clones
   (the optimize attribute's -fno-math-errno is lost there), so the AVX2 body is written
   with intrinsics and picked at run time. */
static void adamScalar(long from, long n, float *p, const float *g, float *m, float *v,
                       float b1, float b2, float step, float invSqrtBc2, float eps) {
    for (long i = from; i < n; i++) {
        float gi = g[i];
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= step * mi / (sqrtf(vi) * invSqrtBc2 + eps);
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2,fma"))) static long adamAvx2(long n, float *p, const float *g,
                                                          float *m, float *v, float b1, float b2,
                                                          float step, float invSqrtBc2,
                                                          float eps) {
    __m256 vb1 = _mm256_set1_ps(b1), vc1 = _mm256_set1_ps(1.0f - b1);
    __m256 vb2 = _mm256_set1_ps(b2), vc2 = _mm256_set1_ps(1.0f - b2);
    __m256 vstep = _mm256_set1_ps(step), vs = _mm256_set1_ps(invSqrtBc2);
    __m256 veps = _mm256_set1_ps(eps);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gi = _mm256_loadu_ps(g + i);
        __m256 mi = _mm256_add_ps(_mm256_mul_ps(vb1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(vc1, gi));
        __m256 vi = _mm256_add_ps(_mm256_mul_ps(vb2, _mm256_loadu_ps(v + i)),
                                  _mm256_mul_ps(_mm256_mul_ps(vc2, gi), gi));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        __m256 den = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(vi), vs), veps);
        __m256 upd = _mm256_div_ps(_mm256_mul_ps(vstep, mi), den);
        _mm256_storeu_ps(p + i, _mm256_sub_ps(_mm256_loadu_ps(p + i), upd));
    }
    return i;
}
#endif

void Vec_adam(long n, float *p, const float *g, float *m, float *v, float b1, float b2,
              float step, float invSqrtBc2, float eps) {
    long done = 0;
#if defined(__GNUC__) && defined(__x86_64__)
    if (__builtin_cpu_supports("avx2"))
        done = adamAvx2(n, p, g, m, v, b1, b2, step, invSqrtBc2, eps);
#endif
    adamScalar(done, n, p, g, m, v, b1, b2, step, invSqrtBc2, eps);
}
