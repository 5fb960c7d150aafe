/*
moescope - core/Sparsity.c
Counting passes over h for SPEC §2's sparsity figures.

The tau quantile is a radix select on the bits of |h|: for non-negative floats the IEEE
bit pattern orders like the value, so a 65536-bin histogram of the top 16 bits finds the
bin holding the wanted rank, and a second histogram of the low 16 bits inside that bin
finds the exact entry. Two streaming passes, no copy of the T*N entries, and integer
counts, so the answer is exact and independent of the thread count.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/Sparsity.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/Parallel.h"
#include "core/Vec.h"
#include "util/XUtils.h"

enum { CHUNK_ROWS = 64, BINS = 65536 };

static inline uint32_t absBits(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u & 0x7fffffffu;
}

static inline float bitsFloat(uint32_t u) {
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

static MsStatus checkShape(const float *h, long T, int N, char **cause) {
    if (!h || T < 1 || N < 1) {
        setCause(cause, "sparsity needs at least one token and one neuron (got %ld x %d)", T,
                 N);
        return MS_ERR_RANGE;
    }
    return MS_OK;
}

static int clampThreads(int threads) {
    return threads < 1 ? 1 : threads > 64 ? 64 : threads;
}

/* ---- sparsity at one tau ---- */

typedef struct CountJob {
    const float *h;
    long T;
    int N;
    float tau;
    int32_t *token_active;
    int32_t **neuronCount; /* [worker][N] */
} CountJob;

static void countChunk(void *ctx, long chunk, int worker) {
    CountJob *job = ctx;
    long r0 = chunk * CHUNK_ROWS, r1 = r0 + CHUNK_ROWS < job->T ? r0 + CHUNK_ROWS : job->T;
    int N = job->N;
    int32_t *cnt = job->neuronCount[worker];
    for (long t = r0; t < r1; t++)
        job->token_active[t] = Vec_countAbove(N, job->h + t * (long)N, job->tau, cnt);
}

static MsStatus checkTau(float tau, char **cause) {
    if (!(tau >= 0.0f)) {
        setCause(cause, "the activity threshold tau must be >= 0 (got %g)", (double)tau);
        return MS_ERR_RANGE;
    }
    return MS_OK;
}

MsStatus Sparsity_compute(Sparsity *out, const float *h, long T, int N, float tau, int threads,
                          const Cancel *cancel, char **cause) {
    memset(out, 0, sizeof *out);
    MsStatus st = checkShape(h, T, N, cause);
    if (st == MS_OK)
        st = checkTau(tau, cause);
    if (st != MS_OK)
        return st;
    threads = clampThreads(threads);
    int32_t *tokenActive = tryMallocArray((size_t)T, sizeof *tokenActive);
    double *freq = tryMallocArray((size_t)N, sizeof *freq);
    if (!tokenActive || !freq) {
        free(tokenActive);
        free(freq);
        setCause(cause, "no memory for the per-token activity counts (%zu bytes)",
                 (size_t)T * sizeof(int32_t) + (size_t)N * sizeof(double));
        return MS_ERR_NOMEM;
    }
    CountJob job = {.h = h, .T = T, .N = N, .tau = tau + 0.0f, .token_active = tokenActive};
    job.neuronCount = xCalloc((size_t)threads, sizeof *job.neuronCount);
    for (int w = 0; w < threads; w++)
        job.neuronCount[w] = xCalloc((size_t)N, sizeof(int32_t));
    st = Parallel_run(threads, Parallel_chunks(T, CHUNK_ROWS), countChunk, &job, cancel, 0.0,
                      1.0);
    long dead = 0;
    for (int j = 0; j < N && st == MS_OK; j++) {
        long c = 0;
        for (int w = 0; w < threads; w++)
            c += job.neuronCount[w][j];
        freq[j] = (double)c / (double)T;
        dead += c == 0;
    }
    for (int w = 0; w < threads; w++)
        free(job.neuronCount[w]);
    free(job.neuronCount);
    if (st != MS_OK) {
        free(tokenActive);
        free(freq);
        setCause(cause, "sparsity computation canceled");
        return st;
    }
    long long active = 0;
    for (long t = 0; t < T; t++)
        active += tokenActive[t];
    *out = (Sparsity){
        .T = T,
        .N = N,
        .tau = tau,
        .active = active,
        .sparsity = 1.0 - (double)active / ((double)T * (double)N),
        .active_per_token_mean = (double)active / (double)T,
        .dead_fraction = (double)dead / (double)N,
        .neuron_freq = freq,
        .token_active = tokenActive,
    };
    return MS_OK;
}

void Sparsity_done(Sparsity *this) {
    if (!this)
        return;
    free(this->neuron_freq);
    free(this->token_active);
    memset(this, 0, sizeof *this);
}

/* ---- tau for a target sparsity ---- */

typedef struct HistJob {
    const float *h;
    long T;
    int N;
    int pass;              /* 0: top 16 bits of all entries; 1: low 16 bits in some bins */
    const int8_t *slotOf;  /* pass 1: [BINS] the histogram of each top-16-bit bin, or -1 */
    uint64_t **hist;       /* [worker][slots][BINS] */
    int **idx;             /* [worker][N] a row's nonzero entries */
} HistJob;

/* Zeros dominate ReLU layers, so each row's nonzero entries are found first (a vector
   scan) and only they go through the histogram; the zeros (|h| bits 0: bin 0, low bits
   0) are counted apart, which also keeps them off a single serializing counter. */
static void histChunk(void *ctx, long chunk, int worker) {
    HistJob *job = ctx;
    long r0 = chunk * CHUNK_ROWS, r1 = r0 + CHUNK_ROWS < job->T ? r0 + CHUNK_ROWS : job->T;
    int N = job->N, *idx = job->idx[worker];
    uint64_t *hist = job->hist[worker], zeros = 0;
    const int8_t *slotOf = job->slotOf;
    for (long t = r0; t < r1; t++) {
        const float *row = job->h + t * (long)N;
        int n = Vec_nonzeros(N, row, idx);
        zeros += (uint64_t)(N - n);
        for (int i = 0; i < n; i++) {
            uint32_t u = absBits(row[idx[i]]);
            if (job->pass == 0) {
                hist[u >> 16]++;
            } else {
                int slot = slotOf[u >> 16];
                if (slot >= 0)
                    hist[(size_t)slot * BINS + (u & 0xffffu)]++;
            }
        }
    }
    if (job->pass == 0)
        hist[0] += zeros;
    else if (slotOf[0] >= 0)
        hist[(size_t)slotOf[0] * BINS] += zeros;
}

/* One pass; sum[slots][BINS] gets the workers' histograms added up. */
static MsStatus histPass(HistJob *job, int threads, int slots, const Cancel *cancel,
                         uint64_t *sum, double p0, double p1) {
    size_t size = (size_t)slots * BINS;
    for (int w = 0; w < threads; w++)
        memset(job->hist[w], 0, size * sizeof(uint64_t));
    MsStatus st = Parallel_run(threads, Parallel_chunks(job->T, CHUNK_ROWS), histChunk, job,
                               cancel, p0, p1);
    memset(sum, 0, size * sizeof(uint64_t));
    for (int w = 0; w < threads; w++)
        for (size_t b = 0; b < size; b++)
            sum[b] += job->hist[w][b];
    return st;
}

/* The 1-based rank of the answer: the smallest r with r / n >= q, at least 1. */
static uint64_t targetRank(double q, uint64_t n) {
    double nd = (double)n;
    double c = ceil(q * nd);
    uint64_t r = c <= 0.0 ? 0 : c >= nd ? n : (uint64_t)c;
    /* q * n may round either way: settle on the definition itself. */
    while (r > 0 && (double)(r - 1) / nd >= q)
        r--;
    while (r < n && (double)r / nd < q)
        r++;
    return r < 1 ? 1 : r;
}

/* The bin holding the entry of 1-based rank *rank; *rank becomes the rank inside it. */
static uint32_t findBin(const uint64_t *hist, uint64_t *rank) {
    uint64_t cum = 0;
    for (uint32_t b = 0; b < BINS; b++) {
        if (cum + hist[b] >= *rank) {
            *rank -= cum;
            return b;
        }
        cum += hist[b];
    }
    return BINS - 1; /* not reached: the ranks sum to n */
}

/* Radix selection of every quantile at once: one pass over the top 16 bits of |h| finds
   each rank's bin, a second one over the low 16 bits of the entries in those bins (one
   histogram per distinct bin) finishes all of them. */
static MsStatus selectRanks(HistJob *job, int threads, uint64_t *rank, int n,
                            const Cancel *cancel, float *tau) {
    uint64_t *sum = xMallocArray(BINS, sizeof *sum);
    MsStatus st = histPass(job, threads, 1, cancel, sum, 0.0, 0.5);
    uint32_t *hi = xMallocArray((size_t)n, sizeof *hi);
    int8_t *slotOf = xMallocArray(BINS, sizeof *slotOf);
    memset(slotOf, -1, BINS);
    int slots = 0;
    for (int i = 0; i < n && st == MS_OK; i++) {
        hi[i] = findBin(sum, &rank[i]);
        if (slotOf[hi[i]] < 0)
            slotOf[hi[i]] = (int8_t)slots++;
    }
    free(sum);
    if (st == MS_OK) {
        for (int w = 0; w < threads; w++)
            job->hist[w] = xReallocArray(job->hist[w], (size_t)slots * BINS, sizeof(uint64_t));
        sum = xMallocArray((size_t)slots * BINS, sizeof *sum);
        job->pass = 1;
        job->slotOf = slotOf;
        st = histPass(job, threads, slots, cancel, sum, 0.5, 1.0);
        for (int i = 0; i < n && st == MS_OK; i++)
            tau[i] = bitsFloat(hi[i] << 16 |
                               findBin(sum + (size_t)slotOf[hi[i]] * BINS, &rank[i]));
        free(sum);
    }
    free(slotOf);
    free(hi);
    return st;
}

MsStatus Sparsity_tausForSparsity(const float *h, long T, int N, const double *q, int n,
                                  int threads, const Cancel *cancel, float *tau, char **cause) {
    MsStatus st = checkShape(h, T, N, cause);
    if (st != MS_OK)
        return st;
    if (n < 1 || n > SPARSITY_MAX_QUANTILES) {
        setCause(cause, "between 1 and %d target sparsities at once (got %d)",
                 SPARSITY_MAX_QUANTILES, n);
        return MS_ERR_RANGE;
    }
    for (int i = 0; i < n; i++) {
        if (!(q[i] >= 0.0 && q[i] <= 1.0)) {
            setCause(cause, "a target sparsity must lie in [0, 1] (got %g)", q[i]);
            return MS_ERR_RANGE;
        }
    }
    threads = clampThreads(threads);
    uint64_t rank[SPARSITY_MAX_QUANTILES];
    for (int i = 0; i < n; i++)
        rank[i] = targetRank(q[i], (uint64_t)T * (uint64_t)N);
    HistJob job = {.h = h, .T = T, .N = N};
    job.hist = xCalloc((size_t)threads, sizeof *job.hist);
    job.idx = xCalloc((size_t)threads, sizeof *job.idx);
    for (int w = 0; w < threads; w++) {
        job.hist[w] = xMallocArray(BINS, sizeof(uint64_t));
        job.idx[w] = xMallocArray((size_t)N, sizeof(int));
    }
    st = selectRanks(&job, threads, rank, n, cancel, tau);
    for (int w = 0; w < threads; w++) {
        free(job.hist[w]);
        free(job.idx[w]);
    }
    free(job.hist);
    free(job.idx);
    if (st != MS_OK)
        setCause(cause, "tau quantile computation canceled");
    return st;
}

MsStatus Sparsity_tauForSparsity(const float *h, long T, int N, double q, int threads,
                                 const Cancel *cancel, float *tau, char **cause) {
    return Sparsity_tausForSparsity(h, T, N, &q, 1, threads, cancel, tau, cause);
}

/* ---- tau -> sparsity curve ---- */

typedef struct CurveJob {
    const float *h;
    long T;
    int N;
    const uint32_t *tauBits; /* ascending */
    int n;
    const int32_t *lut;      /* [BINS]: taus below every value of the bin, or -1: mixed */
    uint64_t **hist;         /* [worker][n + 1]: entries by count of taus below them */
} CurveJob;

/* Number of taus strictly below the value with bits u (binary search). */
static int tausBelow(const uint32_t *tb, int n, uint32_t u) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (tb[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void curveChunk(void *ctx, long chunk, int worker) {
    CurveJob *job = ctx;
    long r0 = chunk * CHUNK_ROWS, r1 = r0 + CHUNK_ROWS < job->T ? r0 + CHUNK_ROWS : job->T;
    const float *p = job->h + r0 * (long)job->N, *end = job->h + r1 * (long)job->N;
    uint64_t *hist = job->hist[worker];
    for (; p < end; p++) {
        uint32_t u = absBits(*p);
        int c = job->lut[u >> 16];
        if (c < 0)
            c = tausBelow(job->tauBits, job->n, u);
        hist[c]++;
    }
}

static int cmpU32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

MsStatus Sparsity_curve(const float *h, long T, int N, const float *taus, int n, int threads,
                        const Cancel *cancel, double *sparsity, char **cause) {
    MsStatus st = checkShape(h, T, N, cause);
    for (int i = 0; i < n && st == MS_OK; i++)
        st = checkTau(taus[i], cause);
    if (st != MS_OK || n < 1)
        return st;
    threads = clampThreads(threads);
    uint32_t *tb = xMallocArray((size_t)n, sizeof *tb);
    for (int i = 0; i < n; i++)
        tb[i] = absBits(taus[i] + 0.0f);
    qsort(tb, (size_t)n, sizeof *tb, cmpU32);
    /* A bin's values all have the same count of taus below them unless a tau falls in
       the bin; only those mixed bins need the binary search. */
    int32_t *lut = xMallocArray(BINS, sizeof *lut);
    int i = 0;
    for (uint32_t b = 0; b < BINS; b++) {
        while (i < n && tb[i] >> 16 < b)
            i++;
        lut[b] = i < n && tb[i] >> 16 == b ? -1 : i;
    }
    CurveJob job = {.h = h, .T = T, .N = N, .tauBits = tb, .n = n, .lut = lut};
    job.hist = xCalloc((size_t)threads, sizeof *job.hist);
    for (int w = 0; w < threads; w++)
        job.hist[w] = xCalloc((size_t)n + 1, sizeof(uint64_t));
    st = Parallel_run(threads, Parallel_chunks(T, CHUNK_ROWS), curveChunk, &job, cancel, 0.0,
                      1.0);
    if (st == MS_OK) {
        /* hist[c]: entries above exactly c sorted taus; entry is active for tau #m < c. */
        uint64_t *byC = xCalloc((size_t)n + 1, sizeof *byC);
        for (int w = 0; w < threads; w++)
            for (int c = 0; c <= n; c++)
                byC[c] += job.hist[w][c];
        double total = (double)T * (double)N;
        for (int k = 0; k < n; k++) {
            uint32_t u = absBits(taus[k] + 0.0f);
            int m = tausBelow(tb, n, u); /* first sorted position of this tau's value */
            uint64_t active = 0;
            for (int c = m + 1; c <= n; c++)
                active += byC[c];
            sparsity[k] = 1.0 - (double)active / total;
        }
        free(byC);
    } else {
        setCause(cause, "sparsity curve computation canceled");
    }
    for (int w = 0; w < threads; w++)
        free(job.hist[w]);
    free(job.hist);
    free(lut);
    free(tb);
    return st;
}
