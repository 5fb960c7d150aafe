/*
moescope - ui/Batch.c
The batch run: for each selected layer (one at a time), for each tau, strategy and E,
build the partition, then each router, evaluate every k on the test split (and the train
split when asked) and write one CSV row per number.

DESIGN
Work that does not depend on an inner knob is hoisted out of its loop: the layer's tau
quantiles, the top-K neuron bound and the dense FFN timing are computed once per layer.
Each tau runs in three phases. First every partition (strategy x E) is made, with the
rows that depend on it alone; the co-activation counts they need are then freed, so the
routers' work has their memory. Then the mlp routers of all partitions with the same E
are trained together (one pass over the minibatches of x serves them all). Last, per
partition: the other routers, one Eval per split queried for every k (their per-k cost
is small by design), a Meo's partition stage and the MoE kernel. One LayerLoad serves
every layer (its x and h buffers are reused), and the next layer's bytes are prefetched
from the file while this one is computed. A Meo's partition memory is released between
partitions, so the peak stays within the 1.5 x h + N x N co-activation counts.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "ui/Batch.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/Coact.h"
#include "core/Cost.h"
#include "core/Eval.h"
#include "core/Meo.h"
#include "core/MoeKernel.h"
#include "core/NeuronBound.h"
#include "core/Sparsity.h"
#include "io/Writer.h"
#include "jobs/Defaults.h"
#include "jobs/LayerLoad.h"
#include "jobs/Speedup.h"
#include "util/Args.h"
#include "util/XUtils.h"
#include "views/Csv.h"
#include "views/Figures.h"

static const int defaultExperts[] = {8};
static const int defaultKs[] = {1, 2};
static const double defaultQuantiles[] = {0.5, 0.8, 0.9};

void BatchConfig_init(BatchConfig *this) {
    memset(this, 0, sizeof *this);
    this->n_experts = 1;
    this->experts = xMallocArray(1, sizeof(int));
    memcpy(this->experts, defaultExperts, sizeof defaultExperts);
    this->n_ks = 2;
    this->ks = xMallocArray(2, sizeof(int));
    memcpy(this->ks, defaultKs, sizeof defaultKs);
    this->n_strategies = 3;
    this->strategies = xMallocArray(3, sizeof(PartitionStrategy));
    this->strategies[0] = PARTITION_RANDOM;
    this->strategies[1] = PARTITION_PARAM;
    this->strategies[2] = PARTITION_COACT;
    this->n_routers = ROUTER_KINDS;
    this->routers = xMallocArray(ROUTER_KINDS, sizeof(RouterKind));
    for (int i = 0; i < ROUTER_KINDS; i++)
        this->routers[i] = (RouterKind)i;
    this->n_taus = 1;
    this->taus = xCalloc(1, sizeof(double));
    this->n_quantiles = 3;
    this->quantiles = xMallocArray(3, sizeof(double));
    memcpy(this->quantiles, defaultQuantiles, sizeof defaultQuantiles);
    this->test_fraction = 0.1;
    this->meo_block = DEFAULTS_MEO_BLOCK;
    this->mlp_epochs = DEFAULTS_MLP_EPOCHS;
    this->measure = true;
    this->threads = 2;
}

void BatchConfig_done(BatchConfig *this) {
    free(this->experts);
    free(this->ks);
    free(this->strategies);
    free(this->routers);
    free(this->taus);
    free(this->quantiles);
    free(this->layers);
    memset(this, 0, sizeof *this);
}

MsStatus BatchConfig_setStrategies(BatchConfig *this, const char *list, char **cause) {
    char **words;
    int n;
    MsStatus st = Args_splitWords("--strategy", list, &words, &n, cause);
    if (st != MS_OK)
        return st;
    PartitionStrategy *s = xMallocArray((size_t)n, sizeof *s);
    for (int i = 0; i < n && st == MS_OK; i++) {
        if (!Partition_parseStrategy(words[i], &s[i])) {
            setCause(cause, "--strategy: unknown strategy '%s' (random, param, coact, file)",
                     words[i]);
            st = MS_ERR_RANGE;
        }
    }
    Args_freeWords(words, n);
    if (st != MS_OK) {
        free(s);
        return st;
    }
    free(this->strategies);
    this->strategies = s;
    this->n_strategies = n;
    return MS_OK;
}

MsStatus BatchConfig_setRouters(BatchConfig *this, const char *list, char **cause) {
    char **words;
    int n;
    MsStatus st = Args_splitWords("--router", list, &words, &n, cause);
    if (st != MS_OK)
        return st;
    RouterKind *r = xMallocArray((size_t)n, sizeof *r);
    for (int i = 0; i < n && st == MS_OK; i++) {
        if (!RouterKind_parse(words[i], &r[i])) {
            setCause(cause, "--router: unknown router '%s' (%s)", words[i],
                     RouterKind_allNames());
            st = MS_ERR_RANGE;
        }
    }
    Args_freeWords(words, n);
    if (st != MS_OK) {
        free(r);
        return st;
    }
    free(this->routers);
    this->routers = r;
    this->n_routers = n;
    return MS_OK;
}

/* One run over all layers. */
typedef struct BatchRun {
    const BatchConfig *cfg;
    Dump *dump;
    Csv csv;
    Writer *parts;     /* --partitions, or NULL */
    FigureSet *figures; /* --figures, or NULL */
    bool progress;     /* a progress line on stderr */
    LayerLoad load;    /* the current layer; its x and h buffers serve the next one */
    bool loaded;
    int layer_pos, layer_count;
    int next_pos;      /* the Dump position of the layer after this one */
} BatchRun;

/* A partition of the current layer and tau, with its mlp router until the router list
   of its partition takes it over. */
typedef struct PartSlot {
    PartitionStrategy strategy;
    int E;
    int32_t *part;
    Router *mlp;
} PartSlot;

/* One layer of a run, with what is cached across its inner loops. */
typedef struct LayerRun {
    BatchRun *run;
    int pos;                 /* position in the Dump */
    const DumpLayer *info;
    LayerLoad *load;         /* the run's, holding this layer */
    float tau;
    Coact coact;             /* at tau, train rows */
    bool have_coact;
    PartitionGraph graph;
    bool have_graph;
    bool saved_default;      /* /layers/<i>/partition written */
    MoeTimes dense;          /* dense FFN timing on the test rows */
    bool have_dense;
    Meo *meo[2];             /* MEO of the test and train splits, opened on first use */
} LayerRun;

static void emit(LayerRun *lr, const char *strategy, const char *router, int E, int k,
                 const char *split, const char *metric, double value) {
    CsvRow row = {
        .layer = lr->info->index,
        .layer_name = lr->info->name,
        .strategy = strategy,
        .router = router,
        .E = E,
        .k = k,
        .tau = lr->tau,
        .split = split,
        .metric = metric,
        .value = value,
        .file = lr->info->x_file,
    };
    Csv_row(&lr->run->csv, &row);
    if (lr->run->figures)
        FigureSet_addRow(lr->run->figures, &row);
}

static void progress(LayerRun *lr, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void progress(LayerRun *lr, const char *fmt, ...) {
    if (!lr->run->progress)
        return;
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\r\033[Kmoescope: layer %d (%d/%d): %s", lr->info->index,
            lr->run->layer_pos + 1, lr->run->layer_count, what);
    fflush(stderr);
}

static MsStatus layerRows(LayerRun *lr, const float *tau_q, char **cause) {
    const LayerData *d = &lr->load->data;
    const BatchConfig *cfg = lr->run->cfg;
    Sparsity s;
    MsStatus st = Sparsity_compute(&s, d->h, d->T, d->w->d_ff, lr->tau, cfg->threads, NULL,
                                   cause);
    if (st != MS_OK)
        return st;
    emit(lr, NULL, NULL, 0, 0, "all", "sparsity", s.sparsity);
    emit(lr, NULL, NULL, 0, 0, "all", "dead_fraction", s.dead_fraction);
    emit(lr, NULL, NULL, 0, 0, "all", "active_per_token_mean", s.active_per_token_mean);
    if (lr->run->figures)
        st = FigureSet_addSparsity(lr->run->figures, lr->info->index, lr->info->name, lr->tau,
                                   &s, d->h, d->T, cfg->threads, cause);
    Sparsity_done(&s);
    if (st != MS_OK)
        return st;
    for (int i = 0; i < cfg->n_quantiles; i++) {
        char metric[64];
        snprintf(metric, sizeof metric, "tau_for_sparsity_%g", cfg->quantiles[i]);
        emit(lr, NULL, NULL, 0, 0, "all", metric, tau_q[i]);
    }
    return MS_OK;
}

static MsStatus ensureCoact(LayerRun *lr, char **cause) {
    if (lr->have_coact)
        return MS_OK;
    const LayerData *d = &lr->load->data;
    progress(lr, "co-activation counts");
    MsStatus st = Coact_compute(&lr->coact, d->h, d->T_train, d->w->d_ff, lr->tau,
                                lr->run->cfg->threads, NULL, cause);
    lr->have_coact = st == MS_OK;
    return st;
}

static MsStatus ensureGraph(LayerRun *lr, char **cause) {
    if (lr->have_graph)
        return MS_OK;
    MsStatus st = ensureCoact(lr, cause);
    if (st == MS_OK)
        st = PartitionGraph_fromCoact(&lr->graph, &lr->coact, NULL, cause);
    lr->have_graph = st == MS_OK;
    return st;
}

static void dropTauCaches(LayerRun *lr) {
    if (lr->have_graph)
        PartitionGraph_done(&lr->graph);
    if (lr->have_coact)
        Coact_done(&lr->coact);
    lr->have_graph = lr->have_coact = false;
}

/* The experts of a file partition: its largest value + 1. */
static int fileExperts(const int32_t *part, int N) {
    int E = 0;
    for (int j = 0; j < N; j++)
        if (part[j] + 1 > E)
            E = part[j] + 1;
    return E;
}

static MsStatus makePartition(LayerRun *lr, PartitionStrategy strategy, int E, int32_t *part,
                              int *fallback, char **cause) {
    const LayerData *d = &lr->load->data;
    const FfnWeights *w = d->w;
    unsigned long seed = lr->run->cfg->seed;
    *fallback = 0;
    switch (strategy) {
    case PARTITION_RANDOM:
        Partition_random(part, w->d_ff, E, seed);
        return MS_OK;
    case PARTITION_PARAM:
        return Partition_param(part, FfnWeights_keys(w), w->d_ff, w->d_model, E, seed,
                               DEFAULTS_PARAM_ITERATIONS, NULL, NULL, cause);
    case PARTITION_COACT: {
        MsStatus st = ensureGraph(lr, cause);
        if (st == MS_OK)
            st = Partition_coact(part, &lr->graph, E, seed, fallback, NULL, cause);
        return st;
    }
    case PARTITION_FILE:
        return Dump_readLayerInts(lr->run->dump, lr->pos, "partition", part, cause);
    }
    return MS_ERR_RANGE;
}

static MsStatus savePartition(LayerRun *lr, PartitionStrategy strategy, int E,
                              const int32_t *part, char **cause) {
    Writer *wr = lr->run->parts;
    if (!wr || strategy == PARTITION_FILE)
        return MS_OK;
    const char *name = Partition_strategyName(strategy);
    char path[160];
    snprintf(path, sizeof path, "/layers/%d/partitions/%s_E%d_tau%g", lr->info->index, name, E,
             (double)lr->tau);
    int N = lr->load->data.w->d_ff;
    MsStatus st = MS_OK;
    for (int pass = 0; pass < 2 && st == MS_OK; pass++) {
        st = Writer_writeInt32(wr, path, part, N, cause);
        if (st == MS_OK)
            st = Writer_setAttrString(wr, path, "strategy", name, cause);
        if (st == MS_OK)
            st = Writer_setAttrInt(wr, path, "experts", E, cause);
        if (st == MS_OK)
            st = Writer_setAttrInt(wr, path, "seed", (long)lr->run->cfg->seed, cause);
        if (st == MS_OK && strategy == PARTITION_COACT)
            st = Writer_setAttrDouble(wr, path, "tau", lr->tau, cause);
        if (st == MS_OK)
            st = Writer_setAttrString(wr, path, "source", lr->info->x_file, cause);
        /* The first partition of a layer is also its default `partition`, so the file
           can be given back to moescope --strategy file. */
        if (pass == 1 || lr->saved_default)
            break;
        lr->saved_default = true;
        snprintf(path, sizeof path, "/layers/%d/partition", lr->info->index);
    }
    return st;
}

static MsStatus measureRows(LayerRun *lr, const char *strategy, MoeKernel *kernel,
                            const Router *router, int E, char **cause) {
    const LayerData *d = &lr->load->data;
    const BatchConfig *cfg = lr->run->cfg;
    MsStatus st = MS_OK;
    for (int i = 0; i < cfg->n_ks && st == MS_OK; i++) {
        int k = cfg->ks[i];
        MoeSpeedup sp;
        st = Speedup_measure(kernel, d, router, E, k, cfg->threads,
                             lr->have_dense ? &lr->dense : NULL, NULL, &sp, cause);
        if (st == MS_OK) {
            lr->dense = sp.dense;
            lr->have_dense = true;
            const char *rname = RouterKind_name(Router_kind(router));
            emit(lr, strategy, rname, E, k, "test", "measured_speedup_batch", sp.batch);
            emit(lr, strategy, rname, E, k, "test", "measured_speedup_token", sp.token);
        }
    }
    return st;
}

static void evalRows(LayerRun *lr, const char *strategy, const char *rname, int E,
                     const char *split, const Eval *ev) {
    const BatchConfig *cfg = lr->run->cfg;
    for (int i = 0; i < cfg->n_ks; i++) {
        int k = cfg->ks[i];
        EvalMetrics m;
        Eval_metrics(ev, k, &m);
        emit(lr, strategy, rname, E, k, split, "mass_recall", m.mass_recall);
        emit(lr, strategy, rname, E, k, split, "overlap", m.overlap);
        emit(lr, strategy, rname, E, k, split, "output_rel_err", m.output_rel_err);
        emit(lr, strategy, rname, E, k, split, "load_max_over_mean", m.load_max_over_mean);
        emit(lr, strategy, rname, E, k, split, "load_entropy_norm", m.load_entropy_norm);
        emit(lr, strategy, rname, E, k, split, "flops_fraction", m.flops_fraction);
        emit(lr, strategy, rname, E, k, split, "ideal_speedup", m.ideal_speedup);
    }
}

static MsStatus meoRows(LayerRun *lr, const char *strategy, Meo *meo, const Router *router,
                        int E, Split split, char **cause) {
    const BatchConfig *cfg = lr->run->cfg;
    const char *rname = RouterKind_name(Router_kind(router));
    Meo_setRouter(meo, router);
    MsStatus st = MS_OK;
    for (int i = 0; i < cfg->n_ks && st == MS_OK; i++) {
        int k = cfg->ks[i];
        MeoMetrics m;
        st = Meo_metrics(meo, k, NULL, &m, cause);
        if (st != MS_OK)
            break;
        const char *sp = Split_name(split);
        emit(lr, strategy, rname, E, k, sp, "meo_mass_recall", m.mass_recall);
        emit(lr, strategy, rname, E, k, sp, "meo_seqsel_output_rel_err", m.seqsel_output_rel_err);
        for (int g = 0; g < MEO_GATES; g++) {
            for (int s = 0; s < MEO_SLOTS; s++) {
                char metric[64];
                snprintf(metric, sizeof metric, "meo_output_rel_err_%s_%s",
                         MeoGates_name((MeoGates)g), MeoSlots_name((MeoSlots)s));
                emit(lr, strategy, rname, E, k, sp, metric, m.output_rel_err[g][s]);
            }
        }
        emit(lr, strategy, rname, E, k, sp, "meo_flops_fraction", m.flops_fraction);
    }
    return st;
}

/* The split's Meo set to this partition: its dense output, gathered weights and aligned
   slots are made once per partition and shared by the routers. */
static MsStatus meoFor(LayerRun *lr, const int32_t *part, int E, Split split, Meo **out,
                       char **cause) {
    const BatchConfig *cfg = lr->run->cfg;
    Meo **meo = &lr->meo[split == SPLIT_TRAIN];
    MsStatus st = MS_OK;
    if (!*meo) {
        st = Meo_open(meo, &lr->load->data, split, cfg->meo_block, NULL, cause);
        if (st == MS_OK)
            Meo_setThreads(*meo, cfg->threads);
    }
    if (st == MS_OK)
        st = Meo_setPartition(*meo, part, E, cause);
    *out = *meo;
    return st;
}

/* The routers of one partition: every requested one but the top-K bound, with the mlp
   router (if requested) already trained by trainMlps and now owned by the list. */
static MsStatus buildRouters(LayerRun *lr, const char *sname, const int32_t *part, int E,
                             Router **mlp, Router **routers, int *n, char **cause) {
    const BatchConfig *cfg = lr->run->cfg;
    *n = 0;
    for (int r = 0; r < cfg->n_routers; r++) {
        RouterKind kind = cfg->routers[r];
        if (kind == ROUTER_TOPK_NEURONS)
            continue;
        if (kind == ROUTER_MLP) {
            routers[(*n)++] = *mlp;
            *mlp = NULL;
            continue;
        }
        progress(lr, "%s E=%d router %s", sname, E, RouterKind_name(kind));
        MsStatus st = Router_new(&routers[*n], kind, &lr->load->data, part, E, NULL, NULL, cause);
        if (st != MS_OK)
            return st;
        (*n)++;
    }
    return MS_OK;
}

/* Router metrics of one split: one shared evaluation pass for all routers, then MEO. */
static MsStatus splitRows(LayerRun *lr, const char *sname, Router *const *routers, int n,
                          const int32_t *part, int E, Split split, char **cause) {
    const BatchConfig *cfg = lr->run->cfg;
    Eval *evals[ROUTER_KINDS] = {NULL};
    progress(lr, "%s E=%d evaluation (%s)", sname, E, Split_name(split));
    MsStatus st = Eval_newSet(evals, &lr->load->data, part, E, (const Router *const *)routers, n,
                              split, cfg->threads, NULL, cause);
    for (int i = 0; i < n && st == MS_OK; i++)
        evalRows(lr, sname, RouterKind_name(Router_kind(routers[i])), E, Split_name(split),
                 evals[i]);
    for (int i = 0; i < n; i++)
        Eval_delete(evals[i]);
    Meo *meo = NULL;
    if (st == MS_OK) {
        progress(lr, "%s E=%d MEO (%s)", sname, E, Split_name(split));
        st = meoFor(lr, part, E, split, &meo, cause);
    }
    for (int i = 0; i < n && st == MS_OK; i++) {
        progress(lr, "%s E=%d MEO %s (%s)", sname, E, RouterKind_name(Router_kind(routers[i])),
                 Split_name(split));
        st = meoRows(lr, sname, meo, routers[i], E, split, cause);
    }
    if (meo)
        Meo_releasePartition(meo); /* the next partition's work needs the memory */
    return st;
}

static MsStatus routerRows(LayerRun *lr, PartSlot *slot, char **cause) {
    const BatchConfig *cfg = lr->run->cfg;
    const char *sname = Partition_strategyName(slot->strategy);
    const int32_t *part = slot->part;
    int E = slot->E;
    Router *routers[ROUTER_KINDS] = {NULL};
    int n = 0;
    MsStatus st = buildRouters(lr, sname, part, E, &slot->mlp, routers, &n, cause);
    Split splits[2] = {SPLIT_TEST, SPLIT_TRAIN};
    for (int i = 0; i < (cfg->train_too ? 2 : 1) && st == MS_OK && n > 0; i++)
        st = splitRows(lr, sname, routers, n, part, E, splits[i], cause);
    MoeKernel *kernel = NULL;
    if (st == MS_OK && cfg->measure && n > 0)
        st = MoeKernel_new(lr->load->data.w, part, E, &kernel, cause);
    for (int i = 0; i < n && st == MS_OK && cfg->measure; i++) {
        progress(lr, "%s E=%d measuring %s", sname, E, RouterKind_name(Router_kind(routers[i])));
        st = measureRows(lr, sname, kernel, routers[i], E, cause);
    }
    MoeKernel_delete(kernel);
    for (int i = 0; i < n; i++)
        Router_delete(routers[i]);
    return st;
}

/* Makes slot's partition (its E set for a file partition) and writes the rows and files
   that depend on the partition alone. */
static MsStatus partitionRows(LayerRun *lr, PartSlot *slot, char **cause) {
    const BatchConfig *cfg = lr->run->cfg;
    int N = lr->load->data.w->d_ff;
    PartitionStrategy strategy = slot->strategy;
    const char *sname = Partition_strategyName(strategy);
    slot->part = xMallocArray((size_t)N, sizeof(int32_t));
    int fallback = 0;
    progress(lr, "%s partition E=%d", sname, slot->E);
    MsStatus st = makePartition(lr, strategy, slot->E, slot->part, &fallback, cause);
    if (st == MS_OK && strategy == PARTITION_FILE)
        slot->E = fileExperts(slot->part, N);
    int E = slot->E;
    if (st == MS_OK)
        st = Partition_validate(slot->part, N, E, cause);
    if (st == MS_OK)
        st = ensureCoact(lr, cause);
    if (st == MS_OK) {
        emit(lr, sname, NULL, E, 0, "train", "intra_coact", Coact_intra(&lr->coact, slot->part));
        if (strategy == PARTITION_COACT)
            emit(lr, sname, NULL, E, 0, "train", "coact_fallback_random", fallback);
        st = savePartition(lr, strategy, E, slot->part, cause);
        if (st == MS_OK && lr->run->figures)
            st = FigureSet_addCoact(lr->run->figures, lr->info->index, lr->info->name, lr->tau,
                                    sname, E, &lr->coact, slot->part, cause);
    }
    for (int i = 0; i < cfg->n_ks && st == MS_OK; i++) {
        if (cfg->ks[i] > E) {
            setCause(cause, "layer %d: the file partition has %d experts, fewer than k = %d",
                     lr->info->index, E, cfg->ks[i]);
            st = MS_ERR_RANGE;
        }
    }
    return st;
}

/* Trains the mlp routers of every slot with slots[i]'s E, together: they share the
   layer's x, seed and options, so one pass over the minibatches serves them all. */
static MsStatus trainMlps(LayerRun *lr, PartSlot *slots, int n, int i, char **cause) {
    const BatchConfig *cfg = lr->run->cfg;
    int E = slots[i].E, m = 0;
    PartSlot **group = xMallocArray((size_t)n, sizeof *group);
    const int32_t **parts = xMallocArray((size_t)n, sizeof *parts);
    Router **out = xCalloc((size_t)n, sizeof *out);
    for (int j = i; j < n; j++) {
        if (slots[j].E == E && !slots[j].mlp) {
            group[m] = &slots[j];
            parts[m++] = slots[j].part;
        }
    }
    RouterOptions ropt;
    RouterOptions_default(&ropt);
    ropt.epochs = cfg->mlp_epochs;
    ropt.seed = cfg->seed;
    ropt.threads = cfg->threads;
    progress(lr, "E=%d router mlp (%d partitions)", E, m);
    MsStatus st = Router_newMlpSet(out, &lr->load->data, parts, m, E, &ropt, NULL, cause);
    for (int j = 0; j < m && st == MS_OK; j++)
        group[j]->mlp = out[j];
    free(out);
    free(parts);
    free(group);
    return st;
}

static void freeSlots(PartSlot *slots, int n) {
    for (int i = 0; i < n; i++) {
        free(slots[i].part);
        Router_delete(slots[i].mlp);
    }
    free(slots);
}

static MsStatus boundRows(LayerRun *lr, NeuronBound *const *bound) {
    const BatchConfig *cfg = lr->run->cfg;
    Split splits[2] = {SPLIT_TEST, SPLIT_TRAIN};
    for (int i = 0; i < 2; i++) {
        if (!bound[i])
            continue;
        for (int e = 0; e < cfg->n_experts; e++) {
            for (int j = 0; j < cfg->n_ks; j++) {
                long K = 0;
                double err = NeuronBound_errorAt(bound[i], cfg->experts[e], cfg->ks[j], &K);
                const char *sp = Split_name(splits[i]);
                emit(lr, NULL, "topk_neurons", cfg->experts[e], cfg->ks[j], sp, "output_rel_err",
                     err);
                emit(lr, NULL, "topk_neurons", cfg->experts[e], cfg->ks[j], sp, "K", (double)K);
            }
        }
    }
    return MS_OK;
}

static bool wantsRouter(const BatchConfig *cfg, RouterKind kind) {
    for (int i = 0; i < cfg->n_routers; i++)
        if (cfg->routers[i] == kind)
            return true;
    return false;
}

/* A layer's top-K neuron bound, made on a thread of its own while the partitions run on
   the calling one: k-means and METIS run single-threaded and leave a core free for it.
   It starts once the co-activation counts are made (both passes are bound by reading h,
   so side by side they only share the memory's bandwidth). It reads the layer's data
   only, as the partitions do. */
typedef struct BoundJob {
    const LayerData *d;
    int threads;
    bool train_too;
    NeuronBound *bound[2]; /* test and (train_too) train split */
    MsStatus st;
    char *cause;
    pthread_t thread;
    bool started, running;
} BoundJob;

static void *boundMain(void *arg) {
    BoundJob *j = arg;
    j->st = NeuronBound_new(&j->bound[0], j->d, SPLIT_TEST, j->threads, NULL, &j->cause);
    if (j->st == MS_OK && j->train_too)
        j->st = NeuronBound_new(&j->bound[1], j->d, SPLIT_TRAIN, j->threads, NULL, &j->cause);
    return NULL;
}

/* Starts the job (runs it here when no thread can start); once. */
static void boundStart(BoundJob *j) {
    if (j->started)
        return;
    j->started = true;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* signals stay with the main thread */
    j->running = pthread_create(&j->thread, NULL, boundMain, j) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!j->running)
        boundMain(j);
}

/* Waits for the job; its status (and cause). Harmless to call again. */
static MsStatus boundJoin(BoundJob *j, char **cause) {
    if (j->running)
        pthread_join(j->thread, NULL);
    j->running = false;
    if (j->st != MS_OK && j->cause) {
        setCause(cause, "%s", j->cause);
        free(j->cause);
        j->cause = NULL;
    }
    return j->st;
}

/* One tau: first every partition (the co-activation counts are needed only there, and
   their memory is given back before the routers' work), then the mlp routers of all
   partitions trained together, then each partition's routers, evaluation, MEO and
   timings. */
static MsStatus tauRows(LayerRun *lr, const float *tau_q, BoundJob *bound, char **cause) {
    const BatchConfig *cfg = lr->run->cfg;
    MsStatus st = layerRows(lr, tau_q, cause);
    if (st == MS_OK)
        st = ensureCoact(lr, cause); /* every partition's intra_coact needs them */
    if (bound && !bound->started && st == MS_OK) {
        progress(lr, "top-K neuron bound");
        boundStart(bound);
    }
    PartSlot *slots = xCalloc((size_t)cfg->n_strategies * cfg->n_experts, sizeof *slots);
    int n = 0;
    for (int s = 0; s < cfg->n_strategies && st == MS_OK; s++) {
        bool file = cfg->strategies[s] == PARTITION_FILE;
        for (int e = 0; e < (file ? 1 : cfg->n_experts) && st == MS_OK; e++) {
            slots[n] = (PartSlot){.strategy = cfg->strategies[s],
                                  .E = file ? 0 : cfg->experts[e]};
            st = partitionRows(lr, &slots[n++], cause);
        }
    }
    dropTauCaches(lr);
    if (bound) { /* the partitions are done: the bound's core goes to the mlp training */
        MsStatus bst = boundJoin(bound, st == MS_OK ? cause : NULL);
        st = st == MS_OK ? bst : st;
    }
    bool mlp = wantsRouter(cfg, ROUTER_MLP);
    for (int i = 0; i < n && st == MS_OK; i++) {
        if (mlp && !slots[i].mlp)
            st = trainMlps(lr, slots, n, i, cause);
        if (st == MS_OK)
            st = routerRows(lr, &slots[i], cause);
    }
    freeSlots(slots, n);
    if (st == MS_OK && bound)
        st = boundRows(lr, bound->bound);
    return st;
}

static MsStatus runLayer(BatchRun *run, int pos, char **cause) {
    const BatchConfig *cfg = run->cfg;
    LayerRun lr = {.run = run, .pos = pos, .info = Dump_layer(run->dump, pos)};
    progress(&lr, "loading");
    lr.load = &run->load;
    MsStatus st = run->loaded ? LayerLoad_reload(lr.load, run->dump, pos, cfg->test_fraction,
                                                 NULL, cause)
                              : LayerLoad_init(lr.load, run->dump, pos, cfg->test_fraction, NULL,
                                               cause);
    run->loaded = st == MS_OK;
    if (st != MS_OK)
        return st;
    /* The next layer's bytes come off the disk while this one is computed. */
    if (run->layer_pos + 1 < run->layer_count)
        Dump_prefetch(run->dump, run->next_pos);
    const LayerData *d = &lr.load->data;
    float *tau_q = xCalloc((size_t)cfg->n_quantiles + 1, sizeof(float));
    /* one thread fewer for the bound: the partitions keep theirs */
    BoundJob bound = {.d = d, .threads = cfg->threads > 1 ? cfg->threads - 1 : 1,
                      .train_too = cfg->train_too};
    bool want_bound = wantsRouter(cfg, ROUTER_TOPK_NEURONS);
    progress(&lr, "sparsity quantiles");
    for (int i = 0; i < cfg->n_quantiles && st == MS_OK; i += SPARSITY_MAX_QUANTILES) {
        int n = cfg->n_quantiles - i;
        st = Sparsity_tausForSparsity(d->h, d->T, d->w->d_ff, cfg->quantiles + i,
                                      n < SPARSITY_MAX_QUANTILES ? n : SPARSITY_MAX_QUANTILES,
                                      cfg->threads, NULL, tau_q + i, cause);
    }
    for (int t = 0; t < cfg->n_taus && st == MS_OK; t++) {
        lr.tau = (float)cfg->taus[t];
        st = tauRows(&lr, tau_q, want_bound ? &bound : NULL, cause);
    }
    /* joined by tauRows, unless something failed before */
    MsStatus bst = boundJoin(&bound, st == MS_OK ? cause : NULL);
    st = st == MS_OK ? bst : st;
    if (st != MS_OK)
        prefixCause(cause, "%s: layer %d", lr.info->x_file, lr.info->index);
    NeuronBound_delete(bound.bound[0]);
    NeuronBound_delete(bound.bound[1]);
    free(tau_q);
    dropTauCaches(&lr);
    Meo_delete(lr.meo[0]);
    Meo_delete(lr.meo[1]);
#ifdef __GLIBC__
    /* The layer's many smaller blocks (below the 1 MiB that main.c maps on their own)
       were freed into the heap, which is never trimmed; the pages they leave free are
       given back here, or their scattered remains would add up layer after layer. */
    malloc_trim(0);
#endif
    return st;
}

/* The positions (in the Dump) of the layers to run; checks the grid against each. */
static MsStatus selectLayers(const BatchConfig *cfg, const Dump *dump, int **pos, int *n,
                             char **cause) {
    int count = Dump_layerCount(dump);
    *pos = xMallocArray((size_t)count + 1, sizeof(int));
    *n = 0;
    for (int i = 0; i < count; i++) {
        int index = Dump_layer(dump, i)->index;
        bool want = !cfg->layers;
        for (int j = 0; cfg->layers && j < cfg->n_layers; j++)
            want = want || cfg->layers[j] == index;
        if (want)
            (*pos)[(*n)++] = i;
    }
    for (int j = 0; cfg->layers && j < cfg->n_layers; j++) {
        bool found = false;
        for (int i = 0; i < count; i++)
            found = found || Dump_layer(dump, i)->index == cfg->layers[j];
        if (!found) {
            setCause(cause, "--layers: no layer %d in the files", cfg->layers[j]);
            return MS_ERR_RANGE;
        }
    }
    for (int i = 0; i < *n; i++) {
        const DumpLayer *L = Dump_layer(dump, (*pos)[i]);
        for (int e = 0; e < cfg->n_experts; e++) {
            if (cfg->experts[e] > L->d_ff) {
                setCause(cause, "--experts: E = %d is more than layer %d's d_ff = %d",
                         cfg->experts[e], L->index, L->d_ff);
                return MS_ERR_RANGE;
            }
        }
    }
    return MS_OK;
}

static MsStatus checkGrid(const BatchConfig *cfg, char **cause) {
    for (int e = 0; e < cfg->n_experts; e++) {
        for (int i = 0; i < cfg->n_ks; i++) {
            if (cfg->ks[i] > cfg->experts[e]) {
                setCause(cause, "--k: k = %d is more than E = %d (k experts of E per token)",
                         cfg->ks[i], cfg->experts[e]);
                return MS_ERR_RANGE;
            }
        }
    }
    return MS_OK;
}

MsStatus Batch_run(const BatchConfig *cfg, Dump *dump, char **cause) {
    int *pos = NULL, n = 0;
    MsStatus st = checkGrid(cfg, cause);
    if (st == MS_OK)
        st = selectLayers(cfg, dump, &pos, &n, cause);
    BatchRun run = {.cfg = cfg, .dump = dump, .layer_count = n};
    run.progress = !cfg->quiet && isatty(STDERR_FILENO);
    if (st == MS_OK)
        st = Csv_open(&run.csv, cfg->out_path, cause);
    if (st != MS_OK) {
        free(pos);
        return st;
    }
    if (cfg->figures_dir)
        st = FigureSet_new(&run.figures, cfg->figures_dir, cfg->figure_formats, cfg->n_taus > 1,
                           cause);
    if (st == MS_OK && cfg->partitions_path)
        st = Writer_create(&run.parts, cfg->partitions_path, cause);
    for (int i = 0; i < n && st == MS_OK; i++) {
        run.layer_pos = i;
        run.next_pos = i + 1 < n ? pos[i + 1] : -1;
        st = runLayer(&run, pos[i], cause);
    }
    if (run.loaded)
        LayerLoad_done(&run.load);
    if (run.progress)
        fputs("\r\033[K", stderr);
    if (st == MS_OK && run.parts) {
        st = Writer_close(run.parts, cause);
        run.parts = NULL;
    }
    Writer_delete(run.parts);
    if (st == MS_OK)
        st = Csv_close(&run.csv, cause);
    else
        Csv_abort(&run.csv);
    if (st == MS_OK && run.figures)
        st = FigureSet_write(run.figures, cause);
    FigureSet_delete(run.figures);
    free(pos);
    return st;
}
