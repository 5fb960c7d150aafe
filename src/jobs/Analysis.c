/*
moescope - jobs/Analysis.c
The demand-driven result cache behind the UI (see Analysis.h for the design). Entries
live in a hash table keyed by AnKey; each entry embeds the WorkerJob that computes it.
The engine calls in run* mirror ui/Batch.c so the UI's numbers equal the batch CSV's.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "jobs/Analysis.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/Cost.h"
#include "core/LayerData.h"
#include "core/Partition.h"
#include "core/Router.h"
#include "io/Writer.h"
#include "jobs/Defaults.h"
#include "jobs/Speedup.h"
#include "jobs/Worker.h"
#include "util/XUtils.h"

enum { CURVE_POINTS = 48 };

typedef enum AnKind {
    K_LOAD = 0,
    K_TAUQ,
    K_SPARSITY,
    K_CURVE,
    K_COACT,
    K_GRAPH,
    K_PART,
    K_ROUTER,
    K_EVAL,
    K_INTRA,
    K_BOUND,
    K_MEOBASE,
    K_MEO,
    K_SPEED,
    K_HEAT,
} AnKind;

static const char *const kindLabels[] = {
    "load", "tau quantile", "sparsity", "tau curve", "co-activation", "coact graph",
    "partition", "router", "evaluation", "intra coact", "top-K bound", "MEO setup", "MEO",
    "speedup", "heatmap",
};

/* Every field is 4 or 8 bytes, in an order without padding, so keys compare as bytes. */
typedef struct AnKey {
    int32_t kind, layer;
    int32_t strategy, router;
    int32_t E, k;
    int32_t size;
    uint32_t tau_bits;
    uint64_t seed;
    double q, tf;
} AnKey;

enum { TAG_ENTRY = 1, TAG_SAVE, TAG_TASK };

typedef struct Entry Entry;
struct Entry {
    int tag;
    AnKey key;
    AnState state;
    void *value;
    size_t bytes;
    char *error;
    WorkerJob job;
    bool live;            /* job submitted, not collected yet */
    void *result;         /* written by the worker */
    size_t result_bytes;
    Entry *deps[4];
    int n_deps;
    bool holds_deps;      /* keeps its inputs pinned while it exists (MEO setup) */
    int pins;
    unsigned long wanted; /* last frame that asked for it */
    unsigned long used;
    long prio;
    Analysis *an;
    Entry *hnext;
    char label[64];
};

typedef struct SaveLayer {
    int index;
    char *name;
    char *source;
    int N;
    int32_t *part;
    float tau;
} SaveLayer;

typedef struct SaveTask {
    int tag;
    WorkerJob job;
    Analysis *an;
    char *path;
    char *strategy;
    bool coact;
    int E;
    unsigned long seed;
    SaveLayer *layers;
    int n;
    struct SaveTask *next;
} SaveTask;

/* A task of the caller's (Analysis_runTask). */
typedef struct Task {
    int tag;
    WorkerJob job;
    AnTaskRunFn run;
    AnTaskDoneFn done;
    void *ctx;
    Entry *pins[8];
    int n_pins;
    char label[64];
    struct Task *next;
} Task;

typedef struct Message {
    char *text;
    struct Message *next;
} Message;

struct Analysis {
    Dump *dump;
    Worker *pool;
    Entry **table;
    size_t buckets, count;
    unsigned long frame;
    long seq;
    size_t bytes, budget;
    size_t frame_load_bytes; /* layers loaded or loading that this frame still needs */
    long done;
    bool paused;
    WorkerJob *running[8];
    int n_running;
    Message *msg_head, *msg_tail;
    SaveTask *saves;
    Task *tasks;
};

/* ---- keys and the table ------------------------------------------------------------- */

static uint64_t hashKey(const AnKey *k) {
    const unsigned char *p = (const unsigned char *)k;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < sizeof *k; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static AnKey makeKey(AnKind kind, int layer) {
    AnKey k;
    memset(&k, 0, sizeof k);
    k.kind = kind;
    k.layer = layer;
    return k;
}

static uint32_t tauBits(float tau) {
    uint32_t b;
    tau = tau + 0.0f; /* -0 -> +0 */
    memcpy(&b, &tau, sizeof b);
    return b;
}

static float keyTau(const AnKey *k) {
    float t;
    memcpy(&t, &k->tau_bits, sizeof t);
    return t;
}

static void grow(Analysis *this) {
    size_t nb = this->buckets * 2;
    Entry **t = xCalloc(nb, sizeof *t);
    for (size_t i = 0; i < this->buckets; i++) {
        for (Entry *e = this->table[i], *next; e; e = next) {
            next = e->hnext;
            size_t b = hashKey(&e->key) & (nb - 1);
            e->hnext = t[b];
            t[b] = e;
        }
    }
    free(this->table);
    this->table = t;
    this->buckets = nb;
}

static Entry *lookup(Analysis *this, const AnKey *key, bool create) {
    size_t b = hashKey(key) & (this->buckets - 1);
    for (Entry *e = this->table[b]; e; e = e->hnext)
        if (memcmp(&e->key, key, sizeof *key) == 0)
            return e;
    if (!create)
        return NULL;
    if (this->count + 1 > this->buckets) {
        grow(this);
        b = hashKey(key) & (this->buckets - 1);
    }
    Entry *e = xCalloc(1, sizeof *e);
    e->tag = TAG_ENTRY;
    e->key = *key;
    e->an = this;
    e->hnext = this->table[b];
    this->table[b] = e;
    this->count++;
    return e;
}

/* ---- messages ----------------------------------------------------------------------- */

static void pushMessage(Analysis *this, char *text) {
    Message *m = xCalloc(1, sizeof *m);
    m->text = text;
    if (this->msg_tail)
        this->msg_tail->next = m;
    else
        this->msg_head = m;
    this->msg_tail = m;
}

char *Analysis_takeMessage(Analysis *this) {
    Message *m = this->msg_head;
    if (!m)
        return NULL;
    this->msg_head = m->next;
    if (!this->msg_head)
        this->msg_tail = NULL;
    char *text = m->text;
    free(m);
    return text;
}

/* ---- values ------------------------------------------------------------------------- */

typedef struct MeoBox {
    LayerData L;      /* Meo keeps a pointer to it */
    Meo *meo;
    pthread_mutex_t lock;
} MeoBox;

static void freeValue(AnKind kind, void *v) {
    if (!v)
        return;
    switch (kind) {
    case K_LOAD: LayerLoad_done(v); free(v); break;
    case K_SPARSITY: Sparsity_done(v); free(v); break;
    case K_CURVE: {
        AnCurve *c = v;
        free(c->taus);
        free(c->sparsity);
        free(c);
        break;
    }
    case K_COACT: Coact_done(v); free(v); break;
    case K_GRAPH: PartitionGraph_done(v); free(v); break;
    case K_PART: {
        AnPartition *p = v;
        free(p->part);
        free(p->sizes);
        free(p);
        break;
    }
    case K_ROUTER: Router_delete(v); break;
    case K_EVAL: Eval_delete(v); break;
    case K_BOUND: NeuronBound_delete(v); break;
    case K_MEOBASE: {
        MeoBox *b = v;
        Meo_delete(b->meo);
        pthread_mutex_destroy(&b->lock);
        free(b);
        break;
    }
    case K_HEAT: {
        AnHeat *h = v;
        free(h->cells);
        free(h->bounds);
        free(h);
        break;
    }
    default: free(v); break;
    }
}

/* ---- worker side -------------------------------------------------------------------- */

static const LayerLoad *depLoad(const Entry *e) {
    for (int i = 0; i < e->n_deps; i++)
        if (e->deps[i]->key.kind == K_LOAD)
            return e->deps[i]->value;
    return NULL;
}

static const void *dep(const Entry *e, AnKind kind) {
    for (int i = 0; i < e->n_deps; i++)
        if (e->deps[i]->key.kind == (int)kind)
            return e->deps[i]->value;
    return NULL;
}

/* The layer's data with the train/test split of test fraction tf. */
static LayerData dataFor(const LayerLoad *l, double tf) {
    LayerData d = l->data;
    d.T_train = Split_trainRows(d.T, d.seq_offsets, d.n_seq, tf);
    return d;
}

static MsStatus allocFail(char **cause, const char *what, size_t bytes) {
    setCause(cause, "cannot allocate %s: %.1f MiB", what, (double)bytes / 1048576.0);
    return MS_ERR_NOMEM;
}

static MsStatus runLoad(Entry *e, char **cause) {
    LayerLoad *l = xCalloc(1, sizeof *l);
    MsStatus st = LayerLoad_init(l, e->an->dump, e->key.layer, 0.1, &e->job.cancel, cause);
    if (st != MS_OK) {
        free(l);
        return st;
    }
    const FfnWeights *w = &l->w;
    size_t wsz = (size_t)w->d_ff * (size_t)w->d_model * (w->w_gate ? 3 : 2);
    e->result_bytes = ((size_t)l->data.T * (size_t)(w->d_model + w->d_ff) + wsz) * sizeof(float);
    e->result = l;
    return MS_OK;
}

/* Stores a job's result on success; frees it on failure. */
static MsStatus keepResult(Entry *e, MsStatus st, void *result) {
    if (st != MS_OK) {
        free(result);
        return st;
    }
    e->result = result;
    return MS_OK;
}

static MsStatus runTauq(Entry *e, char **cause) {
    const LayerData *d = &depLoad(e)->data;
    float *tau = xMalloc(sizeof *tau);
    MsStatus st = Sparsity_tauForSparsity(d->h, d->T, d->w->d_ff, e->key.q, 1, &e->job.cancel,
                                          tau, cause);
    return keepResult(e, st, tau);
}

static MsStatus runSparsity(Entry *e, char **cause) {
    const LayerData *d = &depLoad(e)->data;
    Sparsity *s = xCalloc(1, sizeof *s);
    MsStatus st = Sparsity_compute(s, d->h, d->T, d->w->d_ff, keyTau(&e->key), 1,
                                   &e->job.cancel, cause);
    if (st != MS_OK) {
        free(s);
        return st;
    }
    e->result_bytes = (size_t)d->T * 4 + (size_t)d->w->d_ff * 8;
    e->result = s;
    return MS_OK;
}

static MsStatus runCurve(Entry *e, char **cause) {
    const LayerData *d = &depLoad(e)->data;
    float top;
    MsStatus st = Sparsity_tauForSparsity(d->h, d->T, d->w->d_ff, 0.99, 1, &e->job.cancel,
                                          &top, cause);
    if (st != MS_OK)
        return st;
    if (!(top > 0))
        top = 1;
    AnCurve *c = xCalloc(1, sizeof *c);
    c->n = CURVE_POINTS;
    c->taus = xMallocArray(CURVE_POINTS, sizeof(float));
    c->sparsity = xMallocArray(CURVE_POINTS, sizeof(double));
    for (int i = 0; i < CURVE_POINTS; i++)
        c->taus[i] = (float)(1.25 * top * i / (CURVE_POINTS - 1));
    st = Sparsity_curve(d->h, d->T, d->w->d_ff, c->taus, CURVE_POINTS, 1, &e->job.cancel,
                        c->sparsity, cause);
    if (st != MS_OK) {
        freeValue(K_CURVE, c);
        return st;
    }
    e->result = c;
    return MS_OK;
}

static MsStatus runCoact(Entry *e, char **cause) {
    LayerData d = dataFor(depLoad(e), e->key.tf);
    Coact *c = xCalloc(1, sizeof *c);
    MsStatus st = Coact_compute(c, d.h, d.T_train, d.w->d_ff, keyTau(&e->key), 1,
                                &e->job.cancel, cause);
    if (st != MS_OK) {
        free(c);
        return st;
    }
    e->result_bytes = (size_t)d.w->d_ff * (size_t)d.w->d_ff * 4;
    e->result = c;
    return MS_OK;
}

static MsStatus runGraph(Entry *e, char **cause) {
    PartitionGraph *g = xCalloc(1, sizeof *g);
    MsStatus st = PartitionGraph_fromCoact(g, dep(e, K_COACT), &e->job.cancel, cause);
    if (st != MS_OK) {
        free(g);
        return st;
    }
    e->result_bytes = (size_t)g->n_edges * 16 + (size_t)g->N * 4;
    e->result = g;
    return MS_OK;
}

static MsStatus runPart(Entry *e, char **cause) {
    const DumpLayer *info = Dump_layer(e->an->dump, e->key.layer);
    int N = info->d_ff, E = e->key.E;
    int32_t *part = tryMallocArray((size_t)N, sizeof(int32_t));
    if (!part)
        return allocFail(cause, "a partition", (size_t)N * 4);
    int fallback = 0;
    MsStatus st = MS_OK;
    switch ((PartitionStrategy)e->key.strategy) {
    case PARTITION_RANDOM:
        Partition_random(part, N, E, e->key.seed);
        break;
    case PARTITION_PARAM: {
        const FfnWeights *w = &depLoad(e)->w;
        st = Partition_param(part, FfnWeights_keys(w), N, w->d_model, E, e->key.seed,
                             DEFAULTS_PARAM_ITERATIONS, NULL, &e->job.cancel, cause);
        break;
    }
    case PARTITION_COACT:
        st = Partition_coact(part, dep(e, K_GRAPH), E, e->key.seed, &fallback, &e->job.cancel,
                             cause);
        break;
    default:
        setCause(cause, "unsupported partition strategy");
        st = MS_ERR_RANGE;
    }
    if (st == MS_OK)
        st = Partition_validate(part, N, E, cause);
    if (st != MS_OK) {
        free(part);
        return st;
    }
    AnPartition *p = xCalloc(1, sizeof *p);
    p->N = N;
    p->E = E;
    p->part = part;
    p->fallback_random = fallback;
    p->sizes = xCalloc((size_t)E, sizeof(int));
    Partition_sizes(part, N, E, p->sizes);
    e->result_bytes = (size_t)N * 4 + (size_t)E * 4;
    e->result = p;
    return MS_OK;
}

static MsStatus runRouter(Entry *e, char **cause) {
    LayerData d = dataFor(depLoad(e), e->key.tf);
    const AnPartition *p = dep(e, K_PART);
    RouterOptions ropt;
    RouterOptions_default(&ropt);
    ropt.epochs = DEFAULTS_MLP_EPOCHS;
    ropt.seed = e->key.seed;
    ropt.threads = 1;
    Router *r = NULL;
    MsStatus st = Router_new(&r, (RouterKind)e->key.router, &d, p->part, p->E, &ropt,
                             &e->job.cancel, cause);
    if (st != MS_OK)
        return st;
    e->result_bytes = (size_t)p->E * (size_t)d.w->d_model * 8 + (size_t)p->N * 4;
    e->result = r;
    return MS_OK;
}

static MsStatus runEval(Entry *e, char **cause) {
    LayerData d = dataFor(depLoad(e), e->key.tf);
    const AnPartition *p = dep(e, K_PART);
    Eval *ev = NULL;
    MsStatus st = Eval_new(&ev, &d, p->part, p->E, dep(e, K_ROUTER), SPLIT_TEST, 1,
                           &e->job.cancel, cause);
    if (st != MS_OK)
        return st;
    e->result_bytes = (size_t)p->E * (size_t)(p->E + 3) * 8;
    e->result = ev;
    return MS_OK;
}

static MsStatus runIntra(Entry *e, char **cause) {
    (void)cause;
    const AnPartition *p = dep(e, K_PART);
    double *v = xMalloc(sizeof *v);
    *v = Coact_intra(dep(e, K_COACT), p->part);
    e->result = v;
    return MS_OK;
}

static MsStatus runBound(Entry *e, char **cause) {
    LayerData d = dataFor(depLoad(e), e->key.tf);
    NeuronBound *b = NULL;
    MsStatus st = NeuronBound_new(&b, &d, SPLIT_TEST, 1, &e->job.cancel, cause);
    if (st != MS_OK)
        return st;
    e->result_bytes = (size_t)d.w->d_ff * 8;
    e->result = b;
    return MS_OK;
}

static MsStatus runMeoBase(Entry *e, char **cause) {
    const AnPartition *p = dep(e, K_PART);
    MeoBox *b = xCalloc(1, sizeof *b);
    b->L = dataFor(depLoad(e), e->key.tf);
    pthread_mutex_init(&b->lock, NULL);
    MsStatus st = Meo_new(&b->meo, &b->L, p->part, p->E, dep(e, K_ROUTER), SPLIT_TEST,
                          DEFAULTS_MEO_BLOCK, &e->job.cancel, cause);
    if (st != MS_OK) {
        pthread_mutex_destroy(&b->lock);
        free(b);
        return st;
    }
    const FfnWeights *w = b->L.w;
    e->result_bytes = (size_t)(b->L.T - b->L.T_train) * (size_t)w->d_model * 8 +
                      (size_t)w->d_ff * (size_t)w->d_model * 12;
    e->result = b;
    return MS_OK;
}

static MsStatus runMeo(Entry *e, char **cause) {
    MeoBox *b = (MeoBox *)dep(e, K_MEOBASE);
    MeoMetrics *m = xCalloc(1, sizeof *m);
    pthread_mutex_lock(&b->lock);
    MsStatus st = Meo_metrics(b->meo, e->key.k, &e->job.cancel, m, cause);
    pthread_mutex_unlock(&b->lock);
    return keepResult(e, st, m);
}

/* The measured speedup at one k (jobs/Speedup, as the batch measures it). */
static MsStatus runSpeed(Entry *e, char **cause) {
    LayerData d = dataFor(depLoad(e), e->key.tf);
    const AnPartition *p = dep(e, K_PART);
    MoeKernel *kernel = NULL;
    MsStatus st = MoeKernel_new(d.w, p->part, p->E, &kernel, cause);
    if (st != MS_OK)
        return st;
    MoeSpeedup *sp = xCalloc(1, sizeof *sp);
    /* one worker: the UI's other jobs run beside it */
    st = Speedup_measure(kernel, &d, dep(e, K_ROUTER), p->E, e->key.k, 1, NULL, &e->job.cancel,
                         sp, cause);
    MoeKernel_delete(kernel);
    return keepResult(e, st, sp);
}

static MsStatus runHeat(Entry *e, char **cause) {
    (void)cause;
    const Coact *c = dep(e, K_COACT);
    const AnPartition *p = dep(e, K_PART);
    int N = p->N, S = e->key.size;
    if (S > N)
        S = N;
    PartitionMembers m;
    PartitionMembers_init(&m, p->part, N, p->E);
    double T = (double)c->T_train;
    double *pr = xMallocArray((size_t)N, sizeof(double));
    double *sd = xMallocArray((size_t)N, sizeof(double));
    for (int i = 0; i < N; i++) {
        pr[i] = T > 0 ? c->n[i] / T : 0;
        sd[i] = sqrt(pr[i] * (1 - pr[i]));
    }
    double *sum = xCalloc((size_t)S * (size_t)S, sizeof(double));
    long *cnt = xCalloc((size_t)S * (size_t)S, sizeof(long));
    MsStatus st = MS_OK;
    for (int a = 0; a < N && st == MS_OK; a++) {
        if ((a & 63) == 0 && Cancel_requested(&e->job.cancel))
            st = MS_ERR_CANCELED;
        int i = m.index[a], r = (int)((long)a * S / N);
        if (!(sd[i] > 0))
            continue;
        const uint32_t *row = c->C + (size_t)i * (size_t)N;
        for (int b = 0; b < N; b++) {
            int j = m.index[b];
            if (i == j || !(sd[j] > 0))
                continue;
            double phi = (row[j] / T - pr[i] * pr[j]) / (sd[i] * sd[j]);
            size_t cell = (size_t)r * (size_t)S + (size_t)((long)b * S / N);
            sum[cell] += phi;
            cnt[cell]++;
        }
    }
    if (st == MS_OK) {
        AnHeat *h = xCalloc(1, sizeof *h);
        h->size = S;
        h->E = p->E;
        h->cells = xMallocArray((size_t)S * (size_t)S, sizeof(float));
        h->max = 0;
        for (int r = 0; r < S; r++) {
            for (int q = 0; q < S; q++) {
                size_t cell = (size_t)r * (size_t)S + (size_t)q;
                h->cells[cell] = cnt[cell] ? (float)(sum[cell] / cnt[cell]) : NAN;
                if (r != q && cnt[cell] && h->cells[cell] > h->max)
                    h->max = h->cells[cell];
            }
        }
        h->bounds = xMallocArray((size_t)p->E + 1, sizeof(int));
        for (int x = 0; x <= p->E; x++)
            h->bounds[x] = (int)((long)m.offsets[x] * S / N);
        e->result = h;
        e->result_bytes = (size_t)S * (size_t)S * 4;
    }
    free(sum);
    free(cnt);
    free(pr);
    free(sd);
    PartitionMembers_done(&m);
    return st;
}

static void runEntry(WorkerJob *job) {
    Entry *e = job->ctx;
    char *cause = NULL;
    MsStatus st = MS_ERR_RANGE;
    e->result = NULL;
    e->result_bytes = 0;
    switch ((AnKind)e->key.kind) {
    case K_LOAD: st = runLoad(e, &cause); break;
    case K_TAUQ: st = runTauq(e, &cause); break;
    case K_SPARSITY: st = runSparsity(e, &cause); break;
    case K_CURVE: st = runCurve(e, &cause); break;
    case K_COACT: st = runCoact(e, &cause); break;
    case K_GRAPH: st = runGraph(e, &cause); break;
    case K_PART: st = runPart(e, &cause); break;
    case K_ROUTER: st = runRouter(e, &cause); break;
    case K_EVAL: st = runEval(e, &cause); break;
    case K_INTRA: st = runIntra(e, &cause); break;
    case K_BOUND: st = runBound(e, &cause); break;
    case K_MEOBASE: st = runMeoBase(e, &cause); break;
    case K_MEO: st = runMeo(e, &cause); break;
    case K_SPEED: st = runSpeed(e, &cause); break;
    case K_HEAT: st = runHeat(e, &cause); break;
    }
    if (st == MS_OK && e->result_bytes == 0)
        e->result_bytes = 64;
    job->status = st;
    job->cause = cause;
}

/* ---- demand and scheduling ----------------------------------------------------------- */

static void pin(Entry *e) { e->pins++; }
static void unpin(Entry *e) { e->pins--; }

static void failEntry(Entry *e, const char *error) {
    e->state = AN_FAILED;
    free(e->error);
    e->error = xStrdup(error);
}

static void makeLabel(Entry *e) {
    const DumpLayer *info = Dump_layer(e->an->dump, e->key.layer);
    const AnKey *k = &e->key;
    switch ((AnKind)k->kind) {
    case K_PART:
        snprintf(e->label, sizeof e->label, "%s E=%d layer %d",
                 Partition_strategyName((PartitionStrategy)k->strategy), k->E, info->index);
        break;
    case K_ROUTER:
    case K_EVAL:
        snprintf(e->label, sizeof e->label, "%s %s layer %d", kindLabels[k->kind],
                 RouterKind_name((RouterKind)k->router), info->index);
        break;
    case K_MEO:
        snprintf(e->label, sizeof e->label, "MEO k=%d layer %d", k->k, info->index);
        break;
    default:
        snprintf(e->label, sizeof e->label, "%s layer %d", kindLabels[k->kind], info->index);
    }
}

static Entry *need(Analysis *this, const AnKey *key);

/* Memory a loaded layer takes: x, h and the weights, as float32. */
static size_t layerBytes(const Analysis *this, int layer) {
    const DumpLayer *l = Dump_layer(this->dump, layer);
    size_t w = (size_t)l->d_ff * (size_t)l->d_model * (l->gated ? 3 : 2);
    return ((size_t)l->n_tokens * (size_t)(l->d_model + l->d_ff) + w) * sizeof(float);
}

/* The inputs of key, each asked for; returns how many (at most 4). */
static int depsOf(Analysis *this, const AnKey *key, Entry **out) {
    int n = 0;
    AnKey k;
    switch ((AnKind)key->kind) {
    case K_LOAD: break;
    case K_TAUQ:
    case K_SPARSITY:
    case K_CURVE:
    case K_COACT:
    case K_BOUND:
        k = makeKey(K_LOAD, key->layer);
        out[n++] = need(this, &k);
        break;
    case K_GRAPH:
        k = *key;
        k.kind = K_COACT;
        out[n++] = need(this, &k);
        break;
    case K_PART:
        if (key->strategy == PARTITION_PARAM) {
            k = makeKey(K_LOAD, key->layer);
            out[n++] = need(this, &k);
        } else if (key->strategy == PARTITION_COACT) {
            k = makeKey(K_GRAPH, key->layer);
            k.tau_bits = key->tau_bits;
            k.tf = key->tf;
            out[n++] = need(this, &k);
        }
        break;
    case K_ROUTER:
    case K_EVAL:
    case K_MEOBASE:
    case K_SPEED:
        k = makeKey(K_LOAD, key->layer);
        out[n++] = need(this, &k);
        k = *key;
        k.kind = K_PART;
        k.router = 0;
        k.k = 0;
        if (k.strategy != PARTITION_COACT) {
            k.tau_bits = 0;
            k.tf = 0;
        }
        out[n++] = need(this, &k);
        if (key->kind != K_ROUTER) {
            k = *key;
            k.kind = K_ROUTER;
            k.k = 0;
            if (k.router != ROUTER_MLP && !(k.strategy == PARTITION_COACT))
                k.tf = 0;
            out[n++] = need(this, &k);
        }
        break;
    case K_INTRA:
    case K_HEAT:
        k = makeKey(K_COACT, key->layer);
        k.tau_bits = key->tau_bits;
        k.tf = key->tf;
        out[n++] = need(this, &k);
        k = *key;
        k.kind = K_PART;
        k.size = 0;
        if (k.strategy != PARTITION_COACT) {
            k.tau_bits = 0;
            k.tf = 0;
        }
        out[n++] = need(this, &k);
        break;
    case K_MEO:
        k = *key;
        k.kind = K_MEOBASE;
        k.k = 0;
        out[n++] = need(this, &k);
        break;
    }
    return n;
}

/* Refuses what cannot be computed before asking for inputs; NULL when fine. */
static const char *checkKey(Analysis *this, const AnKey *key, char *buf, size_t size) {
    const DumpLayer *info = Dump_layer(this->dump, key->layer);
    if (key->kind == K_PART || key->kind == K_ROUTER || key->kind == K_EVAL ||
        key->kind == K_MEOBASE || key->kind == K_SPEED || key->kind == K_INTRA ||
        key->kind == K_HEAT || key->kind == K_MEO) {
        if (key->E > info->d_ff) {
            snprintf(buf, size, "E = %d is more than layer %d's d_ff = %d", key->E,
                     info->index, info->d_ff);
            return buf;
        }
    }
    if ((key->kind == K_MEO || key->kind == K_SPEED) && key->k > key->E) {
        snprintf(buf, size, "k = %d is more than E = %d", key->k, key->E);
        return buf;
    }
    return NULL;
}

static Entry *need(Analysis *this, const AnKey *key) {
    Entry *e = lookup(this, key, true);
    e->used = this->frame;
    if (e->wanted != this->frame) {
        e->wanted = this->frame;
        e->prio = this->seq++;
        if (e->live && e->state == AN_QUEUED)
            Worker_setPriority(this->pool, &e->job, e->prio);
        if (key->kind == K_LOAD && (e->live || e->state == AN_DONE))
            this->frame_load_bytes += layerBytes(this, key->layer);
    }
    if (e->state == AN_DONE || e->state == AN_FAILED || e->live)
        return e;
    /* Back-pressure: the I/O thread must not load layers far ahead of the compute
       threads (a file of many large layers would fill memory). Layers are asked for in
       screen order, so the ones shown load first. */
    if (key->kind == K_LOAD && this->frame_load_bytes > 0 &&
        this->frame_load_bytes + layerBytes(this, key->layer) > this->budget / 2)
        return e;
    char buf[160];
    const char *bad = checkKey(this, key, buf, sizeof buf);
    if (bad) {
        failEntry(e, bad);
        return e;
    }
    Entry *deps[4];
    int n = depsOf(this, key, deps);
    for (int i = 0; i < n; i++) {
        if (deps[i]->state == AN_FAILED) {
            failEntry(e, deps[i]->error);
            return e;
        }
    }
    for (int i = 0; i < n; i++)
        if (deps[i]->state != AN_DONE)
            return e;
    if (this->paused)
        return e;
    if (key->kind == K_LOAD)
        this->frame_load_bytes += layerBytes(this, key->layer);
    for (int i = 0; i < n; i++) {
        e->deps[i] = deps[i];
        pin(deps[i]);
    }
    e->n_deps = n;
    e->holds_deps = key->kind == K_MEOBASE;
    makeLabel(e);
    WorkerJob_init(&e->job, runEntry, e, key->kind == K_LOAD ? WORKER_IO : WORKER_COMPUTE,
                   e->label);
    e->job.priority = e->prio;
    e->live = true;
    e->state = AN_QUEUED;
    Worker_submit(this->pool, &e->job);
    return e;
}

static void status(const Analysis *this, const Entry *e, AnStatus *st) {
    if (!st)
        return;
    st->state = e->state;
    st->error = e->state == AN_FAILED ? e->error : NULL;
    st->progress = 0;
    if (e->live) {
        for (int i = 0; i < this->n_running; i++) {
            if (this->running[i] == &e->job) {
                st->state = AN_RUNNING;
                st->progress = WorkerJob_progress(&e->job);
            }
        }
    }
}

/* The entry's value when done, else NULL; *st filled either way. */
static const void *get(Analysis *this, const AnKey *key, AnStatus *st) {
    Entry *e = need(this, key);
    status(this, e, st);
    return e->state == AN_DONE ? e->value : NULL;
}

static void releaseDeps(Entry *e) {
    for (int i = 0; i < e->n_deps; i++)
        unpin(e->deps[i]);
    e->n_deps = 0;
    e->holds_deps = false;
}

/* ---- tasks -------------------------------------------------------------------------- */

static void runTask(WorkerJob *job) {
    Task *t = job->ctx;
    char *cause = NULL;
    job->status = Cancel_requested(&job->cancel) ? MS_ERR_CANCELED
                                                 : t->run(t->ctx, &job->cancel, &cause);
    job->cause = cause;
}

/* The cache entry holding value (a getter's result), or NULL. */
static Entry *entryOf(Analysis *this, const void *value) {
    for (size_t i = 0; i < this->buckets; i++)
        for (Entry *e = this->table[i]; e; e = e->hnext)
            if (e->state == AN_DONE && e->value == value)
                return e;
    return NULL;
}

/* Unlinks t, releases its pins, tells its owner and frees it. */
static void endTask(Analysis *this, Task *t, MsStatus status, const char *cause) {
    Task **p = &this->tasks;
    while (*p && *p != t)
        p = &(*p)->next;
    if (*p)
        *p = t->next;
    for (int i = 0; i < t->n_pins; i++)
        unpin(t->pins[i]);
    t->done(t->ctx, status, cause);
    free(t->job.cause);
    free(t);
}

bool Analysis_collect(Analysis *this) {
    bool changed = false;
    WorkerJob *job;
    while ((job = Worker_takeDone(this->pool))) {
        changed = true;
        if (*(int *)job->ctx == TAG_TASK) {
            this->done++;
            endTask(this, job->ctx, job->status, job->cause);
            continue;
        }
        if (*(int *)job->ctx == TAG_SAVE) {
            SaveTask *t = job->ctx;
            pushMessage(this, job->status == MS_OK
                                  ? xAsprintf("saved %d partition%s to %s", t->n,
                                              t->n == 1 ? "" : "s", t->path)
                                  : xAsprintf("saving partitions: %s",
                                              job->cause ? job->cause : Status_name(job->status)));
            free(job->cause);
            SaveTask **p = &this->saves;
            while (*p && *p != t)
                p = &(*p)->next;
            if (*p)
                *p = t->next;
            for (int i = 0; i < t->n; i++) {
                free(t->layers[i].part);
                free(t->layers[i].name);
                free(t->layers[i].source);
            }
            free(t->layers);
            free(t->path);
            free(t->strategy);
            free(t);
            continue;
        }
        Entry *e = job->ctx;
        e->live = false;
        this->done++;
        if (job->status == MS_OK) {
            e->value = e->result;
            e->bytes = e->result_bytes;
            e->state = AN_DONE;
            this->bytes += e->bytes;
            if (!e->holds_deps)
                releaseDeps(e);
        } else {
            releaseDeps(e);
            freeValue((AnKind)e->key.kind, e->result);
            if (job->status == MS_ERR_CANCELED) {
                e->state = AN_IDLE;
            } else {
                const DumpLayer *info = Dump_layer(this->dump, e->key.layer);
                failEntry(e, job->cause ? job->cause : Status_name(job->status));
                pushMessage(this, xAsprintf("layer %d: %s: %s", info->index, e->label,
                                            e->error));
            }
        }
        e->result = NULL;
        free(job->cause);
        job->cause = NULL;
    }
    return changed;
}

void Analysis_beginFrame(Analysis *this) {
    this->frame++;
    this->seq = 0;
    this->frame_load_bytes = 0;
    this->n_running = Worker_running(this->pool, this->running, 8);
}

static void removeEntry(Analysis *this, Entry *e) {
    size_t b = hashKey(&e->key) & (this->buckets - 1);
    for (Entry **p = &this->table[b]; *p; p = &(*p)->hnext) {
        if (*p == e) {
            *p = e->hnext;
            break;
        }
    }
    this->count--;
    if (e->state == AN_DONE)
        this->bytes -= e->bytes;
    releaseDeps(e);
    freeValue((AnKind)e->key.kind, e->value);
    free(e->error);
    free(e);
}

static int cmpUsed(const void *a, const void *b) {
    const Entry *x = *(Entry *const *)a, *y = *(Entry *const *)b;
    return (x->used > y->used) - (x->used < y->used);
}

/* Frees least recently used results until the cache fits its budget. */
static void evict(Analysis *this) {
    if (this->bytes <= this->budget)
        return;
    Entry **c = xMallocArray(this->count + 1, sizeof *c);
    size_t n = 0;
    for (size_t i = 0; i < this->buckets; i++)
        for (Entry *e = this->table[i]; e; e = e->hnext)
            if (e->state == AN_DONE && !e->live && e->pins == 0 && e->wanted != this->frame)
                c[n++] = e;
    qsort(c, n, sizeof *c, cmpUsed);
    for (size_t i = 0; i < n && this->bytes > this->budget; i++)
        removeEntry(this, c[i]);
    free(c);
}

void Analysis_endFrame(Analysis *this) {
    /* Work nobody asked for this frame is stale: drop it from the queue or cancel it. */
    for (size_t i = 0; i < this->buckets; i++) {
        for (Entry *e = this->table[i]; e; e = e->hnext) {
            if (!e->live || e->wanted == this->frame)
                continue;
            if (Worker_unqueue(this->pool, &e->job)) {
                e->live = false;
                e->state = AN_IDLE;
                releaseDeps(e);
            } else {
                WorkerJob_cancel(&e->job);
            }
        }
    }
    evict(this);
}

void Analysis_pause(Analysis *this, bool paused) {
    this->paused = paused;
    Worker_pause(this->pool, paused);
}

void Analysis_cancelAll(Analysis *this) {
    for (Task *t = this->tasks, *next; t; t = next) {
        next = t->next;
        if (Worker_unqueue(this->pool, &t->job))
            endTask(this, t, MS_ERR_CANCELED, NULL);
        else
            WorkerJob_cancel(&t->job);
    }
    for (size_t i = 0; i < this->buckets; i++) {
        for (Entry *e = this->table[i]; e; e = e->hnext) {
            if (!e->live)
                continue;
            if (Worker_unqueue(this->pool, &e->job)) {
                e->live = false;
                e->state = AN_IDLE;
                releaseDeps(e);
            } else {
                WorkerJob_cancel(&e->job);
            }
        }
    }
}

void Analysis_activity(Analysis *this, AnActivity *out) {
    memset(out, 0, sizeof *out);
    Worker_counts(this->pool, &out->queued, &out->running);
    WorkerJob *r[8];
    int n = Worker_running(this->pool, r, 8);
    for (int i = 0; i < n; i++) {
        /* Report the running job with the most progress still to go first. */
        if (!out->label || WorkerJob_progress(r[i]) < out->progress) {
            out->label = r[i]->label;
            out->progress = WorkerJob_progress(r[i]);
        }
    }
    out->done = this->done;
    out->paused = this->paused;
}

void Analysis_setBudget(Analysis *this, size_t bytes) {
    this->budget = bytes;
}

void Analysis_memory(const Analysis *this, size_t *used, size_t *budget) {
    *used = this->bytes;
    *budget = this->budget;
}

int Analysis_running(Analysis *this, const char **labels, double *progress, int max) {
    WorkerJob *r[16];
    int n = Worker_running(this->pool, r, max < 16 ? max : 16);
    for (int i = 0; i < n; i++) {
        labels[i] = r[i]->label;
        progress[i] = WorkerJob_progress(r[i]);
    }
    return n;
}

/* ---- lifetime ----------------------------------------------------------------------- */

static size_t memoryBudget(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t phys = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : (size_t)4 << 30;
    size_t b = phys / 3;
    return b < ((size_t)256 << 20) ? (size_t)256 << 20 : b;
}

Analysis *Analysis_new(Dump *dump, int threads, char **cause) {
    Worker *pool = Worker_new(threads, cause);
    if (!pool)
        return NULL;
    Analysis *this = xCalloc(1, sizeof *this);
    this->dump = dump;
    this->pool = pool;
    this->buckets = 256;
    this->table = xCalloc(this->buckets, sizeof *this->table);
    this->budget = memoryBudget();
    return this;
}

void Analysis_delete(Analysis *this) {
    if (!this)
        return;
    Analysis_cancelAll(this);
    Worker_delete(this->pool);
    /* The threads are gone: whatever tasks are left never report through collect. */
    while (this->tasks)
        endTask(this, this->tasks, MS_ERR_CANCELED, NULL);
    for (size_t i = 0; i < this->buckets; i++) {
        for (Entry *e = this->table[i], *next; e; e = next) {
            next = e->hnext;
            freeValue((AnKind)e->key.kind, e->value);
            if (e->live) {
                freeValue((AnKind)e->key.kind, e->result);
                free(e->job.cause);
            }
            free(e->error);
            free(e);
        }
    }
    free(this->table);
    for (SaveTask *t = this->saves, *next; t; t = next) {
        next = t->next;
        for (int i = 0; i < t->n; i++) {
            free(t->layers[i].part);
            free(t->layers[i].name);
            free(t->layers[i].source);
        }
        free(t->layers);
        free(t->path);
        free(t->strategy);
        free(t->job.cause);
        free(t);
    }
    char *m;
    while ((m = Analysis_takeMessage(this)))
        free(m);
    free(this);
}

int Analysis_fd(const Analysis *this) {
    return Worker_fd(this->pool);
}

int Analysis_layerCount(const Analysis *this) {
    return Dump_layerCount(this->dump);
}

const DumpLayer *Analysis_layer(const Analysis *this, int layer) {
    return Dump_layer(this->dump, layer);
}

Dump *Analysis_dump(const Analysis *this) {
    return this->dump;
}

/* ---- getters ------------------------------------------------------------------------ */

const LayerLoad *Analysis_load(Analysis *this, int layer, AnStatus *st) {
    AnKey k = makeKey(K_LOAD, layer);
    return get(this, &k, st);
}

bool Analysis_tau(Analysis *this, int layer, const Knobs *kn, float *tau, AnStatus *st) {
    if (kn->target < 0) {
        *tau = (float)kn->tau;
        if (st)
            *st = (AnStatus){.state = AN_DONE};
        return true;
    }
    AnKey k = makeKey(K_TAUQ, layer);
    k.q = kn->target;
    const float *v = get(this, &k, st);
    if (!v)
        return false;
    *tau = *v;
    return true;
}

const Sparsity *Analysis_sparsity(Analysis *this, int layer, const Knobs *kn, AnStatus *st) {
    float tau;
    if (!Analysis_tau(this, layer, kn, &tau, st))
        return NULL;
    AnKey k = makeKey(K_SPARSITY, layer);
    k.tau_bits = tauBits(tau);
    return get(this, &k, st);
}

const AnCurve *Analysis_curve(Analysis *this, int layer, AnStatus *st) {
    AnKey k = makeKey(K_CURVE, layer);
    return get(this, &k, st);
}

const Coact *Analysis_coact(Analysis *this, int layer, const Knobs *kn, AnStatus *st) {
    float tau;
    if (!Analysis_tau(this, layer, kn, &tau, st))
        return NULL;
    AnKey k = makeKey(K_COACT, layer);
    k.tau_bits = tauBits(tau);
    k.tf = kn->test_fraction;
    return get(this, &k, st);
}

/* The partition part of a key: strategy, E, seed, and tau and test fraction for coact. */
static bool partKey(Analysis *this, AnKind kind, int layer, const Knobs *kn, AnKey *k,
                    AnStatus *st) {
    *k = makeKey(kind, layer);
    k->strategy = kn->strategy;
    k->E = kn->E;
    k->seed = kn->seed;
    if (kn->strategy == PARTITION_COACT || kind == K_INTRA || kind == K_HEAT) {
        float tau;
        if (!Analysis_tau(this, layer, kn, &tau, st))
            return false;
        k->tau_bits = tauBits(tau);
        k->tf = kn->test_fraction;
    }
    return true;
}

const AnPartition *Analysis_partition(Analysis *this, int layer, const Knobs *kn,
                                      AnStatus *st) {
    AnKey k;
    if (!partKey(this, K_PART, layer, kn, &k, st))
        return NULL;
    return get(this, &k, st);
}

static bool routerKey(Analysis *this, AnKind kind, int layer, const Knobs *kn, RouterKind rk,
                      AnKey *k, AnStatus *st) {
    if (!partKey(this, kind, layer, kn, k, st))
        return false;
    k->router = rk;
    k->tf = kn->test_fraction;
    return true;
}

const Eval *Analysis_eval(Analysis *this, int layer, const Knobs *kn, RouterKind kind,
                          AnStatus *st) {
    AnKey k;
    if (!routerKey(this, K_EVAL, layer, kn, kind, &k, st))
        return NULL;
    return get(this, &k, st);
}

bool Analysis_intra(Analysis *this, int layer, const Knobs *kn, double *out, AnStatus *st) {
    AnKey k;
    if (!partKey(this, K_INTRA, layer, kn, &k, st))
        return false;
    const double *v = get(this, &k, st);
    if (!v)
        return false;
    *out = *v;
    return true;
}

const NeuronBound *Analysis_bound(Analysis *this, int layer, const Knobs *kn, AnStatus *st) {
    AnKey k = makeKey(K_BOUND, layer);
    k.tf = kn->test_fraction;
    return get(this, &k, st);
}

const MeoMetrics *Analysis_meo(Analysis *this, int layer, const Knobs *kn, RouterKind kind,
                               int kk, AnStatus *st) {
    AnKey k;
    if (!routerKey(this, K_MEO, layer, kn, kind, &k, st))
        return NULL;
    k.k = kk;
    return get(this, &k, st);
}

const MoeSpeedup *Analysis_speed(Analysis *this, int layer, const Knobs *kn, RouterKind kind,
                                 AnStatus *st) {
    AnKey k;
    if (!routerKey(this, K_SPEED, layer, kn, kind, &k, st))
        return NULL;
    k.k = kn->k;
    return get(this, &k, st);
}

const AnHeat *Analysis_heat(Analysis *this, int layer, const Knobs *kn, int size,
                            AnStatus *st) {
    AnKey k;
    if (!partKey(this, K_HEAT, layer, kn, &k, st))
        return NULL;
    k.size = size < 4 ? 4 : size > 256 ? 256 : size;
    return get(this, &k, st);
}

/* ---- saving partitions -------------------------------------------------------------- */

/* Writes each layer's partition as ui/Batch.c's savePartition does. */
static MsStatus saveLayers(SaveTask *t, char **cause) {
    Writer *wr = NULL;
    MsStatus st = Writer_create(&wr, t->path, cause);
    for (int i = 0; i < t->n && st == MS_OK; i++) {
        const SaveLayer *l = &t->layers[i];
        char path[200];
        snprintf(path, sizeof path, "/layers/%d/partitions/%s_E%d_tau%g", l->index, t->strategy,
                 t->E, (double)l->tau);
        for (int pass = 0; pass < 2 && st == MS_OK; pass++) {
            st = Writer_writeInt32(wr, path, l->part, l->N, cause);
            if (st == MS_OK)
                st = Writer_setAttrString(wr, path, "strategy", t->strategy, cause);
            if (st == MS_OK)
                st = Writer_setAttrInt(wr, path, "experts", t->E, cause);
            if (st == MS_OK)
                st = Writer_setAttrInt(wr, path, "seed", (long)t->seed, cause);
            if (st == MS_OK && t->coact)
                st = Writer_setAttrDouble(wr, path, "tau", l->tau, cause);
            if (st == MS_OK)
                st = Writer_setAttrString(wr, path, "source", l->source, cause);
            snprintf(path, sizeof path, "/layers/%d/partition", l->index);
        }
    }
    if (st == MS_OK) {
        st = Writer_close(wr, cause);
        wr = NULL;
    }
    Writer_delete(wr);
    return st;
}

static void runSave(WorkerJob *job) {
    SaveTask *t = job->ctx;
    char *cause = NULL;
    job->status = saveLayers(t, &cause);
    job->cause = cause;
}

int Analysis_missingPartitions(Analysis *this, const Knobs *kn) {
    int missing = 0;
    for (int i = 0; i < Analysis_layerCount(this); i++) {
        AnStatus st;
        if (!Analysis_partition(this, i, kn, &st) && st.state != AN_FAILED)
            missing++;
    }
    return missing;
}

int Analysis_savePartitions(Analysis *this, const Knobs *kn, const char *path) {
    int count = Analysis_layerCount(this);
    SaveTask *t = xCalloc(1, sizeof *t);
    t->tag = TAG_SAVE;
    t->an = this;
    t->layers = xCalloc((size_t)count, sizeof *t->layers);
    for (int i = 0; i < count; i++) {
        const AnPartition *p = Analysis_partition(this, i, kn, NULL);
        float tau = 0;
        if (!p || !Analysis_tau(this, i, kn, &tau, NULL))
            continue;
        const DumpLayer *info = Dump_layer(this->dump, i);
        SaveLayer *l = &t->layers[t->n++];
        l->index = info->index;
        l->name = xStrdup(info->name);
        l->source = xStrdup(info->x_file);
        l->N = p->N;
        l->part = xMallocArray((size_t)p->N, sizeof(int32_t));
        memcpy(l->part, p->part, (size_t)p->N * sizeof(int32_t));
        /* Batch names a partition by the run's tau whatever the strategy. */
        l->tau = tau;
    }
    if (t->n == 0) {
        free(t->layers);
        free(t);
        return 0;
    }
    t->path = xStrdup(path);
    t->strategy = xStrdup(Partition_strategyName(kn->strategy));
    t->coact = kn->strategy == PARTITION_COACT;
    t->E = kn->E;
    t->seed = kn->seed;
    WorkerJob_init(&t->job, runSave, t, WORKER_IO, "save partitions");
    t->job.priority = -1;
    t->next = this->saves;
    this->saves = t;
    Worker_submit(this->pool, &t->job);
    return t->n;
}

/* ---- tasks -------------------------------------------------------------------------- */

void Analysis_runTask(Analysis *this, const char *label, AnTaskRunFn run, AnTaskDoneFn done,
                      void *ctx, const void *const *pins, int n_pins) {
    Task *t = xCalloc(1, sizeof *t);
    t->tag = TAG_TASK;
    t->run = run;
    t->done = done;
    t->ctx = ctx;
    for (int i = 0; i < n_pins && t->n_pins < (int)(sizeof t->pins / sizeof *t->pins); i++) {
        Entry *e = pins[i] ? entryOf(this, pins[i]) : NULL;
        if (e) {
            pin(e);
            t->pins[t->n_pins++] = e;
        }
    }
    snprintf(t->label, sizeof t->label, "%s", label);
    WorkerJob_init(&t->job, runTask, t, WORKER_COMPUTE, t->label);
    t->job.priority = -1;
    t->next = this->tasks;
    this->tasks = t;
    Worker_submit(this->pool, &t->job);
}
