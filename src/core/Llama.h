/*
moescope - core/Llama.h
The forward pass of a Llama-style decoder as llama2.c's run.c computes it, one token at
a time with a key/value cache, plus seeded sampling. Per layer:
  xb = rmsnorm(x, rms_att)                  (eps 1e-5)
  q, k, v = wq xb, wk xb, wv xb             RoPE (base 10000) on pairs (2i, 2i+1) of each
                                            head; grouped-query attention over the cache
  x += wo attention
  xb = rmsnorm(x, rms_ffn)                  <- the FFN input "x" that moescope records
  h = silu(w1 xb) * (w3 xb)                 <- the FFN hidden "h"
  x += w2 h
then logits = wcls rmsnorm(x, rms_final). Weights are plain float32 buffers (out x in,
row-major) owned by the caller, who keeps them alive while the Llama exists; matvecs go
through cblas. A Llama is used by one thread at a time.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_LLAMA_H
#define MOESCOPE_LLAMA_H

#include <stdbool.h>
#include <stdint.h>

#include "util/Cancel.h"
#include "util/Status.h"

/* The llama2.c token conventions. */
#define LLAMA_BOS 1
#define LLAMA_EOS 2

typedef struct LlamaConfig {
    int dim;
    int hidden_dim;
    int n_layers;
    int n_heads;
    int n_kv_heads; /* divides n_heads */
    int vocab_size; /* positive */
    int seq_len;    /* positions the cache holds */
} LlamaConfig;

/* L = n_layers, kv_dim = dim * n_kv_heads / n_heads. */
typedef struct LlamaWeights {
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
    const float *wcls;            /* [vocab][dim] (may equal token_embedding) */
} LlamaWeights;

typedef struct Llama Llama;

/* Checks cfg (MS_ERR_RANGE with one sentence) and allocates the run state and the cache
   (MS_ERR_NOMEM). w is copied (the pointers, not the data). */
MsStatus Llama_new(Llama **out, const LlamaConfig *cfg, const LlamaWeights *w, char **cause);

/* Llama_delete(NULL) does nothing. */
void Llama_delete(Llama *this);

const LlamaConfig *Llama_config(const Llama *this);

/* Feeds token (0 <= token < vocab_size) at position pos (0 <= pos < seq_len); positions
   0..pos-1 must have been fed before, since they fill the cache. Returns the logits
   [vocab_size], owned by this and valid until the next call. When ffn_x is not NULL,
   layer l's FFN input [dim] is copied to ffn_x + l * x_stride; likewise the hidden
   [hidden_dim] to ffn_h + l * h_stride. */
const float *Llama_forward(Llama *this, int token, int pos, float *ffn_x, long x_stride,
                           float *ffn_h, long h_stride);

/* A small deterministic generator (splitmix64-seeded xorshift64*), the same on every
   platform, so a seed names a sample. */
typedef struct LlamaRng {
    uint64_t state;
} LlamaRng;

void Llama_seedRng(LlamaRng *rng, uint64_t seed);

/* Uniform in [0, 1) with 24 random bits. */
float Llama_uniform(LlamaRng *rng);

/* Draws from softmax(logits / temperature); temperature 0 takes the argmax (ties to the
   lower index). Consumes one uniform unless temperature is 0. */
int Llama_sample(const float *logits, int n, float temperature, LlamaRng *rng);

/* Entropy in nats of softmax(logits). */
double Llama_entropy(const float *logits, int n);

/* Options of Llama_generate. */
typedef struct LlamaRun {
    int n_seqs;
    int max_len;       /* 1..seq_len tokens per sequence, BOS included */
    uint64_t seed;
    float temperature; /* >= 0 */
    bool record_h;
} LlamaRun;

/* One finished sequence, as handed to the sink; buffers are valid during the call. */
typedef struct LlamaSeq {
    int index;             /* 0-based sequence number */
    int n;                 /* tokens fed in = rows recorded, 1..max_len */
    const int32_t *tokens; /* [n]; tokens[0] = LLAMA_BOS */
    const float *x;        /* layer l: rows x + l * x_stride, [n][dim] */
    long x_stride;
    const float *h;        /* NULL unless record_h; layer l: h + l * h_stride, [n][hidden] */
    long h_stride;
    double entropy_sum;    /* sum over the n positions of the next-token entropy (nats) at
                              temperature 1, whatever the sampling temperature */
} LlamaSeq;

/* Receives each sequence; a failure stops the generation and is passed up. */
typedef MsStatus (*LlamaSink)(void *ctx, const LlamaSeq *seq, char **cause);

/* Samples run->n_seqs sequences, each starting at BOS with an empty cache, one RNG
   stream seeded once for the whole run. A sequence ends after max_len tokens or when
   the model draws BOS or EOS (which is not fed in). Checks cancel between sequences and
   reports progress through it (cancel may be NULL). MS_ERR_RANGE for bad options. */
MsStatus Llama_generate(Llama *this, const LlamaRun *run, LlamaSink sink, void *ctx,
                        const Cancel *cancel, char **cause);

#endif
