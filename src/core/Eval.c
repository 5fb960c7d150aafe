/*
moescope - core/Eval.c
Per-token precomputation of every router metric at every k (see Eval.h), then O(E) reads.

DESIGN: tokens are cut into chunks of CHUNK tokens (boundaries fixed by the split only);
each chunk writes its own per-k sums, which are added in chunk order at the end, and
expert selection counts are integers summed per worker. Per token the output residual
is accumulated from the nonzero h only (ReLU layers are ~90% zero), one axpy per neuron
on a transposed w_out (each neuron's column contiguous), with the norm fused into the
last axpy of each expert: about (nonzero neurons) x d_model multiply-adds per token.
That sparse pass is bound by reading w_out's columns, so when several routers are
evaluated together (Eval_newSet) it runs once per token into per-expert outputs Y_e,
which each router then adds up from cache. Chunks where h is dense (SiLU, GELU) get
their Y_e from matrix products instead (Vec_gemmNN, neurons kept in expert order).
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
#include "core/Vec.h"
#include "util/XUtils.h"

enum {
    CHUNK = 32,      /* tokens per work unit */
    DENSE_ROWS = 12, /* tokens per dense block of expert outputs (two 6-row panels) */
};

/* A chunk whose h is at least this dense builds its expert outputs with matrix products
   (every neuron costs the same there) instead of one axpy per nonzero neuron. */
#define DENSE_MIN 0.25

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

/* ---- the precomputation ---- */

typedef struct Acc {   /* one router's per-chunk sums */
    double *sumRecall, *sumOverlap, *sumErr; /* [chunks][E] */
    long *nRecall, *nErr;                    /* [chunks] */
} Acc;

typedef struct Scratch {
    float *S;            /* [CHUNK][E] oracle scores */
    float *R;            /* [n][CHUNK][E] router scores */
    float *Y;            /* [E][d] per-expert outputs of one token (shared routers only) */
    float *Yd;           /* [DENSE_ROWS][E][d] the same for a dense block of tokens */
    float *Hp;           /* [DENSE_ROWS][N] h of a dense block, neurons in expert order */
    const float *Ycur;   /* the current token's outputs (Y or a row of Yd), or NULL */
    float *y, *r;        /* [d] output, residual */
    double *norm;        /* [E] residual norms of one token */
    int *act, *actStart; /* [N], [E + 1]: positions (in expert order) of nonzero neurons */
    int *nz, *fill;      /* [N] nonzero neurons of a token, [E] fill cursors */
    int *ordO, *ordR, *tmp;
    bool *inO, *inR;
    long *selCount;      /* [n][E][E]: tokens whose i-th router choice is e */
} Scratch;

typedef struct Job {
    const LayerData *L;
    long row0, T;
    int E, N, d, n;
    const Router *const *routers; /* [n], NULL entries: oracle */
    bool shareY;                  /* n > 1: expert outputs built once per token */
    const int32_t *part;
    const int *byExpert;          /* [N] neuron at each position, grouped by expert */
    const int *expStart;          /* [E + 1] first position of each expert */
    const int *posOf;             /* [N] position of each neuron */
    const float *woT;             /* [N][d] w_out's columns in position order */
    Scratch *scratch;             /* [threads] */
    Acc *acc;                     /* [n] */
} Job;

static bool isGated(const Job *job, int q) {
    return job->routers[q] && Router_scalesOutput(job->routers[q]);
}

/* The nonzero neurons of each expert on token row h, as positions:
   act[actStart[e] .. actStart[e + 1]). A vector scan finds them in ascending neuron
   order, which within an expert is ascending position; a counting sort by expert then
   lays them out. */
static void activeByExpert(const Job *job, const float *h, Scratch *s) {
    int E = job->E, n = Vec_nonzeros(job->N, h, s->nz);
    memset(s->actStart, 0, (size_t)(E + 1) * sizeof *s->actStart);
    for (int i = 0; i < n; i++)
        s->actStart[job->part[s->nz[i]] + 1]++;
    for (int e = 0; e < E; e++)
        s->actStart[e + 1] += s->actStart[e];
    memcpy(s->fill, s->actStart, (size_t)E * sizeof *s->fill);
    for (int i = 0; i < n; i++) {
        int j = s->nz[i];
        s->act[s->fill[job->part[j]]++] = job->posOf[j];
    }
}

/* Y_e for every expert into s->Y, one axpy per nonzero neuron. */
static void expertOutputs(const Job *job, const float *h, Scratch *s) {
    int d = job->d;
    for (int e = 0; e < job->E; e++) {
        int a = s->actStart[e], b = s->actStart[e + 1];
        float *Ye = s->Y + (size_t)e * d;
        if (a == b)
            continue;
        int p = s->act[a];
        Vec_scale(d, h[job->byExpert[p]], job->woT + (size_t)p * d, Ye);
        for (int i = a + 1; i < b; i++) {
            p = s->act[i];
            Vec_axpy(d, h[job->byExpert[p]], job->woT + (size_t)p * d, Ye);
        }
    }
}

/* y = the sum of the current token's expert outputs; returns ||y||^2. */
static double outputFromExperts(const Job *job, Scratch *s) {
    int d = job->d;
    memset(s->y, 0, (size_t)d * sizeof *s->y);
    double y2 = 0.0;
    for (int e = 0; e < job->E; e++)
        if (s->actStart[e] < s->actStart[e + 1])
            y2 = Vec_axpyNorm(d, 1.0f, s->Ycur + (size_t)e * d, s->y);
    return y2;
}

/* Yd[t][e] for the rows tokens of h: per expert, (rows x G_e) times (G_e x d). */
static void denseOutputs(const Job *job, const float *h, int rows, Scratch *s) {
    int N = job->N, d = job->d, E = job->E;
    for (int t = 0; t < rows; t++)
        for (int i = 0; i < N; i++)
            s->Hp[(size_t)t * N + i] = h[(size_t)t * N + job->byExpert[i]];
    for (int e = 0; e < E; e++) {
        int p0 = job->expStart[e];
        Vec_gemmNN(rows, d, job->expStart[e + 1] - p0, s->Hp + p0, N,
                   job->woT + (size_t)p0 * d, d, s->Yd + (size_t)e * d, (long)E * d);
    }
}

/* r += scale * (expert e's output on this token); returns ||r||^2 afterwards, or -1 when
   the expert has no nonzero neuron (r unchanged). Without shared outputs it works
   neuron by neuron from w_out's columns, the norm fused into the last axpy. */
static double addExpert(const Job *job, const Scratch *s, const float *h, int e, float scale,
                        float *r) {
    int a = s->actStart[e], b = s->actStart[e + 1], d = job->d;
    if (a == b)
        return -1.0;
    if (s->Ycur)
        return Vec_axpyNorm(d, scale, s->Ycur + (size_t)e * d, r);
    for (int i = a; i < b - 1; i++) {
        int p = s->act[i];
        Vec_axpy(d, scale * h[job->byExpert[p]], job->woT + (size_t)p * d, r);
    }
    int p = s->act[b - 1];
    return Vec_axpyNorm(d, scale * h[job->byExpert[p]], job->woT + (size_t)p * d, r);
}

/* Adds this token's ||y - yhat_k|| / ||y|| for k = 1..E to err[0..E); false when y = 0.
   Ungated routers: the residual is the sum of the unselected experts, built from the
   last-ranked one, so k = E is exactly 0 and y comes out at the end. The sigmoid gate:
   from y, the gated outputs are subtracted in router order. y2 = ||y||^2 when the expert
   outputs are shared. */
static bool errorCurve(const Job *job, int q, Scratch *s, const float *h, const float *rscore,
                       double y2, double *err) {
    int E = job->E, d = job->d;
    const int *R = s->ordR;
    double nr2 = 0.0, v;
    if (isGated(job, q)) {
        if (s->Ycur) {
            memcpy(s->r, s->y, (size_t)d * sizeof *s->r);
            nr2 = y2;
        } else {
            memset(s->r, 0, (size_t)d * sizeof *s->r);
            for (int e = 0; e < E; e++)
                if ((v = addExpert(job, s, h, e, 1.0f, s->r)) >= 0.0)
                    nr2 = v;
        }
        double ynorm = sqrt(nr2);
        if (!(ynorm > 0.0))
            return false;
        for (int k = 1; k <= E; k++) {
            int e = R[k - 1];
            float g = Router_gate(job->routers[q], rscore[e]);
            if ((v = addExpert(job, s, h, e, -g, s->r)) >= 0.0)
                nr2 = v;
            err[k - 1] += sqrt(nr2) / ynorm;
        }
        return true;
    }
    memset(s->r, 0, (size_t)d * sizeof *s->r);
    s->norm[E - 1] = 0.0;
    for (int k = E - 1; k >= 0; k--) {
        if ((v = addExpert(job, s, h, R[k], 1.0f, s->r)) >= 0.0)
            nr2 = v;
        if (k > 0)
            s->norm[k - 1] = sqrt(nr2);
    }
    double ynorm = sqrt(nr2);
    if (!(ynorm > 0.0))
        return false;
    for (int k = 0; k < E; k++)
        err[k] += s->norm[k] / ynorm;
    return true;
}

/* Recall, overlap, loads and output error of router q on token i of the chunk. */
static void routerMetrics(Job *job, int q, long chunk, Scratch *s, int i, const float *h,
                          double total, double y2) {
    int E = job->E;
    const float *S = s->S + (size_t)i * E;
    const float *Rs = s->R + ((size_t)q * CHUNK + (size_t)i) * E;
    Acc *acc = &job->acc[q];
    orderDesc(Rs, E, s->ordR, s->tmp);
    if (total > 0.0) {
        double *recall = acc->sumRecall + chunk * E, cum = 0.0;
        for (int k = 0; k < E; k++) {
            cum += S[s->ordR[k]];
            recall[k] += cum / total;
        }
        acc->nRecall[chunk]++;
    }
    /* |O_k ∩ R_k| grows by the new members that are already in the other set */
    for (int e = 0; e < E; e++)
        s->inO[e] = s->inR[e] = false;
    double *overlap = acc->sumOverlap + chunk * E;
    long *sel = s->selCount + (size_t)q * E * E;
    int common = 0;
    for (int k = 0; k < E; k++) {
        int o = s->ordO[k], r = s->ordR[k];
        s->inO[o] = true;
        common += s->inR[o];
        common += s->inO[r] && !s->inR[r];
        s->inR[r] = true;
        overlap[k] += (double)common / (k + 1);
        sel[(size_t)k * E + r]++;
    }
    acc->nErr[chunk] += errorCurve(job, q, s, h, Rs, y2, acc->sumErr + chunk * E);
}

/* Yd: this token's row of dense expert outputs, or NULL (built here when shared). */
static void tokenMetrics(Job *job, long chunk, Scratch *s, int i, const float *h,
                         const float *Yd) {
    int E = job->E;
    const float *S = s->S + (size_t)i * E;
    orderDesc(S, E, s->ordO, s->tmp);
    double total = 0.0;
    for (int e = 0; e < E; e++)
        total += S[e];
    activeByExpert(job, h, s);
    s->Ycur = Yd;
    if (!Yd && job->shareY) {
        expertOutputs(job, h, s);
        s->Ycur = s->Y;
    }
    double y2 = s->Ycur ? outputFromExperts(job, s) : 0.0;
    for (int q = 0; q < job->n; q++)
        routerMetrics(job, q, chunk, s, i, h, total, y2);
}

static void chunkMetrics(void *ctx, long chunk, int worker) {
    Job *job = ctx;
    Scratch *s = &job->scratch[worker];
    int E = job->E;
    long t0 = chunk * CHUNK, rows = job->T - t0 < CHUNK ? job->T - t0 : CHUNK;
    const float *h = job->L->h + (job->row0 + t0) * job->N;
    const float *x = job->L->x + (job->row0 + t0) * job->d;
    Router_oracleScores(h, rows, job->N, job->part, E, s->S);
    for (int q = 0; q < job->n; q++) {
        float *R = s->R + (size_t)q * CHUNK * E;
        const Router *r = job->routers[q];
        if (r && Router_kind(r) != ROUTER_ORACLE)
            Router_score(r, x, h, rows, R);
        else
            memcpy(R, s->S, (size_t)rows * E * sizeof *R);
    }
    long nonzero = 0;
    for (long i = 0; i < rows * job->N; i++)
        nonzero += h[i] != 0.0f;
    bool dense = (double)nonzero >= DENSE_MIN * (double)rows * job->N;
    for (int b0 = 0; b0 < rows; b0 += DENSE_ROWS) {
        int b1 = b0 + DENSE_ROWS < rows ? b0 + DENSE_ROWS : (int)rows;
        if (dense)
            denseOutputs(job, h + (size_t)b0 * job->N, b1 - b0, s);
        for (int i = b0; i < b1; i++)
            tokenMetrics(job, chunk, s, i, h + (size_t)i * job->N,
                         dense ? s->Yd + (size_t)(i - b0) * E * job->d : NULL);
    }
}

static void scratchInit(Scratch *s, int n, int E, int N, int d, bool shareY) {
    s->S = xMallocArray((size_t)CHUNK * E, sizeof(float));
    s->R = xMallocArray((size_t)n * CHUNK * E, sizeof(float));
    s->Y = shareY ? xMallocArray((size_t)E * d, sizeof(float)) : NULL;
    s->Yd = xMallocArray((size_t)DENSE_ROWS * E * d, sizeof(float));
    s->Hp = xMallocArray((size_t)DENSE_ROWS * N, sizeof(float));
    s->y = xMallocArray((size_t)d, sizeof(float));
    s->r = xMallocArray((size_t)d, sizeof(float));
    s->norm = xMallocArray((size_t)E, sizeof(double));
    s->act = xMallocArray((size_t)N, sizeof(int));
    s->actStart = xMallocArray((size_t)E + 1, sizeof(int));
    s->nz = xMallocArray((size_t)N, sizeof(int));
    s->fill = xMallocArray((size_t)E, sizeof(int));
    s->ordO = xMallocArray((size_t)E, sizeof(int));
    s->ordR = xMallocArray((size_t)E, sizeof(int));
    s->tmp = xMallocArray((size_t)E, sizeof(int));
    s->inO = xMallocArray((size_t)E, sizeof(bool));
    s->inR = xMallocArray((size_t)E, sizeof(bool));
    s->selCount = xCalloc((size_t)n * E * E, sizeof(long));
}

static void scratchDone(Scratch *s) {
    free(s->S);
    free(s->R);
    free(s->Y);
    free(s->Yd);
    free(s->Hp);
    free(s->y);
    free(s->r);
    free(s->norm);
    free(s->act);
    free(s->actStart);
    free(s->nz);
    free(s->fill);
    free(s->ordO);
    free(s->ordR);
    free(s->tmp);
    free(s->inO);
    free(s->inR);
    free(s->selCount);
}

static void accInit(Acc *a, long chunks, int E) {
    a->sumRecall = xCalloc((size_t)chunks * E, sizeof(double));
    a->sumOverlap = xCalloc((size_t)chunks * E, sizeof(double));
    a->sumErr = xCalloc((size_t)chunks * E, sizeof(double));
    a->nRecall = xCalloc((size_t)chunks, sizeof(long));
    a->nErr = xCalloc((size_t)chunks, sizeof(long));
}

static void accDone(Acc *a) {
    free(a->sumRecall);
    free(a->sumOverlap);
    free(a->sumErr);
    free(a->nRecall);
    free(a->nErr);
}

/* Folds router q's per-chunk sums (in chunk order) and selection counts into this. */
static void reduce(Eval *this, const Job *job, int q, long chunks, int threads) {
    int E = this->E;
    const Acc *acc = &job->acc[q];
    long nRecall = 0, nErr = 0;
    for (long c = 0; c < chunks; c++) {
        nRecall += acc->nRecall[c];
        nErr += acc->nErr[c];
    }
    for (int k = 0; k < E; k++) {
        double r = 0.0, o = 0.0, e = 0.0;
        for (long c = 0; c < chunks; c++) {
            r += acc->sumRecall[c * E + k];
            o += acc->sumOverlap[c * E + k];
            e += acc->sumErr[c * E + k];
        }
        this->recall[k] = nRecall ? r / (double)nRecall : NAN;
        this->overlap[k] = o / (double)this->T;
        this->err[k] = nErr ? e / (double)nErr : NAN;
    }
    for (int e = 0; e < E; e++) {
        long cum = 0;
        for (int k = 0; k < E; k++) {
            for (int w = 0; w < threads; w++)
                cum += job->scratch[w].selCount[((size_t)q * E + k) * E + e];
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

static MsStatus checkInputs(const LayerData *L, const int32_t *part, int E,
                            const Router *const *routers, int n, char **cause) {
    if (!L || !L->w || !L->x || !L->h || L->w->d_model < 1 || L->w->d_ff < 1 || n < 1) {
        setCause(cause, "router evaluation needs a layer with weights, x and h, and a router");
        return MS_ERR_RANGE;
    }
    MsStatus st = Router_checkPartition(part, L->w->d_ff, E, cause);
    for (int q = 0; q < n && st == MS_OK; q++) {
        if (routers[q] && Router_experts(routers[q]) != E) {
            setCause(cause, "the %s router was built for %d experts, not %d",
                     RouterKind_name(Router_kind(routers[q])), Router_experts(routers[q]), E);
            st = MS_ERR_RANGE;
        }
    }
    return st;
}

static Eval *evalNew(const LayerData *L, int E, const Router *router, Split split, long T) {
    Eval *this = xCalloc(1, sizeof *this);
    *this = (Eval){
        .E = E, .N = L->w->d_ff, .d_model = L->w->d_model, .gated = FfnWeights_gated(L->w),
        .T = T, .split = split, .kind = router ? Router_kind(router) : ROUTER_ORACLE,
        .recall = xMallocArray((size_t)E, sizeof(double)),
        .overlap = xMallocArray((size_t)E, sizeof(double)),
        .err = xMallocArray((size_t)E, sizeof(double)),
        .loadCum = xMallocArray((size_t)E * E, sizeof(double)),
    };
    return this;
}

MsStatus Eval_newSet(Eval **out, const LayerData *L, const int32_t *part, int E,
                     const Router *const *routers, int n, Split split, int threads,
                     const Cancel *cancel, char **cause) {
    for (int q = 0; q < n; q++)
        out[q] = NULL;
    MsStatus st = checkInputs(L, part, E, routers, n, cause);
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
    int *byExpert = xMallocArray((size_t)N, sizeof(int));
    int *expStart = xMallocArray((size_t)E + 1, sizeof(int));
    groupByExpert(part, N, E, byExpert, expStart);
    int *posOf = xMallocArray((size_t)N, sizeof(int));
    for (int p = 0; p < N; p++)
        posOf[byExpert[p]] = p;
    for (int i = 0; i < d; i++)
        for (int p = 0; p < N; p++)
            woT[(size_t)p * d + i] = L->w->w_out[(size_t)i * N + byExpert[p]];

    threads = threads < 1 ? 1 : threads > 64 ? 64 : threads;
    long T = row1 - row0, chunks = Parallel_chunks(T, CHUNK);
    Job job = {
        .L = L, .row0 = row0, .T = T, .E = E, .N = N, .d = d, .n = n, .routers = routers,
        .shareY = n > 1, .part = part, .byExpert = byExpert, .expStart = expStart,
        .posOf = posOf,
        .woT = woT, .scratch = xCalloc((size_t)threads, sizeof(Scratch)),
        .acc = xCalloc((size_t)n, sizeof(Acc)),
    };
    for (int w = 0; w < threads; w++)
        scratchInit(&job.scratch[w], n, E, N, d, job.shareY);
    for (int q = 0; q < n; q++)
        accInit(&job.acc[q], chunks, E);
    st = Parallel_run(threads, chunks, chunkMetrics, &job, cancel, 0.0, 1.0);
    if (st == MS_OK) {
        for (int q = 0; q < n; q++) {
            out[q] = evalNew(L, E, routers[q], split, T);
            reduce(out[q], &job, q, chunks, threads);
        }
    } else {
        setCause(cause, "router evaluation canceled");
    }
    for (int w = 0; w < threads; w++)
        scratchDone(&job.scratch[w]);
    for (int q = 0; q < n; q++)
        accDone(&job.acc[q]);
    free(job.scratch);
    free(job.acc);
    free(byExpert);
    free(expStart);
    free(posOf);
    free(woT);
    return st;
}

MsStatus Eval_new(Eval **out, const LayerData *L, const int32_t *part, int E,
                  const Router *router, Split split, int threads, const Cancel *cancel,
                  char **cause) {
    return Eval_newSet(out, L, part, E, &router, 1, split, threads, cancel, cause);
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
