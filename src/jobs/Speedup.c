/*
moescope - jobs/Speedup.c
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "jobs/Speedup.h"

#include <stdlib.h>

#include "core/TopK.h"
#include "util/XUtils.h"

const MoeTimingOptions Speedup_timing = {.batch_tokens = 1024, .token_tokens = 32,
                                         .budget_s = 0.01, .max_reps = 3,
                                         .threads = 1};

MsStatus Speedup_measure(MoeKernel *kernel, const LayerData *d, const Router *router, int E,
                         int k, int threads, const MoeTimes *dense_cached, const Cancel *cancel,
                         MoeSpeedup *out, char **cause) {
    long row0 = d->T_train, n = d->T - d->T_train;
    n = n < Speedup_timing.batch_tokens ? n : Speedup_timing.batch_tokens;
    if (n < 1) {
        setCause(cause, "the test split is empty");
        return MS_ERR_RANGE;
    }
    const float *x = d->x + row0 * d->w->d_model;
    int *sel = xMallocArray((size_t)n * (size_t)k, sizeof(int));
    float *gates = xMallocArray((size_t)n * (size_t)k, sizeof(float));
    float *scores = xMallocArray((size_t)n * (size_t)E, sizeof(float));
    Router_score(router, x, d->h + row0 * d->w->d_ff, n, scores);
    for (long t = 0; t < n; t++) {
        TopK_select(scores + t * E, E, k, sel + t * k);
        for (int i = 0; i < k; i++)
            gates[t * k + i] = Router_gate(router, scores[t * E + sel[t * k + i]]);
    }
    free(scores);
    MoeTimingOptions opt = Speedup_timing;
    opt.threads = threads;
    MsStatus st = MoeKernel_measure(kernel, d->w, x, n, k, sel,
                                    Router_scalesOutput(router) ? gates : NULL, &opt,
                                    dense_cached, cancel, out, cause);
    free(sel);
    free(gates);
    return st;
}
