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
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#endif

#include "util/XUtils.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define KERNEL                                                                                \
    __attribute__((target_clones("arch=x86-64-v3", "default"),                                \
                   optimize("O3", "-fno-trapping-math")))
#else
#define KERNEL
#endif
/* KERNEL without contracting a * b + c into one rounding: the same bits as the baseline
   build's separate multiply and add */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define KERNEL_NOFMA                                                                          \
    __attribute__((target_clones("arch=x86-64-v3", "default"),                                \
                   optimize("O3", "-fno-trapping-math", "-ffp-contract=off")))
#else
#define KERNEL_NOFMA
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

KERNEL_NOFMA void Vec_tanhGrad(int n, const float *restrict a, float s, float *restrict g) {
    for (int i = 0; i < n; i++)
        g[i] = g[i] * (1.0f - a[i] * a[i]) * s;
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

#if defined(__GNUC__) && defined(__x86_64__)
/* For each 8-bit mask, the positions of its set bits as bytes, lowest first. */
static const uint64_t setBitPositions[256] = {
    0x0000000000000000ull, 0x0000000000000000ull, 0x0000000000000001ull, 0x0000000000000100ull,
    0x0000000000000002ull, 0x0000000000000200ull, 0x0000000000000201ull, 0x0000000000020100ull,
    0x0000000000000003ull, 0x0000000000000300ull, 0x0000000000000301ull, 0x0000000000030100ull,
    0x0000000000000302ull, 0x0000000000030200ull, 0x0000000000030201ull, 0x0000000003020100ull,
    0x0000000000000004ull, 0x0000000000000400ull, 0x0000000000000401ull, 0x0000000000040100ull,
    0x0000000000000402ull, 0x0000000000040200ull, 0x0000000000040201ull, 0x0000000004020100ull,
    0x0000000000000403ull, 0x0000000000040300ull, 0x0000000000040301ull, 0x0000000004030100ull,
    0x0000000000040302ull, 0x0000000004030200ull, 0x0000000004030201ull, 0x0000000403020100ull,
    0x0000000000000005ull, 0x0000000000000500ull, 0x0000000000000501ull, 0x0000000000050100ull,
    0x0000000000000502ull, 0x0000000000050200ull, 0x0000000000050201ull, 0x0000000005020100ull,
    0x0000000000000503ull, 0x0000000000050300ull, 0x0000000000050301ull, 0x0000000005030100ull,
    0x0000000000050302ull, 0x0000000005030200ull, 0x0000000005030201ull, 0x0000000503020100ull,
    0x0000000000000504ull, 0x0000000000050400ull, 0x0000000000050401ull, 0x0000000005040100ull,
    0x0000000000050402ull, 0x0000000005040200ull, 0x0000000005040201ull, 0x0000000504020100ull,
    0x0000000000050403ull, 0x0000000005040300ull, 0x0000000005040301ull, 0x0000000504030100ull,
    0x0000000005040302ull, 0x0000000504030200ull, 0x0000000504030201ull, 0x0000050403020100ull,
    0x0000000000000006ull, 0x0000000000000600ull, 0x0000000000000601ull, 0x0000000000060100ull,
    0x0000000000000602ull, 0x0000000000060200ull, 0x0000000000060201ull, 0x0000000006020100ull,
    0x0000000000000603ull, 0x0000000000060300ull, 0x0000000000060301ull, 0x0000000006030100ull,
    0x0000000000060302ull, 0x0000000006030200ull, 0x0000000006030201ull, 0x0000000603020100ull,
    0x0000000000000604ull, 0x0000000000060400ull, 0x0000000000060401ull, 0x0000000006040100ull,
    0x0000000000060402ull, 0x0000000006040200ull, 0x0000000006040201ull, 0x0000000604020100ull,
    0x0000000000060403ull, 0x0000000006040300ull, 0x0000000006040301ull, 0x0000000604030100ull,
    0x0000000006040302ull, 0x0000000604030200ull, 0x0000000604030201ull, 0x0000060403020100ull,
    0x0000000000000605ull, 0x0000000000060500ull, 0x0000000000060501ull, 0x0000000006050100ull,
    0x0000000000060502ull, 0x0000000006050200ull, 0x0000000006050201ull, 0x0000000605020100ull,
    0x0000000000060503ull, 0x0000000006050300ull, 0x0000000006050301ull, 0x0000000605030100ull,
    0x0000000006050302ull, 0x0000000605030200ull, 0x0000000605030201ull, 0x0000060503020100ull,
    0x0000000000060504ull, 0x0000000006050400ull, 0x0000000006050401ull, 0x0000000605040100ull,
    0x0000000006050402ull, 0x0000000605040200ull, 0x0000000605040201ull, 0x0000060504020100ull,
    0x0000000006050403ull, 0x0000000605040300ull, 0x0000000605040301ull, 0x0000060504030100ull,
    0x0000000605040302ull, 0x0000060504030200ull, 0x0000060504030201ull, 0x0006050403020100ull,
    0x0000000000000007ull, 0x0000000000000700ull, 0x0000000000000701ull, 0x0000000000070100ull,
    0x0000000000000702ull, 0x0000000000070200ull, 0x0000000000070201ull, 0x0000000007020100ull,
    0x0000000000000703ull, 0x0000000000070300ull, 0x0000000000070301ull, 0x0000000007030100ull,
    0x0000000000070302ull, 0x0000000007030200ull, 0x0000000007030201ull, 0x0000000703020100ull,
    0x0000000000000704ull, 0x0000000000070400ull, 0x0000000000070401ull, 0x0000000007040100ull,
    0x0000000000070402ull, 0x0000000007040200ull, 0x0000000007040201ull, 0x0000000704020100ull,
    0x0000000000070403ull, 0x0000000007040300ull, 0x0000000007040301ull, 0x0000000704030100ull,
    0x0000000007040302ull, 0x0000000704030200ull, 0x0000000704030201ull, 0x0000070403020100ull,
    0x0000000000000705ull, 0x0000000000070500ull, 0x0000000000070501ull, 0x0000000007050100ull,
    0x0000000000070502ull, 0x0000000007050200ull, 0x0000000007050201ull, 0x0000000705020100ull,
    0x0000000000070503ull, 0x0000000007050300ull, 0x0000000007050301ull, 0x0000000705030100ull,
    0x0000000007050302ull, 0x0000000705030200ull, 0x0000000705030201ull, 0x0000070503020100ull,
    0x0000000000070504ull, 0x0000000007050400ull, 0x0000000007050401ull, 0x0000000705040100ull,
    0x0000000007050402ull, 0x0000000705040200ull, 0x0000000705040201ull, 0x0000070504020100ull,
    0x0000000007050403ull, 0x0000000705040300ull, 0x0000000705040301ull, 0x0000070504030100ull,
    0x0000000705040302ull, 0x0000070504030200ull, 0x0000070504030201ull, 0x0007050403020100ull,
    0x0000000000000706ull, 0x0000000000070600ull, 0x0000000000070601ull, 0x0000000007060100ull,
    0x0000000000070602ull, 0x0000000007060200ull, 0x0000000007060201ull, 0x0000000706020100ull,
    0x0000000000070603ull, 0x0000000007060300ull, 0x0000000007060301ull, 0x0000000706030100ull,
    0x0000000007060302ull, 0x0000000706030200ull, 0x0000000706030201ull, 0x0000070603020100ull,
    0x0000000000070604ull, 0x0000000007060400ull, 0x0000000007060401ull, 0x0000000706040100ull,
    0x0000000007060402ull, 0x0000000706040200ull, 0x0000000706040201ull, 0x0000070604020100ull,
    0x0000000007060403ull, 0x0000000706040300ull, 0x0000000706040301ull, 0x0000070604030100ull,
    0x0000000706040302ull, 0x0000070604030200ull, 0x0000070604030201ull, 0x0007060403020100ull,
    0x0000000000070605ull, 0x0000000007060500ull, 0x0000000007060501ull, 0x0000000706050100ull,
    0x0000000007060502ull, 0x0000000706050200ull, 0x0000000706050201ull, 0x0000070605020100ull,
    0x0000000007060503ull, 0x0000000706050300ull, 0x0000000706050301ull, 0x0000070605030100ull,
    0x0000000706050302ull, 0x0000070605030200ull, 0x0000070605030201ull, 0x0007060503020100ull,
    0x0000000007060504ull, 0x0000000706050400ull, 0x0000000706050401ull, 0x0000070605040100ull,
    0x0000000706050402ull, 0x0000070605040200ull, 0x0000070605040201ull, 0x0007060504020100ull,
    0x0000000706050403ull, 0x0000070605040300ull, 0x0000070605040301ull, 0x0007060504030100ull,
    0x0000070605040302ull, 0x0007060504030200ull, 0x0007060504030201ull, 0x0706050403020100ull,
};

/* 8 at a time without a data-dependent branch: a compare mask picks the lanes' positions
   from the table, all 8 are stored (past the end of the found ones, inside idx[n] since
   c <= i) and c advances by the mask's popcount. A branch per set bit mispredicted about
   once per block on sparse rows. */
__attribute__((target("avx2,popcnt"))) static int nonzerosAvx2(int n, const float *x, int *idx,
                                                              int *count) {
    __m256 zero = _mm256_setzero_ps();
    int i = 0, c = 0;
    for (; i + 8 <= n; i += 8) {
        int m = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), zero, _CMP_NEQ_UQ));
        __m256i pos = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)setBitPositions[m]));
        _mm256_storeu_si256((__m256i *)(idx + c), _mm256_add_epi32(pos, _mm256_set1_epi32(i)));
        c += __builtin_popcount((unsigned)m);
    }
    *count = c;
    return i;
}
#endif

int Vec_nonzeros(int n, const float *x, int *idx) {
    int i = 0, c = 0;
#if defined(__GNUC__) && defined(__x86_64__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt"))
        i = nonzerosAvx2(n, x, idx, &c);
#endif
    for (; i < n; i++)
        if (x[i] != 0.0f)
            idx[c++] = i;
    return c;
}

KERNEL int Vec_countAbove(int n, const float *restrict x, float tau, int32_t *restrict count) {
    int c = 0;
    for (int i = 0; i < n; i++) {
        int32_t a = fabsf(x[i]) > tau;
        count[i] += a;
        c += a;
    }
    return c;
}

INLINE float tanhPoly(float x) {
    float ax = fabsf(x), x2 = x * x;
    float t = expPoly(-2.0f * ax);
    float y = (1.0f - t) / (1.0f + t);
    /* near 0, 1 - t cancels: the odd series is exact to float there */
    float small = ax * (1.0f + x2 * (-1.0f / 3 + x2 * (2.0f / 15 - x2 * (17.0f / 315))));
    y = ax < 0.0625f ? small : y;
    return x < 0.0f ? -y : y;
}

KERNEL void Vec_tanh(float *v, long n) {
    for (long i = 0; i < n; i++)
        v[i] = tanhPoly(v[i]);
}

KERNEL void Vec_scaleTanh(int n, float a, const float *restrict x, float *restrict y) {
    for (int i = 0; i < n; i++) {
        float v = a * x[i]; /* rounded first, as Vec_scale then Vec_tanh round it */
        y[i] = tanhPoly(v);
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
static void adamScalar(long from, long n, int parts, long gstride, float *p, const float *g,
                       float *m, float *v, float b1, float b2, float step, float invSqrtBc2,
                       float eps) {
    for (long i = from; i < n; i++) {
        float gi = g[i];
        for (int q = 1; q < parts; q++)
            gi += g[q * gstride + i];
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= step * mi / (sqrtf(vi) * invSqrtBc2 + eps);
    }
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx2,fma"))) static long
adamAvx2(long n, int parts, long gstride, float *p, const float *g, float *m, float *v, float b1,
         float b2, float step, float invSqrtBc2, float eps) {
    __m256 vb1 = _mm256_set1_ps(b1), vc1 = _mm256_set1_ps(1.0f - b1);
    __m256 vb2 = _mm256_set1_ps(b2), vc2 = _mm256_set1_ps(1.0f - b2);
    __m256 vstep = _mm256_set1_ps(step), vs = _mm256_set1_ps(invSqrtBc2);
    __m256 veps = _mm256_set1_ps(eps);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gi = _mm256_loadu_ps(g + i);
        for (int q = 1; q < parts; q++)
            gi = _mm256_add_ps(gi, _mm256_loadu_ps(g + q * gstride + i));
        __m256 mi = _mm256_add_ps(_mm256_mul_ps(vb1, _mm256_loadu_ps(m + i)),
                                  _mm256_mul_ps(vc1, gi));
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

/* ---- matrix products ----
   C = A B^T (NT) and C = A^T B (TN) share one packed kernel: panels of 6 rows of A and 16
   columns of B are packed k-major (zero-padded at the edges), and a 6 x 16 register block
   accumulates each element as one running fused sum over k = 0..K-1. Every element is
   computed the same way wherever it sits, so results do not depend on the shapes,
   blocking, chunking or threads (unlike OpenBLAS, whose sgemm changes with its thread
   count). */

enum { MR = 6, NR = 16 };

typedef struct Operand {
    const float *p;
    long ld;
    bool kMajor; /* element (row r, k) at p[k * ld + r] instead of p[r * ld + k] */
} Operand;

/* panel[k][0..w) = rows r0 .. r0 + rows of op at k, zero beyond rows. Inlined with a
   constant w so that the short copies are moves, not memcpy calls. */
INLINE void packPanel(const Operand *op, int r0, int rows, int K, int w, float *panel) {
    if (op->kMajor && rows == w) {
        for (int k = 0; k < K; k++)
            memcpy(panel + (long)k * w, op->p + k * op->ld + r0, (size_t)w * sizeof *panel);
        return;
    }
    if (op->kMajor) {
        for (int k = 0; k < K; k++)
            for (int r = 0; r < rows; r++)
                panel[(long)k * w + r] = op->p[k * op->ld + r0 + r];
    } else {
        /* read each row contiguously, write it down a column of the panel */
        for (int r = 0; r < rows; r++) {
            const float *src = op->p + (r0 + r) * op->ld;
            for (int k = 0; k < K; k++)
                panel[(long)k * w + r] = src[k];
        }
    }
    if (rows < w)
        for (int k = 0; k < K; k++)
            for (int r = rows; r < w; r++)
                panel[(long)k * w + r] = 0.0f;
}

static void kernelScalar(int K, const float *ap, const float *bp, float *c, long ldc) {
    for (int i = 0; i < MR; i++)
        for (int j = 0; j < NR; j++) {
            float s = 0.0f;
            for (int k = 0; k < K; k++)
                s += ap[k * MR + i] * bp[k * NR + j];
            c[i * ldc + j] = s;
        }
}

#if defined(__GNUC__) && defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,fma")))
#define KROW(r)                                                                               \
    do {                                                                                      \
        __m256 a_ = _mm256_broadcast_ss(ap + (r));                                            \
        c##r##0 = _mm256_fmadd_ps(a_, b0, c##r##0);                                           \
        c##r##1 = _mm256_fmadd_ps(a_, b1, c##r##1);                                           \
    } while (0)
#define KSTORE(r)                                                                             \
    do {                                                                                      \
        _mm256_storeu_ps(c + (r) * ldc, c##r##0);                                             \
        _mm256_storeu_ps(c + (r) * ldc + 8, c##r##1);                                         \
    } while (0)

/* c[6][16] (row stride ldc) = sum over k of ap[k][0..6) (outer) bp[k][0..16) */
AVX2 static void kernelAvx2(int K, const float *ap, const float *bp, float *c, long ldc) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int k = 0; k < K; k++, ap += MR, bp += NR) {
        __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
        KROW(0);
        KROW(1);
        KROW(2);
        KROW(3);
        KROW(4);
        KROW(5);
    }
    KSTORE(0);
    KSTORE(1);
    KSTORE(2);
    KSTORE(3);
    KSTORE(4);
    KSTORE(5);
}
#endif

/* A's panels, all of them: ceil(M / MR) panels of K x MR */
static void packAll(const Operand *A, int M, int K, float *ap) {
    long kk = K > 0 ? K : 1;
    for (int p = 0; p * MR < M; p++)
        packPanel(A, p * MR, M - p * MR < MR ? M - p * MR : MR, K, MR, ap + (long)p * kk * MR);
}

/* C = op(A) op(B)^T, A packed into panels here */
static void gemmPacked(int M, int N, int K, const Operand *A, const Operand *B, float *C,
                       long ldc) {
    if (M < 1 || N < 1)
        return;
    void (*kernel)(int, const float *, const float *, float *, long) = kernelScalar;
#if defined(__GNUC__) && defined(__x86_64__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        kernel = kernelAvx2;
#endif
    int panels = (M + MR - 1) / MR;
    long kk = K > 0 ? K : 1;
    float *ap = xMallocArray((size_t)panels * kk * MR, sizeof(float));
    float *bp = xMallocArray((size_t)kk * NR, sizeof(float));
    float c[MR * NR];
    packAll(A, M, K, ap);
    for (int j0 = 0; j0 < N; j0 += NR) {
        int nj = N - j0 < NR ? N - j0 : NR;
        packPanel(B, j0, nj, K, NR, bp);
        for (int p = 0; p < panels; p++) {
            int i0 = p * MR, mi = M - i0 < MR ? M - i0 : MR;
            if (mi == MR && nj == NR) {
                kernel(K, ap + (long)p * kk * MR, bp, C + i0 * ldc + j0, ldc);
                continue;
            }
            kernel(K, ap + (long)p * kk * MR, bp, c, NR);
            for (int i = 0; i < mi; i++)
                for (int j = 0; j < nj; j++)
                    C[(i0 + i) * ldc + j0 + j] = c[i * NR + j];
        }
    }
    free(ap);
    free(bp);
}

void Vec_gemmNT(int M, int N, int K, const float *A, long lda, const float *B, long ldb,
                float *C, long ldc) {
    Operand a = {.p = A, .ld = lda, .kMajor = false}, b = {.p = B, .ld = ldb, .kMajor = false};
    gemmPacked(M, N, K, &a, &b, C, ldc);
}

void Vec_gemmNN(int M, int N, int K, const float *A, long lda, const float *B, long ldb,
                float *C, long ldc) {
    Operand a = {.p = A, .ld = lda, .kMajor = false}, b = {.p = B, .ld = ldb, .kMajor = true};
    gemmPacked(M, N, K, &a, &b, C, ldc);
}

/* ---- strided products (the mlp training's) ----
   A 6 x 16 register tile reads its six A values per k straight from memory (broadcasts:
   one layout is as fast as another, so A is never copied and its rows may even be
   scattered, a minibatch's token rows read through a pointer table). B is copied in
   blocks of 256 k x 16 columns into a contiguous, zero-padded 16 KB panel that stays in
   L1 while every row group of A passes by: read in place, rows of B 2^n KB apart would
   fall into a few L1 sets and evict each other. A caller that uses one B many times can
   lay it out in such panels once (Vec_panelsPut*), and the products read them in place
   (copying B from far caches was a tenth of the mlp training's time). Each element of C
   is one fused running sum in k order, started from 0 or from C (accumulate), so the k
   blocks change no bit. */

enum { TM = 6, TN = 16, TKB = 256 };

/* A's elements: (row i, k) at rows[i][k] (rows given), else at base[i * ars + k * aks].
   Given put, gathered rows are also laid into put's panels (putK steps) from step putK0 on. */
typedef struct StridedA {
    const float *const *rows;
    const float *base;
    long ars, aks;
    float *put;
    int putK, putK0;
} StridedA;

static inline float elemA(const StridedA *a, int i, int k) {
    return a->rows ? a->rows[i][k] : a->base[i * a->ars + (long)k * a->aks];
}

/* B's elements: in panels (Vec_panelsSize's layout, K steps) when given, else (k, j) at
   base[k * ldb + j]. */
typedef struct StridedB {
    const float *panels;
    int K;
    const float *base;
    long ldb;
} StridedB;

/* c[mi][16] (+)= A rows i0.., steps k0 .. k0 + K, times the panel bp[K][16] */
static void tileScalar(int K, const StridedA *a, int i0, int mi, int k0, const float *bp,
                       float *c, long ldc, bool acc) {
    for (int i = 0; i < mi; i++)
        for (int j = 0; j < TN; j++) {
            float s = acc ? c[i * ldc + j] : 0.0f;
            for (int k = 0; k < K; k++)
                s += elemA(a, i0 + i, k0 + k) * bp[k * TN + j];
            c[i * ldc + j] = s;
        }
}

#if defined(__GNUC__) && defined(__x86_64__)
#define TROW(r, x)                                                                            \
    do {                                                                                      \
        __m256 a_ = _mm256_broadcast_ss(x);                                                   \
        c##r##0 = _mm256_fmadd_ps(a_, b0, c##r##0);                                           \
        c##r##1 = _mm256_fmadd_ps(a_, b1, c##r##1);                                           \
    } while (0)
#define TLOAD(r)                                                                              \
    do {                                                                                      \
        c##r##0 = acc ? _mm256_loadu_ps(c + (r) * ldc) : _mm256_setzero_ps();                 \
        c##r##1 = acc ? _mm256_loadu_ps(c + (r) * ldc + 8) : _mm256_setzero_ps();             \
    } while (0)
#define TSTART                                                                                \
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;                        \
    TLOAD(0);                                                                                 \
    TLOAD(1);                                                                                 \
    TLOAD(2);                                                                                 \
    TLOAD(3);                                                                                 \
    TLOAD(4);                                                                                 \
    TLOAD(5)
#define TEND                                                                                  \
    KSTORE(0);                                                                                \
    KSTORE(1);                                                                                \
    KSTORE(2);                                                                                \
    KSTORE(3);                                                                                \
    KSTORE(4);                                                                                \
    KSTORE(5)

/* c[6][16] (+)= sum over k < K of p_r[k * aks] (outer) bp[k][0..16) */
AVX2 static void tileRows(int K, const float *const p[TM], long aks, const float *bp, float *c,
                          long ldc, bool acc) {
    TSTART;
    const float *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3], *p4 = p[4], *p5 = p[5];
    for (long k = 0, o = 0; k < K; k++, o += aks, bp += TN) {
        __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
        TROW(0, p0 + o);
        TROW(1, p1 + o);
        TROW(2, p2 + o);
        TROW(3, p3 + o);
        TROW(4, p4 + o);
        TROW(5, p5 + o);
    }
    TEND;
}

/* tileRows for the first mi rows only (edge tiles): the absent rows cost nothing */
AVX2 INLINE void tileFew(const int mi, int K, const float *const p[TM], long aks, const float *bp,
                    float *c, long ldc, bool acc) {
    __m256 s0[TM], s1[TM];
#pragma GCC unroll 6
    for (int r = 0; r < mi; r++) {
        s0[r] = acc ? _mm256_loadu_ps(c + r * ldc) : _mm256_setzero_ps();
        s1[r] = acc ? _mm256_loadu_ps(c + r * ldc + 8) : _mm256_setzero_ps();
    }
    for (long k = 0, o = 0; k < K; k++, o += aks, bp += TN) {
        __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
#pragma GCC unroll 6
        for (int r = 0; r < mi; r++) {
            __m256 a_ = _mm256_broadcast_ss(p[r] + o);
            s0[r] = _mm256_fmadd_ps(a_, b0, s0[r]);
            s1[r] = _mm256_fmadd_ps(a_, b1, s1[r]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < mi; r++) {
        _mm256_storeu_ps(c + r * ldc, s0[r]);
        _mm256_storeu_ps(c + r * ldc + 8, s1[r]);
    }
}

#define TILE_FEW(n)                                                                           \
    AVX2 static void tileRows##n(int K, const float *const p[TM], long aks, const float *bp,   \
                                 float *c, long ldc, bool acc) {                              \
        tileFew(n, K, p, aks, bp, c, ldc, acc);                                               \
    }
TILE_FEW(1)
TILE_FEW(2)
TILE_FEW(3)
TILE_FEW(4)
TILE_FEW(5)

typedef void (*TileFn)(int, const float *const *, long, const float *, float *, long, bool);
static const TileFn tileRowsFor[TM + 1] = {NULL,       tileRows1, tileRows2, tileRows3,
                                           tileRows4, tileRows5, tileRows};

static bool haveAvx2(void) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
static bool haveAvx2(void) {
    return false;
}
#endif

/* One mi x nj tile (mi <= 6, nj <= 16) of C over steps k0 .. k0 + K with B's panel bp: tiles
   of 16 columns straight into C, narrower ones through a 6 x 16 buffer (absent columns
   multiply the panel's zero padding and are dropped; so are absent rows, which repeat row
   i0 where the kernel has no variant with fewer rows). */
static void tile(int K, const StridedA *a, int i0, int mi, int k0, const float *bp, int nj,
                 float *C, long ldc, bool acc, bool avx2) {
    bool full = (mi == TM || avx2) && nj == TN;
    float buf[TM * TN];
    float *c = full ? C : buf;
    long ldcT = full ? ldc : TN;
    if (!full && acc)
        for (int i = 0; i < mi; i++)
            memcpy(buf + i * TN, C + i * ldc, (size_t)nj * sizeof *buf);
    if (!avx2) {
        tileScalar(K, a, i0, mi, k0, bp, c, ldcT, acc);
    } else {
#if defined(__GNUC__) && defined(__x86_64__)
        const float *p[TM];
        for (int r = 0; r < TM; r++) {
            int i = i0 + (r < mi ? r : 0);
            p[r] = a->rows ? a->rows[i] + k0 : a->base + i * a->ars + (long)k0 * a->aks;
        }
        tileRowsFor[mi](K, p, a->rows ? 1 : a->aks, bp, c, ldcT, acc);
#endif
    }
    if (!full)
        for (int i = 0; i < mi; i++)
            memcpy(C + i * ldc, buf + i * TN, (size_t)nj * sizeof *buf);
}

#if defined(__GNUC__) && defined(__x86_64__)
/* d[c * ldd + r] = s[r * lds + c] for an 8 x 8 block */
AVX2 INLINE void transpose8(const float *s, long lds, float *d, long ldd) {
    __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + lds);
    __m256 r2 = _mm256_loadu_ps(s + 2 * lds), r3 = _mm256_loadu_ps(s + 3 * lds);
    __m256 r4 = _mm256_loadu_ps(s + 4 * lds), r5 = _mm256_loadu_ps(s + 5 * lds);
    __m256 r6 = _mm256_loadu_ps(s + 6 * lds), r7 = _mm256_loadu_ps(s + 7 * lds);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(d + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(d + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(d + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(d + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(d + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(d + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(d + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}

/* bp[k][0..16) = src[j * ld + k] for j < 16: B^T's rows turned in 8 x 8 blocks; returns the
   steps done (a multiple of 8) */
AVX2 static int packTransposed(int K, const float *src, long ld, float *bp) {
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        transpose8(src + k, ld, bp + (long)k * TN, TN);
        transpose8(src + 8 * ld + k, ld, bp + (long)k * TN + 8, TN);
    }
    return k;
}

/* T[j][i] = A[i][j] over whole 8 x 8 blocks: the rows i < rows8, the columns j < cols8 */
AVX2 static void transposeAvx2(int rows8, int cols8, const float *A, long lda, float *T,
                               long ldt) {
    for (int i = 0; i < rows8; i += 8)
        for (int j = 0; j < cols8; j += 8)
            transpose8(A + (long)i * lda + j, lda, T + (long)j * ldt + i, ldt);
}
#endif

/* bp[k][0..16) = B's steps k0 .. k0 + K, columns j0 .. j0 + nj, zero beyond nj */
static void packB(const StridedB *b, int k0, int K, int j0, int nj, float *restrict bp) {
    for (int k = 0; k < K; k++) {
        const float *src = b->base + (long)(k0 + k) * b->ldb + j0;
        if (nj == TN) { /* a fixed-length copy: moves, not a memcpy call */
            memcpy(bp + k * TN, src, TN * sizeof *bp);
            continue;
        }
        for (int j = 0; j < TN; j++)
            bp[k * TN + j] = j < nj ? src[j] : 0.0f;
    }
}

/* The rows of the next tile when rem are left: 6, but the last 7 to 11 in two tiles of
   about half (a tile of r < 4 rows runs r * 2 chains of FMAs, too few to hide their
   latency: 128 = 20 * 6 + 4 + 4 costs 128 rows' time where 21 * 6 + 2 cost 130). */
static int groupRows(int rem) {
    return rem > TM && rem < 2 * TM ? (rem + 1) / 2 : rem < TM ? rem : TM;
}

/* Gathered rows times B in panels, row group by row group over the whole of k: the
   group's rows come from far once (fetched while the group before works) and stay in L1
   for every panel, while B's panels stream by in sequence from L2 (a few % faster than
   k blocks for the mlp's x W1^T; for A in place, B's blocks in L1 stay better). */
static void gatherRowGroups(int M, int N, int K, const StridedA *a, const StridedB *b, float *C,
                            long ldc, bool acc, bool avx2) {
    int panels = (N + TN - 1) / TN, lines = (K + 15) / 16;
    for (int i0 = 0, mi; i0 < M; i0 += mi) {
        mi = groupRows(M - i0);
        for (int j0 = 0; j0 < N; j0 += TN) {
#if defined(__GNUC__) && defined(__x86_64__)
            /* the next group's rows, a share before each panel: all at once, the fetches
               stalled on the full miss queue */
            int q = j0 / TN, l0 = q * lines / panels, l1 = (q + 1) * lines / panels;
            for (int i = i0 + mi; i < i0 + mi + TM && i < M; i++)
                for (int l = l0; l < l1; l++)
                    _mm_prefetch((const char *)(a->rows[i] + l * 16), _MM_HINT_T0);
#endif
            tile(K, a, i0, mi, 0, b->panels + (long)j0 * b->K, N - j0 < TN ? N - j0 : TN,
                 C + (long)i0 * ldc + j0, ldc, acc, avx2);
        }
        if (a->put) /* the group's rows are in L1 now (after the product, in L3 they were) */
            Vec_panelsPutRows(a->putK, K, a->putK0 + i0, mi, a->rows + i0, 0, a->put);
    }
}

static void strided(int M, int N, int K, const StridedA *a, const StridedB *b, float *C,
                    long ldc, bool acc) {
    if (M < 1 || N < 1)
        return;
    if (K < 1 && !acc)
        for (int i = 0; i < M; i++)
            memset(C + (long)i * ldc, 0, (size_t)N * sizeof *C);
    bool avx2 = haveAvx2();
    if (a->rows && b->panels && K > 0) {
        gatherRowGroups(M, N, K, a, b, C, ldc, acc, avx2);
        return;
    }
    float own[TKB * TN] __attribute__((aligned(32)));
    for (int k0 = 0; k0 < K; k0 += TKB) {
        int kb = K - k0 < TKB ? K - k0 : TKB;
        for (int j0 = 0; j0 < N; j0 += TN) {
            int nj = N - j0 < TN ? N - j0 : TN;
            const float *bp = own;
            if (b->panels) {
                bp = b->panels + (long)j0 * b->K + (long)k0 * TN;
            } else {
                packB(b, k0, kb, j0, nj, own);
            }
            for (int i0 = 0, mi; i0 < M; i0 += mi) {
                mi = groupRows(M - i0);
                tile(kb, a, i0, mi, k0, bp, nj, C + (long)i0 * ldc + j0, ldc, acc || k0 > 0,
                     avx2);
            }
        }
    }
}

void Vec_gemmStrided(int M, int N, int K, const float *A, long ars, long aks, const float *B,
                     long ldb, float *C, long ldc, bool accumulate) {
    StridedA a = {.base = A, .ars = ars, .aks = aks};
    StridedB b = {.base = B, .ldb = ldb};
    strided(M, N, K, &a, &b, C, ldc, accumulate);
}

long Vec_panelsSize(int K, int N) {
    return (long)(K > 0 ? K : 1) * ((N + TN - 1) / TN * TN);
}

#if defined(__GNUC__) && defined(__x86_64__)
/* Vec_panelsPutRows for the whole panels (N16 a multiple of 16), eight rows at a time:
   their lines stay in L1 while every panel takes its piece (panel by panel over all rows,
   each row's lines were fetched again for every panel: 2.5x slower) */
AVX2 static void putRowsAvx2(int K, int N16, int k0, int n, const float *const *rows, long off,
                             float *panels) {
    enum { RB = 8 };
    for (int r0 = 0; r0 < n; r0 += RB) {
        int rn = n - r0 < RB ? n - r0 : RB;
        for (int j0 = 0; j0 < N16; j0 += TN) {
            float *dst = panels + (long)j0 * K + (long)(k0 + r0) * TN;
            for (int r = 0; r < rn; r++, dst += TN) {
                const float *src = rows[r0 + r] + off + j0;
                _mm256_storeu_ps(dst, _mm256_loadu_ps(src));
                _mm256_storeu_ps(dst + 8, _mm256_loadu_ps(src + 8));
            }
        }
    }
}
#endif

void Vec_panelsPutRows(int K, int N, int k0, int n, const float *const *rows, long off,
                       float *panels) {
    int whole = 0;
#if defined(__GNUC__) && defined(__x86_64__)
    if (haveAvx2()) {
        whole = N / TN * TN;
        putRowsAvx2(K, whole, k0, n, rows, off, panels);
    }
#endif
    for (int j0 = whole; j0 < N; j0 += TN) {
        int nj = N - j0 < TN ? N - j0 : TN;
        float *dst = panels + (long)j0 * K + (long)k0 * TN;
        for (int r = 0; r < n; r++, dst += TN) {
            const float *src = rows[r] + off + j0;
            if (nj == TN) {
                memcpy(dst, src, TN * sizeof *dst);
                continue;
            }
            for (int j = 0; j < TN; j++)
                dst[j] = j < nj ? src[j] : 0.0f;
        }
    }
}

void Vec_panelsPutRowsT(int K, int N, int k0, int n, const float *T, long ldt, float *panels) {
    bool avx2 = haveAvx2();
    for (int j0 = 0; j0 < N; j0 += TN) {
        int nj = N - j0 < TN ? N - j0 : TN;
        float *dst = panels + (long)j0 * K + (long)k0 * TN;
        int done = 0;
#if defined(__GNUC__) && defined(__x86_64__)
        if (avx2 && nj == TN)
            done = packTransposed(n, T + (long)j0 * ldt, ldt, dst);
#endif
        for (int j = 0; j < TN; j++)
            for (int r = done; r < n; r++)
                dst[(long)r * TN + j] = j < nj ? T[(long)(j0 + j) * ldt + r] : 0.0f;
    }
}

void Vec_gemmPanels(int M, int N, int K, const float *A, long ars, long aks, const float *panels,
                    float *C, long ldc, bool accumulate) {
    StridedA a = {.base = A, .ars = ars, .aks = aks};
    StridedB b = {.panels = panels, .K = K};
    strided(M, N, K, &a, &b, C, ldc, accumulate);
}

void Vec_gemmGatherPanels(int M, int N, int K, const float *const *rows, const float *panels,
                          float *C, long ldc, bool accumulate) {
    StridedA a = {.rows = rows};
    StridedB b = {.panels = panels, .K = K};
    strided(M, N, K, &a, &b, C, ldc, accumulate);
}

void Vec_gemmGatherPanelsPut(int M, int N, int K, const float *const *rows, const float *panels,
                             float *C, long ldc, bool accumulate, int putK, int putK0,
                             float *put) {
    StridedA a = {.rows = rows, .put = put, .putK = putK, .putK0 = putK0};
    StridedB b = {.panels = panels, .K = K};
    strided(M, N, K, &a, &b, C, ldc, accumulate);
    if (M > 0 && (N < 1 || K < 1)) /* strided passed no row groups */
        Vec_panelsPutRows(putK, K, putK0, M, rows, 0, put);
}

static void transposeScalar(int i0, int i1, int j0, int j1, const float *A, long lda, float *T,
                            long ldt) {
    enum { TILE = 32 };
    for (int ib = i0; ib < i1; ib += TILE)
        for (int jb = j0; jb < j1; jb += TILE)
            for (int i = ib; i < ib + TILE && i < i1; i++)
                for (int j = jb; j < jb + TILE && j < j1; j++)
                    T[(long)j * ldt + i] = A[(long)i * lda + j];
}

void Vec_transpose(int rows, int cols, const float *A, long lda, float *T, long ldt) {
    int rows8 = 0, cols8 = 0;
#if defined(__GNUC__) && defined(__x86_64__)
    if (haveAvx2()) {
        rows8 = rows / 8 * 8;
        cols8 = cols / 8 * 8;
        transposeAvx2(rows8, cols8, A, lda, T, ldt);
    }
#endif
    transposeScalar(0, rows8, cols8, cols, A, lda, T, ldt); /* the right edge */
    transposeScalar(rows8, rows, 0, cols, A, lda, T, ldt);  /* the bottom rows */
}

void Vec_adamSum(long n, int parts, long gstride, float *p, const float *g, float *m, float *v,
                 float b1, float b2, float step, float invSqrtBc2, float eps) {
    long done = 0;
#if defined(__GNUC__) && defined(__x86_64__)
    if (__builtin_cpu_supports("avx2"))
        done = adamAvx2(n, parts, gstride, p, g, m, v, b1, b2, step, invSqrtBc2, eps);
#endif
    adamScalar(done, n, parts, gstride, p, g, m, v, b1, b2, step, invSqrtBc2, eps);
}

void Vec_adam(long n, float *p, const float *g, float *m, float *v, float b1, float b2,
              float step, float invSqrtBc2, float eps) {
    Vec_adamSum(n, 1, 0, p, g, m, v, b1, b2, step, invSqrtBc2, eps);
}
