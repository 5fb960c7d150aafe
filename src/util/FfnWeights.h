/*
moescope - util/FfnWeights.h
One FFN layer's weights as plain float32 buffers (PyTorch nn.Linear layout: out x in,
row-major). Filled by io (the loader, the checkpoint reader), consumed by core.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_FFNWEIGHTS_H
#define MOESCOPE_FFNWEIGHTS_H

#include <stdbool.h>
#include <stddef.h>

#include "util/Activation.h"

typedef struct FfnWeights {
    int d_model;
    int d_ff;
    Activation act;
    float *w_in;   /* [d_ff][d_model] */
    float *b_in;   /* [d_ff], or NULL */
    float *w_gate; /* [d_ff][d_model], or NULL: present means gated */
    float *w_out;  /* [d_model][d_ff] */
    float *b_out;  /* [d_model], or NULL */
} FfnWeights;

static inline bool FfnWeights_gated(const FfnWeights *this) {
    return this->w_gate != NULL;
}

/* The rows that decide which neurons fire: w_gate when gated, else w_in. */
static inline const float *FfnWeights_keys(const FfnWeights *this) {
    return this->w_gate ? this->w_gate : this->w_in;
}

/* Frees the buffers and zeroes the struct; the struct itself is the caller's. */
void FfnWeights_done(FfnWeights *this);

#endif
