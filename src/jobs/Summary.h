/*
moescope - jobs/Summary.h
The per-layer summary of the foundation issue: shape, activation, and sparsity at tau 0
and at the tau that reaches a target sparsity of |h| (SPEC §2). Computed one layer at a
time so only one layer's activations are in memory.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_SUMMARY_H
#define MOESCOPE_SUMMARY_H

#include <stdbool.h>

#include "io/Dump.h"
#include "util/Cancel.h"
#include "util/Status.h"

typedef struct LayerSummary {
    int index;
    const char *name;     /* owned by the Dump */
    int d_model, d_ff;
    long n_tokens;
    const char *activation;
    bool gated;
    bool h_computed;      /* h was not recorded and came from x and the weights */
    double sparsity0;     /* sparsity at tau = 0 */
    double target;        /* the target sparsity q */
    float tau_target;     /* tau for sparsity q */
    double sparsity_at;   /* sparsity at tau_target (>= q) */
} LayerSummary;

/* Summarizes the i-th layer of dump for target sparsity q. */
MsStatus Summary_layer(Dump *dump, int i, double q, int threads, const Cancel *cancel,
                       LayerSummary *out, char **cause);

#endif
