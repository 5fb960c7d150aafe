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
static inline __attribute__((always_inline)) void packPanel(const Operand *op, int r0, int rows, int K, int w, float *panel) {
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

/* C = op(A) op(B)^T with A's panels packed already when apre is not NULL */
static void gemmPacked(int M, int N, int K, const Operand *A, const float *apre,
                       const Operand *B, float *C, long ldc) {
    if (M < 1 || N < 1)
        return;
    void (*kernel)(int, const float *, const float *, float *, long) = kernelScalar;
#if defined(__GNUC__) && defined(__x86_64__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        kernel = kernelAvx2;
#endif
    int panels = (M + MR - 1) / MR;
    long kk = K > 0 ? K : 1;
    float *own = apre ? NULL : xMallocArray((size_t)panels * kk * MR, sizeof(float));
    const float *ap = apre ? apre : own;
    float *bp = xMallocArray((size_t)kk * NR, sizeof(float));
    float c[MR * NR];
    if (own)
        packAll(A, M, K, own);
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
    free(own);
    free(bp);
}

void Vec_gemmNT(int M, int N, int K, const float *A, long lda, const float *B, long ldb,
                float *C, long ldc) {
    Operand a = {.p = A, .ld = lda, .kMajor = false}, b = {.p = B, .ld = ldb, .kMajor = false};
    gemmPacked(M, N, K, &a, NULL, &b, C, ldc);
}

void Vec_gemmTN(int M, int N, int K, const float *A, long lda, const float *B, long ldb,
                float *C, long ldc) {
    Operand a = {.p = A, .ld = lda, .kMajor = true}, b = {.p = B, .ld = ldb, .kMajor = true};
    gemmPacked(M, N, K, &a, NULL, &b, C, ldc);
}

void Vec_gemmNN(int M, int N, int K, const float *A, long lda, const float *B, long ldb,
                float *C, long ldc) {
    Operand a = {.p = A, .ld = lda, .kMajor = false}, b = {.p = B, .ld = ldb, .kMajor = true};
    gemmPacked(M, N, K, &a, NULL, &b, C, ldc);
}

long Vec_packedSize(int M, int K) {
    return (long)((M + MR - 1) / MR) * (K > 0 ? K : 1) * MR;
}

void Vec_packTN(int M, int K, const float *A, long lda, float *packed) {
    Operand a = {.p = A, .ld = lda, .kMajor = true};
    packAll(&a, M, K, packed);
}

void Vec_gemmTNPacked(int M, int N, int K, const float *packed, const float *B, long ldb,
                      float *C, long ldc) {
    Operand b = {.p = B, .ld = ldb, .kMajor = true};
    gemmPacked(M, N, K, NULL, packed, &b, C, ldc);
}

void Vec_transpose(int rows, int cols, const float *A, long lda, float *T, long ldt) {
    enum { TILE = 32 };
    for (int i0 = 0; i0 < rows; i0 += TILE)
        for (int j0 = 0; j0 < cols; j0 += TILE)
            for (int i = i0; i < i0 + TILE && i < rows; i++)
                for (int j = j0; j < j0 + TILE && j < cols; j++)
                    T[j * ldt + i] = A[i * lda + j];
}

void Vec_adam(long n, float *p, const float *g, float *m, float *v, float b1, float b2,
              float step, float invSqrtBc2, float eps) {
    long done = 0;
#if defined(__GNUC__) && defined(__x86_64__)
    if (__builtin_cpu_supports("avx2"))
        done = adamAvx2(n, p, g, m, v, b1, b2, step, invSqrtBc2, eps);
#endif
    adamScalar(done, n, p, g, m, v, b1, b2, step, invSqrtBc2, eps);
}
