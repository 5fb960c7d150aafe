/*
moescope - bench/bench_kernel.c
Measured speedup of the MoE FFN kernel (core/MoeKernel) against the dense cblas FFN on a
T5-base shaped layer (d_model 768, d_ff 3072, ReLU, random weights and inputs), for E in
{8, 32, 64} and k in {1, 2, 4}: the ideal speedup (dense / MoE FLOPs with the routing
given, = E / k) next to the measured batch and one-token-at-a-time speedups. Routing is
the oracle's top-k on the layer's own h, on a random balanced partition.
Usage: bench_kernel [tokens (default 4096)] [budget seconds per path (default 0.3)]
[workers of the batch paths (default 2)]. OpenBLAS runs one thread per worker, as in
moescope.
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/Cost.h"
#include "core/Ffn.h"
#include "core/MoeKernel.h"
#include "core/Router.h"
#include "core/TopK.h"
#include "util/XUtils.h"

static unsigned rngState = 2024u;

static float frand(void) {
    rngState = rngState * 1664525u + 1013904223u;
    return (float)((rngState >> 8) & 0xFFFF) / 65536.0f - 0.5f;
}

static float *randArray(size_t n, float scale) {
    float *a = xMallocArray(n, sizeof(float));
    for (size_t i = 0; i < n; i++)
        a[i] = scale * frand();
    return a;
}

static int32_t *randomPartition(int N, int E) {
    int32_t *part = xMallocArray((size_t)N, sizeof(int32_t));
    for (int j = 0; j < N; j++)
        part[j] = j % E;
    for (int j = N - 1; j > 0; j--) {
        rngState = rngState * 1664525u + 1013904223u;
        int i = (int)((rngState >> 8) % (unsigned)(j + 1));
        int32_t t = part[i];
        part[i] = part[j];
        part[j] = t;
    }
    return part;
}

static double gflops(double flops, double sec) {
    return sec > 0.0 ? flops / sec * 1e-9 : 0.0;
}

static void die(MsStatus st, char *cause) {
    fprintf(stderr, "bench_kernel: %s: %s\n", Status_name(st), cause ? cause : "");
    free(cause);
    exit(1);
}

int main(int argc, char **argv) {
    long T = argc > 1 ? atol(argv[1]) : 4096;
    double budget = argc > 2 ? atof(argv[2]) : 0.3;
    int threads = argc > 3 ? atoi(argv[3]) : 2;
    if (T < 1 || budget <= 0 || threads < 1) {
        fprintf(stderr, "usage: bench_kernel [tokens] [budget seconds per path] [workers]\n");
        return 2;
    }
    int D = 768, N = 3072;
    FfnWeights w = {.d_model = D, .d_ff = N, .act = ACTIVATION_RELU};
    w.w_in = randArray((size_t)N * D, 0.07f);
    w.b_in = randArray((size_t)N, 0.1f);
    w.w_out = randArray((size_t)N * D, 0.035f);
    float *x = randArray((size_t)T * D, 2.0f);
    float *h = xMallocArray((size_t)T * N, sizeof(float));
    MsStatus st = Ffn_hidden(&w, x, T, h);
    if (st != MS_OK)
        die(st, NULL);
    MoeTimingOptions opt = MOE_TIMING_DEFAULTS;
    opt.batch_tokens = T;
    opt.budget_s = budget;
    opt.threads = threads;
    Ffn_useOneBlasThread(); /* as moescope runs it: its workers call BLAS single-threaded */
    printf("MoE kernel vs dense FFN: d_model %d, d_ff %d, ReLU, random weights; batch %ld "
           "tokens on %d workers, one-token path %ld tokens on one\n",
           D, N, T, threads, opt.token_tokens < T ? opt.token_tokens : T);
    printf("timing: a warm-up run, then up to %d runs within %.2f s per path, median\n",
           opt.max_reps, budget);
    double t0 = XUtils_now();
    char *cause = NULL;
    MoeTimes dense;
    st = MoeKernel_timeDense(&w, x, T, &opt, NULL, &dense, &cause);
    if (st != MS_OK)
        die(st, cause);
    double dense_flops = 2.0 * 2.0 * D * N; /* per token: w_in and w_out */
    printf("dense: batch %.4f s (%d runs, %.1f GFLOP/s), one token %.1f us (%d runs, %.1f "
           "GFLOP/s)\n\n",
           dense.batch_s, dense.batch_reps, gflops(dense_flops * T, dense.batch_s),
           dense.token_s * 1e6, dense.token_reps, gflops(dense_flops, dense.token_s));
    printf("%4s %3s %8s %10s %10s %11s %10s %10s %10s\n", "E", "k", "ideal", "batch", "token",
           "moe_batch_s", "batch_GF/s", "moe_tok_us", "tok_GF/s");
    static const int Es[3] = {8, 32, 64}, ks[3] = {1, 2, 4};
    for (int ei = 0; ei < 3; ei++) {
        int E = Es[ei];
        int32_t *part = randomPartition(N, E);
        float *s = xMallocArray((size_t)T * E, sizeof(float));
        Router_oracleScores(h, T, N, part, E, s);
        MoeKernel *kern = NULL;
        st = MoeKernel_new(&w, part, E, &kern, &cause);
        if (st != MS_OK)
            die(st, cause);
        for (int ki = 0; ki < 3; ki++) {
            int k = ks[ki];
            int *sel = xMallocArray((size_t)T * k, sizeof(int));
            for (long t = 0; t < T; t++)
                TopK_select(s + t * E, E, k, sel + t * k);
            MoeSpeedup sp;
            st = MoeKernel_measure(kern, &w, x, T, k, sel, NULL, &opt, &dense, NULL, &sp,
                                   &cause);
            if (st != MS_OK)
                die(st, cause);
            double ideal = Cost_idealSpeedup(ROUTER_ORACLE, D, N, E, k, false);
            double batch_flops = 0.0, tok_flops = 0.0;
            for (long p = 0; p < T * k; p++) {
                double f = 2.0 * 2.0 * D * MoeKernel_expertSize(kern, sel[p]);
                batch_flops += f;
                if (p < sp.moe.token_tokens * k)
                    tok_flops += f;
            }
            printf("%4d %3d %8.2f %10.2f %10.2f %11.4f %10.1f %10.1f %10.1f\n", E, k, ideal,
                   sp.batch, sp.token, sp.moe.batch_s, gflops(batch_flops, sp.moe.batch_s),
                   sp.moe.token_s * 1e6,
                   gflops(tok_flops / (double)sp.moe.token_tokens, sp.moe.token_s));
            fflush(stdout);
            free(sel);
        }
        MoeKernel_delete(kern);
        free(s);
        free(part);
    }
    printf("\nideal = dense / MoE FLOPs with the routing given (router cost excluded) = E/k;\n"
           "batch, token = measured dense time / MoE kernel time. Total %.1f s.\n"
           "reproduce: make bench/bench_kernel && ./bench/bench_kernel %ld %g %d\n",
           XUtils_now() - t0, T, budget, threads);
    free(h);
    free(x);
    FfnWeights_done(&w);
    return 0;
}
