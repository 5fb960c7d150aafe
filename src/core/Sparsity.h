/*
moescope - core/Sparsity.h
Activation sparsity of SPEC §2 over all tokens of a layer: neuron j is active on token t
when |h[t,j]| > tau. Also the tau for a target sparsity (the inverted-CDF quantile of
|h| over all T*N entries, exact, by a two-pass radix select on the float bits, no sort
and no copy) and the tau -> sparsity curve. Work is split over threads by fixed token
chunks and reduced with integer counts, so results do not depend on the thread count.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_SPARSITY_H
#define MOESCOPE_SPARSITY_H

#include <stdint.h>

#include "util/Cancel.h"
#include "util/Status.h"

typedef struct Sparsity {
    long T;                       /* tokens */
    int N;                        /* neurons (d_ff) */
    float tau;                    /* threshold used */
    long long active;             /* active entries */
    double sparsity;              /* 1 - active / (T N) */
    double active_per_token_mean; /* active / T */
    double dead_fraction;         /* neurons never active / N */
    double *neuron_freq;          /* [N] fraction of tokens on which neuron j is active */
    int32_t *token_active;        /* [T] active neurons of each token */
} Sparsity;

/* Fills *out from h[T][N] at tau >= 0. Checks cancel between chunks. MS_ERR_RANGE for a
   negative or NaN tau or empty h, MS_ERR_NOMEM for the per-token array. On failure *out
   holds nothing to free. */
MsStatus Sparsity_compute(Sparsity *out, const float *h, long T, int N, float tau, int threads,
                          const Cancel *cancel, char **cause);

/* Frees the arrays and zeroes the struct. */
void Sparsity_done(Sparsity *this);

/* *tau = the smallest |h| entry v with (#entries <= v) / (T N) >= q, q in [0, 1] (q = 0
   gives the smallest |h|, q = 1 the largest). Exact, two passes over h. */
MsStatus Sparsity_tauForSparsity(const float *h, long T, int N, double q, int threads,
                                 const Cancel *cancel, float *tau, char **cause);

/* tau[i] = Sparsity_tauForSparsity at q[i] for 1 <= n <= SPARSITY_MAX_QUANTILES targets,
   still two passes over h in all. */
#define SPARSITY_MAX_QUANTILES 16
MsStatus Sparsity_tausForSparsity(const float *h, long T, int N, const double *q, int n,
                                  int threads, const Cancel *cancel, float *tau, char **cause);

/* sparsity[i] at taus[i] for n taus (any order, each >= 0), one pass over h. */
MsStatus Sparsity_curve(const float *h, long T, int N, const float *taus, int n, int threads,
                        const Cancel *cancel, double *sparsity, char **cause);

#endif
