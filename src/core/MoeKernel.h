/*
moescope - core/MoeKernel.h
A real Mixture-of-Experts FFN kernel for one partition of a layer's neurons, and the
wall-time speedup it measures against the dense FFN on the same machine (SPEC §5
"measured"). The kernel gathers each expert's rows of w_in / w_gate / b_in into a
contiguous [G_e x d_model] block and its w_out columns into a [d_model x G_e] block once,
when it is made. A batch run groups tokens by selected expert (counting sort), gathers
each expert's x rows once, runs cblas sgemm for the expert's hidden and output, scales by
the gate and adds each token's slots into y. Its experts are spread over worker threads,
each calling single-threaded BLAS (the program sets OpenBLAS to one thread: per-expert
products are too small for OpenBLAS's own threads to pay). The one-token path uses sgemv
on the same blocks, on one core.

Outputs never include b_out (the dense reference used for timing and tests omits it too):
  y_t = sum over selected e of g_{t,e} * w_out_e h_e(x_t)
  h_e(x) = act(w_in_e x + b_in_e)                      (plain)
  h_e(x) = act(w_gate_e x) * (w_in_e x + b_in_e)       (gated)
which equals the dense w_out (h masked to the selected experts' neurons, times gates).

A MoeKernel owns scratch memory that runs grow on demand: use one kernel per thread.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_MOEKERNEL_H
#define MOESCOPE_MOEKERNEL_H

#include <stdint.h>

#include "util/Cancel.h"
#include "util/FfnWeights.h"
#include "util/Status.h"

typedef struct MoeKernel MoeKernel;

enum { MOE_MAX_WORKERS = 64 }; /* more threads than this run on this many */

/* Gathers the weights of w (not kept: the kernel copies what it needs) for the partition
   part[d_ff] (expert of each neuron, 0..E-1; experts may have unequal or zero sizes).
   MS_ERR_RANGE when a part value is outside [0, E), MS_ERR_NOMEM when the copies do not fit. */
MsStatus MoeKernel_new(const FfnWeights *w, const int32_t *part, int E, MoeKernel **out,
                       char **cause);

void MoeKernel_delete(MoeKernel *this);

/* Neurons of expert e (G_e). */
int MoeKernel_expertSize(const MoeKernel *this, int e);

/* Batch path: y[n][d_model] = the MoE output of x[n][d_model] (no b_out) where token t
   uses the k experts sel[t*k .. t*k+k) with gates gates[t*k ..] (NULL: every gate 1),
   on `threads` workers (the experts in one range per worker; y's last bits depend on
   their number, not on the run). MS_ERR_RANGE when an expert index is outside [0, E);
   MS_ERR_NOMEM when scratch fails. */
MsStatus MoeKernel_run(MoeKernel *this, const float *x, long n, int k, const int *sel,
                       const float *gates, int threads, float *y, char **cause);

/* One-token path (sgemv): y[d_model] for the single row x[d_model], same conventions.
   Expert indices must be valid (checked by the caller, e.g. through MoeKernel_run). */
void MoeKernel_runToken(MoeKernel *this, const float *x, int k, const int *sel,
                        const float *gates, float *y);

/* How the wall-time measurement spends its time (SPEC §5 "measured"). */
typedef struct MoeTimingOptions {
    long batch_tokens; /* tokens of the batch measurement, from the first (default 1024) */
    long token_tokens; /* tokens run one at a time, from the first (default 256) */
    double budget_s;   /* seconds of timed runs per path (default 0.1): runs are repeated
                          until their times add up to the budget, at least once and at
                          most max_reps times, and the median is reported; the one-
                          token paths have an untimed warm-up run first (their weights
                          can sit in cache), the batch paths do not */
    int max_reps;      /* default 5 */
    int threads;       /* workers of the batch paths, dense and MoE alike (default 1); the
                          one-token paths run on one */
} MoeTimingOptions;

#define MOE_TIMING_DEFAULTS { .batch_tokens = 1024, .token_tokens = 256, .budget_s = 0.1, \
                              .max_reps = 5, .threads = 1 }

typedef struct MoeTimes {
    long batch_tokens; /* tokens actually used: min(n, options) */
    long token_tokens;
    double batch_s;    /* median seconds for the whole batch */
    double token_s;    /* median seconds per token on the one-token path */
    int batch_reps;    /* timed runs (a warm-up run is not counted) */
    int token_reps;
} MoeTimes;

/* Times the dense FFN (cblas, preallocated buffers, no b_out) on the first tokens of
   x[n][d_model]. Its result does not depend on the partition: callers may cache it per
   layer. Runs in the calling thread and opt->threads - 1 more for the batch; checks
   cancel between repetitions. */
MsStatus MoeKernel_timeDense(const FfnWeights *w, const float *x, long n,
                             const MoeTimingOptions *opt, const Cancel *cancel, MoeTimes *out,
                             char **cause);

/* Times this kernel on the same tokens with the routing sel[n*k] / gates (NULL = 1). */
MsStatus MoeKernel_time(MoeKernel *this, const float *x, long n, int k, const int *sel,
                        const float *gates, const MoeTimingOptions *opt, const Cancel *cancel,
                        MoeTimes *out, char **cause);

/* measured_speedup_batch and measured_speedup_token (dense time / MoE time). */
typedef struct MoeSpeedup {
    double batch;
    double token;
    MoeTimes dense;
    MoeTimes moe;
} MoeSpeedup;

/* Both timings and their ratios; dense_cached (may be NULL) skips the dense timing when
   it was measured before with the same x, n and options. */
MsStatus MoeKernel_measure(MoeKernel *this, const FfnWeights *w, const float *x, long n, int k,
                           const int *sel, const float *gates, const MoeTimingOptions *opt,
                           const MoeTimes *dense_cached, const Cancel *cancel, MoeSpeedup *out,
                           char **cause);

#endif
