/*
moescope - core/Synth.h
Synthetic FFN layers with planted structure and known answers. Each layer's d_ff neurons
fall into n_groups balanced groups (assigned by a seeded permutation, so groups are not
index ranges). Every group g has a topic direction u_g (a random unit vector in
R^d_model); neuron rows are w_in[j] = a_j u_g + noise. Each token draws topics_per_token
distinct topics and x_t is the sum of their directions, each with a random amplitude,
plus noise, so the neurons of one group fire together. b_in[j] is set from the
sparsity-quantile of neuron j's pre-activation on a calibration sample, so every neuron
(and the layer) is active on about 1 - sparsity of the tokens under ReLU (for other
activations the sparsity is what it is); h = act(w_in x + b_in) as core/Ffn computes it.
w_out ~ N(0, 1/d_ff), b_out ~ N(0, 0.01^2).
Determinism: a token's topics depend on (seed, token) only, so all layers see the same
"text"; its x and the weights depend on (seed, layer_index, token), so a layer and any
block of tokens are reproducible on their own.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_SYNTH_H
#define MOESCOPE_SYNTH_H

#include <stdint.h>

#include "util/Activation.h"
#include "util/FfnWeights.h"
#include "util/Status.h"

typedef struct SynthOptions {
    int d_model, d_ff, n_groups;
    int topics_per_token; /* 0 = auto: max(1, round((1 - sparsity) * n_groups)) */
    long n_tokens;
    double sparsity; /* target fraction of h <= 0 entries, in [0, 1) */
    unsigned long seed;
    Activation act;
} SynthOptions;

/* T5-base shape (768 x 3072), 32768 tokens, 32 groups, topics auto (3), sparsity 0.9,
   seed 1, ReLU. */
void SynthOptions_default(SynthOptions *o);

/* MS_ERR_RANGE with a sentence naming the first bad field (sizes < 1 or too large,
   groups > d_ff, topics < 0 or > groups, sparsity outside [0, 1)). */
MsStatus SynthOptions_check(const SynthOptions *o, char **cause);

/* topics_per_token with auto (0) resolved. */
int SynthOptions_topics(const SynthOptions *o);

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

/* Rounds the weights, and from then on every x, to float16-representable values (ties to
   even), so a file stored as float16 still satisfies h = act(w_in x + b_in) up to the
   rounding of h itself. */
void SynthStream_useHalfPrecision(SynthStream *this);

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
