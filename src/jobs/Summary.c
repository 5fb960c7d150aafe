/*
moescope - jobs/Summary.c
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "jobs/Summary.h"

#include "core/Sparsity.h"
#include "jobs/LayerLoad.h"

static MsStatus sparsityAt(const LayerData *d, float tau, int threads, const Cancel *cancel,
                           double *out, char **cause) {
    Sparsity s;
    MsStatus st = Sparsity_compute(&s, d->h, d->T, d->w->d_ff, tau, threads, cancel, cause);
    if (st != MS_OK)
        return st;
    *out = s.sparsity;
    Sparsity_done(&s);
    return MS_OK;
}

MsStatus Summary_layer(Dump *dump, int i, double q, int threads, const Cancel *cancel,
                       LayerSummary *out, char **cause) {
    LayerLoad load;
    MsStatus st = LayerLoad_init(&load, dump, i, 0.1, cancel, cause);
    if (st != MS_OK)
        return st;
    const DumpLayer *info = load.info;
    *out = (LayerSummary){
        .index = info->index,
        .name = info->name,
        .d_model = info->d_model,
        .d_ff = info->d_ff,
        .n_tokens = info->n_tokens,
        .activation = Activation_name(info->act),
        .gated = info->gated,
        .h_computed = load.h_computed,
        .target = q,
    };
    const LayerData *d = &load.data;
    st = sparsityAt(d, 0.0f, threads, cancel, &out->sparsity0, cause);
    if (st == MS_OK)
        st = Sparsity_tauForSparsity(d->h, d->T, d->w->d_ff, q, threads, cancel,
                                     &out->tau_target, cause);
    if (st == MS_OK)
        st = sparsityAt(d, out->tau_target, threads, cancel, &out->sparsity_at, cause);
    LayerLoad_done(&load);
    return st;
}
