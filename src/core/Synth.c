/*
moescope - core/Synth.c
Synthetic FFN layers with planted co-firing groups (see Synth.h for the model).
Random numbers come from counter-seeded splitmix64 streams: every token has its own
stream seeded from (seed, layer, token), so blocks of tokens can be made in any order
and a layer never depends on the token count. The bias is calibrated on a separate
sample of CALIBRATION tokens, so it does not depend on the token count either.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/Synth.h"

#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/Ffn.h"
#include "util/XUtils.h"

enum {
    CALIBRATION = 2048, /* tokens used to set b_in */
    SALT_WEIGHTS = 1,
    SALT_PERMUTATION,
    SALT_TOPICS,
    SALT_X,
    SALT_CALIBRATION_TOPICS,
    SALT_CALIBRATION_X,
};

/* A token's topics are the same in every layer: they use this in place of the layer. */
#define ANY_LAYER UINT64_MAX

static const double X_NOISE = 0.5;  /* norm of the noise in x, relative to a topic */
static const double W_NOISE = 1.0;  /* norm of the noise in a w_in row */
static const double B_OUT_SD = 0.01;

struct SynthStream {
    SynthOptions o;
    int layer;
    int topics;         /* per token, auto resolved */
    bool half;          /* round weights and x to float16-representable values */
    FfnWeights w;
    int32_t *planted;   /* [d_ff] */
    float *directions;  /* [n_groups][d_model]: unit topic directions u_g */
};

/* ---- random numbers ---- */

typedef struct Rng {
    uint64_t state;
    bool hasSpare;
    double spare;
} Rng;

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rngSeed(Rng *r, uint64_t seed, uint64_t layer, uint64_t salt, uint64_t index) {
    uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ull);
    h = mix64(h ^ (layer + 0x632be59bd9b4e019ull));
    h = mix64(h ^ (salt + 0x85157af5ull));
    r->state = mix64(h ^ index);
    r->hasSpare = false;
}

static uint64_t rngNext(Rng *r) {
    r->state += 0x9e3779b97f4a7c15ull;
    return mix64(r->state);
}

/* Uniform in [0, 1). */
static double rngUniform(Rng *r) {
    return (double)(rngNext(r) >> 11) * 0x1.0p-53;
}

/* Uniform in 0..n-1 (multiply-high; the bias is below 2^-32 for our n). */
static long rngBelow(Rng *r, long n) {
    return (long)(((unsigned __int128)rngNext(r) * (uint64_t)n) >> 64);
}

/* Standard normal (Marsaglia's polar method). */
static double rngGauss(Rng *r) {
    if (r->hasSpare) {
        r->hasSpare = false;
        return r->spare;
    }
    double u, v, s;
    do {
        u = 2.0 * rngUniform(r) - 1.0;
        v = 2.0 * rngUniform(r) - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    double f = sqrt(-2.0 * log(s) / s);
    r->spare = v * f;
    r->hasSpare = true;
    return u * f;
}

/* ---- float16 rounding ---- */

/* The nearest float16 value (ties to even), as a float; overflow gives inf. */
static float roundToHalf(float f) {
    if (!isfinite(f))
        return f;
    float a = fabsf(f);
    if (a >= 65520.0f)
        return copysignf(INFINITY, f);
    if (a < 0x1p-14f) /* subnormal: steps of 2^-24 */
        return copysignf(nearbyintf(a * 0x1p24f) * 0x1p-24f, f);
    int e;
    frexpf(a, &e); /* a = m 2^e, m in [0.5, 1): keep 11 significant bits */
    float quantum = ldexpf(1.0f, e - 11);
    return copysignf(nearbyintf(a / quantum) * quantum, f);
}

static void roundArrayToHalf(float *v, long n) {
    for (long i = 0; v && i < n; i++)
        v[i] = roundToHalf(v[i]);
}

/* ---- options ---- */

void SynthOptions_default(SynthOptions *o) {
    *o = (SynthOptions){
        .d_model = 768,
        .d_ff = 3072,
        .n_groups = 32,
        .topics_per_token = 0,
        .n_tokens = 32768,
        .sparsity = 0.9,
        .seed = 1,
        .act = ACTIVATION_RELU,
    };
}

int SynthOptions_topics(const SynthOptions *o) {
    if (o->topics_per_token > 0)
        return o->topics_per_token;
    long k = (long)floor((1.0 - o->sparsity) * o->n_groups + 0.5);
    return (int)(k < 1 ? 1 : k > o->n_groups ? o->n_groups : k);
}

MsStatus SynthOptions_check(const SynthOptions *o, char **cause) {
    const int maxDim = 1 << 20;
    if (o->d_model < 1 || o->d_model > maxDim)
        setCause(cause, "d_model %d is outside 1..%d", o->d_model, maxDim);
    else if (o->d_ff < 1 || o->d_ff > maxDim)
        setCause(cause, "d_ff %d is outside 1..%d", o->d_ff, maxDim);
    else if ((long)o->d_model * o->d_ff > INT_MAX)
        setCause(cause, "d_model x d_ff = %ld is above %d", (long)o->d_model * o->d_ff,
                 INT_MAX);
    else if (o->n_groups < 1 || o->n_groups > o->d_ff)
        setCause(cause, "groups %d is outside 1..d_ff (%d)", o->n_groups, o->d_ff);
    else if (o->topics_per_token < 0 || o->topics_per_token > o->n_groups)
        setCause(cause, "topics per token %d is outside 0..groups (%d)", o->topics_per_token,
                 o->n_groups);
    else if (o->n_tokens < 1 || o->n_tokens > INT_MAX)
        setCause(cause, "tokens %ld is outside 1..%d", o->n_tokens, INT_MAX);
    else if (!(o->sparsity >= 0.0 && o->sparsity < 1.0))
        setCause(cause, "sparsity %g is outside [0, 1)", o->sparsity);
    else if ((unsigned)o->act > ACTIVATION_IDENTITY)
        setCause(cause, "unknown activation %d", (int)o->act);
    else
        return MS_OK;
    return MS_ERR_RANGE;
}

/* ---- tokens ---- */

/* Token t's topics (distinct, in random order; layer-independent) into chosen[topics],
   and its x into x[d_model]. mark is n_groups zeroed bytes, left zeroed. */
static void makeToken(const SynthStream *this, int topicSalt, int xSalt, long t, float *x,
                      int *chosen, unsigned char *mark) {
    const int G = this->o.n_groups, k = this->topics, d = this->o.d_model;
    Rng r;
    rngSeed(&r, this->o.seed, ANY_LAYER, (uint64_t)topicSalt, (uint64_t)t);
    for (int j = G - k, n = 0; j < G; j++) { /* Floyd's k-subset */
        int pick = (int)rngBelow(&r, j + 1);
        if (mark[pick])
            pick = j;
        mark[pick] = 1;
        chosen[n++] = pick;
    }
    for (int i = k - 1; i > 0; i--) { /* random order: chosen[0] is "the" topic */
        int s = (int)rngBelow(&r, i + 1), tmp = chosen[i];
        chosen[i] = chosen[s];
        chosen[s] = tmp;
    }
    for (int i = 0; i < k; i++)
        mark[chosen[i]] = 0;

    rngSeed(&r, this->o.seed, (uint64_t)this->layer, (uint64_t)xSalt, (uint64_t)t);
    double noise = X_NOISE / sqrt((double)d);
    for (int c = 0; c < d; c++)
        x[c] = (float)(noise * rngGauss(&r));
    for (int i = 0; i < k; i++) {
        float amp = (float)(0.5 + rngUniform(&r));
        const float *u = this->directions + (long)chosen[i] * d;
        for (int c = 0; c < d; c++)
            x[c] += amp * u[c];
    }
    if (this->half)
        roundArrayToHalf(x, d);
}

static void makeTokens(const SynthStream *this, int topicSalt, int xSalt, long first,
                       long rows, float *x, int32_t *topic) {
    int *chosen = xMallocArray((size_t)this->topics, sizeof *chosen);
    unsigned char *mark = xCalloc((size_t)this->o.n_groups, 1);
    for (long r = 0; r < rows; r++) {
        makeToken(this, topicSalt, xSalt, first + r, x + r * this->o.d_model, chosen, mark);
        if (topic)
            topic[r] = chosen[0];
    }
    free(mark);
    free(chosen);
}

MsStatus SynthStream_tokens(SynthStream *this, long first, long rows, float *x, float *h,
                            int32_t *topic) {
    makeTokens(this, SALT_TOPICS, SALT_X, first, rows, x, topic);
    if (!h || rows == 0)
        return MS_OK;
    return Ffn_hidden(&this->w, x, rows, h);
}

/* ---- weights ---- */

static void makeDirections(SynthStream *this, Rng *r) {
    const int d = this->o.d_model;
    for (int g = 0; g < this->o.n_groups; g++) {
        float *u = this->directions + (long)g * d;
        double norm2 = 0;
        do {
            for (int c = 0; c < d; c++) {
                u[c] = (float)rngGauss(r);
                norm2 += (double)u[c] * u[c];
            }
        } while (norm2 == 0);
        float inv = (float)(1.0 / sqrt(norm2));
        for (int c = 0; c < d; c++)
            u[c] *= inv;
    }
}

/* Balanced groups: neuron j gets perm[j] mod n_groups for a seeded permutation. */
static void plantGroups(SynthStream *this) {
    const int N = this->o.d_ff;
    Rng r;
    rngSeed(&r, this->o.seed, (uint64_t)this->layer, SALT_PERMUTATION, 0);
    for (int j = 0; j < N; j++)
        this->planted[j] = j;
    for (int j = N - 1; j > 0; j--) {
        int s = (int)rngBelow(&r, j + 1);
        int32_t tmp = this->planted[j];
        this->planted[j] = this->planted[s];
        this->planted[s] = tmp;
    }
    for (int j = 0; j < N; j++)
        this->planted[j] %= this->o.n_groups;
}

static void makeWeights(SynthStream *this) {
    const int d = this->o.d_model, N = this->o.d_ff;
    Rng r;
    rngSeed(&r, this->o.seed, (uint64_t)this->layer, SALT_WEIGHTS, 0);
    makeDirections(this, &r);
    plantGroups(this);
    double noise = W_NOISE / sqrt((double)d);
    for (int j = 0; j < N; j++) {
        float a = (float)(0.75 + 0.5 * rngUniform(&r));
        const float *u = this->directions + (long)this->planted[j] * d;
        float *row = this->w.w_in + (long)j * d;
        for (int c = 0; c < d; c++)
            row[c] = a * u[c] + (float)(noise * rngGauss(&r));
    }
    double outSd = 1.0 / sqrt((double)N);
    for (long i = 0; i < (long)d * N; i++)
        this->w.w_out[i] = (float)(outSd * rngGauss(&r));
    for (int c = 0; c < d; c++)
        this->w.b_out[c] = (float)(B_OUT_SD * rngGauss(&r));
}

/* Swaps two floats. */
static void swapf(float *a, float *b) {
    float t = *a;
    *a = *b;
    *b = t;
}

/* Rearranges v so v[k] is the k-th smallest, v[<k] <= v[k] <= v[>k] (Hoare quickselect
   with a median of three). */
static void selectKth(float *v, long n, long k) {
    long lo = 0, hi = n - 1;
    while (hi > lo) {
        long mid = lo + (hi - lo) / 2;
        if (v[mid] < v[lo])
            swapf(&v[mid], &v[lo]);
        if (v[hi] < v[lo])
            swapf(&v[hi], &v[lo]);
        if (v[hi] < v[mid])
            swapf(&v[hi], &v[mid]);
        float pivot = v[mid];
        long i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot)
                i++;
            while (v[j] > pivot)
                j--;
            if (i <= j)
                swapf(&v[i++], &v[j--]);
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return;
    }
}

/* The threshold between the round(q n) smallest values of v and the rest (v is reordered). */
static float quantileThreshold(float *v, long n, double q) {
    long k = (long)floor(q * (double)n + 0.5);
    if (k <= 0) {
        float lo = v[0];
        for (long i = 1; i < n; i++)
            lo = v[i] < lo ? v[i] : lo;
        return lo - 1.0f;
    }
    if (k >= n) {
        float hi = v[0];
        for (long i = 1; i < n; i++)
            hi = v[i] > hi ? v[i] : hi;
        return hi + 1.0f;
    }
    selectKth(v, n, k);
    float below = v[0];
    for (long i = 1; i < k; i++)
        below = v[i] > below ? v[i] : below;
    return 0.5f * (below + v[k]);
}

/* b_in[j] = -(the sparsity-quantile of w_in[j] . x over the calibration tokens). */
static MsStatus calibrateBias(SynthStream *this, char **cause) {
    const int d = this->o.d_model, N = this->o.d_ff;
    const long C = CALIBRATION;
    float *x = tryMallocArray((size_t)(C * d), sizeof *x);
    float *pre = tryMallocArray((size_t)(C * N), sizeof *pre);
    float *col = tryMallocArray((size_t)C, sizeof *col);
    if (!x || !pre || !col) {
        setCause(cause, "out of memory for %ld bytes of calibration tokens",
                 (long)(C * (d + N + 1) * (long)sizeof(float)));
        free(x);
        free(pre);
        free(col);
        return MS_ERR_NOMEM;
    }
    makeTokens(this, SALT_CALIBRATION_TOPICS, SALT_CALIBRATION_X, 0, C, x, NULL);
    FfnWeights lin = {.d_model = d, .d_ff = N, .act = ACTIVATION_IDENTITY,
                      .w_in = this->w.w_in};
    MsStatus st = Ffn_hidden(&lin, x, C, pre);
    for (int j = 0; st == MS_OK && j < N; j++) {
        for (long t = 0; t < C; t++)
            col[t] = pre[t * N + j];
        this->w.b_in[j] = -quantileThreshold(col, C, this->o.sparsity);
    }
    free(x);
    free(pre);
    free(col);
    return st;
}

MsStatus SynthStream_new(SynthStream **out, const SynthOptions *o, int layer_index,
                         char **cause) {
    *out = NULL;
    MsStatus st = SynthOptions_check(o, cause);
    if (st != MS_OK)
        return st;
    if (layer_index < 0) {
        setCause(cause, "layer index %d is negative", layer_index);
        return MS_ERR_RANGE;
    }
    SynthStream *this = xCalloc(1, sizeof *this);
    this->o = *o;
    this->layer = layer_index;
    this->topics = SynthOptions_topics(o);
    const long d = o->d_model, N = o->d_ff;
    this->w = (FfnWeights){.d_model = o->d_model, .d_ff = o->d_ff, .act = o->act};
    this->w.w_in = tryMallocArray((size_t)(N * d), sizeof(float));
    this->w.w_out = tryMallocArray((size_t)(N * d), sizeof(float));
    this->w.b_in = tryMallocArray((size_t)N, sizeof(float));
    this->w.b_out = tryMallocArray((size_t)d, sizeof(float));
    this->planted = tryMallocArray((size_t)N, sizeof(int32_t));
    this->directions = tryMallocArray((size_t)(o->n_groups * d), sizeof(float));
    if (!this->w.w_in || !this->w.w_out || !this->w.b_in || !this->w.b_out ||
        !this->planted || !this->directions) {
        setCause(cause, "out of memory for %ld bytes of synthetic weights",
                 (long)((2 * N * d + N + d + N + o->n_groups * d) * (long)sizeof(float)));
        SynthStream_delete(this);
        return MS_ERR_NOMEM;
    }
    makeWeights(this);
    st = calibrateBias(this, cause);
    if (st != MS_OK) {
        SynthStream_delete(this);
        return st;
    }
    *out = this;
    return MS_OK;
}

void SynthStream_useHalfPrecision(SynthStream *this) {
    this->half = true;
    const long n = (long)this->o.d_model * this->o.d_ff;
    roundArrayToHalf(this->w.w_in, n);
    roundArrayToHalf(this->w.w_out, n);
    roundArrayToHalf(this->w.b_in, this->o.d_ff);
    roundArrayToHalf(this->w.b_out, this->o.d_model);
}

const FfnWeights *SynthStream_weights(const SynthStream *this) {
    return &this->w;
}

const int32_t *SynthStream_planted(const SynthStream *this) {
    return this->planted;
}

void SynthStream_delete(SynthStream *this) {
    if (!this)
        return;
    FfnWeights_done(&this->w);
    free(this->planted);
    free(this->directions);
    free(this);
}

/* ---- whole layer ---- */

MsStatus Synth_layer(const SynthOptions *o, int layer_index, SynthLayer *out, char **cause) {
    memset(out, 0, sizeof *out);
    SynthStream *s = NULL;
    MsStatus st = SynthStream_new(&s, o, layer_index, cause);
    if (st != MS_OK)
        return st;
    const long T = o->n_tokens;
    out->x = tryMallocArray((size_t)(T * o->d_model), sizeof(float));
    out->h = tryMallocArray((size_t)(T * o->d_ff), sizeof(float));
    if (!out->x || !out->h) {
        setCause(cause, "out of memory for %ld bytes of synthetic activations",
                 T * (long)(o->d_model + o->d_ff) * (long)sizeof(float));
        st = MS_ERR_NOMEM;
    } else {
        st = SynthStream_tokens(s, 0, T, out->x, out->h, NULL);
        if (st != MS_OK)
            setCause(cause, "out of memory computing the hidden activations");
    }
    if (st != MS_OK) {
        SynthStream_delete(s);
        SynthLayer_done(out);
        return st;
    }
    out->T = T;
    out->w = s->w;
    out->planted = s->planted;
    s->w = (FfnWeights){0};
    s->planted = NULL;
    SynthStream_delete(s);
    return MS_OK;
}

void SynthLayer_done(SynthLayer *l) {
    FfnWeights_done(&l->w);
    free(l->x);
    free(l->h);
    free(l->planted);
    memset(l, 0, sizeof *l);
}
