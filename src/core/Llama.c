/*
moescope - core/Llama.c
Single-token forward pass after llama2.c's run.c (Copyright (c) 2023 Andrej Karpathy,
MIT; notice in data/LICENSE.llama2c), with cblas_sgemv for the matvecs, and the sampling
loop of moescope-dump.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/Llama.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/Activation.h"
#include "util/XUtils.h"

#define RMS_EPS 1e-5f
#define ROPE_BASE 10000.0f

struct Llama {
    LlamaConfig cfg;
    LlamaWeights w;
    int kv_dim;
    int head_size;
    float *x;      /* [dim] residual stream */
    float *xb;     /* [dim] */
    float *xb2;    /* [dim] */
    float *q;      /* [dim] */
    float *hb;     /* [hidden] */
    float *hb2;    /* [hidden] */
    float *att;    /* [n_heads][seq_len] */
    float *logits; /* [vocab] */
    float *key_cache;   /* [L][seq_len][kv_dim] */
    float *value_cache; /* [L][seq_len][kv_dim] */
};

static MsStatus checkConfig(const LlamaConfig *c, char **cause) {
    if (c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 ||
        c->n_kv_heads <= 0 || c->vocab_size <= 0 || c->seq_len <= 0) {
        setCause(cause, "model shape must be positive (dim %d, hidden_dim %d, n_layers %d, "
                 "n_heads %d, n_kv_heads %d, vocab_size %d, seq_len %d)",
                 c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size,
                 c->seq_len);
        return MS_ERR_RANGE;
    }
    if (c->dim % c->n_heads != 0 || c->n_heads % c->n_kv_heads != 0 ||
        (c->dim / c->n_heads) % 2 != 0) {
        setCause(cause, "model shape: dim %d, n_heads %d, n_kv_heads %d need n_heads | dim, "
                 "n_kv_heads | n_heads and an even head size",
                 c->dim, c->n_heads, c->n_kv_heads);
        return MS_ERR_RANGE;
    }
    return MS_OK;
}

static float *allocState(size_t n, bool *ok) {
    float *p = tryCallocArray(n, sizeof(float));
    if (!p)
        *ok = false;
    return p;
}

MsStatus Llama_new(Llama **out, const LlamaConfig *cfg, const LlamaWeights *w, char **cause) {
    *out = NULL;
    MsStatus st = checkConfig(cfg, cause);
    if (st != MS_OK)
        return st;
    Llama *this = xCalloc(1, sizeof(*this));
    this->cfg = *cfg;
    this->w = *w;
    this->head_size = cfg->dim / cfg->n_heads;
    this->kv_dim = cfg->dim / cfg->n_heads * cfg->n_kv_heads;
    size_t cache = (size_t)cfg->n_layers * (size_t)cfg->seq_len * (size_t)this->kv_dim;
    bool ok = true;
    this->x = allocState((size_t)cfg->dim, &ok);
    this->xb = allocState((size_t)cfg->dim, &ok);
    this->xb2 = allocState((size_t)cfg->dim, &ok);
    this->q = allocState((size_t)cfg->dim, &ok);
    this->hb = allocState((size_t)cfg->hidden_dim, &ok);
    this->hb2 = allocState((size_t)cfg->hidden_dim, &ok);
    this->att = allocState((size_t)cfg->n_heads * (size_t)cfg->seq_len, &ok);
    this->logits = allocState((size_t)cfg->vocab_size, &ok);
    this->key_cache = allocState(cache, &ok);
    this->value_cache = allocState(cache, &ok);
    if (!ok) {
        setCause(cause, "out of memory for the model's run state (%zu bytes of key/value cache)",
                 2 * cache * sizeof(float));
        Llama_delete(this);
        return MS_ERR_NOMEM;
    }
    *out = this;
    return MS_OK;
}

void Llama_delete(Llama *this) {
    if (!this)
        return;
    free(this->x);
    free(this->xb);
    free(this->xb2);
    free(this->q);
    free(this->hb);
    free(this->hb2);
    free(this->att);
    free(this->logits);
    free(this->key_cache);
    free(this->value_cache);
    free(this);
}

const LlamaConfig *Llama_config(const Llama *this) {
    return &this->cfg;
}

static void rmsnorm(float *out, const float *x, const float *weight, int n) {
    float ss = 0.0f;
    for (int j = 0; j < n; j++)
        ss += x[j] * x[j];
    ss = 1.0f / sqrtf(ss / (float)n + RMS_EPS);
    for (int j = 0; j < n; j++)
        out[j] = weight[j] * (ss * x[j]);
}

/* out[n_out] = W x, W row-major [n_out][n_in]. */
static void matvec(float *out, const float *x, const float *W, int n_in, int n_out) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, n_out, n_in, 1.0f, W, n_in, x, 1, 0.0f, out, 1);
}

static void softmax(float *v, int n) {
    float max = v[0];
    for (int i = 1; i < n; i++)
        if (v[i] > max)
            max = v[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        v[i] = expf(v[i] - max);
        sum += v[i];
    }
    for (int i = 0; i < n; i++)
        v[i] /= sum;
}

/* Rotates consecutive pairs of q (all heads) and k (the kv heads) by pos * freq. */
static void rope(Llama *this, float *k, int pos) {
    int dim = this->cfg.dim, head_size = this->head_size;
    for (int i = 0; i < dim; i += 2) {
        int head_dim = i % head_size;
        float freq = 1.0f / powf(ROPE_BASE, (float)head_dim / (float)head_size);
        float val = (float)pos * freq;
        float fcr = cosf(val), fci = sinf(val);
        int rotn = i < this->kv_dim ? 2 : 1;
        for (int r = 0; r < rotn; r++) {
            float *vec = r == 0 ? this->q : k;
            float v0 = vec[i], v1 = vec[i + 1];
            vec[i] = v0 * fcr - v1 * fci;
            vec[i + 1] = v0 * fci + v1 * fcr;
        }
    }
}

/* Grouped-query attention of this->q over cache positions 0..pos into this->xb. */
static void attention(Llama *this, size_t loff, int pos) {
    const LlamaConfig *c = &this->cfg;
    int head_size = this->head_size, kv_dim = this->kv_dim;
    int kv_mul = c->n_heads / c->n_kv_heads;
    float scale = 1.0f / sqrtf((float)head_size);
    for (int hd = 0; hd < c->n_heads; hd++) {
        const float *q = this->q + hd * head_size;
        float *att = this->att + (size_t)hd * (size_t)c->seq_len;
        size_t koff = (size_t)(hd / kv_mul) * (size_t)head_size;
        for (int t = 0; t <= pos; t++) {
            const float *k = this->key_cache + loff + (size_t)t * kv_dim + koff;
            float score = 0.0f;
            for (int i = 0; i < head_size; i++)
                score += q[i] * k[i];
            att[t] = score * scale;
        }
        softmax(att, pos + 1);
        float *xb = this->xb + hd * head_size;
        memset(xb, 0, (size_t)head_size * sizeof(float));
        for (int t = 0; t <= pos; t++) {
            const float *v = this->value_cache + loff + (size_t)t * kv_dim + koff;
            float a = att[t];
            for (int i = 0; i < head_size; i++)
                xb[i] += a * v[i];
        }
    }
}

/* The SwiGLU FFN of layer l on this->x, recording its input and hidden when asked. */
static void feedForward(Llama *this, int l, float *ffn_x, float *ffn_h) {
    const LlamaConfig *c = &this->cfg;
    int dim = c->dim, hidden = c->hidden_dim;
    size_t wofs = (size_t)l * (size_t)dim * (size_t)hidden;
    rmsnorm(this->xb, this->x, this->w.rms_ffn + (size_t)l * dim, dim);
    if (ffn_x)
        memcpy(ffn_x, this->xb, (size_t)dim * sizeof(float));
    matvec(this->hb, this->xb, this->w.w1 + wofs, dim, hidden);
    matvec(this->hb2, this->xb, this->w.w3 + wofs, dim, hidden);
    for (int i = 0; i < hidden; i++)
        this->hb[i] = Activation_apply(ACTIVATION_SILU, this->hb[i]) * this->hb2[i];
    if (ffn_h)
        memcpy(ffn_h, this->hb, (size_t)hidden * sizeof(float));
    matvec(this->xb, this->hb, this->w.w2 + wofs, hidden, dim);
    for (int i = 0; i < dim; i++)
        this->x[i] += this->xb[i];
}

const float *Llama_forward(Llama *this, int token, int pos, float *ffn_x, long x_stride,
                           float *ffn_h, long h_stride) {
    const LlamaConfig *c = &this->cfg;
    const LlamaWeights *w = &this->w;
    assert(token >= 0 && token < c->vocab_size && pos >= 0 && pos < c->seq_len);
    int dim = c->dim, kv_dim = this->kv_dim;
    memcpy(this->x, w->token_embedding + (size_t)token * dim, (size_t)dim * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        size_t ld = (size_t)l * (size_t)dim;
        size_t loff = (size_t)l * (size_t)c->seq_len * (size_t)kv_dim;
        float *k = this->key_cache + loff + (size_t)pos * kv_dim;
        float *v = this->value_cache + loff + (size_t)pos * kv_dim;
        rmsnorm(this->xb, this->x, w->rms_att + ld, dim);
        matvec(this->q, this->xb, w->wq + ld * dim, dim, dim);
        matvec(k, this->xb, w->wk + ld * kv_dim, dim, kv_dim);
        matvec(v, this->xb, w->wv + ld * kv_dim, dim, kv_dim);
        rope(this, k, pos);
        attention(this, loff, pos);
        matvec(this->xb2, this->xb, w->wo + ld * dim, dim, dim);
        for (int i = 0; i < dim; i++)
            this->x[i] += this->xb2[i];
        feedForward(this, l, ffn_x ? ffn_x + l * x_stride : NULL,
                    ffn_h ? ffn_h + l * h_stride : NULL);
    }
    rmsnorm(this->x, this->x, w->rms_final, dim);
    matvec(this->logits, this->x, w->wcls, dim, c->vocab_size);
    return this->logits;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void Llama_seedRng(LlamaRng *rng, uint64_t seed) {
    uint64_t s = seed;
    rng->state = splitmix64(&s);
    if (rng->state == 0) /* xorshift's one fixed point */
        rng->state = 0x9e3779b97f4a7c15ULL;
}

float Llama_uniform(LlamaRng *rng) {
    uint64_t x = rng->state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng->state = x;
    return (float)((x * 0x2545f4914f6cdd1dULL) >> 40) / 16777216.0f;
}

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

int Llama_sample(const float *logits, int n, float temperature, LlamaRng *rng) {
    if (temperature <= 0.0f)
        return argmax(logits, n);
    double max = logits[argmax(logits, n)], sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += exp((logits[i] - max) / temperature);
    double target = Llama_uniform(rng) * sum, cdf = 0.0;
    for (int i = 0; i < n; i++) {
        cdf += exp((logits[i] - max) / temperature);
        if (target < cdf)
            return i;
    }
    return n - 1; /* rounding left target at the very top */
}

double Llama_entropy(const float *logits, int n) {
    double max = logits[argmax(logits, n)], sum = 0.0, dot = 0.0;
    for (int i = 0; i < n; i++) {
        double e = exp(logits[i] - max);
        sum += e;
        dot += e * (logits[i] - max);
    }
    /* H = -sum p log p with p = e / sum, log p = (l - max) - log sum */
    return log(sum) - dot / sum;
}

/* Buffers of one sequence. */
typedef struct SeqBuffers {
    int32_t *tokens;
    float *x;
    float *h;
} SeqBuffers;

static MsStatus allocBuffers(const Llama *this, const LlamaRun *run, SeqBuffers *b,
                             char **cause) {
    const LlamaConfig *c = &this->cfg;
    size_t rows = (size_t)c->n_layers * (size_t)run->max_len;
    b->tokens = tryMallocArray((size_t)run->max_len, sizeof(int32_t));
    b->x = tryMallocArray(rows * (size_t)c->dim, sizeof(float));
    b->h = run->record_h ? tryMallocArray(rows * (size_t)c->hidden_dim, sizeof(float)) : NULL;
    if (!b->tokens || !b->x || (run->record_h && !b->h)) {
        setCause(cause, "out of memory for one sequence's activations (%zu bytes)",
                 rows * (size_t)(c->dim + c->hidden_dim) * sizeof(float));
        return MS_ERR_NOMEM;
    }
    return MS_OK;
}

static MsStatus checkRun(const Llama *this, const LlamaRun *run, char **cause) {
    if (run->n_seqs < 1) {
        setCause(cause, "number of sequences %d must be at least 1", run->n_seqs);
        return MS_ERR_RANGE;
    }
    if (run->max_len < 1 || run->max_len > this->cfg.seq_len) {
        setCause(cause, "sequence length %d must be between 1 and the model's seq_len %d",
                 run->max_len, this->cfg.seq_len);
        return MS_ERR_RANGE;
    }
    if (!(run->temperature >= 0.0f) || !isfinite(run->temperature)) {
        setCause(cause, "temperature %g must be a finite number >= 0", (double)run->temperature);
        return MS_ERR_RANGE;
    }
    if (LLAMA_BOS >= this->cfg.vocab_size) {
        setCause(cause, "vocab_size %d has no BOS token %d", this->cfg.vocab_size, LLAMA_BOS);
        return MS_ERR_RANGE;
    }
    return MS_OK;
}

/* Samples one sequence into b; returns its length and adds its entropies to *entropy. */
static int sampleSequence(Llama *this, const LlamaRun *run, LlamaRng *rng, SeqBuffers *b,
                          double *entropy) {
    const LlamaConfig *c = &this->cfg;
    long x_stride = (long)run->max_len * c->dim;
    long h_stride = (long)run->max_len * c->hidden_dim;
    int token = LLAMA_BOS, n = 0;
    *entropy = 0.0;
    for (int pos = 0; pos < run->max_len; pos++) {
        b->tokens[n++] = token;
        const float *logits =
            Llama_forward(this, token, pos, b->x + (long)pos * c->dim, x_stride,
                          b->h ? b->h + (long)pos * c->hidden_dim : NULL, h_stride);
        *entropy += Llama_entropy(logits, c->vocab_size);
        if (pos + 1 == run->max_len)
            break;
        token = Llama_sample(logits, c->vocab_size, run->temperature, rng);
        if (token == LLAMA_BOS || token == LLAMA_EOS)
            break;
    }
    return n;
}

MsStatus Llama_generate(Llama *this, const LlamaRun *run, LlamaSink sink, void *ctx,
                        const Cancel *cancel, char **cause) {
    MsStatus st = checkRun(this, run, cause);
    if (st != MS_OK)
        return st;
    SeqBuffers b = {0};
    st = allocBuffers(this, run, &b, cause);
    LlamaRng rng;
    Llama_seedRng(&rng, run->seed);
    for (int s = 0; st == MS_OK && s < run->n_seqs; s++) {
        if (Cancel_requested(cancel)) {
            setCause(cause, "sampling canceled");
            st = MS_ERR_CANCELED;
            break;
        }
        LlamaSeq seq = {
            .index = s,
            .tokens = b.tokens,
            .x = b.x,
            .x_stride = (long)run->max_len * this->cfg.dim,
            .h = b.h,
            .h_stride = (long)run->max_len * this->cfg.hidden_dim,
        };
        seq.n = sampleSequence(this, run, &rng, &b, &seq.entropy_sum);
        st = sink(ctx, &seq, cause);
        Cancel_progress(cancel, (double)(s + 1) / run->n_seqs);
    }
    free(b.tokens);
    free(b.x);
    free(b.h);
    return st;
}
