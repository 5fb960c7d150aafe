/*
moescope - core/Coact.c
Co-activation counting.

DESIGN: at 90% sparsity a dense A^T A spends 2 T N^2 flops on mostly zero products. Here
each neuron's activity over the train tokens becomes a bit column (64 tokens a word), and
C[i][j] = popcount(col_i AND col_j) summed over the words: one AND + one popcount per 64
token pairs instead of 128 flops. Pairs are counted in 4 x 4 tiles (four columns of i
against four of j), so each loaded word serves four pairs. Three kernels: AVX2 (Mula's
vpshufb nibble table on 256 bits, as two 2 x 4 halves with byte counters folded every 31
steps; about 0.6 cycles per 64 token pairs), scalar POPCNT, and a portable fallback;
the fastest the CPU has is picked at run time.
Only the tiles on or above the diagonal are counted, a block of 16 i columns at a time;
the lower triangle is then mirrored by a blocked transpose (writing it from the tiles
would cost a cache miss per pair). Work is split into units "block u and block B-1-u"
(about equal work per unit), unit u
going to thread u mod threads: a fixed split, and every count is an integer sum in a
fixed order, so the result does not depend on the thread count.
The packing pass (h -> bits) reads h row by row and is split by 64-token blocks.
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

/* MOESCOPE_COACT_KERNEL = generic | popcnt | avx2 forces a kernel (tests compare them;
   an unavailable one falls back to the next simpler one). */
static TileFn pickTile(void) {
    const char *want = getenv("MOESCOPE_COACT_KERNEL");
    if (want && strcmp(want, "generic") == 0)
        return tileGeneric;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    bool popcnt = __builtin_cpu_supports("popcnt");
    bool avx2 = popcnt && __builtin_cpu_supports("avx2");
    if (avx2 && !(want && strcmp(want, "popcnt") == 0))
        return tileAvx2;
    if (popcnt)
        return tilePopcnt;
#endif
    return tileGeneric;
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
    Shared sh = {.h = h, .T = T_train, .W = (T_train + 63) / 64, .N = N,
                 .Npad = (N + 3) / 4 * 4, .tau = tau, .C = this->C, .threads = threads,
                 .tile = pickTile(), .cancel = cancel};
    atomic_init(&sh.stop, false);
    /* W = 0 (no train tokens) still works: every count is 0. */
    sh.bits = tryCallocArray((size_t)sh.Npad * (size_t)(sh.W ? sh.W : 1), sizeof(uint64_t));
    if (!sh.bits) {
        setCause(cause, "out of memory for the bit-packed activity of %d neurons x %ld tokens "
                        "(%zu bytes)", N, T_train, (size_t)sh.Npad * (size_t)sh.W * 8);
        Coact_done(this);
        return MS_ERR_NOMEM;
    }
    runPhase(&sh, packPhase);
    if (!atomic_load(&sh.stop))
        runPhase(&sh, countPhase);
    if (!atomic_load(&sh.stop))
        runPhase(&sh, mirrorPhase);
    free(sh.bits);
    if (atomic_load(&sh.stop)) {
        Coact_done(this);
        return MS_ERR_CANCELED;
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
