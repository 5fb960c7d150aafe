/*
moescope - core/Coact.c
Co-activation counting.

DESIGN: at 90% sparsity a dense A^T A spends 2 T N^2 flops on mostly zero products.
Default path, row sums: row i of C is the per-column sum of the token-major bit rows
(N bits each) of the tokens where neuron i is active, so the work is nnz x N / 256 vector
steps instead of N^2 T / 64 bit pairs (about 10x less at 10% density). The rows are
added 16 at a time by a Harley-Seal tree of carry-save adders (15 per 16 rows, four bit
planes) whose carries climb four more register planes by half adders; every 15 groups
(240 rows, under 256) the eight planes go into the row's bit-sliced counter in memory by
a ripple-carry adder. Symmetry: only columns from word i/64 on are summed. Neurons go in
blocks of 64 (one word of the rows, whose set bits list each neuron's tokens); the tokens
go in chunks of about 192 KiB of rows, so a row fetched into L2 serves every neuron of
the block active on it, and the kernel walks one 256-bit column of all a neuron's rows
in the chunk before the next (those cache lines stay in L1).
The counters are read back 32 columns at a time (plane bits to bytes by vpshufb). When
more than half the sampled entries are active, the inactive bits are summed instead and
C = T - nbar_i - nbar_j + Cbar (exact in unsigned arithmetic): dense activity (GELU at
tau 0) costs as little as sparse. One source in GCC vector extensions gives the AVX2
kernel and a portable one.
Pair kernels (forced by MOESCOPE_COACT_KERNEL, for tests and comparisons): each neuron's
activity becomes a bit column (64 tokens a word) and C[i][j] = popcount(col_i AND col_j)
summed over the words, in 4 x 4 tiles of pairs on or above the diagonal, a block of 16
i columns at a time; AVX2 (Mula's vpshufb nibble table, byte counters folded every 31
steps), scalar POPCNT or portable. Their cost is O(N^2 T / 64) whatever the sparsity.
Both paths write the upper triangle; a blocked transpose mirrors it (writing it from the
tiles would cost a cache miss per pair). Work is split into units "block u and block
B-1-u" (about equal work), unit u going to thread u mod threads: a fixed split, and every
count is an integer sum in a fixed order, so the result does not depend on the thread
count. The packing pass (h -> bits) is split by 64-token blocks.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/Coact.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util/XUtils.h"

#define COACT_DEFAULT_THREADS 2
#define COACT_MAX_THREADS 64
#define COACT_QB 4 /* tile rows (of 4 neurons) per counting block */

/* ---- popcount kernels --------------------------------------------------------------- */

/* Counts the 16 pairs (a0+r, b0+s), r, s < 4, of bit columns of W words each. */
#define TILE_BODY                                                                          \
    const uint64_t *a0 = a, *a1 = a + W, *a2 = a + 2 * W, *a3 = a + 3 * W;                 \
    const uint64_t *b0 = b, *b1 = b + W, *b2 = b + 2 * W, *b3 = b + 3 * W;                 \
    uint64_t c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;       \
    uint64_t c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;       \
    for (long w = 0; w < W; w++) {                                                         \
        uint64_t x0 = a0[w], x1 = a1[w], x2 = a2[w], x3 = a3[w];                           \
        uint64_t y0 = b0[w], y1 = b1[w], y2 = b2[w], y3 = b3[w];                           \
        c00 += (uint64_t)__builtin_popcountll(x0 & y0);                                    \
        c01 += (uint64_t)__builtin_popcountll(x0 & y1);                                    \
        c02 += (uint64_t)__builtin_popcountll(x0 & y2);                                    \
        c03 += (uint64_t)__builtin_popcountll(x0 & y3);                                    \
        c10 += (uint64_t)__builtin_popcountll(x1 & y0);                                    \
        c11 += (uint64_t)__builtin_popcountll(x1 & y1);                                    \
        c12 += (uint64_t)__builtin_popcountll(x1 & y2);                                    \
        c13 += (uint64_t)__builtin_popcountll(x1 & y3);                                    \
        c20 += (uint64_t)__builtin_popcountll(x2 & y0);                                    \
        c21 += (uint64_t)__builtin_popcountll(x2 & y1);                                    \
        c22 += (uint64_t)__builtin_popcountll(x2 & y2);                                    \
        c23 += (uint64_t)__builtin_popcountll(x2 & y3);                                    \
        c30 += (uint64_t)__builtin_popcountll(x3 & y0);                                    \
        c31 += (uint64_t)__builtin_popcountll(x3 & y1);                                    \
        c32 += (uint64_t)__builtin_popcountll(x3 & y2);                                    \
        c33 += (uint64_t)__builtin_popcountll(x3 & y3);                                    \
    }                                                                                      \
    out[0] = c00, out[1] = c01, out[2] = c02, out[3] = c03;                                \
    out[4] = c10, out[5] = c11, out[6] = c12, out[7] = c13;                                \
    out[8] = c20, out[9] = c21, out[10] = c22, out[11] = c23;                              \
    out[12] = c30, out[13] = c31, out[14] = c32, out[15] = c33;

typedef void (*TileFn)(const uint64_t *a, const uint64_t *b, long W, uint64_t out[16]);

static void tileGeneric(const uint64_t *a, const uint64_t *b, long W, uint64_t out[16]) {
    TILE_BODY
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* Without -mpopcnt, __builtin_popcountll is a library call; this copy uses the
   instruction and is picked at run time when the CPU has it. */
__attribute__((target("popcnt"))) static void tilePopcnt(const uint64_t *a, const uint64_t *b,
                                                         long W, uint64_t out[16]) {
    TILE_BODY
}

/* Per-byte popcount of 32 bytes by nibble table lookup (Mula's vpshufb method). */
__attribute__((target("avx2"))) static inline __m256i popcnt8(__m256i v, __m256i lut,
                                                              __m256i low) {
    __m256i lo = _mm256_and_si256(v, low);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

/* Columns a0, a1 against b0..b3 (eight pairs), 256 bits a step. Byte counters take at
   most 8 per step, so they are folded into 64-bit sums (vpsadbw) every 31 steps. */
__attribute__((target("avx2"))) static void pairs2x4(const uint64_t *a, const uint64_t *b,
                                                     long W, uint64_t out[8]) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1,
                                         1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f), zero = _mm256_setzero_si256();
    const uint64_t *a0 = a, *a1 = a + W;
    const uint64_t *b0 = b, *b1 = b + W, *b2 = b + 2 * W, *b3 = b + 3 * W;
    __m256i sum[8];
    for (int k = 0; k < 8; k++)
        sum[k] = zero;
    long V = W / 4;
    for (long v0 = 0; v0 < V; v0 += 31) {
        long v1 = v0 + 31 < V ? v0 + 31 : V;
        __m256i c0 = zero, c1 = zero, c2 = zero, c3 = zero;
        __m256i c4 = zero, c5 = zero, c6 = zero, c7 = zero;
        for (long v = v0; v < v1; v++) {
            __m256i x0 = _mm256_loadu_si256((const __m256i *)(a0 + 4 * v));
            __m256i x1 = _mm256_loadu_si256((const __m256i *)(a1 + 4 * v));
            __m256i y = _mm256_loadu_si256((const __m256i *)(b0 + 4 * v));
            c0 = _mm256_add_epi8(c0, popcnt8(_mm256_and_si256(x0, y), lut, low));
            c4 = _mm256_add_epi8(c4, popcnt8(_mm256_and_si256(x1, y), lut, low));
            y = _mm256_loadu_si256((const __m256i *)(b1 + 4 * v));
            c1 = _mm256_add_epi8(c1, popcnt8(_mm256_and_si256(x0, y), lut, low));
            c5 = _mm256_add_epi8(c5, popcnt8(_mm256_and_si256(x1, y), lut, low));
            y = _mm256_loadu_si256((const __m256i *)(b2 + 4 * v));
            c2 = _mm256_add_epi8(c2, popcnt8(_mm256_and_si256(x0, y), lut, low));
            c6 = _mm256_add_epi8(c6, popcnt8(_mm256_and_si256(x1, y), lut, low));
            y = _mm256_loadu_si256((const __m256i *)(b3 + 4 * v));
            c3 = _mm256_add_epi8(c3, popcnt8(_mm256_and_si256(x0, y), lut, low));
            c7 = _mm256_add_epi8(c7, popcnt8(_mm256_and_si256(x1, y), lut, low));
        }
        sum[0] = _mm256_add_epi64(sum[0], _mm256_sad_epu8(c0, zero));
        sum[1] = _mm256_add_epi64(sum[1], _mm256_sad_epu8(c1, zero));
        sum[2] = _mm256_add_epi64(sum[2], _mm256_sad_epu8(c2, zero));
        sum[3] = _mm256_add_epi64(sum[3], _mm256_sad_epu8(c3, zero));
        sum[4] = _mm256_add_epi64(sum[4], _mm256_sad_epu8(c4, zero));
        sum[5] = _mm256_add_epi64(sum[5], _mm256_sad_epu8(c5, zero));
        sum[6] = _mm256_add_epi64(sum[6], _mm256_sad_epu8(c6, zero));
        sum[7] = _mm256_add_epi64(sum[7], _mm256_sad_epu8(c7, zero));
    }
    for (int k = 0; k < 8; k++) {
        uint64_t lane[4];
        _mm256_storeu_si256((__m256i *)lane, sum[k]);
        const uint64_t *x = k < 4 ? a0 : a1, *y = b + (long)(k % 4) * W;
        uint64_t tail = 0;
        for (long w = 4 * V; w < W; w++)
            tail += (uint64_t)__builtin_popcountll(x[w] & y[w]);
        out[k] = lane[0] + lane[1] + lane[2] + lane[3] + tail;
    }
}

/* The 4 x 4 tile as two 2 x 4 halves (the four b columns stay in L1 between them). */
__attribute__((target("avx2,popcnt"))) static void tileAvx2(const uint64_t *a,
                                                             const uint64_t *b, long W,
                                                             uint64_t out[16]) {
    pairs2x4(a, b, W, out);
    pairs2x4(a + 2 * W, b, W, out + 8);
}
#endif

/* ---- row-sum kernels ------------------------------------------------------------------ */

/* Four 64-bit words; plain GCC vector extensions, so one source serves the portable copy
   (SSE2 pairs) and the AVX2 copy. V4u loads from 8-byte aligned addresses. */
typedef uint64_t V4 __attribute__((vector_size(32)));
typedef uint64_t V4u __attribute__((vector_size(32), aligned(8), may_alias));

/* Carry-save adder: h:l = a + b + c, bitwise. */
#define CSA(h, l, a, b, c)                                                                 \
    do {                                                                                   \
        V4 u_ = (a) ^ (b), c_ = (c);                                                       \
        h = ((a) & (b)) | (u_ & c_);                                                       \
        l = u_ ^ c_;                                                                       \
    } while (0)

#define LOADROW(k) (*(const V4u *)(base + off[g + (k)]))
/* Eight rows off[g + k0 ..] into ones and twos; the fours carry out in e. */
#define EIGHT_ROWS(e, k0)                                                                  \
    do {                                                                                   \
        V4 ta, tb, fa, fb;                                                                 \
        CSA(ta, ones, ones, LOADROW(k0), LOADROW(k0 + 1));                                 \
        CSA(tb, ones, ones, LOADROW(k0 + 2), LOADROW(k0 + 3));                             \
        CSA(fa, twos, twos, ta, tb);                                                       \
        CSA(ta, ones, ones, LOADROW(k0 + 4), LOADROW(k0 + 5));                             \
        CSA(tb, ones, ones, LOADROW(k0 + 6), LOADROW(k0 + 7));                             \
        CSA(fb, twos, twos, ta, tb);                                                       \
        CSA(e, fours, fours, fa, fb);                                                      \
    } while (0)

/* Adds the eight planes r0..r7 (a count below 256 per bit) into the P-plane counter at
   pl (stride V) by a ripple-carry adder; the carry rarely passes the eighth plane. */
#define ADD_PLANES(nonzero)                                                                \
    do {                                                                                   \
        V4 r_[8] = {ones, twos, fours, eights, p16, p32, p64, p128}, c_ = {0, 0, 0, 0};     \
        for (int k = 0; k < 8; k++) {                                                      \
            V4 m_ = pl[k * V], u_ = m_ ^ r_[k];                                            \
            pl[k * V] = u_ ^ c_;                                                           \
            c_ = (m_ & r_[k]) | (u_ & c_);                                                 \
        }                                                                                  \
        for (int k = 8; k < P && nonzero(c_); k++) {                                       \
            V4 m_ = pl[k * V];                                                             \
            pl[k * V] = m_ ^ c_;                                                           \
            c_ &= m_;                                                                      \
        }                                                                                  \
    } while (0)

/* One vector column at a time, so the rows' cache lines (a few KiB for one chunk) stay in
   L1 for the next column. The count of up to 15 groups of 16 rows lives in eight register
   planes (Harley-Seal for the low four, half adders above, no branches), then goes into
   the memory counter. */
#define ROWSUM_BODY(nonzero)                                                               \
    for (long v = 0; v < V; v++, pl++) {                                                   \
        const uint64_t *base = rows + w + 4 * v;                                           \
        for (long g0 = 0; g0 < n; g0 += 16 * 15) {                                         \
            long g1 = g0 + 16 * 15 < n ? g0 + 16 * 15 : n;                                 \
            V4 ones = {0, 0, 0, 0}, twos = ones, fours = ones, eights = ones, p16 = ones;  \
            V4 p32 = ones, p64 = ones, p128 = ones;                                        \
            for (long g = g0; g < g1; g += 16) {                                           \
                V4 ea, eb, s, c;                                                           \
                EIGHT_ROWS(ea, 0);                                                         \
                EIGHT_ROWS(eb, 8);                                                         \
                CSA(s, eights, eights, ea, eb);                                            \
                c = p16 & s, p16 ^= s;                                                     \
                s = p32 & c, p32 ^= c;                                                     \
                c = p64 & s, p64 ^= s;                                                     \
                p128 ^= c;                                                                 \
            }                                                                              \
            ADD_PLANES(nonzero);                                                           \
        }                                                                                  \
    }

/* Adds the n (a multiple of 16) bit rows rows + off[g] + w, V vectors each, into the
   bit-sliced counter pl: P >= 8 planes of V vectors, plane k holding bit k of the counts.
   Harley-Seal: 15 carry-save adders per 16 rows. */
typedef void (*RowSumFn)(const uint64_t *rows, long w, long V, const size_t *off, long n,
                         V4 *pl, int P);

static void rowSumGeneric(const uint64_t *rows, long w, long V, const size_t *off, long n,
                          V4 *pl, int P) {
#define NONZERO_GENERIC(s) ((s[0] | s[1] | s[2] | s[3]) != 0)
    ROWSUM_BODY(NONZERO_GENERIC)
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2"))) static void rowSumAvx2(const uint64_t *rows, long w, long V,
                                                       const size_t *off, long n, V4 *pl,
                                                       int P) {
#define NONZERO_AVX2(s) (!_mm256_testz_si256((__m256i)(s), (__m256i)(s)))
    ROWSUM_BODY(NONZERO_AVX2)
}
#endif

/* Writes row[j] for j in [j0, j1), the count of column j being bit j - c0 of the np
   planes at pl (stride V vectors). */
typedef void (*FlushFn)(uint32_t *row, long j0, long j1, long c0, const V4 *pl, long V,
                        int np);

/* Bits 0..7 of x to bytes 0..7 (nibble multiply: the shifted copies never collide). */
static inline uint64_t spread8(uint64_t x) {
    return (((x & 15) * 0x204081ULL) & 0x01010101ULL) |
           ((((x >> 4) & 15) * 0x204081ULL) & 0x01010101ULL) << 32;
}

/* Eight columns at a time: plane bits spread to bytes, one byte of the count per eight
   planes. */
static void flushGeneric(uint32_t *row, long j0, long j1, long c0, const V4 *pl, long V,
                         int np) {
    for (long jb = c0 + (j0 - c0) / 8 * 8; jb < j1; jb += 8) {
        long q = (jb - c0) / 64;
        int y = (int)((jb - c0) % 64);
        uint64_t bytes[4] = {0, 0, 0, 0};
        for (int k = 0; k < np; k++) {
            uint64_t word = ((const uint64_t *)(pl + k * V))[q];
            bytes[k >> 3] |= spread8(word >> y) << (k & 7);
        }
        for (int c = 0; c < 8; c++)
            if (jb + c >= j0 && jb + c < j1)
                row[jb + c] = (uint32_t)((bytes[0] >> 8 * c) & 255) |
                              (uint32_t)((bytes[1] >> 8 * c) & 255) << 8 |
                              (uint32_t)((bytes[2] >> 8 * c) & 255) << 16 |
                              (uint32_t)((bytes[3] >> 8 * c) & 255) << 24;
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
/* 32 columns at a time: each plane's 32 bits become 32 bytes (broadcast, byte shuffle,
   bit test), one byte of the count per eight planes, then bytes interleaved into
   32-bit counts. */
__attribute__((target("avx2"))) static void flushAvx2(uint32_t *row, long j0, long j1,
                                                      long c0, const V4 *pl, long V, int np) {
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2,
                                          2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i zero = _mm256_setzero_si256();
    for (long jb = c0 + (j0 - c0) / 32 * 32; jb < j1; jb += 32) {
        long q = (jb - c0) / 32;
        __m256i acc[4] = {zero, zero, zero, zero};
        for (int k = 0; k < np; k++) {
            uint32_t x = ((const uint32_t *)(pl + k * V))[q];
            __m256i b = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x), shuf);
            b = _mm256_cmpeq_epi8(_mm256_and_si256(b, bit), bit);
            b = _mm256_and_si256(b, _mm256_set1_epi8((char)(1 << (k & 7))));
            acc[k >> 3] = _mm256_or_si256(acc[k >> 3], b);
        }
        __m256i lo16 = _mm256_unpacklo_epi8(acc[0], acc[1]);
        __m256i hi16 = _mm256_unpackhi_epi8(acc[0], acc[1]);
        __m256i lo16b = _mm256_unpacklo_epi8(acc[2], acc[3]);
        __m256i hi16b = _mm256_unpackhi_epi8(acc[2], acc[3]);
        __m256i c0_ = _mm256_unpacklo_epi16(lo16, lo16b);
        __m256i c1_ = _mm256_unpackhi_epi16(lo16, lo16b);
        __m256i c2_ = _mm256_unpacklo_epi16(hi16, hi16b);
        __m256i c3_ = _mm256_unpackhi_epi16(hi16, hi16b);
        uint32_t buf[32];
        _mm256_storeu_si256((__m256i *)buf, _mm256_permute2x128_si256(c0_, c1_, 0x20));
        _mm256_storeu_si256((__m256i *)(buf + 8), _mm256_permute2x128_si256(c2_, c3_, 0x20));
        _mm256_storeu_si256((__m256i *)(buf + 16), _mm256_permute2x128_si256(c0_, c1_, 0x31));
        _mm256_storeu_si256((__m256i *)(buf + 24), _mm256_permute2x128_si256(c2_, c3_, 0x31));
        long a = jb > j0 ? jb : j0, e = jb + 32 < j1 ? jb + 32 : j1;
        memcpy(row + a, buf + (a - jb), (size_t)(e - a) * sizeof(uint32_t));
    }
}
#endif

/* ---- kernel choice ------------------------------------------------------------------ */

typedef struct Kernel {
    TileFn tile;     /* pair kernel, or NULL for the row-sum path */
    RowSumFn rowSum; /* row-sum kernel */
    FlushFn flush;   /* and its bit-plane reader */
} Kernel;

/* MOESCOPE_COACT_KERNEL = generic | popcnt | avx2 forces a pair kernel, rowsum |
   rowsum-generic the row-sum path (AVX2 or portable); tests compare them. An unavailable
   one falls back to the next simpler one. Otherwise the row sums: measured on Zen 3 they
   beat the pair kernels at every density (3x less CPU at 10%, even at 50%, where the
   complement takes over). */
static Kernel pickKernel(void) {
    const char *want = getenv("MOESCOPE_COACT_KERNEL");
    bool avx2 = false, popcnt = false;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    popcnt = __builtin_cpu_supports("popcnt");
    avx2 = popcnt && __builtin_cpu_supports("avx2");
#endif
    Kernel k = {.tile = tileGeneric, .rowSum = rowSumGeneric, .flush = flushGeneric};
#if defined(__x86_64__) && defined(__GNUC__)
    if (avx2)
        k.rowSum = rowSumAvx2, k.flush = flushAvx2;
    if (popcnt)
        k.tile = tilePopcnt;
    if (avx2)
        k.tile = tileAvx2;
#endif
    if (!want)
        return (Kernel){.rowSum = k.rowSum, .flush = k.flush};
    if (strcmp(want, "rowsum") == 0)
        return (Kernel){.rowSum = k.rowSum, .flush = k.flush};
    if (strcmp(want, "rowsum-generic") == 0)
        return (Kernel){.rowSum = rowSumGeneric, .flush = flushGeneric};
    if (strcmp(want, "generic") == 0)
        k.tile = tileGeneric;
#if defined(__x86_64__) && defined(__GNUC__)
    else if (strcmp(want, "popcnt") == 0 && popcnt)
        k.tile = tilePopcnt;
#endif
    return k;
}

/* ---- threads ------------------------------------------------------------------------ */

typedef struct Shared {
    const float *h;
    long T, W;         /* train tokens, 64-bit words per column */
    int N, Npad;       /* neurons, rounded up to a multiple of 4 */
    float tau;
    uint64_t *bits;    /* [Npad][W] */
    uint32_t *C;       /* [N][N] */
    int threads;
    TileFn tile;
    const Cancel *cancel;
    atomic_bool stop;
    /* the row-sum path */
    uint64_t *rows;    /* [T + 1][Wn] + 4 pad words, token-major; row T stays zero */
    long Wn;           /* 64-bit words per row */
    bool complement;   /* rows hold the inactive bits */
    RowSumFn rowSum;
    FlushFn flush;
    struct Scratch *scratch; /* [threads] */
    const uint32_t *nbar;    /* [N] inactive counts, for the complement */
} Shared;

static bool shouldStop(Shared *sh) {
    if (atomic_load(&sh->stop))
        return true;
    if (Cancel_requested(sh->cancel)) {
        atomic_store(&sh->stop, true);
        return true;
    }
    return false;
}

/* Packs 64-token blocks id, id + threads, ... into the bit columns. */
static void packBlocks(Shared *sh, int id, uint64_t *word) {
    long blocks = sh->W;
    for (long blk = id; blk < blocks; blk += sh->threads) {
        if (shouldStop(sh))
            return;
        memset(word, 0, (size_t)sh->N * sizeof(uint64_t));
        long t0 = blk * 64, t1 = t0 + 64 < sh->T ? t0 + 64 : sh->T;
        for (long t = t0; t < t1; t++) {
            const float *row = sh->h + t * (long)sh->N;
            int bit = (int)(t - t0);
            float tau = sh->tau;
            for (int j = 0; j < sh->N; j++)
                word[j] |= (uint64_t)(fabsf(row[j]) > tau) << bit;
        }
        for (int j = 0; j < sh->N; j++)
            sh->bits[(long)j * sh->W + blk] = word[j];
        if (id == 0)
            Cancel_progress(sh->cancel, 0.1 * (double)blk / (double)blocks);
    }
}

/* Writes the upper-triangle part (j >= i) of a tile; the mirror pass fills the rest. */
static void storeTile(Shared *sh, int iq, int jq, const uint64_t cnt[16]) {
    for (int r = 0; r < 4; r++) {
        int i = 4 * iq + r;
        if (i >= sh->N)
            break;
        uint32_t *row = sh->C + (long)i * sh->N;
        for (int s = 0; s < 4; s++) {
            int j = 4 * jq + s;
            if (j < sh->N && j >= i)
                row[j] = (uint32_t)cnt[4 * r + s];
        }
    }
}

/* Tile rows [QB b, QB b + QB) against every tile column on or right of the diagonal,
   column-major inside the block: the block's 16 i columns stay in L2 and each group of
   four j columns in L1 while it meets them. */
static void countBlock(Shared *sh, int b) {
    int Q = sh->Npad / 4, q0 = COACT_QB * b, q1 = q0 + COACT_QB < Q ? q0 + COACT_QB : Q;
    uint64_t cnt[16];
    for (int jq = q0; jq < Q; jq++) {
        const uint64_t *bj = sh->bits + (long)4 * jq * sh->W;
        for (int iq = q0; iq < q1 && iq <= jq; iq++) {
            sh->tile(sh->bits + (long)4 * iq * sh->W, bj, sh->W, cnt);
            storeTile(sh, iq, jq, cnt);
        }
    }
}

static void countUnits(Shared *sh, int id) {
    int B = (sh->Npad / 4 + COACT_QB - 1) / COACT_QB, units = (B + 1) / 2;
    for (int u = id; u < units; u += sh->threads) {
        if (shouldStop(sh))
            return;
        countBlock(sh, u);
        if (B - 1 - u != u)
            countBlock(sh, B - 1 - u);
        if (id == 0)
            Cancel_progress(sh->cancel, 0.1 + 0.85 * (double)(u + 1) / (double)units);
    }
}

/* Copies the upper triangle into the lower one in 64 x 64 blocks (a row of the lower
   triangle is a column of the upper one: blocking keeps both in cache). Block rows u
   and NB-1-u form one unit, as in the counting. */
static void mirrorRows(Shared *sh, int bi) {
    int N = sh->N, i0 = 64 * bi, i1 = i0 + 64 < N ? i0 + 64 : N;
    for (int j0 = 0; j0 < i1; j0 += 64) {
        int j1 = j0 + 64 < N ? j0 + 64 : N;
        for (int i = i0; i < i1; i++) {
            uint32_t *row = sh->C + (long)i * N;
            for (int j = j0; j < j1 && j < i; j++)
                row[j] = sh->C[(long)j * N + i];
        }
    }
}

static void mirrorPhase(Shared *sh, int id) {
    int NB = (sh->N + 63) / 64, units = (NB + 1) / 2;
    for (int u = id; u < units; u += sh->threads) {
        mirrorRows(sh, u);
        if (NB - 1 - u != u)
            mirrorRows(sh, NB - 1 - u);
    }
}

typedef void (*PhaseFn)(Shared *sh, int id);

static void packPhase(Shared *sh, int id) {
    uint64_t *word = xMallocArray((size_t)sh->N, sizeof(uint64_t));
    packBlocks(sh, id, word);
    free(word);
}

static void countPhase(Shared *sh, int id) {
    countUnits(sh, id);
}

/* ---- row-sum path ------------------------------------------------------------------- */

#define COACT_PLANES 32 /* counts < 2^32 */

/* Token rows per chunk: 192 KiB of a 512 KiB L2, most of the rest for the counters. */
#define COACT_CHUNK_BYTES (192L << 10)

/* Row offsets per neuron list: a chunk of at most COACT_CHUNK_TOKENS tokens after a
   leftover of fewer than 16, padded to 16. */
#define COACT_CHUNK_TOKENS 1024
#define COACT_LIST (COACT_CHUNK_TOKENS + 32)

typedef struct Scratch {
    size_t *lists;   /* [64][COACT_LIST]: each neuron's rows still to count, as offsets */
    V4 *planes;      /* [64][COACT_PLANES][Vmax]: bit-sliced counters */
    long n[64];      /* entries in each list */
    long count[64];  /* tokens where each neuron is active */
} Scratch;

/* Bits of |x| > tau, XOR flip, for row[0..n), n <= 64. */
static uint64_t packWord(const float *row, int n, float tau, uint64_t flip) {
    uint64_t word = 0;
    for (int j = 0; j < n; j++)
        word |= (uint64_t)(fabsf(row[j]) > tau) << j;
    return (word ^ flip) & (n == 64 ? ~0ULL : (1ULL << n) - 1);
}

typedef void (*PackRowFn)(const float *row, int N, float tau, uint64_t flip, uint64_t *out);

static void packRowGeneric(const float *row, int N, float tau, uint64_t flip, uint64_t *out) {
    for (int j0 = 0; j0 < N; j0 += 64)
        out[j0 / 64] = packWord(row + j0, N - j0 < 64 ? N - j0 : 64, tau, flip);
}

#if defined(__x86_64__) && defined(__GNUC__)
/* Eight floats a compare; NaN compares false as in packWord. */
__attribute__((target("avx2"))) static void packRowAvx2(const float *row, int N, float tau,
                                                        uint64_t flip, uint64_t *out) {
    const __m256 absMask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 tv = _mm256_set1_ps(tau);
    int j0 = 0;
    for (; j0 + 64 <= N; j0 += 64) {
        uint64_t word = 0;
        for (int k = 0; k < 8; k++) {
            __m256 a = _mm256_and_ps(_mm256_loadu_ps(row + j0 + 8 * k), absMask);
            word |= (uint64_t)_mm256_movemask_ps(_mm256_cmp_ps(a, tv, _CMP_GT_OQ)) << (8 * k);
        }
        out[j0 / 64] = word ^ flip;
    }
    if (j0 < N)
        out[j0 / 64] = packWord(row + j0, N - j0, tau, flip);
}
#endif

static PackRowFn pickPackRow(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        return packRowAvx2;
#endif
    return packRowGeneric;
}

/* Packs 64-token blocks id, id + threads, ... into the token-major bit rows. */
static void packRowsPhase(Shared *sh, int id) {
    PackRowFn packRow = pickPackRow();
    uint64_t flip = sh->complement ? ~0ULL : 0;
    long blocks = (sh->T + 63) / 64;
    for (long blk = id; blk < blocks; blk += sh->threads) {
        if (shouldStop(sh))
            return;
        long t1 = blk * 64 + 64 < sh->T ? blk * 64 + 64 : sh->T;
        for (long t = blk * 64; t < t1; t++)
            packRow(sh->h + t * (long)sh->N, sh->N, sh->tau, flip, sh->rows + t * sh->Wn);
        if (id == 0)
            Cancel_progress(sh->cancel, 0.1 * (double)blk / (double)blocks);
    }
}

static int bitLength(uint64_t x) {
    return x ? 64 - __builtin_clzll(x) : 0;
}

/* Appends tokens [t0, t1) to the lists of the neurons of block w active on them (bit b of
   the rows' word w is neuron 64 w + b). */
static void listChunk(const Shared *sh, Scratch *sc, long w, long t0, long t1) {
    size_t Wn = (size_t)sh->Wn;
    for (long t = t0; t < t1; t++) {
        size_t off = (size_t)t * Wn;
        for (uint64_t x = sh->rows[off + (size_t)w]; x; x &= x - 1) {
            int b = __builtin_ctzll(x);
            sc->lists[b * COACT_LIST + sc->n[b]++] = off;
            sc->count[b]++;
        }
    }
}

/* Runs the kernel on the whole groups of 16 in neuron b's list and keeps the rest for the
   next chunk; with last, the rest is padded to 16 by the zero row T and counted too. */
static void sumList(const Shared *sh, Scratch *sc, int b, long w, long V, int P, bool last) {
    size_t *list = sc->lists + b * COACT_LIST;
    long n = sc->n[b], full = n / 16 * 16;
    if (last && full < n) {
        full += 16;
        for (long k = n; k < full; k++)
            list[k] = (size_t)sh->T * (size_t)sh->Wn;
    }
    sh->rowSum(sh->rows, w, V, list, full, sc->planes + (size_t)b * (size_t)P * (size_t)V, P);
    sc->n[b] = full < n ? n - full : 0;
    memmove(list, list + full, (size_t)sc->n[b] * sizeof(size_t));
}

/* Rows i of block w (neurons [64 w, 64 w + 64)), columns j >= i: row i of C is the sum
   of the bit rows of the tokens where i is active, counted from word w on into a
   bit-sliced counter per neuron. The tokens go in chunks whose rows fit in L2 next to
   the 64 counters, so a row read from L3 serves every neuron of the block active on it;
   the block's word of those rows gives the neurons' token lists. */
static void rowSumBlock(Shared *sh, Scratch *sc, long w) {
    long V = (sh->Wn - w + 3) / 4, T = sh->T;
    int nb = sh->N - 64 * (int)w < 64 ? sh->N - 64 * (int)w : 64;
    int P = bitLength((uint64_t)T) > 8 ? bitLength((uint64_t)T) : 8;
    memset(sc->planes, 0, (size_t)nb * (size_t)P * (size_t)V * sizeof(V4));
    memset(sc->n, 0, sizeof(sc->n));
    memset(sc->count, 0, sizeof(sc->count));
    long step = COACT_CHUNK_BYTES / (8 * (sh->Wn - w));
    step = step < 64 ? 64 : step > COACT_CHUNK_TOKENS ? COACT_CHUNK_TOKENS : step;
    for (long t0 = 0; t0 < T || t0 == 0; t0 += step) {
        long t1 = t0 + step < T ? t0 + step : T;
        listChunk(sh, sc, w, t0, t1);
        for (int b = 0; b < nb; b++)
            sumList(sh, sc, b, w, V, P, t1 == T);
    }
    for (int b = 0; b < nb; b++) {
        int np = bitLength((uint64_t)sc->count[b]) > 8 ? bitLength((uint64_t)sc->count[b]) : 8;
        sh->flush(sh->C + (long)(64 * w + b) * sh->N, 64 * w + b, sh->N, 64 * w,
                  sc->planes + (size_t)b * (size_t)P * (size_t)V, V, np);
    }
}

/* Units "block u and block NB-1-u" (about equal work), unit u to thread u mod threads. */
static void rowSumPhase(Shared *sh, int id) {
    long NB = sh->Wn, units = (NB + 1) / 2;
    for (long u = id; u < units; u += sh->threads) {
        if (shouldStop(sh))
            return;
        rowSumBlock(sh, &sh->scratch[id], u);
        if (NB - 1 - u != u)
            rowSumBlock(sh, &sh->scratch[id], NB - 1 - u);
        if (id == 0)
            Cancel_progress(sh->cancel, 0.1 + 0.85 * (double)(u + 1) / (double)units);
    }
}

/* Counted by complement (inactive bits), the upper triangle holds Cbar[i][j], tokens where
   both are inactive, and n holds Cbar's diagonal: C = T - nbar_i - nbar_j + Cbar (exact in
   unsigned arithmetic). Rows u and N-1-u form one unit. */
static void complementRow(Shared *sh, const uint32_t *nbar, int i) {
    uint32_t *row = sh->C + (long)i * sh->N, base = (uint32_t)sh->T - nbar[i];
    for (int j = i; j < sh->N; j++)
        row[j] = base - nbar[j] + row[j];
}

static void complementPhase(Shared *sh, int id) {
    int units = (sh->N + 1) / 2;
    for (int u = id; u < units; u += sh->threads) {
        complementRow(sh, sh->nbar, u);
        if (sh->N - 1 - u != u)
            complementRow(sh, sh->nbar, sh->N - 1 - u);
    }
}

typedef struct Worker {
    Shared *sh;
    PhaseFn fn;
    int id;
    pthread_t thread;
    bool started;
} Worker;

static void *workerMain(void *arg) {
    Worker *wk = arg;
    wk->fn(wk->sh, wk->id);
    return NULL;
}

/* Runs fn for ids 0..threads-1, id 0 on the calling thread. A helper that cannot be
   started has its share run here too: the split is by id, so the result is the same. */
static void runPhase(Shared *sh, PhaseFn fn) {
    Worker wk[COACT_MAX_THREADS];
    for (int t = 1; t < sh->threads; t++) {
        wk[t] = (Worker){.sh = sh, .fn = fn, .id = t};
        wk[t].started = pthread_create(&wk[t].thread, NULL, workerMain, &wk[t]) == 0;
    }
    fn(sh, 0);
    for (int t = 1; t < sh->threads; t++) {
        if (wk[t].started)
            pthread_join(wk[t].thread, NULL);
        else
            fn(sh, t);
    }
}

/* ---- public ------------------------------------------------------------------------- */

static MsStatus checkShape(long T_train, int N, char **cause) {
    if (N < 1 || T_train < 0 || T_train >= (1L << 32) - 1) {
        setCause(cause, "co-activation needs N >= 1 neurons and 0 <= T_train < 2^32 tokens, "
                        "got N = %d, T_train = %ld", N, T_train);
        return MS_ERR_RANGE;
    }
    return MS_OK;
}

static MsStatus allocCounts(Coact *this, long T_train, int N, char **cause) {
    memset(this, 0, sizeof(*this));
    this->C = tryCallocArray((size_t)N * (size_t)N, sizeof(uint32_t));
    if (!this->C) {
        setCause(cause, "out of memory for the %d x %d co-activation matrix (%zu bytes)", N, N,
                 (size_t)N * (size_t)N * sizeof(uint32_t));
        return MS_ERR_NOMEM;
    }
    this->n = xCalloc((size_t)N, sizeof(uint32_t));
    this->N = N;
    this->T_train = T_train;
    return MS_OK;
}

static void copyDiagonal(Coact *this) {
    for (int i = 0; i < this->N; i++)
        this->n[i] = this->C[(long)i * this->N + i];
}

/* Active fraction on up to 256 evenly spread train rows: it only decides whether the row
   sums count the inactive bits instead (the result is the same either way). */
static double sampleDensity(const float *h, long T, int N, float tau) {
    long S = T < 256 ? T : 256, active = 0;
    for (long s = 0; s < S; s++) {
        const float *row = h + s * T / S * N;
        for (int j = 0; j < N; j++)
            active += fabsf(row[j]) > tau;
    }
    return S ? (double)active / ((double)S * N) : 0.0;
}

static MsStatus countByPairs(Shared *sh, char **cause) {
    /* W = 0 (no train tokens) still works: every count is 0. */
    sh->bits = tryCallocArray((size_t)sh->Npad * (size_t)(sh->W ? sh->W : 1), sizeof(uint64_t));
    if (!sh->bits) {
        setCause(cause, "out of memory for the bit-packed activity of %d neurons x %ld tokens "
                        "(%zu bytes)", sh->N, sh->T, (size_t)sh->Npad * (size_t)sh->W * 8);
        return MS_ERR_NOMEM;
    }
    runPhase(sh, packPhase);
    if (!atomic_load(&sh->stop))
        runPhase(sh, countPhase);
    free(sh->bits);
    return MS_OK;
}

static void freeScratch(Scratch *sc, int threads) {
    for (int t = 0; sc && t < threads; t++) {
        free(sc[t].lists);
        free(sc[t].planes);
    }
    free(sc);
}

/* Per thread: 64 token lists of a chunk and 64 counters of up to 32 planes. */
static Scratch *allocScratch(const Shared *sh) {
    Scratch *sc = xCalloc((size_t)sh->threads, sizeof(Scratch));
    size_t planes = (size_t)64 * COACT_PLANES * (size_t)((sh->Wn + 3) / 4) * sizeof(V4);
    for (int t = 0; t < sh->threads; t++) {
        sc[t].lists = tryMallocArray((size_t)64 * COACT_LIST, sizeof(size_t));
        sc[t].planes = aligned_alloc(sizeof(V4), planes);
        if (!sc[t].lists || !sc[t].planes) {
            freeScratch(sc, sh->threads);
            return NULL;
        }
    }
    return sc;
}

/* this->n serves as the scratch copy of the inactive counts for the complement. */
static MsStatus countByRowSums(Shared *sh, uint32_t *nbar, char **cause) {
    size_t words = ((size_t)sh->T + 1) * (size_t)sh->Wn + 4;
    sh->rows = tryCallocArray(words, sizeof(uint64_t));
    sh->scratch = sh->rows ? allocScratch(sh) : NULL;
    if (!sh->scratch) {
        free(sh->rows);
        setCause(cause, "out of memory for the bit-packed activity of %ld tokens x %d neurons "
                        "(%zu bytes)", sh->T, sh->N, words * 8);
        return MS_ERR_NOMEM;
    }
    runPhase(sh, packRowsPhase);
    if (!atomic_load(&sh->stop))
        runPhase(sh, rowSumPhase);
    if (!atomic_load(&sh->stop) && sh->complement) {
        for (int i = 0; i < sh->N; i++)
            nbar[i] = sh->C[(long)i * sh->N + i];
        sh->nbar = nbar;
        runPhase(sh, complementPhase);
    }
    freeScratch(sh->scratch, sh->threads);
    free(sh->rows);
    return MS_OK;
}

MsStatus Coact_compute(Coact *this, const float *h, long T_train, int N, float tau,
                       int threads, const Cancel *cancel, char **cause) {
    MsStatus st = checkShape(T_train, N, cause);
    if (st != MS_OK)
        return st;
    st = allocCounts(this, T_train, N, cause);
    if (st != MS_OK)
        return st;
    if (threads <= 0)
        threads = COACT_DEFAULT_THREADS;
    if (threads > COACT_MAX_THREADS)
        threads = COACT_MAX_THREADS;
    double density = sampleDensity(h, T_train, N, tau);
    Kernel k = pickKernel();
    Shared sh = {.h = h, .T = T_train, .W = (T_train + 63) / 64, .N = N,
                 .Npad = (N + 3) / 4 * 4, .tau = tau, .C = this->C, .threads = threads,
                 .tile = k.tile, .cancel = cancel, .Wn = (N + 63) / 64,
                 .complement = density > 0.5, .rowSum = k.rowSum,
                 .flush = k.flush};
    atomic_init(&sh.stop, false);
    st = k.tile ? countByPairs(&sh, cause) : countByRowSums(&sh, this->n, cause);
    if (st == MS_OK && !atomic_load(&sh.stop))
        runPhase(&sh, mirrorPhase);
    if (st == MS_OK && atomic_load(&sh.stop))
        st = MS_ERR_CANCELED;
    if (st != MS_OK) {
        Coact_done(this);
        return st;
    }
    copyDiagonal(this);
    Cancel_progress(cancel, 1.0);
    return MS_OK;
}

MsStatus Coact_computeDense(Coact *this, const float *h, long T_train, int N, float tau,
                            char **cause) {
    MsStatus st = checkShape(T_train, N, cause);
    if (st == MS_OK && T_train >= (1L << 24)) {
        setCause(cause, "the dense co-activation reference is exact only below 2^24 tokens, "
                        "got %ld", T_train);
        st = MS_ERR_RANGE;
    }
    if (st != MS_OK)
        return st;
    st = allocCounts(this, T_train, N, cause);
    if (st != MS_OK || T_train == 0)
        return st;
    size_t cells = (size_t)T_train * (size_t)N;
    float *A = tryMallocArray(cells, sizeof(float));
    float *Cf = tryMallocArray((size_t)N * (size_t)N, sizeof(float));
    if (!A || !Cf) {
        free(A);
        free(Cf);
        Coact_done(this);
        setCause(cause, "out of memory for the dense co-activation reference (%zu bytes)",
                 (cells + (size_t)N * (size_t)N) * sizeof(float));
        return MS_ERR_NOMEM;
    }
    for (size_t c = 0; c < cells; c++)
        A[c] = fabsf(h[c]) > tau ? 1.0f : 0.0f;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, N, (int)T_train, 1.0f, A, N, A, N,
                0.0f, Cf, N);
    for (size_t c = 0; c < (size_t)N * (size_t)N; c++)
        this->C[c] = (uint32_t)Cf[c];
    free(A);
    free(Cf);
    copyDiagonal(this);
    return MS_OK;
}

void Coact_done(Coact *this) {
    free(this->C);
    free(this->n);
    memset(this, 0, sizeof(*this));
}

double Coact_intra(const Coact *this, const int32_t *part) {
    uint64_t intra = 0, total = 0;
    for (int i = 0; i < this->N; i++) {
        const uint32_t *row = this->C + (long)i * this->N;
        int32_t pi = part[i];
        for (int j = i + 1; j < this->N; j++) {
            total += row[j];
            if (part[j] == pi)
                intra += row[j];
        }
    }
    return total ? (double)intra / (double)total : NAN;
}
