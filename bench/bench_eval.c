/*
moescope - bench/bench_eval.c
Times the router engine on a T5-base-shaped layer made up here (d_model 768, d_ff 3072,
32768 tokens, h = relu(x w_in^T + b_in) with b_in set for ~90% zeros), against the
interactive targets:
  - a change of k with the partition fixed: Eval_metrics for every metric (<= 16 ms);
  - a change of E (random partition): sparsity + partition + routers + Eval_new for the
    oracle, similarity and sigmoid (<= 1 s, the mlp excluded);
  - mlp router training on the train split (<= 5 s on 2 cores);
  - the batch's three mlp trainings of a layer (partitions random, param and another
    random), separately and fused by Router_newMlpSet (<= 2.2 s for the three at E = 32),
    checked to give bitwise the same routers.
Runs with OPENBLAS_NUM_THREADS=1 (one BLAS thread per worker, as moescope runs it; the
program re-executes itself with it set). Usage: bench_eval [tokens] [experts] [threads]
[mlp | mlp3] (mlp: the mlp training only, best of 3 runs; mlp3: the three trainings)
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/Eval.h"
#include "core/Ffn.h"
#include "core/NeuronBound.h"
#include "core/Parallel.h"
#include "core/Partition.h"
#include "core/Router.h"
#include "core/Sparsity.h"
#include "util/XUtils.h"

enum { D_MODEL = 768, D_FF = 3072, HBLOCK = 256 };

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Gaussian values from a per-block stream, so blocks can be filled in any order. */
static void gaussFill(float *v, long n, uint64_t seed, float scale) {
    uint64_t s = seed;
    for (long i = 0; i < n; i += 2) {
        double u = ((double)(splitmix(&s) >> 11) + 0.5) / 9007199254740992.0;
        double w = (double)(splitmix(&s) >> 11) / 9007199254740992.0;
        double r = sqrt(-2.0 * log(u)) * scale;
        v[i] = (float)(r * cos(6.283185307179586 * w));
        if (i + 1 < n)
            v[i + 1] = (float)(r * sin(6.283185307179586 * w));
    }
}

typedef struct Gen {
    FfnWeights *w;
    float *x, *h;
    long T;
} Gen;

static void genBlock(void *ctx, long chunk, int worker) {
    Gen *g = ctx;
    long r0 = chunk * HBLOCK, rows = g->T - r0 < HBLOCK ? g->T - r0 : HBLOCK;
    gaussFill(g->x + r0 * D_MODEL, rows * D_MODEL, 1000 + (uint64_t)chunk, 1.0f);
    Ffn_hidden(g->w, g->x + r0 * D_MODEL, rows, g->h + r0 * D_FF);
}

/* CPU seconds of the whole process (all threads): on a shared machine the wall time
   also counts other people's work, this does not. */
static double cpuNow(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(MsStatus st, char *cause) {
    fprintf(stderr, "bench_eval: %s: %s\n", Status_name(st), cause ? cause : "?");
    free(cause);
    exit(1);
}

/* true when the two mlp routers have bitwise the same weights and loss history */
static bool sameMlp(const Router *a, const Router *b, int E) {
    const double *la, *lb;
    int n = Router_lossHistory(a, &la);
    return n == Router_lossHistory(b, &lb) && memcmp(la, lb, (size_t)n * sizeof *la) == 0 &&
           memcmp(Router_mlpW1(a), Router_mlpW1(b), sizeof(float) * (size_t)E * D_MODEL) == 0 &&
           memcmp(Router_mlpW2(a), Router_mlpW2(b), sizeof(float) * (size_t)E * E) == 0;
}

#define CHECK(call)                                                                           \
    do {                                                                                      \
        MsStatus st_ = (call);                                                                \
        if (st_ != MS_OK)                                                                     \
            die(st_, cause);                                                                  \
    } while (0)

/* The batch's three mlp trainings of a layer: separately (Router_new each), then fused
   (Router_newMlpSet, best of 2), checked bitwise equal. */
static void benchMlp3(const LayerData *L, int E, int threads) {
    char *cause = NULL;
    int32_t *parts[3];
    for (int p = 0; p < 3; p++)
        parts[p] = xMallocArray(D_FF, sizeof(int32_t));
    Partition_random(parts[0], D_FF, E, 7);
    CHECK(Partition_param(parts[1], L->w->w_in, D_FF, D_MODEL, E, 7, 0, NULL, NULL, &cause));
    Partition_random(parts[2], D_FF, E, 8);
    RouterOptions o;
    RouterOptions_default(&o);
    o.threads = threads;
    Router *sep[3], *fused[3] = {NULL, NULL, NULL};
    double t0 = XUtils_now(), c0 = cpuNow(), tOne = INFINITY;
    for (int p = 0; p < 3; p++) {
        double t1 = XUtils_now();
        CHECK(Router_new(&sep[p], ROUTER_MLP, L, parts[p], E, &o, NULL, &cause));
        tOne = XUtils_now() - t1 < tOne ? XUtils_now() - t1 : tOne;
    }
    double tSep = XUtils_now() - t0, cSep = cpuNow() - c0;
    printf("mlp x3 separately (E %d, %ld train tokens): %.2f s wall, %.2f s CPU; fastest single "
           "%.2f s (target <= 5 s)\n", E, L->T_train, tSep, cSep, tOne);
    double tFused = INFINITY, cFused = INFINITY;
    for (int rep = 0; rep < 2; rep++) {
        for (int p = 0; p < 3; p++)
            Router_delete(fused[p]);
        t0 = XUtils_now();
        c0 = cpuNow();
        CHECK(Router_newMlpSet(fused, L, (const int32_t *const *)parts, 3, E, &o, NULL, &cause));
        double tw = XUtils_now() - t0, tc = cpuNow() - c0;
        printf("  fused run %d: %.2f s wall, %.2f s CPU\n", rep + 1, tw, tc);
        tFused = tw < tFused ? tw : tFused;
        cFused = tc < cFused ? tc : cFused;
    }
    bool same = true;
    for (int p = 0; p < 3; p++)
        same = same && sameMlp(sep[p], fused[p], E);
    printf("mlp x3 fused (Router_newMlpSet): best of 2 %.2f s wall, %.2f s CPU (target <= 2.2 s "
           "at E = 32); %.2fx; bitwise equal to the separate trainings: %s\n", tFused, cFused,
           tSep / tFused, same ? "yes" : "NO");
    for (int p = 0; p < 3; p++) {
        Router_delete(sep[p]);
        Router_delete(fused[p]);
        free(parts[p]);
    }
    if (!same)
        exit(1);
}

int main(int argc, char **argv) {
    if (!getenv("OPENBLAS_NUM_THREADS")) {
        setenv("OPENBLAS_NUM_THREADS", "1", 1);
        execv("/proc/self/exe", argv);
    }
    long T = argc > 1 ? atol(argv[1]) : 32768;
    int E = argc > 2 ? atoi(argv[2]) : 128;
    int threads = argc > 3 ? atoi(argv[3]) : 2;
    bool mlpOnly = argc > 4 && strcmp(argv[4], "mlp") == 0;
    bool mlp3 = argc > 4 && strcmp(argv[4], "mlp3") == 0;
    char *cause = NULL;
    printf("layer: d_model %d, d_ff %d, %ld tokens, E %d, %d threads, OPENBLAS_NUM_THREADS=%s\n",
           D_MODEL, D_FF, T, E, threads, getenv("OPENBLAS_NUM_THREADS"));
    printf("reproduce: make bench/bench_eval && ./bench/bench_eval %ld %d %d\n", T, E, threads);

    FfnWeights w = {.d_model = D_MODEL, .d_ff = D_FF, .act = ACTIVATION_RELU};
    w.w_in = xMallocArray((size_t)D_FF * D_MODEL, sizeof(float));
    w.w_out = xMallocArray((size_t)D_FF * D_MODEL, sizeof(float));
    w.b_in = xMallocArray(D_FF, sizeof(float));
    gaussFill(w.w_in, (long)D_FF * D_MODEL, 1, (float)(1.0 / sqrt(D_MODEL)));
    gaussFill(w.w_out, (long)D_FF * D_MODEL, 2, (float)(1.0 / sqrt(D_FF)));
    for (int j = 0; j < D_FF; j++)
        w.b_in[j] = -1.2816f; /* pre-activations ~ N(0, 1): P(z > 1.2816) = 0.1 */
    /* as the batch's layer loader allocates them (huge pages where the kernel gives them) */
    float *x = tryMallocLarge((size_t)T * D_MODEL, sizeof(float));
    float *h = tryMallocLarge((size_t)T * D_FF, sizeof(float));
    if (!x || !h)
        die(MS_ERR_NOMEM, NULL);
    Gen gen = {.w = &w, .x = x, .h = h, .T = T};
    double t0 = XUtils_now();
    Parallel_run(threads, Parallel_chunks(T, HBLOCK), genBlock, &gen, NULL, -1, -1);
    printf("generated the layer in %.2f s\n", XUtils_now() - t0);
    LayerData L = {.w = &w, .T = T, .x = x, .h = h,
                   .T_train = Split_trainRows(T, NULL, 0, 0.1)};

    int32_t *part = xMallocArray(D_FF, sizeof *part);
    if (mlpOnly) {
        Partition_random(part, D_FF, E, 7);
        goto mlp;
    }
    if (mlp3) {
        benchMlp3(&L, E, threads);
        goto done;
    }
    /* sparsity: per layer, independent of E (the summary shows it with every change) */
    t0 = XUtils_now();
    Sparsity sp;
    CHECK(Sparsity_compute(&sp, h, T, D_FF, 0.0f, threads, NULL, &cause));
    double tSparsity = XUtils_now() - t0;
    t0 = XUtils_now();
    float tau;
    CHECK(Sparsity_tauForSparsity(h, T, D_FF, 0.95, threads, NULL, &tau, &cause));
    double tQuantile = XUtils_now() - t0;
    printf("sparsity %.4f, active/token %.1f: Sparsity_compute %.3f s; tau for q=0.95 = %g: "
           "%.3f s (T*N = %.0fM entries)\n", sp.sparsity, sp.active_per_token_mean, tSparsity,
           (double)tau, tQuantile, (double)T * D_FF / 1e6);
    Sparsity_done(&sp);

    t0 = XUtils_now();
    NeuronBound *nb;
    CHECK(NeuronBound_new(&nb, &L, SPLIT_TEST, threads, NULL, &cause));
    printf("top-K neuron bound (once per layer, test split): %.3f s; error at k=8 of E: %.4f\n",
           XUtils_now() - t0, NeuronBound_errorAt(nb, E, 8, NULL));
    NeuronBound_delete(nb);

    /* a change of E: partition, routers and their evaluations (oracle, similarity, sigmoid) */
    double tE0 = XUtils_now(), cE0 = cpuNow();
    Partition_random(part, D_FF, E, 7);
    double tPart = XUtils_now() - tE0;
    const RouterKind kinds[3] = {ROUTER_ORACLE, ROUTER_SIMILARITY, ROUTER_SIGMOID};
    Eval *ev[3];
    Router *routers[3];
    for (int i = 0; i < 3; i++) {
        t0 = XUtils_now();
        CHECK(Router_new(&routers[i], kinds[i], &L, part, E, NULL, NULL, &cause));
        printf("  %-10s Router_new %.3f s\n", RouterKind_name(kinds[i]), XUtils_now() - t0);
    }
    t0 = XUtils_now();
    CHECK(Eval_newSet(ev, &L, part, E, (const Router *const *)routers, 3, SPLIT_TEST, threads,
                      NULL, &cause));
    printf("  Eval_newSet of the 3 routers (test split, %ld tokens) %.3f s\n", Eval_tokens(ev[0]),
           XUtils_now() - t0);
    double tE = XUtils_now() - tE0, cE = cpuNow() - cE0;
    printf("change of E (random partition %.3f s + 3 routers and evaluations): %.3f s wall, "
           "%.3f s CPU; with sparsity %.3f s wall (target <= 1 s)\n", tPart, tE, cE,
           tE + tSparsity);
    for (int i = 0; i < 3; i++) {
        Eval *one;
        t0 = XUtils_now();
        CHECK(Eval_new(&one, &L, part, E, routers[i], SPLIT_TEST, threads, NULL, &cause));
        printf("  (alone: %-10s Eval_new %.3f s)\n", RouterKind_name(kinds[i]), XUtils_now() - t0);
        Eval_delete(one);
    }

    /* a change of k: every metric of every router for one k */
    int reps = 0;
    t0 = XUtils_now();
    EvalMetrics m;
    double sink = 0.0;
    for (; reps < 20; reps++)
        for (int k = 1; k <= E; k++)
            for (int i = 0; i < 3; i++) {
                Eval_metrics(ev[i], k, &m);
                sink += m.mass_recall;
            }
    double perK = (XUtils_now() - t0) / (reps * E);
    printf("change of k: Eval_metrics for 3 routers %.1f us per k (target <= 16 ms)%s\n",
           perK * 1e6, sink < 0 ? "!" : "");
    for (int i = 0; i < 3; i++) {
        Eval_metrics(ev[i], 8, &m);
        printf("  %-10s k=8: recall %.4f overlap %.4f err %.4f load max/mean %.3f entropy %.4f "
               "flops %.4f\n", RouterKind_name(kinds[i]), m.mass_recall, m.overlap,
               m.output_rel_err, m.load_max_over_mean, m.load_entropy_norm, m.flops_fraction);
        Eval_delete(ev[i]);
        Router_delete(routers[i]);
    }

mlp:; /* mlp training on the train split */
    RouterOptions o;
    RouterOptions_default(&o);
    o.threads = threads;
    Router *mlp = NULL;
    double tMlp = INFINITY, cMlp = INFINITY;
    /* the mlp-only mode trains 3 times: on a shared machine the best run is the figure */
    for (int rep = 0; rep < (mlpOnly ? 3 : 1); rep++) {
        Router_delete(mlp);
        t0 = XUtils_now();
        double c0 = cpuNow();
        CHECK(Router_new(&mlp, ROUTER_MLP, &L, part, E, &o, NULL, &cause));
        double tw = XUtils_now() - t0, tc = cpuNow() - c0;
        if (mlpOnly)
            printf("  mlp training run %d: %.2f s wall, %.2f s CPU\n", rep + 1, tw, tc);
        tMlp = tw < tMlp ? tw : tMlp;
        cMlp = tc < cMlp ? tc : cMlp;
    }
    const double *loss;
    int n = Router_lossHistory(mlp, &loss);
    printf("mlp training (%ld train tokens, E %d, %d epochs, batch %d): %s%.2f s wall, %.2f s CPU "
           "(target <= 5 s); loss %.5f -> %.5f\n", L.T_train, E, o.epochs, o.batch,
           mlpOnly ? "best of 3 " : "", tMlp, cMlp, loss[0], loss[n - 1]);
    Eval *em;
    t0 = XUtils_now();
    CHECK(Eval_new(&em, &L, part, E, mlp, SPLIT_TEST, threads, NULL, &cause));
    Eval_metrics(em, 8, &m);
    printf("  mlp        Eval_new %.3f s; k=8: recall %.4f err %.4f\n", XUtils_now() - t0,
           m.mass_recall, m.output_rel_err);
    Eval_delete(em);
    Router_delete(mlp);

done:
    free(part);
    free(x);
    free(h);
    FfnWeights_done(&w);
    return 0;
}
