/*
moescope - core/MoeKernel.c
The MoE FFN kernel and its wall-time measurement against the dense FFN.

DESIGN: gathered weights are stored expert after expert. Rows of w_in / w_gate / b_in of
expert e occupy gathered rows [offset[e], offset[e+1]) in ascending neuron order; the w_out
block of expert e starts at w_out + offset[e] * d_model and is row-major [d_model][G_e],
so both sgemm and sgemv read it with leading dimension G_e. A batch run sorts the (token,
slot) pairs by expert with a counting sort, so each expert's tokens are gathered once and
go through two (three when gated) sgemm calls; the gate scales the hidden rows (G_e
multiplies instead of d_model) before the output sgemm, whose rows are added into y.
With several workers the experts are cut into one range of about equal work per worker
(single-threaded BLAS each: an expert's product of some 32 to 128 rows is too small for
OpenBLAS's threads, which made the batch barely faster than one thread and left them
spinning after it); each range adds into its own sums, which are then added into y in
range order. (Each pair's output row kept apart for a sum in slot order would make y
independent of the workers too, but at k = 4 that is 12.6 MB more at the batch's peak.)

Timing: both paths run with buffers allocated (and touched) before the clock starts, so
neither side pays for allocation or page faults; the dense side repeats Ffn.c's cblas
calls with that scratch, its batch in row blocks over the same number of workers. The
one-token paths run on one core each (a token's products are matrix-vector ones, bound
by reading the weights). Each path is run until its timed runs add up to the budget, so
slow paths (a large batch at a large k) run once and fast ones up to max_reps times. Only
the one-token paths get an untimed warm-up run: their weights can stay in cache from one
token to the next, the batch paths' are streamed from memory on every run.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/MoeKernel.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "core/Ffn.h"
#include "core/Parallel.h"
#include "core/Vec.h"
#include "util/XUtils.h"

/* One worker's scratch of a batch run: an expert's gathered x rows and hidden rows. */
typedef struct Scratch {
    float *xg;        /* [rows][d_model] */
    float *hid;       /* [rows][max_g] */
    float *up;        /* [rows][max_g], gated layers */
    float *out;       /* [rows][d_model] */
    size_t xg_cap, hid_cap, up_cap, out_cap; /* bytes */
} Scratch;

struct MoeKernel {
    int d_model;
    int d_ff;
    int E;
    int max_g;        /* largest expert */
    Activation act;
    int *offset;      /* [E + 1] first gathered row of each expert */
    float *w_in;      /* [d_ff][d_model] gathered rows */
    float *w_gate;    /* [d_ff][d_model] or NULL */
    float *b_in;      /* [d_ff] or NULL */
    float *w_out;     /* per expert [d_model][G_e], expert e at offset[e] * d_model */
    /* batch scratch, grown by runs (capacities in bytes) */
    int *count;       /* [E + 1] */
    int *order;       /* [pairs] (token, slot) pairs sorted by expert */
    float *ypart;     /* [workers - 1][tokens][d_model] the sums of all ranges but the first */
    size_t order_cap, ypart_cap;
    Scratch *ws;      /* [n_ws] */
    int n_ws;
    float *ty;        /* [tokens][d_model] the timed runs' y */
    size_t ty_cap;
    ParallelPool *pool;
    int pool_threads;
    float *tok_hid;   /* [max_g] one-token path */
    float *tok_up;    /* [max_g] */
};

/* Copies the expert blocks out of the dense weights; false when an allocation fails. */
static bool gather(MoeKernel *this, const FfnWeights *w, const int32_t *part) {
    int D = w->d_model, N = w->d_ff, E = this->E;
    size_t rows = (size_t)N * (size_t)D;
    this->w_in = tryMallocArray(rows, sizeof(float));
    this->w_out = tryMallocArray(rows, sizeof(float));
    this->w_gate = w->w_gate ? tryMallocArray(rows, sizeof(float)) : NULL;
    this->b_in = w->b_in ? tryMallocArray((size_t)N, sizeof(float)) : NULL;
    if (!this->w_in || !this->w_out || (w->w_gate && !this->w_gate) || (w->b_in && !this->b_in))
        return false;
    int *next = xMallocArray((size_t)E, sizeof(int));
    size_t *at = xMallocArray((size_t)N, sizeof(size_t)); /* neuron j's place in row 0 */
    int *stride = xMallocArray((size_t)N, sizeof(int));   /* its expert's row length */
    memcpy(next, this->offset, (size_t)E * sizeof(int));
    for (int j = 0; j < N; j++) {
        int e = part[j], r = next[e]++;
        memcpy(this->w_in + (size_t)r * D, w->w_in + (size_t)j * D, (size_t)D * sizeof(float));
        if (this->w_gate)
            memcpy(this->w_gate + (size_t)r * D, w->w_gate + (size_t)j * D,
                   (size_t)D * sizeof(float));
        if (this->b_in)
            this->b_in[r] = w->b_in[j];
        stride[j] = this->offset[e + 1] - this->offset[e];
        at[j] = (size_t)this->offset[e] * D + (size_t)(r - this->offset[e]);
    }
    /* w_out row by row (read in order; the writes go to E runs of consecutive places)
       rather than neuron by neuron (a read d_ff floats apart for every element) */
    for (int i = 0; i < D; i++) {
        const float *src = w->w_out + (size_t)i * N;
        for (int j = 0; j < N; j++)
            this->w_out[at[j] + (size_t)i * stride[j]] = src[j];
    }
    free(at);
    free(stride);
    free(next);
    return true;
}

MsStatus MoeKernel_new(const FfnWeights *w, const int32_t *part, int E, MoeKernel **out,
                       char **cause) {
    *out = NULL;
    if (E < 1) {
        setCause(cause, "the number of experts must be at least 1, got %d", E);
        return MS_ERR_RANGE;
    }
    for (int j = 0; j < w->d_ff; j++) {
        if (part[j] < 0 || part[j] >= E) {
            setCause(cause, "neuron %d is in expert %d, outside 0..%d", j, (int)part[j], E - 1);
            return MS_ERR_RANGE;
        }
    }
    MoeKernel *this = xCalloc(1, sizeof(*this));
    this->d_model = w->d_model;
    this->d_ff = w->d_ff;
    this->E = E;
    this->act = w->act;
    this->offset = xCalloc((size_t)E + 1, sizeof(int));
    for (int j = 0; j < w->d_ff; j++)
        this->offset[part[j] + 1]++;
    for (int e = 0; e < E; e++) {
        int g = this->offset[e + 1];
        if (g > this->max_g)
            this->max_g = g;
        this->offset[e + 1] += this->offset[e];
    }
    this->count = xCalloc((size_t)E + 1, sizeof(int));
    this->tok_hid = xCalloc((size_t)this->max_g + 1, sizeof(float));
    this->tok_up = xCalloc((size_t)this->max_g + 1, sizeof(float));
    if (!gather(this, w, part)) {
        setCause(cause, "out of memory gathering the expert weights (%zu bytes)",
                 (size_t)w->d_ff * (size_t)w->d_model * sizeof(float) * 3);
        MoeKernel_delete(this);
        return MS_ERR_NOMEM;
    }
    *out = this;
    return MS_OK;
}

static void freeScratch(MoeKernel *this) {
    for (int w = 0; w < this->n_ws; w++) {
        free(this->ws[w].xg);
        free(this->ws[w].hid);
        free(this->ws[w].up);
        free(this->ws[w].out);
    }
    free(this->ws);
    free(this->order);
    free(this->ypart);
    free(this->ty);
}

void MoeKernel_delete(MoeKernel *this) {
    if (!this)
        return;
    freeScratch(this);
    ParallelPool_delete(this->pool);
    free(this->offset);
    free(this->count);
    free(this->w_in);
    free(this->w_gate);
    free(this->b_in);
    free(this->w_out);
    free(this->tok_hid);
    free(this->tok_up);
    free(this);
}

int MoeKernel_expertSize(const MoeKernel *this, int e) {
    return this->offset[e + 1] - this->offset[e];
}

/* buf, or a buffer of `bytes` in its place when its capacity *cap is smaller (its contents
   are not kept, and it is freed first so that the two never add up; NULL, a capacity of 0
   and *ok false when that fails). A new buffer is written through once: fresh pages fault
   on their first write, which a timed run should not pay for. */
static void *grow(void *buf, size_t *cap, size_t bytes, bool *ok) {
    if (!*ok || bytes <= *cap)
        return buf;
    free(buf);
    void *q = tryMallocArray(bytes, 1);
    *cap = q ? bytes : 0;
    if (!q) {
        *ok = false;
        return NULL;
    }
    memset(q, 0, bytes);
    return q;
}

/* Makes the batch scratch hold n tokens of k slots and experts of up to `rows` pairs on
   `workers` workers (and starts the pool that runs them). */
static MsStatus reserve(MoeKernel *this, long n, int k, long rows, int workers, char **cause) {
    if (workers > 1 && this->pool_threads != workers) {
        ParallelPool_delete(this->pool);
        this->pool = ParallelPool_new(workers);
        this->pool_threads = workers;
    }
    if (workers > this->n_ws) {
        this->ws = xReallocArray(this->ws, (size_t)workers, sizeof(Scratch));
        memset(this->ws + this->n_ws, 0, (size_t)(workers - this->n_ws) * sizeof(Scratch));
        this->n_ws = workers;
    }
    size_t D = (size_t)this->d_model, G = (size_t)this->max_g, p = (size_t)n * (size_t)k;
    size_t r = (size_t)rows, f = sizeof(float), part = (size_t)(workers - 1) * (size_t)n * D;
    bool ok = true;
    this->order = grow(this->order, &this->order_cap, p * sizeof(int), &ok);
    if (workers > 1)
        this->ypart = grow(this->ypart, &this->ypart_cap, part * f, &ok);
    for (int w = 0; w < workers; w++) {
        Scratch *s = &this->ws[w];
        s->xg = grow(s->xg, &s->xg_cap, r * D * f, &ok);
        s->hid = grow(s->hid, &s->hid_cap, (r * G + 1) * f, &ok);
        s->out = grow(s->out, &s->out_cap, r * D * f, &ok);
        if (this->w_gate)
            s->up = grow(s->up, &s->up_cap, (r * G + 1) * f, &ok);
    }
    if (!ok) {
        setCause(cause, "out of memory for the MoE kernel's scratch (%zu bytes)",
                 p * sizeof(int) + (part + (size_t)workers * r * (2 * D + 2 * G)) * f);
        return MS_ERR_NOMEM;
    }
    return MS_OK;
}

/* The hidden activations hid[rows][g] of expert e for the gathered rows xg. */
static void expertHidden(MoeKernel *this, int e, const float *xg, int rows, float *hid,
                         float *up) {
    int D = this->d_model, o = this->offset[e], g = this->offset[e + 1] - o;
    const float *bias = this->b_in ? this->b_in + o : NULL;
    size_t n = (size_t)rows * g;
    if (!this->w_gate) {
        Ffn_linear(xg, rows, this->w_in + (size_t)o * D, bias, D, g, hid);
        Activation_applyArray(this->act, hid, (long)n);
        return;
    }
    Ffn_linear(xg, rows, this->w_gate + (size_t)o * D, NULL, D, g, hid);
    Activation_applyArray(this->act, hid, (long)n);
    Ffn_linear(xg, rows, this->w_in + (size_t)o * D, bias, D, g, up);
    for (size_t i = 0; i < n; i++)
        hid[i] *= up[i];
}

/* Expert e's number of (token, slot) pairs into count[e + 1] (count[0] = 0); returns the
   most any expert has. */
static long countPairs(MoeKernel *this, long n, int k, const int *sel) {
    memset(this->count, 0, ((size_t)this->E + 1) * sizeof(int));
    for (long p = 0; p < n * k; p++)
        this->count[sel[p] + 1]++;
    long most = 0;
    for (int e = 0; e < this->E; e++)
        most = this->count[e + 1] > most ? this->count[e + 1] : most;
    return most;
}

/* Sorts the (token, slot) pairs by expert: count[e] becomes expert e's start in order. */
static void sortByExpert(MoeKernel *this, long n, int k, const int *sel) {
    int E = this->E;
    countPairs(this, n, k, sel);
    for (int e = 0; e < E; e++)
        this->count[e + 1] += this->count[e];
    for (long p = 0; p < n * k; p++)
        this->order[this->count[sel[p]]++] = (int)p;
    /* count[e] now holds the end of expert e; shift back to starts. */
    memmove(this->count + 1, this->count, (size_t)E * sizeof(int));
    this->count[0] = 0;
}

static MsStatus checkRouting(const MoeKernel *this, long n, int k, const int *sel,
                             char **cause) {
    for (long p = 0; p < n * k; p++) {
        if (sel[p] < 0 || sel[p] >= this->E) {
            setCause(cause, "token %ld selects expert %d, outside 0..%d", p / k, sel[p],
                     this->E - 1);
            return MS_ERR_RANGE;
        }
    }
    return MS_OK;
}

/* Checks the routing and reserves the batch scratch for it. */
static MsStatus prepare(MoeKernel *this, long n, int k, const int *sel, int workers,
                        char **cause) {
    MsStatus st = checkRouting(this, n, k, sel, cause);
    if (st != MS_OK || n == 0 || k == 0)
        return st;
    /* The workers' rows grow to twice what is asked, so that routers with more skewed
       loads (their most loaded expert) rarely make them grow again. */
    long most = countPairs(this, n, k, sel); /* a run counts them again when it sorts */
    return reserve(this, n, k, 2 * most < n * k ? 2 * most : n * k, workers, cause);
}

/* A batch run's shared state: its tasks are ranges of experts, then row blocks of y. */
typedef struct BatchRun {
    MoeKernel *kernel;
    const float *x;
    long n;
    int k;
    const float *gates;
    float *y;
    int ranges;
    int first[MOE_MAX_WORKERS + 1]; /* range w: experts first[w] .. first[w + 1] - 1 */
} BatchRun;

enum { SUM_ROWS = 64 }; /* tokens per task of the ranges' sum into y */

/* Expert e's output rows for its pairs, on scratch s, added into acc's rows of their
   tokens. */
static void runExpert(const BatchRun *b, int e, Scratch *s, float *acc) {
    MoeKernel *this = b->kernel;
    int D = this->d_model, k = b->k;
    int first = this->count[e], rows = this->count[e + 1] - first;
    int g = this->offset[e + 1] - this->offset[e];
    if (rows == 0 || g == 0)
        return;
    const int *pairs = this->order + first;
    for (int r = 0; r < rows; r++)
        memcpy(s->xg + (size_t)r * D, b->x + (size_t)(pairs[r] / k) * D,
               (size_t)D * sizeof(float));
    expertHidden(this, e, s->xg, rows, s->hid, s->up);
    if (b->gates) {
        for (int r = 0; r < rows; r++) {
            float gv = b->gates[pairs[r]], *hr = s->hid + (size_t)r * g;
            for (int i = 0; i < g; i++)
                hr[i] *= gv;
        }
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, D, g, 1.0f, s->hid, g,
                this->w_out + (size_t)this->offset[e] * D, g, 0.0f, s->out, D);
    for (int r = 0; r < rows; r++) /* a vector add: 1 * o + y is exact */
        Vec_axpy(D, 1.0f, s->out + (size_t)r * D, acc + (size_t)(pairs[r] / k) * D);
}

/* Range `range` of experts in order, on the worker's scratch, into its own sums: y for the
   first range, a part of ypart for the others. */
static void rangeTask(void *ctx, long range, int worker) {
    BatchRun *b = ctx;
    MoeKernel *this = b->kernel;
    size_t len = (size_t)b->n * this->d_model;
    float *acc = range == 0 ? b->y : this->ypart + (size_t)(range - 1) * len;
    memset(acc, 0, len * sizeof(float));
    for (int e = b->first[range]; e < b->first[range + 1]; e++)
        runExpert(b, e, &this->ws[worker], acc);
}

/* y's rows of one block plus the other ranges' sums, in range order. */
static void sumTask(void *ctx, long block, int worker) {
    (void)worker;
    BatchRun *b = ctx;
    int D = b->kernel->d_model;
    size_t len = (size_t)b->n * D;
    long t0 = block * SUM_ROWS, t1 = t0 + SUM_ROWS < b->n ? t0 + SUM_ROWS : b->n;
    for (int r = 1; r < b->ranges; r++)
        Vec_axpy((int)((t1 - t0) * D), 1.0f, b->kernel->ypart + (size_t)(r - 1) * len + t0 * D,
                 b->y + t0 * D);
}

/* Expert e's work in a sorted run: its pairs times its neurons. */
static double expertWork(const MoeKernel *this, int e) {
    return (double)(this->count[e + 1] - this->count[e]) * (this->offset[e + 1] - this->offset[e]);
}

/* Cuts the experts into `ranges` consecutive ranges of about equal work. */
static void cutRanges(const MoeKernel *this, BatchRun *b, int ranges) {
    double total = 0.0, sofar = 0.0;
    for (int e = 0; e < this->E; e++)
        total += expertWork(this, e);
    b->ranges = ranges;
    b->first[0] = 0;
    int w = 1;
    for (int e = 0; e < this->E && w < ranges; e++) {
        sofar += expertWork(this, e);
        while (w < ranges && sofar >= total * w / ranges)
            b->first[w++] = e + 1;
    }
    while (w <= ranges)
        b->first[w++] = this->E;
}

/* The run on prepared scratch: the experts cut into one range of about equal work per
   worker, each range's outputs added into its own sums by single-threaded sgemm calls
   (per-expert products are too small to split well), then the sums added into y in range
   order. The ranges depend only on the routing and the number of workers, so a run is
   bitwise repeatable (with one worker: expert by expert into y). */
static void runPrepared(MoeKernel *this, const float *x, long n, int k, const int *sel,
                        const float *gates, int workers, float *y) {
    if (n == 0 || k == 0) {
        memset(y, 0, (size_t)n * this->d_model * sizeof(float));
        return;
    }
    sortByExpert(this, n, k, sel);
    BatchRun b = {.kernel = this, .x = x, .n = n, .k = k, .gates = gates, .y = y};
    cutRanges(this, &b, workers);
    if (workers > 1) {
        ParallelPool_run(this->pool, workers, rangeTask, &b, NULL);
        ParallelPool_run(this->pool, Parallel_chunks(n, SUM_ROWS), sumTask, &b, NULL);
        return;
    }
    rangeTask(&b, 0, 0);
}

/* The workers of a batch run on `threads` threads. */
static int workersFor(int threads) {
    return threads < 1 ? 1 : threads > MOE_MAX_WORKERS ? MOE_MAX_WORKERS : threads;
}

MsStatus MoeKernel_run(MoeKernel *this, const float *x, long n, int k, const int *sel,
                       const float *gates, int threads, float *y, char **cause) {
    int workers = workersFor(threads);
    MsStatus st = prepare(this, n, k, sel, workers, cause);
    if (st != MS_OK)
        return st;
    runPrepared(this, x, n, k, sel, gates, workers, y);
    return MS_OK;
}

void MoeKernel_runToken(MoeKernel *this, const float *x, int k, const int *sel,
                        const float *gates, float *y) {
    int D = this->d_model;
    memset(y, 0, (size_t)D * sizeof(float));
    for (int j = 0; j < k; j++) {
        int e = sel[j], o = this->offset[e], g = this->offset[e + 1] - o;
        if (g == 0)
            continue;
        float *hid = this->tok_hid, *up = this->tok_up;
        const float *wk = this->w_gate ? this->w_gate : this->w_in;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, g, D, 1.0f, wk + (size_t)o * D, D, x, 1, 0.0f,
                    hid, 1);
        float *lin = this->w_gate ? up : hid;
        if (this->w_gate) {
            Activation_applyArray(this->act, hid, g);
            cblas_sgemv(CblasRowMajor, CblasNoTrans, g, D, 1.0f, this->w_in + (size_t)o * D, D,
                        x, 1, 0.0f, up, 1);
        }
        if (this->b_in)
            for (int i = 0; i < g; i++)
                lin[i] += this->b_in[o + i];
        if (this->w_gate)
            for (int i = 0; i < g; i++)
                hid[i] *= up[i];
        else
            Activation_applyArray(this->act, hid, g);
        cblas_sgemv(CblasRowMajor, CblasNoTrans, D, g, gates ? gates[j] : 1.0f,
                    this->w_out + (size_t)o * D, g, hid, 1, 1.0f, y, 1);
    }
}

/* ---- timing ---- */

/* One timed workload: run(ctx) does the whole unit of work once. */
typedef void (*WorkFn)(void *ctx);

static int cmpDouble(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Timed runs until they add up to the budget (at least one, at most max_reps); the median
   in *sec. warmup: one untimed run first, for work whose operands may be cold. */
static MsStatus timeWork(WorkFn fn, void *ctx, const MoeTimingOptions *opt,
                         const Cancel *cancel, bool warmup, double *sec, int *reps) {
    if (warmup)
        fn(ctx);
    int max_reps = opt->max_reps > 0 ? opt->max_reps : 1, n = 0;
    double *t = xMallocArray((size_t)max_reps, sizeof(double)), total = 0.0;
    while (n < max_reps && (n == 0 || total < opt->budget_s)) {
        if (Cancel_requested(cancel)) {
            free(t);
            return MS_ERR_CANCELED;
        }
        double t0 = XUtils_now();
        fn(ctx);
        t[n] = XUtils_now() - t0;
        total += t[n++];
    }
    qsort(t, (size_t)n, sizeof(double), cmpDouble);
    *sec = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    *reps = n;
    free(t);
    return MS_OK;
}

typedef struct DenseWork {
    const FfnWeights *w;
    const float *x;
    long rows;
    float *h, *up, *y;
    ParallelPool *pool; /* the batch's workers, NULL for one */
    int workers;
    long blockRows;     /* rows per task: the batch in one block per worker */
} DenseWork;

/* Rows block * blockRows .. of the dense FFN, as Ffn_hidden + Ffn_output without b_out. */
static void denseBlock(void *ctx, long block, int worker) {
    (void)worker;
    DenseWork *d = ctx;
    const FfnWeights *w = d->w;
    int D = w->d_model, N = w->d_ff;
    long r0 = block * d->blockRows;
    long rows = d->rows - r0 < d->blockRows ? d->rows - r0 : d->blockRows;
    size_t n = (size_t)rows * N;
    const float *x = d->x + (size_t)r0 * D;
    float *h = d->h + (size_t)r0 * N, *up = d->up ? d->up + (size_t)r0 * N : NULL;
    if (!w->w_gate) {
        Ffn_linear(x, rows, w->w_in, w->b_in, D, N, h);
        Activation_applyArray(w->act, h, (long)n);
    } else {
        Ffn_linear(x, rows, w->w_gate, NULL, D, N, h);
        Activation_applyArray(w->act, h, (long)n);
        Ffn_linear(x, rows, w->w_in, w->b_in, D, N, up);
        for (size_t i = 0; i < n; i++)
            h[i] *= up[i];
    }
    Ffn_linear(h, rows, w->w_out, NULL, N, D, d->y + (size_t)r0 * D);
}

/* The dense FFN on a batch: a block of rows per worker (each block's products read all
   the weights, so more blocks would read them more often). */
static void denseBatch(void *ctx) {
    DenseWork *d = ctx;
    d->blockRows = Parallel_chunks(d->rows, d->workers);
    long blocks = Parallel_chunks(d->rows, d->blockRows);
    if (d->pool) {
        ParallelPool_run(d->pool, blocks, denseBlock, d, NULL);
        return;
    }
    for (long b = 0; b < blocks; b++)
        denseBlock(d, b, 0);
}

/* The dense FFN one token at a time (sgemv). */
static void denseTokens(void *ctx) {
    DenseWork *d = ctx;
    const FfnWeights *w = d->w;
    int D = w->d_model, N = w->d_ff;
    const float *wk = w->w_gate ? w->w_gate : w->w_in;
    for (long t = 0; t < d->rows; t++) {
        const float *xt = d->x + (size_t)t * D;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, N, D, 1.0f, wk, D, xt, 1, 0.0f, d->h, 1);
        float *lin = w->w_gate ? d->up : d->h;
        if (w->w_gate) {
            Activation_applyArray(w->act, d->h, N);
            cblas_sgemv(CblasRowMajor, CblasNoTrans, N, D, 1.0f, w->w_in, D, xt, 1, 0.0f,
                        d->up, 1);
        }
        if (w->b_in)
            for (int j = 0; j < N; j++)
                lin[j] += w->b_in[j];
        if (w->w_gate)
            for (int j = 0; j < N; j++)
                d->h[j] *= d->up[j];
        else
            Activation_applyArray(w->act, d->h, N);
        cblas_sgemv(CblasRowMajor, CblasNoTrans, D, N, 1.0f, w->w_out, N, d->h, 1, 0.0f,
                    d->y + (size_t)t * D, 1);
    }
}

static void usedTokens(long n, const MoeTimingOptions *opt, MoeTimes *out) {
    memset(out, 0, sizeof(*out));
    out->batch_tokens = opt->batch_tokens < n ? opt->batch_tokens : n;
    out->token_tokens = opt->token_tokens < n ? opt->token_tokens : n;
}

MsStatus MoeKernel_timeDense(const FfnWeights *w, const float *x, long n,
                             const MoeTimingOptions *opt, const Cancel *cancel, MoeTimes *out,
                             char **cause) {
    usedTokens(n, opt, out);
    long rows = out->batch_tokens > out->token_tokens ? out->batch_tokens : out->token_tokens;
    if (rows < 1) {
        setCause(cause, "no tokens to time the dense FFN on");
        return MS_ERR_RANGE;
    }
    size_t N = (size_t)w->d_ff, D = (size_t)w->d_model;
    DenseWork d = {.w = w, .x = x};
    d.h = tryMallocArray((size_t)rows * N, sizeof(float));
    d.up = w->w_gate ? tryMallocArray((size_t)rows * N, sizeof(float)) : NULL;
    d.y = tryMallocArray((size_t)rows * D, sizeof(float));
    MsStatus st = MS_OK;
    if (!d.h || (w->w_gate && !d.up) || !d.y) {
        setCause(cause, "out of memory timing the dense FFN (%zu bytes)",
                 (size_t)rows * (2 * N + D) * sizeof(float));
        st = MS_ERR_NOMEM;
        goto done;
    }
    /* Like the MoE batch (see MoeKernel_time), the batch runs without a warm-up once its
       scratch has been touched: it streams the weights from memory either way. */
    memset(d.h, 0, (size_t)rows * N * sizeof(float));
    if (d.up)
        memset(d.up, 0, (size_t)rows * N * sizeof(float));
    memset(d.y, 0, (size_t)rows * D * sizeof(float));
    d.rows = out->batch_tokens;
    d.workers = workersFor(opt->threads);
    d.pool = d.workers > 1 ? ParallelPool_new(d.workers) : NULL;
    if (d.rows > 0)
        st = timeWork(denseBatch, &d, opt, cancel, false, &out->batch_s, &out->batch_reps);
    ParallelPool_delete(d.pool);
    d.rows = out->token_tokens;
    if (st == MS_OK && d.rows > 0) {
        st = timeWork(denseTokens, &d, opt, cancel, true, &out->token_s, &out->token_reps);
        out->token_s /= (double)d.rows;
    }
    if (st == MS_ERR_CANCELED)
        setCause(cause, "canceled");
done:
    free(d.h);
    free(d.up);
    free(d.y);
    return st;
}

typedef struct MoeWork {
    MoeKernel *kernel;
    const float *x;
    long rows;
    int k;
    const int *sel;
    const float *gates;
    int workers;
    float *y;
} MoeWork;

static void moeBatch(void *ctx) {
    MoeWork *m = ctx;
    /* The routing was checked and the scratch reserved before timing. */
    runPrepared(m->kernel, m->x, m->rows, m->k, m->sel, m->gates, m->workers, m->y);
}

static void moeTokens(void *ctx) {
    MoeWork *m = ctx;
    int D = m->kernel->d_model, k = m->k;
    for (long t = 0; t < m->rows; t++)
        MoeKernel_runToken(m->kernel, m->x + (size_t)t * D, k, m->sel + (size_t)t * k,
                           m->gates ? m->gates + (size_t)t * k : NULL, m->y + (size_t)t * D);
}

MsStatus MoeKernel_time(MoeKernel *this, const float *x, long n, int k, const int *sel,
                        const float *gates, const MoeTimingOptions *opt, const Cancel *cancel,
                        MoeTimes *out, char **cause) {
    usedTokens(n, opt, out);
    long rows = out->batch_tokens > out->token_tokens ? out->batch_tokens : out->token_tokens;
    if (rows < 1) {
        setCause(cause, "no tokens to time the MoE kernel on");
        return MS_ERR_RANGE;
    }
    size_t ybytes = (size_t)rows * this->d_model * sizeof(float);
    bool ok = true;
    this->ty = grow(this->ty, &this->ty_cap, ybytes, &ok);
    if (!ok) {
        setCause(cause, "out of memory timing the MoE kernel (%zu bytes)", ybytes);
        return MS_ERR_NOMEM;
    }
    /* The routing is checked and the scratch reserved (its pages written) before the
       clock, so the first batch run is timed as well: a batch streams the experts' weights
       from memory on every run, so a warm-up run would not change it, and it would double
       the cost of the many measurements a batch makes. */
    int workers = workersFor(opt->threads);
    MsStatus st = prepare(this, rows, k, sel, workers, cause);
    MoeWork m = {.kernel = this, .x = x, .k = k, .sel = sel, .gates = gates, .workers = workers,
                 .y = this->ty};
    m.rows = out->batch_tokens;
    if (st == MS_OK && m.rows > 0)
        st = timeWork(moeBatch, &m, opt, cancel, false, &out->batch_s, &out->batch_reps);
    m.rows = out->token_tokens;
    if (st == MS_OK && m.rows > 0) {
        st = timeWork(moeTokens, &m, opt, cancel, true, &out->token_s, &out->token_reps);
        out->token_s /= (double)m.rows;
    }
    if (st == MS_ERR_CANCELED)
        setCause(cause, "canceled");
    return st;
}

MsStatus MoeKernel_measure(MoeKernel *this, const FfnWeights *w, const float *x, long n, int k,
                           const int *sel, const float *gates, const MoeTimingOptions *opt,
                           const MoeTimes *dense_cached, const Cancel *cancel, MoeSpeedup *out,
                           char **cause) {
    memset(out, 0, sizeof(*out));
    MsStatus st = MS_OK;
    if (dense_cached)
        out->dense = *dense_cached;
    else
        st = MoeKernel_timeDense(w, x, n, opt, cancel, &out->dense, cause);
    if (st == MS_OK)
        st = MoeKernel_time(this, x, n, k, sel, gates, opt, cancel, &out->moe, cause);
    if (st != MS_OK)
        return st;
    out->batch = out->moe.batch_s > 0 ? out->dense.batch_s / out->moe.batch_s : 0.0;
    out->token = out->moe.token_s > 0 ? out->dense.token_s / out->moe.token_s : 0.0;
    return MS_OK;
}
