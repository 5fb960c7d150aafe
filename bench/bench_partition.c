/*
moescope - bench/bench_partition.c
Times the partition strategies at the T5-base shape (N = 3072 neurons, d_model = 768) for
E = 8, 16, 32, 64, 128 on a moescope-synth layer (planted groups, 90% sparsity): random,
param (balanced k-means, exact assignment) and coact (METIS + rebalance, from a graph
built once per tau), plus the once-per-tau work (co-activation counts, the graph), and
the "change of E with param or random: partition and all non-mlp metrics of one
layer in at most 1 s" at E = 32 and 128.
Prints each figure next to the budget and the ARI against the planted groups.
Usage: bench/bench_partition [n_tokens]   (default 32768; train = the first 90%)
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/Coact.h"
#include "core/Eval.h"
#include "core/Meo.h"
#include "core/Partition.h"
#include "core/Router.h"
#include "core/Synth.h"
#include "util/XUtils.h"

static int fail(const char *what, MsStatus st, char *cause) {
    fprintf(stderr, "bench_partition: %s: %s\n", what, cause ? cause : Status_name(st));
    free(cause);
    return 1;
}

/* One change of E as the UI makes it, every non-mlp metric of the layer at the new E:
   the partition, intra_coact (counts are per tau, already there), the oracle,
   similarity and sigmoid routers, their evaluation on the test split (every Eval
   metric, all k) and their MEO metrics at k = 2 (the dense output is per layer, made
   once before). Two threads, as moescope runs. */
static MsStatus changeOfE(const SynthLayer *S, const Coact *c, long Ttrain, int32_t *part,
                          char **cause) {
    LayerData L = {.w = &S->w, .T = S->T, .x = S->x, .h = S->h, .T_train = Ttrain};
    const RouterKind kinds[3] = {ROUTER_ORACLE, ROUTER_SIMILARITY, ROUTER_SIGMOID};
    Meo *meo = NULL;
    MsStatus st = Meo_open(&meo, &L, SPLIT_TEST, 64, NULL, cause);
    if (st != MS_OK)
        return st;
    Meo_setThreads(meo, 2);
    int32_t *first = xMallocArray((size_t)S->w.d_ff, sizeof(int32_t));
    Partition_random(first, S->w.d_ff, 8, 1);
    MeoMetrics mm;
    st = Meo_setPartition(meo, first, 8, cause);
    if (st == MS_OK)
        st = Meo_metrics(meo, 1, NULL, &mm, cause); /* the per-layer dense output */
    free(first);
    printf("change of E, all non-mlp metrics (partition, intra_coact, 3 routers, their Eval "
           "and MEO at k=2), 2 threads:\n");
    const int Es[] = {32, 128};
    for (int strategy = 0; strategy < 2 && st == MS_OK; strategy++) {
        for (size_t k = 0; k < sizeof Es / sizeof Es[0] && st == MS_OK; k++) {
            int E = Es[k], N = S->w.d_ff;
            double t0 = XUtils_now();
            if (strategy == 0)
                Partition_random(part, N, E, 1);
            else
                st = Partition_param(part, S->w.w_in, N, S->w.d_model, E, 1, 0, NULL, NULL,
                                     cause);
            double t1 = XUtils_now();
            double intra = st == MS_OK ? Coact_intra(c, part) : 0.0;
            Router *r[3] = {NULL, NULL, NULL};
            for (int i = 0; i < 3 && st == MS_OK; i++)
                st = Router_new(&r[i], kinds[i], &L, part, E, NULL, NULL, cause);
            Eval *ev[3] = {NULL, NULL, NULL};
            if (st == MS_OK)
                st = Eval_newSet(ev, &L, part, E, (const Router *const *)r, 3, SPLIT_TEST, 2,
                                 NULL, cause);
            double t2 = XUtils_now();
            if (st == MS_OK)
                st = Meo_setPartition(meo, part, E, cause);
            for (int i = 0; i < 3 && st == MS_OK; i++) {
                Meo_setRouter(meo, r[i]);
                st = Meo_metrics(meo, 2, NULL, &mm, cause);
            }
            double t3 = XUtils_now();
            if (st == MS_OK)
                printf("  %-6s E=%-4d %.3f s (partition %.3f, routers+Eval %.3f, MEO %.3f; "
                       "intra_coact %.3f)  target <= 1 s\n",
                       strategy ? "param" : "random", E, t3 - t0, t1 - t0, t2 - t1, t3 - t2,
                       intra);
            for (int i = 0; i < 3; i++) {
                Eval_delete(ev[i]);
                Router_delete(r[i]);
            }
        }
    }
    Meo_delete(meo);
    return st;
}

int main(int argc, char **argv) {
    SynthOptions o;
    SynthOptions_default(&o);
    if (argc > 1)
        o.n_tokens = atol(argv[1]);
    SynthLayer L;
    char *cause = NULL;
    MsStatus st = Synth_layer(&o, 0, &L, &cause);
    if (st != MS_OK)
        return fail("synth", st, cause);
    int N = L.w.d_ff, d = L.w.d_model;
    long Ttrain = (long)(0.9 * (double)L.T);
    printf("bench_partition: synth layer %d x %d, %ld tokens (%ld train), %d planted groups\n",
           d, N, L.T, Ttrain, o.n_groups);
    printf("reproduce: make bench/bench_partition && bench/bench_partition %ld\n", o.n_tokens);

    Coact c;
    double t0 = XUtils_now();
    st = Coact_compute(&c, L.h, Ttrain, N, 0.0f, 2, NULL, &cause);
    double t1 = XUtils_now();
    if (st != MS_OK)
        return fail("coact", st, cause);
    PartitionGraph g;
    st = PartitionGraph_fromCoact(&g, &c, NULL, &cause);
    double t2 = XUtils_now();
    if (st != MS_OK)
        return fail("graph", st, cause);
    printf("once per tau: co-activation counts %.3f s, excess graph %.3f s (%ld edges)\n",
           t1 - t0, t2 - t1, g.n_edges);
    printf("%5s %10s %10s %6s %10s %8s %8s\n", "E", "random_s", "param_s", "iters", "coact_s",
           "ARIparam", "ARIcoact");
    int32_t *part = xMallocArray((size_t)N, sizeof(int32_t));
    int32_t *pc = xMallocArray((size_t)N, sizeof(int32_t));
    const int Es[] = {8, 16, 32, 64, 128};
    for (size_t k = 0; k < sizeof(Es) / sizeof(Es[0]); k++) {
        int E = Es[k], iters = 0, fallback = 0;
        double a = XUtils_now();
        Partition_random(part, N, E, 1);
        double b = XUtils_now();
        st = Partition_param(part, L.w.w_in, N, d, E, 1, 0, &iters, NULL, &cause);
        double e = XUtils_now();
        if (st != MS_OK)
            return fail("param", st, cause);
        st = Partition_coact(pc, &g, E, 1, &fallback, NULL, &cause);
        double f = XUtils_now();
        if (st != MS_OK)
            return fail("coact", st, cause);
        printf("%5d %10.4f %10.4f %6d %10.4f %8.3f %8.3f\n", E, b - a, e - b, iters, f - e,
               Partition_adjustedRand(part, E, L.planted, o.n_groups, N),
               Partition_adjustedRand(pc, E, L.planted, o.n_groups, N));
    }
    printf("(param aimed at ~0.3 s)\n");
    st = changeOfE(&L, &c, Ttrain, part, &cause);
    if (st != MS_OK)
        return fail("change of E", st, cause);
    free(part);
    free(pc);
    PartitionGraph_done(&g);
    Coact_done(&c);
    SynthLayer_done(&L);
    return 0;
}
