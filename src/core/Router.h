/*
moescope - core/Router.h
The routers of SPEC §4, built per (layer, partition, E): each maps a token to one score per
expert, and the k highest scores (ties to the lower index, core/TopK) select its experts.
  oracle      s[t,e] = sum of |h[t,j]| over the neurons of expert e (the upper bound; it
              reads h, not x, so it is not realizable)
  similarity  -||xhat - c_e||_2, xhat = x / ||x||, c_e = mean of the L2-normalized key
              rows (FfnWeights_keys) of expert e
  sigmoid     sigmoid(x . c_e) with the raw x; the selected experts' outputs are scaled
              by this gate (sigma-MoE)
  mlp         tanh(xhat W1^T) W2^T (logits), W1 [E][d_model] initialized to the centers,
              W2 [E][E] to the identity, no biases, trained with BCE-with-logits on
              targets s / max(s over the minibatch), Adam, on the train split only
  topk_neurons is a name only (the neuron-level bound of core/NeuronBound); Router_new
              refuses it.
Training and scoring are deterministic: same options => bitwise the same weights and
scores, whatever opt->threads or OpenBLAS's thread count is (work is cut into fixed
chunks that threads only pick up, and products use core/Vec's blocking-independent
kernel instead of sgemm).
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_ROUTER_H
#define MOESCOPE_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/LayerData.h"
#include "util/Cancel.h"
#include "util/Status.h"

typedef enum RouterKind {
    ROUTER_ORACLE = 0,
    ROUTER_SIMILARITY,
    ROUTER_MLP,
    ROUTER_SIGMOID,
    ROUTER_TOPK_NEURONS,
} RouterKind;

#define ROUTER_KINDS 5

/* "oracle" | "similarity" | "mlp" | "sigmoid" | "topk_neurons" (SPEC §6 names). */
const char *RouterKind_name(RouterKind kind);

/* Parses a name above; false for an unknown one. */
bool RouterKind_parse(const char *name, RouterKind *out);

/* "oracle | similarity | mlp | sigmoid | topk_neurons", for error messages. */
const char *RouterKind_allNames(void);

typedef struct RouterOptions {
    int epochs;          /* mlp: full passes over the training tokens (30) */
    int batch;           /* mlp: minibatch size (512), last partial batch kept */
    double lr;           /* mlp: Adam step size (0.01) */
    double beta1, beta2; /* mlp: Adam moment decays (0.9, 0.999) */
    double eps;          /* mlp: Adam epsilon (1e-8) */
    unsigned long seed;  /* mlp: shuffling seed (1) */
    Split train_split;   /* mlp: tokens trained on (SPLIT_TRAIN) */
    int threads;         /* worker threads (2); results do not depend on it */
} RouterOptions;

/* The SPEC §4 defaults above. */
void RouterOptions_default(RouterOptions *o);

typedef struct Router Router;

/* Builds a router for layer L with partition part[d_ff] (experts 0..E-1, every expert
   non-empty). opt may be NULL (defaults). mlp training checks cancel once per minibatch
   and reports progress; MS_ERR_CANCELED then. MS_ERR_RANGE for ROUTER_TOPK_NEURONS, a bad
   partition or option (the cause names it); MS_ERR_NOMEM for input-sized buffers. */
MsStatus Router_new(Router **out, RouterKind kind, const LayerData *L, const int32_t *part,
                    int E, const RouterOptions *opt, const Cancel *cancel, char **cause);

/* The mlp routers of n_parts partitions of the same layer, trained in one pass: out[p] is
   bitwise the router Router_new(ROUTER_MLP, L, parts[p], E, opt, ...) gives (the nets share
   the minibatches, so the products over x are done once for all of them, which costs much
   less than n_parts trainings). On failure every out[p] is NULL; errors as Router_new's
   (MS_ERR_RANGE also for n_parts < 1). */
MsStatus Router_newMlpSet(Router **out, const LayerData *L, const int32_t *const *parts,
                          int n_parts, int E, const RouterOptions *opt, const Cancel *cancel,
                          char **cause);

/* Router_delete(NULL) does nothing. */
void Router_delete(Router *this);

RouterKind Router_kind(const Router *this);
int Router_experts(const Router *this);

/* true for the sigmoid gate: the selected experts' outputs are scaled by their score. */
bool Router_scalesOutput(const Router *this);

/* The output scale of a selected expert given its Router_score: the score itself for
   the sigmoid gate, 1 for every other router. */
float Router_gate(const Router *this, float score);

/* scores[rows][E] for rows tokens. x[rows][d_model] is read by similarity, sigmoid and
   mlp; h[rows][d_ff] by the oracle (the other pointer may be NULL). Any thread; the
   router is read-only. Allocates a small scratch (blocks of 256 rows). */
void Router_score(const Router *this, const float *x, const float *h, long rows,
                  float *scores);

/* Like Router_score, but the pre-squashing value that softmax gates use (SPEC §5 MEO):
   x . c_e for the sigmoid gate; the same as Router_score for the others. */
void Router_logits(const Router *this, const float *x, const float *h, long rows,
                   float *logits);

/* Expert centers c[E][d_model] (similarity, sigmoid, and the mlp's initial W1); NULL for
   the oracle. */
const float *Router_centers(const Router *this);

/* mlp only (else NULL / 0): the trained W1 [E][d_model] and W2 [E][E], and the mean
   training loss (BCE over all entries of the epoch, measured before each step's update)
   of every epoch; the count is returned. */
const float *Router_mlpW1(const Router *this);
const float *Router_mlpW2(const Router *this);
int Router_lossHistory(const Router *this, const double **loss);

/* c[E][d_model] = mean over each expert's neurons of keys[j] / ||keys[j]|| (a zero row
   counts as zero). keys is [N][d_model]. Experts without neurons get a zero center. */
void Router_expertCenters(const float *keys, int N, int d_model, const int32_t *part, int E,
                          float *c);

/* MS_OK when part[N] holds experts 0..E-1 with every expert non-empty and 1 <= E <= N;
   else MS_ERR_RANGE with a sentence naming the first problem. */
MsStatus Router_checkPartition(const int32_t *part, int N, int E, char **cause);

/* s[rows][E] = per-expert sums of |h[t,j]| (the oracle's mass scores), accumulated in
   double. */
void Router_oracleScores(const float *h, long rows, int N, const int32_t *part, int E,
                         float *s);

#endif
