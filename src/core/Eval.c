/*
moescope - core/Eval.c
Per-token precomputation of every router metric at every k (see Eval.h), then O(E) reads.

DESIGN: tokens are cut into chunks of CHUNK tokens (boundaries fixed by the split only);
each chunk writes its own per-k sums, which are added in chunk order at the end, and
expert selection counts are integers summed per worker. Per token, each expert's output
contribution Y_e is accumulated from the nonzero h only (ReLU layers are ~90% zero), from
a transposed w_out so that each neuron's column is contiguous.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/Eval.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/Cost.h"
#include "core/Parallel.h"
#include "util/XUtils.h"

enum { CHUNK = 32 };

struct Eval {
    int E, N, d_model;
    bool gated;
    long T;
    Split split;
    RouterKind kind;
    double *recall;  /* [E] mean mass recall at k = i + 1 */
    double *overlap; /* [E] */
    double *err;     /* [E] */
    double *loadCum; /* [E][E]: load of expert e at k = i + 1 */
};

/* ---- per-token helpers ---- */

/* Descending order of score[0..n), ties to the lower index: a stable merge sort of the
   indices (TopK_order's rule, in O(n log n) for the large E). tmp has n ints. */
static void orderDesc(const float *score, int n, int *order, int *tmp) {
    for (int i = 0; i < n; i++)
        order[i] = i;
    for (int width = 1; width < n; width *= 2) {
        for (int lo = 0; lo < n; lo += 2 * width) {
            int mid = lo + width < n ? lo + width : n;
            int hi = lo + 2 * width < n ? lo + 2 * width : n;
            int a = lo, b = mid, o = lo;
            while (a < mid && b < hi)
                tmp[o++] = score[order[b]] > score[order[a]] ? order[b++] : order[a++];
            while (a < mid)
                tmp[o++] = order[a++];
            while (b < hi)
                tmp[o++] = order[b++];
        }
        memcpy(order, tmp, (size_t)n * sizeof *order);
    }
}

static double norm2(const float *v, int d) {
    double s = 0.0;
    for (int i = 0; i < d; i++)
        s += (double)v[i] * v[i];
    return sqrt(s);
}

static void axpy(int d, float a, const float *restrict x, float *restrict y) {
    for (int i = 0; i < d; i++)
        y[i] += a * x[i];
}

/* ---- the precomputation ---- */

typedef struct Scratch {
    float *S, *R;     /* [CHUNK][E] oracle and router scores */
    float *Y;         /* [E][d] expert contributions of one token */
    float *y, *r;     /* [d] */
    int *ordO, *ordR, *tmp;
    bool *has, *inO, *inR;
    long *selCount;   /* [E][E]: tokens whose i-th router choice is e */
} Scratch;

typedef struct Job {
    const LayerData *L;
    long row0, T;
    int E, N, d;
    const Router *router; /* NULL: oracle */
    bool gatedRouter;
    const int32_t *part;
    const int *byExpert;    /* [N] neurons grouped by expert */
    const int *expStart;    /* [E + 1] */
    const float *woT;       /* [N][d] */
    Scratch *scratch;       /* [threads] */
    double *sumRecall, *sumOverlap, *sumErr; /* [chunks][E] */
    long *nRecall, *nErr;   /* [chunks] */
} Job;

/* Y_e for every expert of token row h; has[e] tells whether Y_e is nonzero. */
static void expertOutputs(const Job *job, const float *h, Scratch *s) {
    int d = job->d;
    for (int e = 0; e < job->E; e++) {
        float *Ye = s->Y + (size_t)e * d;
        bool any = false;
        for (int i = job->expStart[e]; i < job->expStart[e + 1]; i++) {
            int j = job->byExpert[i];
            if (h[j] == 0.0f)
                continue;
            if (!any)
                memset(Ye, 0, (size_t)d * sizeof *Ye);
            any = true;
            axpy(d, h[j], job->woT + (size_t)j * d, Ye);
        }
        s->has[e] = any;
    }
}

/* Adds this token's residual norms / ||y|| for k = 1..E to err[0..E). */
static void errorCurve(const Job *job, Scratch *s, const float *rscore, double ynorm,
                       double *err) {
    int E = job->E, d = job->d;
    const int *R = s->ordR;
    if (job->gatedRouter) {
        /* r = y - sum of the first k gated contributions */
        memcpy(s->r, s->y, (size_t)d * sizeof *s->r);
        double nr = ynorm;
        for (int k = 1; k <= E; k++) {
            int e = R[k - 1];
            float g = Router_gate(job->router, rscore[e]);
            if (s->has[e]) {
                axpy(d, -g, s->Y + (size_t)e * d, s->r);
                nr = norm2(s->r, d);
            }
            err[k - 1] += nr / ynorm;
        }
        return;
    }
    /* r = the sum of the experts not selected, built from the end: exactly 0 at k = E */
    memset(s->r, 0, (size_t)d * sizeof *s->r);
    double nr = 0.0;
    for (int k = E - 1; k >= 1; k--) {
        int e = R[k];
        if (s->has[e]) {
            axpy(d, 1.0f, s->Y + (size_t)e * d, s->r);
            nr = norm2(s->r, d);
        }
        err[k - 1] += nr / ynorm;
    }
}

static void tokenMetrics(Job *job, long chunk, Scratch *s, int i, const float *h) {
    int E = job->E, d = job->d;
    const float *S = s->S + (size_t)i * E, *Rs = s->R + (size_t)i * E;
    orderDesc(S, E, s->ordO, s->tmp);
    orderDesc(Rs, E, s->ordR, s->tmp);
    double *recall = job->sumRecall + chunk * E, *overlap = job->sumOverlap + chunk * E;

    double total = 0.0;
    for (int e = 0; e < E; e++)
        total += S[e];
    if (total > 0.0) {
        double cum = 0.0;
        for (int k = 0; k < E; k++) {
            cum += S[s->ordR[k]];
            recall[k] += cum / total;
        }
        job->nRecall[chunk]++;
    }

    /* |O_k ∩ R_k| grows by the new members that are already in the other set */
    for (int e = 0; e < E; e++)
        s->inO[e] = s->inR[e] = false;
    int common = 0;
    for (int k = 0; k < E; k++) {
        int o = s->ordO[k], r = s->ordR[k];
        s->inO[o] = true;
        common += s->inR[o];
        common += s->inO[r] && !s->inR[r];
        s->inR[r] = true;
        overlap[k] += (double)common / (k + 1);
        s->selCount[(size_t)k * E + r]++;
    }

    expertOutputs(job, h, s);
    memset(s->y, 0, (size_t)d * sizeof *s->y);
    for (int e = 0; e < E; e++)
        if (s->has[e])
            axpy(d, 1.0f, s->Y + (size_t)e * d, s->y);
    double ynorm = norm2(s->y, d);
    if (ynorm > 0.0) {
        errorCurve(job, s, Rs, ynorm, job->sumErr + chunk * E);
        job->nErr[chunk]++;
    }
}

static void chunkMetrics(void *ctx, long chunk, int worker) {
    Job *job = ctx;
    Scratch *s = &job->scratch[worker];
    long t0 = chunk * CHUNK, rows = job->T - t0 < CHUNK ? job->T - t0 : CHUNK;
    const float *h = job->L->h + (job->row0 + t0) * job->N;
    const float *x = job->L->x + (job->row0 + t0) * job->d;
    Router_oracleScores(h, rows, job->N, job->part, job->E, s->S);
    if (job->router && Router_kind(job->router) != ROUTER_ORACLE)
        Router_score(job->router, x, h, rows, s->R);
    else
        memcpy(s->R, s->S, (size_t)rows * job->E * sizeof *s->R);
    for (int i = 0; i < rows; i++)
        tokenMetrics(job, chunk, s, i, h + (size_t)i * job->N);
}

static void scratchInit(Scratch *s, int E, int d) {
    s->S = xMallocArray((size_t)CHUNK * E, sizeof(float));
    s->R = xMallocArray((size_t)CHUNK * E, sizeof(float));
    s->Y = xMallocArray((size_t)E * d, sizeof(float));
    s->y = xMallocArray((size_t)d, sizeof(float));
    s->r = xMallocArray((size_t)d, sizeof(float));
    s->ordO = xMallocArray((size_t)E, sizeof(int));
    s->ordR = xMallocArray((size_t)E, sizeof(int));
    s->tmp = xMallocArray((size_t)E, sizeof(int));
    s->has = xMallocArray((size_t)E, sizeof(bool));
    s->inO = xMallocArray((size_t)E, sizeof(bool));
    s->inR = xMallocArray((size_t)E, sizeof(bool));
    s->selCount = xCalloc((size_t)E * E, sizeof(long));
}

static void scratchDone(Scratch *s) {
    free(s->S);
    free(s->R);
    free(s->Y);
    free(s->y);
    free(s->r);
    free(s->ordO);
    free(s->ordR);
    free(s->tmp);
    free(s->has);
    free(s->inO);
    free(s->inR);
    free(s->selCount);
}

/* Folds the per-chunk sums (in chunk order) and the selection counts into this. */
static void reduce(Eval *this, const Job *job, long chunks, int threads) {
    int E = this->E;
    long nRecall = 0, nErr = 0;
    for (long c = 0; c < chunks; c++) {
        nRecall += job->nRecall[c];
        nErr += job->nErr[c];
    }
    for (int k = 0; k < E; k++) {
        double r = 0.0, o = 0.0, e = 0.0;
        for (long c = 0; c < chunks; c++) {
            r += job->sumRecall[c * E + k];
            o += job->sumOverlap[c * E + k];
            e += job->sumErr[c * E + k];
        }
        this->recall[k] = nRecall ? r / (double)nRecall : NAN;
        this->overlap[k] = o / (double)this->T;
        this->err[k] = nErr ? e / (double)nErr : NAN;
    }
    for (int e = 0; e < E; e++) {
        long cum = 0;
        for (int k = 0; k < E; k++) {
            for (int w = 0; w < threads; w++)
                cum += job->scratch[w].selCount[(size_t)k * E + e];
            this->loadCum[(size_t)k * E + e] = (double)cum / (double)this->T;
        }
    }
}

/* Neurons listed expert by expert, ascending within an expert. */
static void groupByExpert(const int32_t *part, int N, int E, int *byExpert, int *expStart) {
    memset(expStart, 0, (size_t)(E + 1) * sizeof *expStart);
    for (int j = 0; j < N; j++)
        expStart[part[j] + 1]++;
    for (int e = 0; e < E; e++)
        expStart[e + 1] += expStart[e];
    int *fill = xMallocArray((size_t)E, sizeof *fill);
    memcpy(fill, expStart, (size_t)E * sizeof *fill);
    for (int j = 0; j < N; j++)
        byExpert[fill[part[j]]++] = j;
    free(fill);
}

static MsStatus checkInputs(const LayerData *L, const int32_t *part, int E, const Router *router,
                            char **cause) {
    if (!L || !L->w || !L->x || !L->h || L->w->d_model < 1 || L->w->d_ff < 1) {
        setCause(cause, "router evaluation needs a layer with weights, x and h");
        return MS_ERR_RANGE;
    }
    MsStatus st = Router_checkPartition(part, L->w->d_ff, E, cause);
    if (st == MS_OK && router && Router_experts(router) != E) {
        setCause(cause, "the router was built for %d experts, not %d", Router_experts(router), E);
        st = MS_ERR_RANGE;
    }
    return st;
}

MsStatus Eval_new(Eval **out, const LayerData *L, const int32_t *part, int E,
                  const Router *router, Split split, int threads, const Cancel *cancel,
                  char **cause) {
    *out = NULL;
    MsStatus st = checkInputs(L, part, E, router, cause);
    if (st != MS_OK)
        return st;
    long row0, row1;
    Split_rows(L, split, &row0, &row1);
    if (row1 <= row0) {
        setCause(cause, "the %s split has no tokens to evaluate", Split_name(split));
        return MS_ERR_RANGE;
    }
    int N = L->w->d_ff, d = L->w->d_model;
    float *woT = tryMallocArray((size_t)N * d, sizeof(float));
    if (!woT) {
        setCause(cause, "no memory for the transposed w_out (%zu bytes)",
                 (size_t)N * d * sizeof(float));
        return MS_ERR_NOMEM;
    }
    for (int i = 0; i < d; i++)
        for (int j = 0; j < N; j++)
            woT[(size_t)j * d + i] = L->w->w_out[(size_t)i * N + j];

    threads = threads < 1 ? 1 : threads > 64 ? 64 : threads;
    long T = row1 - row0, chunks = Parallel_chunks(T, CHUNK);
    int *byExpert = xMallocArray((size_t)N, sizeof(int));
    int *expStart = xMallocArray((size_t)E + 1, sizeof(int));
    groupByExpert(part, N, E, byExpert, expStart);
    Job job = {
        .L = L, .row0 = row0, .T = T, .E = E, .N = N, .d = d, .router = router,
        .gatedRouter = router && Router_scalesOutput(router), .part = part,
        .byExpert = byExpert, .expStart = expStart, .woT = woT,
        .scratch = xCalloc((size_t)threads, sizeof(Scratch)),
        .sumRecall = xCalloc((size_t)chunks * E, sizeof(double)),
        .sumOverlap = xCalloc((size_t)chunks * E, sizeof(double)),
        .sumErr = xCalloc((size_t)chunks * E, sizeof(double)),
        .nRecall = xCalloc((size_t)chunks, sizeof(long)),
        .nErr = xCalloc((size_t)chunks, sizeof(long)),
    };
    for (int w = 0; w < threads; w++)
        scratchInit(&job.scratch[w], E, d);
    st = Parallel_run(threads, chunks, chunkMetrics, &job, cancel, 0.0, 1.0);

    Eval *this = NULL;
    if (st == MS_OK) {
        this = xCalloc(1, sizeof *this);
        *this = (Eval){
            .E = E, .N = N, .d_model = d, .gated = FfnWeights_gated(L->w), .T = T,
            .split = split, .kind = router ? Router_kind(router) : ROUTER_ORACLE,
            .recall = xMallocArray((size_t)E, sizeof(double)),
            .overlap = xMallocArray((size_t)E, sizeof(double)),
            .err = xMallocArray((size_t)E, sizeof(double)),
            .loadCum = xMallocArray((size_t)E * E, sizeof(double)),
        };
        reduce(this, &job, chunks, threads);
    } else {
        setCause(cause, "router evaluation canceled");
    }
    for (int w = 0; w < threads; w++)
        scratchDone(&job.scratch[w]);
    free(job.scratch);
    free(job.sumRecall);
    free(job.sumOverlap);
    free(job.sumErr);
    free(job.nRecall);
    free(job.nErr);
    free(byExpert);
    free(expStart);
    free(woT);
    *out = this;
    return st;
}

void Eval_delete(Eval *this) {
    if (!this)
        return;
    free(this->recall);
    free(this->overlap);
    free(this->err);
    free(this->loadCum);
    free(this);
}

int Eval_experts(const Eval *this) {
    return this->E;
}

long Eval_tokens(const Eval *this) {
    return this->T;
}

Split Eval_split(const Eval *this) {
    return this->split;
}

RouterKind Eval_routerKind(const Eval *this) {
    return this->kind;
}

static int clampK(const Eval *this, int k) {
    return k < 1 ? 1 : k > this->E ? this->E : k;
}

void Eval_loads(const Eval *this, int k, double *load) {
    k = clampK(this, k);
    memcpy(load, this->loadCum + (size_t)(k - 1) * this->E, (size_t)this->E * sizeof *load);
}

void Eval_metrics(const Eval *this, int k, EvalMetrics *out) {
    k = clampK(this, k);
    int E = this->E;
    const double *load = this->loadCum + (size_t)(k - 1) * E;
    double mx = 0.0, H = 0.0;
    for (int e = 0; e < E; e++) {
        mx = load[e] > mx ? load[e] : mx;
        double p = load[e] / k;
        if (p > 0.0)
            H -= p * log(p);
    }
    *out = (EvalMetrics){
        .mass_recall = this->recall[k - 1],
        .overlap = this->overlap[k - 1],
        .output_rel_err = this->err[k - 1],
        .load_max_over_mean = mx * E / k,
        /* one expert: every token picks it, the load is as even as it can be */
        .load_entropy_norm = E > 1 ? H / log((double)E) : 1.0,
        .flops_fraction = Cost_flopsFraction(this->kind, this->d_model, this->N, E, k, this->gated),
        .ideal_speedup = Cost_idealSpeedup(this->kind, this->d_model, this->N, E, k, this->gated),
    };
}
