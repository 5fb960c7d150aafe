/*
moescope - core/Synth.h
Synthetic FFN layers with planted structure and known answers. Each layer's d_ff neurons
fall into n_groups balanced groups (assigned by a seeded permutation, so groups are not
index ranges). Every group g has a topic direction u_g in R^d_model; neuron rows are
w_in[j] = a u_g + noise; each token draws topics_per_token topics and x_t is the sum of
their directions plus noise, so the neurons of one group fire together. b_in is one
global bias set from a quantile so that the fraction of h > 0 hits the target sparsity
(ReLU); h = act(w_in x + b_in) exactly as core/Ffn computes it. Everything is derived
from (seed, layer_index), so a layer is reproducible on its own.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_SYNTH_H
#define MOESCOPE_SYNTH_H

#include <stdint.h>

#include "util/Activation.h"
#include "util/FfnWeights.h"
#include "util/Status.h"

typedef struct SynthOptions {
    int d_model, d_ff, n_groups, topics_per_token;
    long n_tokens;
    double sparsity; /* target fraction of h <= 0 entries, in [0, 1) */
    unsigned long seed;
    Activation act;
} SynthOptions;

/* T5-base shape (768 x 3072), 32768 tokens, 32 groups, 2 topics per token, sparsity 0.9,
   seed 1, ReLU. */
void SynthOptions_default(SynthOptions *o);

/* MS_ERR_RANGE with a sentence naming the first bad field (sizes < 1, groups > d_ff,
   topics > groups, sparsity outside [0, 1)). */
MsStatus SynthOptions_check(const SynthOptions *o, char **cause);

typedef struct SynthLayer {
    FfnWeights w;     /* w_in, b_in, w_out, b_out (no gate) */
    long T;           /* rows of x and h */
    float *x;         /* [T][d_model] */
    float *h;         /* [T][d_ff] */
    int32_t *planted; /* [d_ff]: group of each neuron, 0..n_groups-1 */
} SynthLayer;

/* Builds layer layer_index of the synthetic model entirely in memory. */
MsStatus Synth_layer(const SynthOptions *o, int layer_index, SynthLayer *out, char **cause);

/* Frees the buffers and zeroes the struct. */
void SynthLayer_done(SynthLayer *l);

/* Streaming form (used by moescope-synth): the weights, bias and planted groups are made
   up front (from a calibration sample of tokens), then tokens are generated in blocks
   with the same values Synth_layer would give. */
typedef struct SynthStream SynthStream;

/* Makes the weights of layer layer_index; *out owns them until SynthStream_delete. */
MsStatus SynthStream_new(SynthStream **out, const SynthOptions *o, int layer_index,
                         char **cause);

/* The weights (act, w_in, b_in, w_out, b_out) and planted groups; owned by the stream. */
const FfnWeights *SynthStream_weights(const SynthStream *this);
const int32_t *SynthStream_planted(const SynthStream *this);

/* Generates tokens [first, first + rows) into x[rows][d_model] and, when h is not NULL,
   h[rows][d_ff]; topic (may be NULL) gets each token's first topic. Blocks may come in
   any order and size: the values depend only on the token index. */
MsStatus SynthStream_tokens(SynthStream *this, long first, long rows, float *x, float *h,
                            int32_t *topic);

/* SynthStream_delete(NULL) does nothing. */
void SynthStream_delete(SynthStream *this);

#endif
