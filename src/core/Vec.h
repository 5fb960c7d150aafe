/*
moescope - core/Vec.h
Small vector kernels for the engine's hot loops (router evaluation, the top-K bound, mlp
training). Each is built twice, for x86-64-v3 (AVX2, FMA) and the baseline, and picked
at load time, so one machine always runs the same code: results are reproducible on a
machine, not bitwise across CPU generations. The transcendental ones use polynomial
approximations (a few ulp) that the compiler can vectorize, unlike libm's calls.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_VEC_H
#define MOESCOPE_VEC_H

#include <stdbool.h>
#include <stdint.h>

/* y[i] += a x[i] */
void Vec_axpy(int n, float a, const float *x, float *y);

/* y[i] += a x[i], returning the new sum of y[i]^2 (one pass instead of two) */
double Vec_axpyNorm(int n, float a, const float *x, float *y);

/* y[i] = a x[i] */
void Vec_scale(int n, float a, const float *x, float *y);

/* g[i] = g[i] (1 - a[i]^2) s, rounding after each operation as plain C without fused
   multiply-adds does (the mlp's backward pass through tanh and 1 / ||x||) */
void Vec_tanhGrad(int n, const float *a, float s, float *g);

/* the largest x[i] (-INFINITY for n = 0) */
float Vec_max(long n, const float *x);

/* sum of x[i]^2, in 16 float lanes added up in double */
double Vec_sumSquares(int n, const float *x);

/* sum of x[i], the same way */
double Vec_sum(long n, const float *x);

/* The indices i of the x[i] != 0 (NaN included), ascending, into idx[n]; returns their
   count. */
int Vec_nonzeros(int n, const float *x, int *idx);

/* count[i] += (|x[i]| > tau) for every i; returns how many were counted */
int Vec_countAbove(int n, const float *x, float tau, int32_t *count);

/* v[i] = tanh(v[i]) (absolute error below 1e-7) */
void Vec_tanh(float *v, long n);

/* y[i] = tanh(a x[i]): Vec_scale then Vec_tanh in one pass, the same bits */
void Vec_scaleTanh(int n, float a, const float *x, float *y);

/* BCE with logits z against targets y * yscale, entry by entry:
   loss[i] = max(z, 0) - z t + log(1 + exp(-|z|)),  grad[i] = (sigmoid(z) - t) * gscale. */
void Vec_bceWithLogits(long n, const float *z, const float *y, float yscale, float gscale,
                       float *loss, float *grad);

/* One Adam update of p[n] with gradient g: m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
   p -= step * m / (sqrt(v) * invSqrtBc2 + eps), step = lr / (1 - b1^t),
   invSqrtBc2 = 1 / sqrt(1 - b2^t). */
void Vec_adam(long n, float *p, const float *g, float *m, float *v, float b1, float b2,
              float step, float invSqrtBc2, float eps);

/* Vec_adam with the gradient g[i] + g[gstride + i] + ... (parts terms, added in that
   order): the partial gradients of a minibatch's row chunks, summed on the fly. */
void Vec_adamSum(long n, int parts, long gstride, float *p, const float *g, float *m, float *v,
                 float b1, float b2, float step, float invSqrtBc2, float eps);

/* C[i][j] = sum_k A[i][k] B[j][k] for an M x N block (row-major with leading dimensions
   lda, ldb, ldc). Each element is computed the same way wherever it sits, so results are
   bitwise the same for any blocking, chunking or thread count (unlike OpenBLAS, whose
   sgemm results change with its thread count). AVX2 + FMA when the CPU has them. */
void Vec_gemmNT(int M, int N, int K, const float *A, long lda, const float *B, long ldb,
                float *C, long ldc);

/* C[i][j] = sum_k A[i][k] B[k][j] (A is M x K, B is K x N), same element arithmetic. */
void Vec_gemmNN(int M, int N, int K, const float *A, long lda, const float *B, long ldb,
                float *C, long ldc);

/* Products that read A in place, without packing (the mlp training's):
     C[i][j] = c0 + sum over k < K of a(i, k) B[k * ldb + j]   (i < M, j < N)
   with c0 = C[i][j] when accumulate, else 0, and a(i, k) = A[i * ars + k * aks] (any
   layout: ars = 1, aks = lda reads A^T).
   Each element is one fused running sum in k order (in the AVX2 path), the same wherever
   it sits, so results do not depend on blocking or threads, and splitting k into
   consecutive runs with accumulate continues the same sum bit for bit. */
void Vec_gemmStrided(int M, int N, int K, const float *A, long ars, long aks, const float *B,
                     long ldb, float *C, long ldc, bool accumulate);

/* B (K x N) laid out once for many products, as the kernels above would copy it each
   time: ceil(N / 16) panels of K x 16 floats (columns beyond N zero), panel p at
   panels + p * 16 * K; so columns j0 .. of B, j0 a multiple of 16, are the same layout
   from panels + j0 * K on. Vec_panelsSize(K, N) floats. Rows k0 .. k0 + n go in from
     Vec_panelsPutRows:  B[k0 + r][j] = rows[r][off + j]
     Vec_panelsPutRowsT: B[k0 + r][j] = T[j * ldt + r]      (from B^T's columns)
   and Vec_gemmPanels is Vec_gemmStrided with B in panels (the same bits), and
   Vec_gemmGatherPanels the same with A's rows scattered, a(i, k) = rows[i][k] (a
   minibatch's tokens). */
long Vec_panelsSize(int K, int N);
void Vec_panelsPutRows(int K, int N, int k0, int n, const float *const *rows, long off,
                       float *panels);
void Vec_panelsPutRowsT(int K, int N, int k0, int n, const float *T, long ldt, float *panels);
void Vec_gemmPanels(int M, int N, int K, const float *A, long ars, long aks, const float *panels,
                    float *C, long ldc, bool accumulate);
void Vec_gemmGatherPanels(int M, int N, int K, const float *const *rows, const float *panels,
                          float *C, long ldc, bool accumulate);

/* Vec_gemmGatherPanels that also lays A's rows out in panels, as
   Vec_panelsPutRows(putK, K, putK0, M, rows, 0, put) does, a few rows at a time while the
   product has them in L1 (a separate pass finds them in L3). */
void Vec_gemmGatherPanelsPut(int M, int N, int K, const float *const *rows, const float *panels,
                             float *C, long ldc, bool accumulate, int putK, int putK0,
                             float *put);

/* T[j][i] = A[i][j] for a rows x cols block. */
void Vec_transpose(int rows, int cols, const float *A, long lda, float *T, long ldt);

/* exp(x) for the vectorized loops above and their callers (relative error ~2e-7). */
float Vec_expf(float x);

#endif
