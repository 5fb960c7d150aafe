/*
moescope - io/Checkpoint.h
Reads a llama2.c checkpoint ("version 0" format, little-endian) into memory: a header of
7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative
vocab_size means the classifier is stored separately) and then float32 tensors in
llama2.c's order. The header is validated and the file size must match it exactly, so
a truncated or foreign file is reported before anything else is read; every weight must
be finite. The tensors are exposed as plain pointers into one buffer (out x in,
row-major, as llama2.c's run.c uses them).
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_CHECKPOINT_H
#define MOESCOPE_CHECKPOINT_H

#include <stdbool.h>

#include "util/Status.h"

typedef struct Checkpoint {
    int dim;
    int hidden_dim;
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int vocab_size; /* always positive here */
    int seq_len;
    bool shared_classifier; /* vocab_size was positive: wcls == token_embedding */
    float *data;            /* every float of the file after the header */
    long n_floats;
    /* Views into data; kv_dim = dim * n_kv_heads / n_heads, L = n_layers. */
    const float *token_embedding; /* [vocab][dim] */
    const float *rms_att;         /* [L][dim] */
    const float *wq;              /* [L][dim][dim] */
    const float *wk;              /* [L][kv_dim][dim] */
    const float *wv;              /* [L][kv_dim][dim] */
    const float *wo;              /* [L][dim][dim] */
    const float *rms_ffn;         /* [L][dim] */
    const float *w1;              /* [L][hidden][dim]  gate */
    const float *w2;              /* [L][dim][hidden]  down */
    const float *w3;              /* [L][hidden][dim]  up */
    const float *rms_final;       /* [dim] */
    const float *wcls;            /* [vocab][dim] */
} Checkpoint;

/* Reads path. On failure *out is NULL and *cause is one sentence naming the file:
   MS_ERR_IO (missing, unreadable), MS_ERR_FORMAT (bad header, size mismatch, non-finite
   weight), MS_ERR_NOMEM. */
MsStatus Checkpoint_new(Checkpoint **out, const char *path, char **cause);

/* Checkpoint_delete(NULL) does nothing. */
void Checkpoint_delete(Checkpoint *this);

#endif
