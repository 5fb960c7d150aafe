/*
moescope - tests/test_Llama.c
Tests of io/Checkpoint, core/Llama and moescope-dump: tiny random checkpoints written
here (shared and unshared classifier) give the logits, FFN inputs and hidden activations
of a plain reference loop over the whole sequence (no cache, no cblas); the real
stories260K model is far more certain than chance on its own samples; generation is
deterministic and follows its stopping rule; bad checkpoints and options give one clear
message; the built moescope-dump writes the SPEC layout (checked with h5py and a numpy
forward pass by tests/fixtures/check_dump.py).
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/Llama.h"
#include "io/Checkpoint.h"
#include "util/XUtils.h" /* before cmocka.h, which defines a fail() macro */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

/* ---- a tiny random model, written as a llama2.c checkpoint ---- */

typedef struct Tiny {
    int dim, hidden, L, nh, nkv, vocab, seq_len;
    bool shared;
    float *emb, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3, *rms_final, *wcls;
} Tiny;

static uint64_t lcgState;

static float lcgUniform(float lo, float hi) {
    lcgState = lcgState * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * (float)((lcgState >> 40) & 0xffffff) / 16777216.0f;
}

static float *randomArray(long n, float lo, float hi) {
    float *a = xMallocArray((size_t)n, sizeof(float));
    for (long i = 0; i < n; i++)
        a[i] = lcgUniform(lo, hi);
    return a;
}

static void tinyInit(Tiny *m, bool shared) {
    *m = (Tiny){.dim = 16, .hidden = 24, .L = 2, .nh = 4, .nkv = 2, .vocab = 32,
                .seq_len = 16, .shared = shared};
    lcgState = shared ? 11 : 12;
    int kv = m->dim * m->nkv / m->nh;
    float a = 1.0f / sqrtf((float)m->dim), b = 1.0f / sqrtf((float)m->hidden);
    m->emb = randomArray((long)m->vocab * m->dim, -1.0f, 1.0f);
    m->rms_att = randomArray((long)m->L * m->dim, 0.5f, 1.5f);
    m->wq = randomArray((long)m->L * m->dim * m->dim, -a, a);
    m->wk = randomArray((long)m->L * kv * m->dim, -a, a);
    m->wv = randomArray((long)m->L * kv * m->dim, -a, a);
    m->wo = randomArray((long)m->L * m->dim * m->dim, -a, a);
    m->rms_ffn = randomArray((long)m->L * m->dim, 0.5f, 1.5f);
    m->w1 = randomArray((long)m->L * m->hidden * m->dim, -2 * a, 2 * a);
    m->w2 = randomArray((long)m->L * m->dim * m->hidden, -b, b);
    m->w3 = randomArray((long)m->L * m->hidden * m->dim, -2 * a, 2 * a);
    m->rms_final = randomArray(m->dim, 0.5f, 1.5f);
    m->wcls = shared ? m->emb : randomArray((long)m->vocab * m->dim, -a, a);
}

static void tinyDone(Tiny *m) {
    float *all[] = {m->emb, m->rms_att, m->wq, m->wk, m->wv, m->wo,
                    m->rms_ffn, m->w1, m->w2, m->w3, m->rms_final};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
    if (!m->shared)
        free(m->wcls);
}

/* Writes m in llama2.c's order; the legacy RoPE tables are NaN, since nothing may read
   them. Returns the file size. */
static long tinyWrite(const Tiny *m, const char *path) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    int32_t h[7] = {m->dim, m->hidden, m->L, m->nh, m->nkv, m->shared ? m->vocab : -m->vocab,
                    m->seq_len};
    assert_int_equal(fwrite(h, 4, 7, f), 7);
    long kv = (long)m->dim * m->nkv / m->nh, L = m->L, d = m->dim, hd = m->hidden;
    struct {
        const float *p;
        long n;
    } parts[] = {
        {m->emb, m->vocab * d}, {m->rms_att, L * d}, {m->wq, L * d * d},
        {m->wk, L * kv * d},    {m->wv, L * kv * d}, {m->wo, L * d * d},
        {m->rms_ffn, L * d},    {m->w1, L * hd * d}, {m->w2, L * d * hd},
        {m->w3, L * hd * d},    {m->rms_final, d},
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        assert_int_equal(fwrite(parts[i].p, 4, (size_t)parts[i].n, f), parts[i].n);
    long rope = 2L * m->seq_len * (d / m->nh) / 2;
    for (long i = 0; i < rope; i++) {
        float nan = NAN;
        fwrite(&nan, 4, 1, f);
    }
    if (!m->shared)
        assert_int_equal(fwrite(m->wcls, 4, (size_t)(m->vocab * d), f), m->vocab * d);
    long size = ftell(f);
    assert_int_equal(fclose(f), 0);
    return size;
}

/* ---- the reference: whole-sequence forward pass with plain loops in double ---- */

static void refRmsnorm(double *out, const double *x, const float *g, int n) {
    double ss = 0.0;
    for (int j = 0; j < n; j++)
        ss += x[j] * x[j];
    ss = 1.0 / sqrt(ss / n + 1e-5);
    for (int j = 0; j < n; j++)
        out[j] = g[j] * ss * x[j];
}

/* out[n_out] = W[n_out][n_in] x */
static void refMatvec(double *out, const float *W, const double *x, int n_in, int n_out) {
    for (int i = 0; i < n_out; i++) {
        double s = 0.0;
        for (int j = 0; j < n_in; j++)
            s += (double)W[(long)i * n_in + j] * x[j];
        out[i] = s;
    }
}

/* Rotates pairs (2i, 2i+1) of every head of v[n] at position t. */
static void refRope(double *v, int n, int head, int t) {
    for (int i = 0; i < n; i += 2) {
        double ang = t * pow(10000.0, -(double)(i % head) / head);
        double a = v[i], b = v[i + 1];
        v[i] = a * cos(ang) - b * sin(ang);
        v[i + 1] = a * sin(ang) + b * cos(ang);
    }
}

/* Attention of query row t over rows 0..t of K, V [T][kv] for every head. */
static void refAttention(const Tiny *m, const double *q, const double *K, const double *V,
                         int t, double *out) {
    int head = m->dim / m->nh, kv = m->dim * m->nkv / m->nh;
    double *w = xMallocArray((size_t)t + 1, sizeof(double));
    for (int h = 0; h < m->nh; h++) {
        int g = h / (m->nh / m->nkv);
        double max = -INFINITY, sum = 0.0;
        for (int s = 0; s <= t; s++) {
            double dot = 0.0;
            for (int i = 0; i < head; i++)
                dot += q[h * head + i] * K[(long)s * kv + g * head + i];
            w[s] = dot / sqrt(head);
            max = fmax(max, w[s]);
        }
        for (int s = 0; s <= t; s++)
            sum += (w[s] = exp(w[s] - max));
        for (int i = 0; i < head; i++) {
            double acc = 0.0;
            for (int s = 0; s <= t; s++)
                acc += w[s] / sum * V[(long)s * kv + g * head + i];
            out[h * head + i] = acc;
        }
    }
    free(w);
}

/* logits [T][vocab], fx [T][L][dim], fh [T][L][hidden] for tokens[0..T-1]. */
static void refForward(const Tiny *m, const int *tokens, int T, double *logits, double *fx,
                       double *fh) {
    int d = m->dim, hd = m->hidden, kv = d * m->nkv / m->nh, head = d / m->nh;
    double *X = xCalloc((size_t)T * d, sizeof(double));
    double *Q = xCalloc((size_t)T * d, sizeof(double));
    double *K = xCalloc((size_t)T * kv, sizeof(double));
    double *V = xCalloc((size_t)T * kv, sizeof(double));
    double *xb = xCalloc((size_t)d, sizeof(double)), *att = xCalloc((size_t)d, sizeof(double));
    double *o = xCalloc((size_t)d, sizeof(double));
    double *g = xCalloc((size_t)hd, sizeof(double)), *u = xCalloc((size_t)hd, sizeof(double));
    for (int t = 0; t < T; t++)
        for (int j = 0; j < d; j++)
            X[(long)t * d + j] = m->emb[(long)tokens[t] * d + j];
    for (int l = 0; l < m->L; l++) {
        for (int t = 0; t < T; t++) {
            refRmsnorm(xb, X + (long)t * d, m->rms_att + (long)l * d, d);
            refMatvec(Q + (long)t * d, m->wq + (long)l * d * d, xb, d, d);
            refMatvec(K + (long)t * kv, m->wk + (long)l * kv * d, xb, d, kv);
            refMatvec(V + (long)t * kv, m->wv + (long)l * kv * d, xb, d, kv);
            refRope(Q + (long)t * d, d, head, t);
            refRope(K + (long)t * kv, kv, head, t);
        }
        for (int t = 0; t < T; t++) {
            double *x = X + (long)t * d;
            refAttention(m, Q + (long)t * d, K, V, t, att);
            refMatvec(o, m->wo + (long)l * d * d, att, d, d);
            for (int j = 0; j < d; j++)
                x[j] += o[j];
            double *rx = fx + ((long)t * m->L + l) * d, *rh = fh + ((long)t * m->L + l) * hd;
            refRmsnorm(rx, x, m->rms_ffn + (long)l * d, d);
            refMatvec(g, m->w1 + (long)l * hd * d, rx, d, hd);
            refMatvec(u, m->w3 + (long)l * hd * d, rx, d, hd);
            for (int i = 0; i < hd; i++)
                rh[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
            refMatvec(o, m->w2 + (long)l * d * hd, rh, hd, d);
            for (int j = 0; j < d; j++)
                x[j] += o[j];
        }
    }
    for (int t = 0; t < T; t++) {
        refRmsnorm(xb, X + (long)t * d, m->rms_final, d);
        refMatvec(logits + (long)t * m->vocab, m->wcls, xb, d, m->vocab);
    }
    free(X), free(Q), free(K), free(V), free(xb), free(att), free(o), free(g), free(u);
}

/* ---- fixtures ---- */

static char *tmpDir;

static int setupDir(void **state) {
    char tmpl[] = "/tmp/moescope-llama.XXXXXX";
    char *dir = mkdtemp(tmpl);
    if (!dir)
        return -1;
    tmpDir = xStrdup(dir);
    return 0;
}

static int teardownDir(void **state) {
    char *cmd = xAsprintf("rm -rf '%s'", tmpDir);
    int rc = system(cmd);
    free(cmd);
    free(tmpDir);
    return rc == 0 ? 0 : -1;
}

static char *tmpPath(const char *name) {
    return xAsprintf("%s/%s", tmpDir, name);
}

static LlamaConfig configOf(const Checkpoint *c) {
    return (LlamaConfig){c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
                         c->vocab_size, c->seq_len};
}

static LlamaWeights weightsOf(const Checkpoint *c) {
    return (LlamaWeights){c->token_embedding, c->rms_att, c->wq, c->wk, c->wv, c->wo,
                          c->rms_ffn, c->w1, c->w2, c->w3, c->rms_final, c->wcls};
}

static void assertSameFloats(const float *a, const float *b, long n) {
    assert_memory_equal(a, b, (size_t)n * sizeof(float));
}

/* ---- (1) tiny checkpoints against the reference ---- */

static void checkTiny(bool shared) {
    Tiny m;
    tinyInit(&m, shared);
    char *path = tmpPath(shared ? "tiny_shared.bin" : "tiny_unshared.bin");
    tinyWrite(&m, path);

    Checkpoint *ck = NULL;
    char *cause = NULL;
    assert_int_equal(Checkpoint_new(&ck, path, &cause), MS_OK);
    assert_null(cause);
    long kv = (long)m.dim * m.nkv / m.nh, d = m.dim;
    assert_int_equal(ck->vocab_size, m.vocab);
    assert_true(ck->shared_classifier == shared);
    assertSameFloats(ck->token_embedding, m.emb, m.vocab * d);
    assertSameFloats(ck->wk, m.wk, m.L * kv * d);
    assertSameFloats(ck->w2, m.w2, (long)m.L * d * m.hidden);
    assertSameFloats(ck->w3, m.w3, (long)m.L * m.hidden * d);
    assertSameFloats(ck->rms_final, m.rms_final, d);
    assertSameFloats(ck->wcls, m.wcls, m.vocab * d);
    assert_true(shared == (ck->wcls == ck->token_embedding));

    enum { T = 10 };
    const int tokens[T] = {1, 5, 17, 3, 31, 9, 2, 11, 0, 20};
    double *logits = xCalloc((size_t)T * m.vocab, sizeof(double));
    double *fx = xCalloc((size_t)T * m.L * d, sizeof(double));
    double *fh = xCalloc((size_t)T * m.L * m.hidden, sizeof(double));
    refForward(&m, tokens, T, logits, fx, fh);

    LlamaConfig cfg = configOf(ck);
    LlamaWeights w = weightsOf(ck);
    Llama *llama = NULL;
    assert_int_equal(Llama_new(&llama, &cfg, &w, &cause), MS_OK);
    float *gx = xCalloc((size_t)m.L * d, sizeof(float));
    float *gh = xCalloc((size_t)m.L * m.hidden, sizeof(float));
    double worst = 0.0, spread = 0.0;
    for (int t = 0; t < T; t++) {
        const float *lg = Llama_forward(llama, tokens[t], t, gx, d, gh, m.hidden);
        for (int v = 0; v < m.vocab; v++) {
            double want = logits[(long)t * m.vocab + v];
            worst = fmax(worst, fabs(lg[v] - want));
            spread = fmax(spread, fabs(want));
        }
        for (long i = 0; i < m.L * d; i++)
            assert_true(fabs(gx[i] - fx[t * m.L * d + i]) < 1e-4);
        for (long i = 0; i < (long)m.L * m.hidden; i++)
            assert_true(fabs(gh[i] - fh[t * m.L * m.hidden + i]) < 1e-4);
    }
    print_message("tiny %s classifier: max |logit - reference| %.2g (logits up to %.2f)\n",
                  shared ? "shared" : "unshared", worst, spread);
    assert_true(worst < 1e-4);
    assert_true(spread > 0.5); /* the comparison is not between near-zero numbers */

    free(gx), free(gh), free(logits), free(fx), free(fh), free(path);
    Llama_delete(llama);
    Checkpoint_delete(ck);
    tinyDone(&m);
}

static void test_tiny_shared_matches_reference(void **state) {
    checkTiny(true);
}

static void test_tiny_unshared_matches_reference(void **state) {
    checkTiny(false);
}

/* ---- (5) bad checkpoints ---- */

/* Writes a tiny checkpoint, lets edit change its header or size, reads it back and
   expects status with a message containing want. */
static void expectBad(const char *name, void (*edit)(int32_t *hdr, long *size), MsStatus status,
                      const char *want) {
    Tiny m;
    tinyInit(&m, true);
    char *path = tmpPath(name);
    long size = tinyWrite(&m, path);
    tinyDone(&m);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    int32_t hdr[7];
    assert_int_equal(fread(hdr, 4, 7, f), 7);
    long new_size = size;
    edit(hdr, &new_size);
    rewind(f);
    assert_int_equal(fwrite(hdr, 4, 7, f), 7);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(truncate(path, new_size), 0);

    Checkpoint *ck = (Checkpoint *)&ck;
    char *cause = NULL;
    assert_int_equal(Checkpoint_new(&ck, path, &cause), status);
    assert_null(ck);
    assert_non_null(cause);
    print_message("%s: %s\n", name, cause);
    assert_non_null(strstr(cause, path));
    assert_non_null(strstr(cause, want));
    free(cause);
    free(path);
}

static void cutTail(int32_t *h, long *size) {
    *size -= 4;
}
static void addTail(int32_t *h, long *size) {
    *size += 8;
}
static void cutHeader(int32_t *h, long *size) {
    *size = 10;
}
static void negativeDim(int32_t *h, long *size) {
    h[0] = -16;
}
static void zeroLayers(int32_t *h, long *size) {
    h[2] = 0;
}
static void headsNotDividing(int32_t *h, long *size) {
    h[3] = 5;
}
static void kvNotDividing(int32_t *h, long *size) {
    h[4] = 3;
}
static void oddHead(int32_t *h, long *size) {
    h[0] = 12, h[3] = 4, h[4] = 4; /* head size 3 */
}
static void hugeDims(int32_t *h, long *size) {
    h[0] = 1 << 30, h[1] = INT32_MAX, h[3] = 2, h[4] = 2;
}
static void unsharedWithoutClassifier(int32_t *h, long *size) {
    h[5] = -h[5];
}

static void test_bad_checkpoints(void **state) {
    expectBad("short.bin", cutTail, MS_ERR_FORMAT, "truncated");
    expectBad("long.bin", addTail, MS_ERR_FORMAT, "not such a checkpoint");
    expectBad("header.bin", cutHeader, MS_ERR_FORMAT, "too short");
    expectBad("negdim.bin", negativeDim, MS_ERR_FORMAT, "dim = -16");
    expectBad("nolayers.bin", zeroLayers, MS_ERR_FORMAT, "n_layers = 0");
    expectBad("heads.bin", headsNotDividing, MS_ERR_FORMAT, "not a multiple of n_heads");
    expectBad("kvheads.bin", kvNotDividing, MS_ERR_FORMAT, "n_kv_heads = 3");
    expectBad("odd.bin", oddHead, MS_ERR_FORMAT, "odd");
    expectBad("huge.bin", hugeDims, MS_ERR_FORMAT, "truncated");
    expectBad("unshared.bin", unsharedWithoutClassifier, MS_ERR_FORMAT, "(unshared)");

    char *path = tmpPath("missing.bin");
    Checkpoint *ck = NULL;
    char *cause = NULL;
    assert_int_equal(Checkpoint_new(&ck, path, &cause), MS_ERR_IO);
    assert_null(ck);
    assert_non_null(strstr(cause, "cannot open"));
    free(cause);
    cause = NULL;
    assert_int_equal(Checkpoint_new(&ck, tmpDir, &cause), MS_ERR_IO); /* a directory */
    assert_non_null(strstr(cause, "not a regular file"));
    free(cause);
    free(path);
}

static void test_nonfinite_weight(void **state) {
    Tiny m;
    tinyInit(&m, true);
    m.w2[7] = INFINITY;
    char *path = tmpPath("inf.bin");
    tinyWrite(&m, path);
    tinyDone(&m);
    Checkpoint *ck = NULL;
    char *cause = NULL;
    assert_int_equal(Checkpoint_new(&ck, path, &cause), MS_ERR_FORMAT);
    assert_non_null(strstr(cause, "w2[7] is not finite"));
    free(cause);
    free(path);
}

static void test_bad_config(void **state) {
    LlamaConfig cfg = {16, 24, 2, 4, 3, 32, 16};
    LlamaWeights w = {0};
    Llama *llama = NULL;
    char *cause = NULL;
    assert_int_equal(Llama_new(&llama, &cfg, &w, &cause), MS_ERR_RANGE);
    assert_null(llama);
    assert_non_null(strstr(cause, "n_kv_heads 3"));
    free(cause);
}

/* ---- sampling ---- */

static void test_sample_and_entropy(void **state) {
    LlamaRng rng;
    Llama_seedRng(&rng, 5);
    const float tie[4] = {0.5f, 2.0f, 2.0f, -1.0f};
    assert_int_equal(Llama_sample(tie, 4, 0.0f, &rng), 1); /* argmax, ties to lower */

    /* p proportional to 1, 2, 3, 4 at temperature 1; at temperature 0.5 to 1, 4, 9, 16 */
    const float lg[4] = {0.0f, logf(2.0f), logf(3.0f), logf(4.0f)};
    const float temps[2] = {1.0f, 0.5f};
    const double want[2][4] = {{0.1, 0.2, 0.3, 0.4}, {1 / 30.0, 4 / 30.0, 9 / 30.0, 16 / 30.0}};
    for (int k = 0; k < 2; k++) {
        int count[4] = {0};
        enum { N = 40000 };
        for (int i = 0; i < N; i++)
            count[Llama_sample(lg, 4, temps[k], &rng)]++;
        for (int j = 0; j < 4; j++)
            assert_true(fabs(count[j] / (double)N - want[k][j]) < 0.01);
    }
    for (int i = 0; i < 1000; i++) {
        float u = Llama_uniform(&rng);
        assert_true(u >= 0.0f && u < 1.0f);
    }
    float flat[8] = {3, 3, 3, 3, 3, 3, 3, 3};
    assert_true(fabs(Llama_entropy(flat, 8) - log(8.0)) < 1e-9);
    double h = 0.0;
    for (int j = 0; j < 4; j++)
        h -= (j + 1) / 10.0 * log((j + 1) / 10.0);
    assert_true(fabs(Llama_entropy(lg, 4) - h) < 1e-6);
    float peaked[3] = {100.0f, 0.0f, 0.0f};
    assert_true(Llama_entropy(peaked, 3) < 1e-12);
}

/* ---- (2), (4) the real model ---- */

static Checkpoint *loadStories(void) {
    const char *src = getenv("top_srcdir");
    char *path = xAsprintf("%s/data/stories260K.bin", src ? src : ".");
    Checkpoint *ck = NULL;
    char *cause = NULL;
    MsStatus st = Checkpoint_new(&ck, path, &cause);
    if (st != MS_OK)
        print_error("%s\n", cause);
    assert_int_equal(st, MS_OK);
    assert_int_equal(ck->dim, 64);
    assert_int_equal(ck->hidden_dim, 172);
    assert_int_equal(ck->vocab_size, 512);
    free(path);
    return ck;
}

/* What a sink saw: every sequence's tokens, rows of layer 0 x and the entropy sum. */
typedef struct Collected {
    int32_t *tokens;
    float *x0;
    long n;
    int n_seqs;
    int dim;
    double entropy;
} Collected;

static MsStatus collect(void *ctx, const LlamaSeq *seq, char **cause) {
    Collected *c = ctx;
    assert_int_equal(seq->index, c->n_seqs);
    assert_int_equal(seq->tokens[0], LLAMA_BOS);
    c->tokens = xReallocArray(c->tokens, (size_t)(c->n + seq->n), sizeof(int32_t));
    c->x0 = xReallocArray(c->x0, (size_t)(c->n + seq->n) * c->dim, sizeof(float));
    memcpy(c->tokens + c->n, seq->tokens, (size_t)seq->n * sizeof(int32_t));
    memcpy(c->x0 + c->n * c->dim, seq->x, (size_t)seq->n * c->dim * sizeof(float));
    c->n += seq->n;
    c->n_seqs++;
    c->entropy += seq->entropy_sum;
    return MS_OK;
}

static void collectedDone(Collected *c) {
    free(c->tokens);
    free(c->x0);
}

static Collected generate(Llama *llama, LlamaRun run) {
    Collected c = {.dim = Llama_config(llama)->dim};
    char *cause = NULL;
    assert_int_equal(Llama_generate(llama, &run, collect, &c, NULL, &cause), MS_OK);
    assert_int_equal(c.n_seqs, run.n_seqs);
    return c;
}

/* The test's own entropy of softmax(logits) in nats. */
static double entropyOf(const float *lg, int n) {
    double max = -INFINITY, z = 0.0, h = 0.0;
    for (int i = 0; i < n; i++)
        max = fmax(max, lg[i]);
    for (int i = 0; i < n; i++)
        z += exp(lg[i] - max);
    for (int i = 0; i < n; i++) {
        double p = exp(lg[i] - max) / z;
        if (p > 0)
            h -= p * log(p);
    }
    return h;
}

static void test_stories_entropy(void **state) {
    Checkpoint *ck = loadStories();
    LlamaConfig cfg = configOf(ck);
    LlamaWeights w = weightsOf(ck);
    Llama *llama = NULL;
    char *cause = NULL;
    assert_int_equal(Llama_new(&llama, &cfg, &w, &cause), MS_OK);

    /* The sampling loop written out here: BOS first, stop at max_len or on BOS/EOS. */
    enum { SEQS = 8, LEN = 256 };
    LlamaRng rng;
    Llama_seedRng(&rng, 2024);
    int32_t *tokens = xMallocArray(SEQS * LEN, sizeof(int32_t));
    long n = 0;
    double sum = 0.0;
    for (int s = 0; s < SEQS; s++) {
        int tok = LLAMA_BOS;
        for (int pos = 0; pos < LEN; pos++) {
            tokens[n++] = tok;
            const float *lg = Llama_forward(llama, tok, pos, NULL, 0, NULL, 0);
            sum += entropyOf(lg, cfg.vocab_size);
            if (pos + 1 == LEN)
                break;
            tok = Llama_sample(lg, cfg.vocab_size, 1.0f, &rng);
            if (tok == LLAMA_BOS || tok == LLAMA_EOS)
                break;
        }
    }
    double mean = sum / n;
    print_message("stories260K: mean next-token entropy on %ld tokens of its own samples: "
                  "%.3f nats (uniform: log 512 = %.3f)\n", n, mean, log(512.0));
    assert_true(mean > 0.0);
    assert_true(mean < 0.5 * log(512.0));

    /* Llama_generate follows the same rule with the same stream. */
    Collected c = generate(llama, (LlamaRun){SEQS, LEN, 2024, 1.0f, false});
    assert_int_equal(c.n, n);
    assert_memory_equal(c.tokens, tokens, (size_t)n * sizeof(int32_t));
    assert_true(fabs(c.entropy - sum) < 1e-6 * sum);
    collectedDone(&c);
    free(tokens);
    Llama_delete(llama);
    Checkpoint_delete(ck);
}

static void test_determinism(void **state) {
    Checkpoint *ck = loadStories();
    LlamaConfig cfg = configOf(ck);
    LlamaWeights w = weightsOf(ck);
    Llama *llama = NULL;
    char *cause = NULL;
    assert_int_equal(Llama_new(&llama, &cfg, &w, &cause), MS_OK);
    LlamaRun run = {4, 48, 42, 1.0f, true};
    Collected a = generate(llama, run), b = generate(llama, run);
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.tokens, b.tokens, (size_t)a.n * sizeof(int32_t));
    assert_memory_equal(a.x0, b.x0, (size_t)a.n * a.dim * sizeof(float));
    run.seed = 43;
    Collected c = generate(llama, run);
    assert_false(c.n == a.n && memcmp(c.tokens, a.tokens, (size_t)a.n * 4) == 0);
    /* Greedy decoding does not depend on the seed. */
    Collected g1 = generate(llama, (LlamaRun){2, 24, 1, 0.0f, false});
    Collected g2 = generate(llama, (LlamaRun){2, 24, 99, 0.0f, false});
    assert_int_equal(g1.n, g2.n);
    assert_memory_equal(g1.tokens, g2.tokens, (size_t)g1.n * sizeof(int32_t));
    collectedDone(&a), collectedDone(&b), collectedDone(&c), collectedDone(&g1),
        collectedDone(&g2);

    LlamaRun bad[] = {{4, 513, 42, 1.0f, false}, {0, 8, 42, 1.0f, false},
                      {1, 0, 42, 1.0f, false},   {1, 8, 42, -1.0f, false},
                      {1, 8, 42, NAN, false}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        Collected d = {.dim = cfg.dim};
        assert_int_equal(Llama_generate(llama, &bad[i], collect, &d, NULL, &cause),
                         MS_ERR_RANGE);
        assert_int_equal(d.n_seqs, 0);
        assert_non_null(cause);
        free(cause);
        cause = NULL;
    }
    Llama_delete(llama);
    Checkpoint_delete(ck);
}

/* ---- (3), (5) the moescope-dump binary ---- */

/* Runs cmd with stderr to a file; returns the exit status and the stderr text. */
static int runCmd(const char *cmd, char **err) {
    char *errPath = tmpPath("stderr.txt");
    char *full = xAsprintf("%s 2>'%s' >/dev/null", cmd, errPath);
    int rc = system(full);
    free(full);
    *err = xCalloc(4096, 1);
    FILE *f = fopen(errPath, "r");
    if (f) {
        size_t got = fread(*err, 1, 4095, f);
        (*err)[got] = '\0';
        fclose(f);
    }
    unlink(errPath);
    free(errPath);
    assert_true(WIFEXITED(rc));
    return WEXITSTATUS(rc);
}

static int countLines(const char *s) {
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static void test_dump_binary(void **state) {
    const char *py = getenv("H5PY_PYTHON"), *src = getenv("top_srcdir");
    const char *build = getenv("top_builddir");
    if (!py || !src || !build) {
        print_message("H5PY_PYTHON, top_srcdir or top_builddir unset: run under make check\n");
        skip();
    }
    char *bin = xAsprintf("'%s/src/moescope-dump'", build);
    char *model = xAsprintf("'%s/data/stories260K.bin'", src);
    char *check = xAsprintf("'%s' '%s/tests/fixtures/check_dump.py'", py, src);
    char *a = tmpPath("a.h5"), *b = tmpPath("b.h5"), *c = tmpPath("c.h5");
    char *err = NULL;
    struct {
        char *dump, *verify;
    } runs[] = {
        {xAsprintf("%s --seqs 4 --len 32 --seed 7 %s -o '%s'", bin, model, a),
         xAsprintf("%s '%s' --seqs 4 --len 32 --checkpoint %s", check, a, model)},
        {xAsprintf("%s -n 4 -l 32 -s 7 --float16 --no-h --gzip 4 %s -o '%s'", bin, model, b),
         xAsprintf("%s '%s' --seqs 4 --len 32 --dtype float16 --no-h --checkpoint %s", check,
                   b, model)},
        {xAsprintf("%s --seqs 4 --len 32 --seed 7 -t 1 %s -o '%s'", bin, model, c),
         xAsprintf("%s '%s' --seqs 4 --len 32 --same-as '%s'", check, c, a)},
    };
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        int rc = runCmd(runs[i].dump, &err);
        if (rc != 0)
            print_error("%s\n", err);
        assert_int_equal(rc, 0);
        assert_string_equal(err, ""); /* stderr is not a terminal: no progress */
        free(err);
        rc = system(runs[i].verify);
        assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 0);
        free(runs[i].dump);
        free(runs[i].verify);
    }

    /* Bad input: exit 2, one line on stderr, no output file. */
    Tiny m;
    tinyInit(&m, true);
    char *cut = tmpPath("cut.bin");
    long size = tinyWrite(&m, cut);
    tinyDone(&m);
    assert_int_equal(truncate(cut, size - 100), 0);
    char *out = tmpPath("never.h5");
    char *bad[] = {
        xAsprintf("%s '%s' -o '%s'", bin, cut, out),
        xAsprintf("%s '%s/none.bin' -o '%s'", bin, tmpDir, out),
        xAsprintf("%s --len 1000 %s -o '%s'", bin, model, out),
        xAsprintf("%s --len 0 %s -o '%s'", bin, model, out),
        xAsprintf("%s --seqs x %s -o '%s'", bin, model, out),
        xAsprintf("%s --temperature -1 %s -o '%s'", bin, model, out),
        xAsprintf("%s --gzip 10 %s -o '%s'", bin, model, out),
        xAsprintf("%s --bogus %s -o '%s'", bin, model, out),
        xAsprintf("%s %s", bin, model),
        xAsprintf("%s -o '%s'", bin, out),
        xAsprintf("%s %s -o", bin, model),
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = runCmd(bad[i], &err);
        print_message("exit %d: %s", rc, err);
        assert_int_equal(rc, 2);
        assert_int_equal(countLines(err), 1);
        assert_non_null(strstr(err, "moescope-dump: "));
        assert_false(exists(out));
        free(err);
        free(bad[i]);
    }
    char *help = xAsprintf("%s --help", bin);
    assert_int_equal(runCmd(help, &err), 0);
    free(err);

    free(help), free(out), free(cut), free(a), free(b), free(c);
    free(bin), free(model), free(check);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_shared_matches_reference),
        cmocka_unit_test(test_tiny_unshared_matches_reference),
        cmocka_unit_test(test_bad_checkpoints),
        cmocka_unit_test(test_nonfinite_weight),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_sample_and_entropy),
        cmocka_unit_test(test_stories_entropy),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_dump_binary),
    };
    return cmocka_run_group_tests(tests, setupDir, teardownDir);
}
