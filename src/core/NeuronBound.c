/*
moescope - core/NeuronBound.c
Mean top-K neuron error for every K, by one backward pass per token: the residual after
keeping the top K neurons is the sum of the contributions ranked below K, so it is built
from the lowest-ranked nonzero neuron upwards and its norm recorded at each K. Neurons
with h = 0 contribute nothing, so K beyond a token's nonzero count has error exactly 0.
Tokens are cut into fixed chunks whose per-K sums are added in chunk order.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/NeuronBound.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/Parallel.h"
#include "core/Vec.h"
#include "util/XUtils.h"

enum { CHUNK = 32 };

struct NeuronBound {
    int N;
    double *err; /* [N + 1] */
};

typedef struct Ranked {
    float score;
    int j;
} Ranked;

typedef struct Scratch {
    Ranked *list, *tmp; /* [N] */
    int *idx;           /* [N] a token's nonzero neurons */
    float *r;           /* [d] */
    double *norm;       /* [N + 1] residual norms of one token */
} Scratch;

typedef struct Job {
    const LayerData *L;
    long row0, T;
    int N, d;
    const float *woT;     /* [N][d] */
    const float *colNorm; /* [N] ||w_out[:, j]|| */
    Scratch *scratch;
    double *sumErr;       /* [chunks][N + 1] */
    long *nTok;           /* [chunks] */
} Job;

/* Stable merge sort, descending score; equal scores keep ascending neuron order. */
static void sortRanked(Ranked *a, int n, Ranked *tmp) {
    for (int width = 1; width < n; width *= 2) {
        for (int lo = 0; lo < n; lo += 2 * width) {
            int mid = lo + width < n ? lo + width : n;
            int hi = lo + 2 * width < n ? lo + 2 * width : n;
            int x = lo, y = mid, o = lo;
            while (x < mid && y < hi)
                tmp[o++] = a[y].score > a[x].score ? a[y++] : a[x++];
            while (x < mid)
                tmp[o++] = a[x++];
            while (y < hi)
                tmp[o++] = a[y++];
        }
        memcpy(a, tmp, (size_t)n * sizeof *a);
    }
}

/* Adds this token's error at every K to sum[0..N]; false when ||y|| = 0 (skipped). */
static bool tokenCurve(const Job *job, Scratch *s, const float *h, double *sum) {
    int d = job->d, a = Vec_nonzeros(job->N, h, s->idx);
    for (int i = 0; i < a; i++) {
        int j = s->idx[i];
        s->list[i] = (Ranked){.score = fabsf(h[j]) * job->colNorm[j], .j = j};
    }
    sortRanked(s->list, a, s->tmp);
    memset(s->r, 0, (size_t)d * sizeof *s->r);
    s->norm[a] = 0.0;
    for (int K = a - 1; K >= 0; K--) {
        int j = s->list[K].j;
        const float *w = job->woT + (size_t)j * d;
        float v = h[j];
        s->norm[K] = sqrt(Vec_axpyNorm(d, v, w, s->r));
    }
    double ynorm = s->norm[0];
    if (!(ynorm > 0.0))
        return false;
    for (int K = 0; K < a; K++)
        sum[K] += s->norm[K] / ynorm;
    return true;
}

static void chunkCurve(void *ctx, long chunk, int worker) {
    Job *job = ctx;
    Scratch *s = &job->scratch[worker];
    long t0 = chunk * CHUNK, rows = job->T - t0 < CHUNK ? job->T - t0 : CHUNK;
    double *sum = job->sumErr + chunk * (job->N + 1);
    for (long t = t0; t < t0 + rows; t++)
        job->nTok[chunk] += tokenCurve(job, s, job->L->h + (job->row0 + t) * job->N, sum);
}

long NeuronBound_K(int N, int E, int k) {
    if (E < 1)
        return 0;
    long K = (long)floor((double)k * N / E + 0.5);
    return K < 0 ? 0 : K > N ? N : K;
}

MsStatus NeuronBound_new(NeuronBound **out, const LayerData *L, Split split, int threads,
                         const Cancel *cancel, char **cause) {
    *out = NULL;
    if (!L || !L->w || !L->h || L->w->d_model < 1 || L->w->d_ff < 1) {
        setCause(cause, "the top-K neuron bound needs a layer with weights and h");
        return MS_ERR_RANGE;
    }
    long row0, row1;
    Split_rows(L, split, &row0, &row1);
    if (row1 <= row0) {
        setCause(cause, "the %s split has no tokens for the top-K neuron bound",
                 Split_name(split));
        return MS_ERR_RANGE;
    }
    int N = L->w->d_ff, d = L->w->d_model;
    long T = row1 - row0, chunks = Parallel_chunks(T, CHUNK);
    float *woT = tryMallocArray((size_t)N * d, sizeof(float));
    double *sumErr = tryCallocArray((size_t)chunks * (N + 1), sizeof(double));
    if (!woT || !sumErr) {
        free(woT);
        free(sumErr);
        setCause(cause, "no memory for the top-K neuron bound (%zu bytes)",
                 (size_t)N * d * sizeof(float) + (size_t)chunks * (N + 1) * sizeof(double));
        return MS_ERR_NOMEM;
    }
    float *colNorm = xCalloc((size_t)N, sizeof(float));
    double *cn = xCalloc((size_t)N, sizeof(double));
    for (int i = 0; i < d; i++)
        for (int j = 0; j < N; j++) {
            float w = L->w->w_out[(size_t)i * N + j];
            woT[(size_t)j * d + i] = w;
            cn[j] += (double)w * w;
        }
    for (int j = 0; j < N; j++)
        colNorm[j] = (float)sqrt(cn[j]);
    free(cn);

    threads = threads < 1 ? 1 : threads > 64 ? 64 : threads;
    Job job = {.L = L, .row0 = row0, .T = T, .N = N, .d = d, .woT = woT, .colNorm = colNorm,
               .scratch = xCalloc((size_t)threads, sizeof(Scratch)), .sumErr = sumErr,
               .nTok = xCalloc((size_t)chunks, sizeof(long))};
    for (int w = 0; w < threads; w++) {
        job.scratch[w].list = xMallocArray((size_t)N, sizeof(Ranked));
        job.scratch[w].tmp = xMallocArray((size_t)N, sizeof(Ranked));
        job.scratch[w].idx = xMallocArray((size_t)N, sizeof(int));
        job.scratch[w].r = xMallocArray((size_t)d, sizeof(float));
        job.scratch[w].norm = xMallocArray((size_t)N + 1, sizeof(double));
    }
    MsStatus st = Parallel_run(threads, chunks, chunkCurve, &job, cancel, 0.0, 1.0);
    if (st == MS_OK) {
        NeuronBound *this = xCalloc(1, sizeof *this);
        this->N = N;
        this->err = xMallocArray((size_t)N + 1, sizeof(double));
        long n = 0;
        for (long c = 0; c < chunks; c++)
            n += job.nTok[c];
        for (int K = 0; K <= N; K++) {
            double s = 0.0;
            for (long c = 0; c < chunks; c++)
                s += sumErr[c * (N + 1) + K];
            this->err[K] = n ? s / (double)n : NAN;
        }
        *out = this;
    } else {
        setCause(cause, "top-K neuron bound canceled");
    }
    for (int w = 0; w < threads; w++) {
        free(job.scratch[w].list);
        free(job.scratch[w].tmp);
        free(job.scratch[w].idx);
        free(job.scratch[w].r);
        free(job.scratch[w].norm);
    }
    free(job.scratch);
    free(job.nTok);
    free(colNorm);
    free(sumErr);
    free(woT);
    return st;
}

void NeuronBound_delete(NeuronBound *this) {
    if (!this)
        return;
    free(this->err);
    free(this);
}

double NeuronBound_error(const NeuronBound *this, long K) {
    K = K < 0 ? 0 : K > this->N ? this->N : K;
    return this->err[K];
}

double NeuronBound_errorAt(const NeuronBound *this, int E, int k, long *K_out) {
    long K = NeuronBound_K(this->N, E, k);
    if (K_out)
        *K_out = K;
    return NeuronBound_error(this, K);
}
