/*
moescope - tests/test_Eval.c
Router evaluation, the top-K neuron bound and the cost model: a hand-worked case checked
on paper, SPEC identities (k = E, E = 1, relabelled experts, monotone recall, oracle on
top), and random layers against a from-scratch masked computation through Ffn_output.
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/Cost.h"
#include "core/Eval.h"
#include "core/Ffn.h"
#include "core/NeuronBound.h"
#include "core/Router.h"
#include "core/TopK.h"

/* ---- the hand-worked case ----
   6 tokens, 8 neurons, d_model 2, 4 experts of 2: e0 = {0,1}, e1 = {2,3}, e2 = {4,5},
   e3 = {6,7}. Columns of w_out: w0 (1,0) w1 (0,1) w2 (1,1) w3 (1,-1) w4 (2,0) w5 (0,2)
   w6 (1,0) w7 (0,1). Centers of the normalized keys: c0 (1,0), c1 (0,1), c2 (-.5,-.5),
   c3 (-1,0).

   oracle s[t,e]       per-expert outputs Y_e            y, ||y||^2
   t0: 2 1 0 0         Y0 (2,0), Y1 (1,-1)               (3,-1), 10
   t1: 0 3 1 0         Y1 (3,3), Y2 (0,2)                (3,5), 34
   t2: 2 0 0 2         Y0 (1,1), Y3 (0,2)                (1,3), 10
   t3: 0 0 0 0         nothing (skipped by recall and error, counted by overlap and load)
   t4: 0 0 4 1         Y2 (8,0), Y3 (0,-1)               (8,-1), 65
   t5: 1 2 0 0         Y0 (1,0), Y1 (2,2)                (3,2), 13

   oracle order (ties to the lower index): t0 0 1 2 3, t1 1 2 0 3, t2 0 3 1 2,
   t3 0 1 2 3, t4 2 3 0 1, t5 1 0 2 3.
   similarity order (distances in test_Router): t0 1 0 2 3, t1 1 0 3 2, t2 3 2 1 0,
   t3 0 1 2 3, t4 2 0 3 1, t5 0 1 2 3. */
static const float KEYS[8 * 2] = {1, 0, 3, 0, 0, 2, 0, 1, -3, 0, 0, -1, -1, 0, -2, 0};
static const int32_t PART[8] = {0, 0, 1, 1, 2, 2, 3, 3};
static const float X[6 * 2] = {3, 4, 0, 5, -1, 0, 1, 1, 0, -2, 4, 3};
static const float H[6 * 8] = {
    2, 0, 0, 1, 0, 0, 0, 0,  0, 0, 3, 0, 0, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 2,
    0, 0, 0, 0, 0, 0, 0, 0,  0, 0, 0, 0, 4, 0, 0, -1, 1, 0, 2, 0, 0, 0, 0, 0,
};
/* w_out [d_model][d_ff]: row 0 = first components, row 1 = second components */
static float WOUT[2 * 8] = {1, 0, 1, 1, 2, 0, 1, 0, 0, 1, 1, -1, 0, 2, 0, 1};

static void handLayer(FfnWeights *w, LayerData *L) {
    *w = (FfnWeights){.d_model = 2, .d_ff = 8, .act = ACTIVATION_RELU, .w_in = (float *)KEYS,
                      .w_out = WOUT};
    /* every token is evaluated: train = test = all six */
    *L = (LayerData){.w = w, .T = 6, .x = X, .h = H, .T_train = 0};
}

static void test_hand_oracle(void **state) {
    (void)state;
    FfnWeights w;
    LayerData L;
    handLayer(&w, &L);
    Eval *ev;
    assert_int_equal(Eval_new(&ev, &L, PART, 4, NULL, SPLIT_TEST, 2, NULL, NULL), MS_OK);
    assert_int_equal(Eval_tokens(ev), 6);
    assert_int_equal(Eval_routerKind(ev), ROUTER_ORACLE);
    EvalMetrics m;
    Eval_metrics(ev, 1, &m);
    /* recall@1 over the 5 tokens with mass: 2/3, 3/4, 2/4, 4/5, 2/3 */
    assert_float_equal(m.mass_recall, (2. / 3 + 3. / 4 + 2. / 4 + 4. / 5 + 2. / 3) / 5, 1e-9);
    assert_float_equal(m.overlap, 1.0, 0);
    /* residuals at k = 1: t0 Y1 (1,-1), t1 Y2 (0,2), t2 Y3 (0,2), t4 Y3 (0,-1), t5 Y0 (1,0) */
    double err1 = (sqrt(2. / 10) + 2 / sqrt(34.) + 2 / sqrt(10.) + 1 / sqrt(65.) +
                   1 / sqrt(13.)) / 5;
    assert_float_equal(m.output_rel_err, err1, 1e-6);
    /* loads at k = 1: e0 t0 t2 t3, e1 t1 t5, e2 t4 -> 3/6, 2/6, 1/6, 0 */
    assert_float_equal(m.load_max_over_mean, (3. / 6) / (1. / 4), 1e-12);
    double H1 = -(0.5 * log(0.5) + 1. / 3 * log(1. / 3) + 1. / 6 * log(1. / 6));
    assert_float_equal(m.load_entropy_norm, H1 / log(4), 1e-12);
    /* cost: dense 2*2*8*2 = 64; oracle router 0; one expert 2*2*2*2 = 16 */
    assert_float_equal(m.flops_fraction, 16. / 64, 1e-12);
    assert_float_equal(m.ideal_speedup, 4.0, 1e-12);

    Eval_metrics(ev, 2, &m);
    assert_float_equal(m.mass_recall, 1.0, 1e-12); /* every token's mass sits in 2 experts */
    assert_float_equal(m.output_rel_err, 0.0, 0);
    Eval_delete(ev);
}

static void test_hand_similarity(void **state) {
    (void)state;
    FfnWeights w;
    LayerData L;
    handLayer(&w, &L);
    Router *r;
    assert_int_equal(Router_new(&r, ROUTER_SIMILARITY, &L, PART, 4, NULL, NULL, NULL), MS_OK);
    Eval *ev;
    assert_int_equal(Eval_new(&ev, &L, PART, 4, r, SPLIT_TEST, 2, NULL, NULL), MS_OK);
    EvalMetrics m;

    /* k = 1: router picks t0 e1, t1 e1, t2 e3, t3 e0, t4 e2, t5 e0 */
    Eval_metrics(ev, 1, &m);
    assert_float_equal(m.mass_recall, (1. / 3 + 3. / 4 + 2. / 4 + 4. / 5 + 1. / 3) / 5, 1e-9);
    /* oracle top-1 e0 e1 e0 e0 e2 e1: agree on t1, t3, t4 */
    assert_float_equal(m.overlap, 3. / 6, 1e-12);
    /* residuals: t0 Y0 (2,0), t1 Y2 (0,2), t2 Y0 (1,1), t4 Y3 (0,-1), t5 Y1 (2,2) */
    double e1 = (2 / sqrt(10.) + 2 / sqrt(34.) + sqrt(2. / 10) + 1 / sqrt(65.) +
                 sqrt(8. / 13)) / 5;
    assert_float_equal(m.output_rel_err, e1, 1e-6);
    /* loads: e0 t3 t5, e1 t0 t1, e2 t4, e3 t2 -> 1/3 1/3 1/6 1/6 */
    assert_float_equal(m.load_max_over_mean, (1. / 3) * 4, 1e-12);
    double H1 = -(2 * (1. / 3) * log(1. / 3) + 2 * (1. / 6) * log(1. / 6));
    assert_float_equal(m.load_entropy_norm, H1 / log(4), 1e-12);
    /* cost: router 2*2*4 = 16, one expert 16, dense 64 */
    assert_float_equal(m.flops_fraction, 32. / 64, 1e-12);
    assert_float_equal(m.ideal_speedup, 2.0, 1e-12);
    double load[4];
    Eval_loads(ev, 1, load);
    assert_float_equal(load[0], 2. / 6, 1e-12);
    assert_float_equal(load[3], 1. / 6, 1e-12);

    /* k = 2: t0 {1,0}, t1 {1,0}, t2 {3,2}, t3 {0,1}, t4 {2,0}, t5 {0,1} */
    Eval_metrics(ev, 2, &m);
    assert_float_equal(m.mass_recall, (1 + 3. / 4 + 2. / 4 + 4. / 5 + 1) / 5, 1e-9);
    /* |O_2 ∩ R_2| = 2, 1, 1, 2, 1, 2 */
    assert_float_equal(m.overlap, (2 + 1 + 1 + 2 + 1 + 2) / 12., 1e-12);
    /* residuals: t0 0, t1 Y2 (0,2), t2 Y0 (1,1), t4 Y3 (0,-1), t5 0 */
    assert_float_equal(m.output_rel_err, (2 / sqrt(34.) + sqrt(2. / 10) + 1 / sqrt(65.)) / 5,
                       1e-6);
    /* loads: e0 5/6, e1 4/6, e2 2/6, e3 1/6 (sum 2); mean 2/4 */
    assert_float_equal(m.load_max_over_mean, (5. / 6) / (2. / 4), 1e-12);
    const double p[4] = {5. / 12, 4. / 12, 2. / 12, 1. / 12};
    double H2 = 0;
    for (int e = 0; e < 4; e++)
        H2 -= p[e] * log(p[e]);
    assert_float_equal(m.load_entropy_norm, H2 / log(4), 1e-12);
    assert_float_equal(m.flops_fraction, 48. / 64, 1e-12);

    Eval_metrics(ev, 4, &m);
    assert_float_equal(m.mass_recall, 1.0, 1e-12);
    assert_float_equal(m.output_rel_err, 0.0, 0);
    assert_float_equal(m.overlap, 1.0, 1e-12);
    Eval_delete(ev);
    Router_delete(r);
}

static void test_hand_topk_neurons(void **state) {
    (void)state;
    FfnWeights w;
    LayerData L;
    handLayer(&w, &L);
    NeuronBound *nb;
    assert_int_equal(NeuronBound_new(&nb, &L, SPLIT_ALL, 2, NULL, NULL), MS_OK);
    /* ||w_j||: 1 1 r2 r2 2 2 1 1. Scores |h| ||w||: t0 n0 2, n3 1.41; t1 n2 4.24, n5 2;
       t2 n0 1, n1 1, n7 2 (order n7 n0 n1); t4 n4 8, n7 1; t5 n0 1, n2 2.83.
       K = 1 residuals: t0 (1,-1), t1 (0,2), t2 (1,1), t4 (0,-1), t5 (1,0).
       K = 2: only t2 keeps a residual, w1 = (0,1). */
    double k1 = (sqrt(2. / 10) + 2 / sqrt(34.) + sqrt(2. / 10) + 1 / sqrt(65.) +
                 1 / sqrt(13.)) / 5;
    assert_float_equal(NeuronBound_error(nb, 1), k1, 1e-6);
    assert_float_equal(NeuronBound_error(nb, 2), (1 / sqrt(10.)) / 5, 1e-6);
    assert_float_equal(NeuronBound_error(nb, 0), 1.0, 1e-12);
    assert_float_equal(NeuronBound_error(nb, 8), 0.0, 0);
    long K;
    /* E = 4, k = 1: K = round(8 / 4) = 2 */
    assert_float_equal(NeuronBound_errorAt(nb, 4, 1, &K), (1 / sqrt(10.)) / 5, 1e-6);
    assert_int_equal(K, 2);
    NeuronBound_delete(nb);
    NeuronBound_delete(NULL);
    assert_int_equal(NeuronBound_K(10, 4, 1), 3); /* 2.5 rounds up */
    assert_int_equal(NeuronBound_K(10, 4, 3), 8); /* 7.5 */
    assert_int_equal(NeuronBound_K(3072, 7, 1), 439);
    assert_int_equal(NeuronBound_K(3072, 32, 32), 3072);
}

static void test_cost(void **state) {
    (void)state;
    /* T5-base: dense 2*768*3072*2 = 9437184; similarity E = 32 (G = 96), k = 4:
       2*768*32 + 4 * 2*768*96*2 = 49152 + 1179648 */
    assert_float_equal(Cost_denseFlops(768, 3072, false), 9437184.0, 0);
    assert_float_equal(Cost_moeFlops(ROUTER_SIMILARITY, 768, 3072, 32, 4, false), 1228800.0, 0);
    assert_float_equal(Cost_flopsFraction(ROUTER_SIMILARITY, 768, 3072, 32, 4, false),
                       1228800.0 / 9437184.0, 1e-15);
    /* gated: P = 3 */
    assert_float_equal(Cost_denseFlops(768, 3072, true), 14155776.0, 0);
    assert_float_equal(Cost_moeFlops(ROUTER_SIGMOID, 768, 3072, 32, 4, true), 49152 + 1769472.0,
                       0);
    /* mlp router: 2*768*32 + 2*32*32 */
    assert_float_equal(Cost_routerFlops(ROUTER_MLP, 768, 32), 51200.0, 0);
    assert_float_equal(Cost_routerFlops(ROUTER_ORACLE, 768, 32), 0.0, 0);
    /* G real when E does not divide N: 10 / 3 */
    assert_float_equal(Cost_moeFlops(ROUTER_ORACLE, 4, 10, 3, 2, false), 2 * (2 * 4 * 10 / 3. * 2),
                       1e-9);
    assert_float_equal(Cost_idealSpeedup(ROUTER_ORACLE, 4, 10, 3, 3, false), 1.0, 1e-12);

    /* a gated hand layer: dense 2*2*8*3 = 96, similarity k = 1: 16 + 2*2*2*3 = 40 */
    FfnWeights w;
    LayerData L;
    handLayer(&w, &L);
    w.w_gate = (float *)KEYS;
    Router *r;
    assert_int_equal(Router_new(&r, ROUTER_SIMILARITY, &L, PART, 4, NULL, NULL, NULL), MS_OK);
    Eval *ev;
    assert_int_equal(Eval_new(&ev, &L, PART, 4, r, SPLIT_ALL, 1, NULL, NULL), MS_OK);
    EvalMetrics m;
    Eval_metrics(ev, 1, &m);
    assert_float_equal(m.flops_fraction, 40. / 96, 1e-12);
    Eval_delete(ev);
    Router_delete(r);
}

/* ---- random layers ---- */

static uint64_t rng = 0x853c49e6748fea9bull;
static double uniform(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static double gauss(void) {
    double u = uniform() + 1e-300, v = uniform();
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

typedef struct Rand {
    int d, N, E;
    long T;
    float *x, *h, *win, *wout;
    int32_t *part;
    FfnWeights w;
    LayerData L;
} Rand;

/* dense: h has no zeros (so no ties anywhere); else ReLU-like, zero below `cut` (0.25:
   ~60% zeros, which Eval treats as dense; 1.5: ~93%, sparse), plus a few all-zero
   tokens. The partition is a random balanced one (experts are not ranges). */
static void randInitCut(Rand *r, long T, long T_train, int d, int N, int E, bool dense,
                        double cut) {
    *r = (Rand){.d = d, .N = N, .E = E, .T = T};
    r->x = malloc(sizeof(float) * T * d);
    r->h = malloc(sizeof(float) * T * N);
    r->win = malloc(sizeof(float) * N * d);
    r->wout = malloc(sizeof(float) * N * d);
    r->part = malloc(sizeof(int32_t) * N);
    for (long i = 0; i < T * d; i++)
        r->x[i] = (float)gauss();
    for (long i = 0; i < (long)N * d; i++) {
        r->win[i] = (float)gauss();
        r->wout[i] = (float)gauss();
    }
    for (long t = 0; t < T; t++)
        for (int j = 0; j < N; j++) {
            double v = gauss();
            r->h[t * N + j] = dense ? (float)v : (t % 17 == 3 || v < cut) ? 0.0f : (float)v;
        }
    for (int j = 0; j < N; j++)
        r->part[j] = j % E;
    for (int j = N - 1; j > 0; j--) {
        int i = (int)(uniform() * (j + 1));
        int32_t tmp = r->part[i];
        r->part[i] = r->part[j];
        r->part[j] = tmp;
    }
    r->w = (FfnWeights){.d_model = d, .d_ff = N, .act = ACTIVATION_RELU, .w_in = r->win,
                        .w_out = r->wout};
    r->L = (LayerData){.w = &r->w, .T = T, .x = r->x, .h = r->h, .T_train = T_train};
}

static void randInit(Rand *r, long T, long T_train, int d, int N, int E, bool dense) {
    randInitCut(r, T, T_train, d, N, E, dense, 0.25);
}

static void randDone(Rand *r) {
    free(r->x);
    free(r->h);
    free(r->win);
    free(r->wout);
    free(r->part);
}

/* The SPEC definitions, token by token, with the output error from a masked h through
   Ffn_output (no incremental tricks). */
static void reference(const Rand *r, const Router *router, Split split, int k, EvalMetrics *m) {
    int E = r->E, N = r->N, d = r->d;
    long row0, row1;
    Split_rows(&r->L, split, &row0, &row1);
    float *S = malloc(sizeof(float) * E), *R = malloc(sizeof(float) * E);
    float *hm = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * d);
    float *yh = malloc(sizeof(float) * d);
    int *O = malloc(sizeof(int) * k), *Rk = malloc(sizeof(int) * k);
    double *load = calloc((size_t)E, sizeof(double));
    double rec = 0, ov = 0, err = 0;
    long nRec = 0, nErr = 0;
    for (long t = row0; t < row1; t++) {
        const float *h = r->h + t * N;
        double total = 0;
        for (int e = 0; e < E; e++) {
            double s = 0;
            for (int j = 0; j < N; j++)
                if (r->part[j] == e)
                    s += fabs(h[j]);
            S[e] = (float)s;
            total += S[e];
        }
        if (router && Router_kind(router) != ROUTER_ORACLE)
            Router_score(router, r->x + t * d, h, 1, R);
        else
            memcpy(R, S, sizeof(float) * E);
        TopK_select(S, E, k, O);
        TopK_select(R, E, k, Rk);
        double got = 0;
        int common = 0;
        for (int i = 0; i < k; i++) {
            got += S[Rk[i]];
            load[Rk[i]] += 1;
            for (int l = 0; l < k; l++)
                common += O[l] == Rk[i];
        }
        if (total > 0) {
            rec += got / total;
            nRec++;
        }
        ov += (double)common / k;
        for (int j = 0; j < N; j++) {
            float g = 0;
            for (int i = 0; i < k; i++)
                if (r->part[j] == Rk[i])
                    g = router ? Router_gate(router, R[Rk[i]]) : 1.0f;
            hm[j] = h[j] * g;
        }
        Ffn_output(&r->w, h, 1, false, y);
        Ffn_output(&r->w, hm, 1, false, yh);
        double ny = 0, nd = 0;
        for (int i = 0; i < d; i++) {
            ny += (double)y[i] * y[i];
            nd += ((double)y[i] - yh[i]) * ((double)y[i] - yh[i]);
        }
        if (ny > 0) {
            err += sqrt(nd / ny);
            nErr++;
        }
    }
    long T = row1 - row0;
    double mx = 0, ent = 0;
    for (int e = 0; e < E; e++) {
        load[e] /= T;
        mx = fmax(mx, load[e]);
        if (load[e] > 0)
            ent -= load[e] / k * log(load[e] / k);
    }
    *m = (EvalMetrics){.mass_recall = rec / nRec, .overlap = ov / T, .output_rel_err = err / nErr,
                       .load_max_over_mean = mx * E / k,
                       .load_entropy_norm = E > 1 ? ent / log(E) : 1.0};
    free(S);
    free(R);
    free(hm);
    free(y);
    free(yh);
    free(O);
    free(Rk);
    free(load);
}

static Router *makeRouter(const Rand *r, RouterKind kind, const int32_t *part) {
    RouterOptions o;
    RouterOptions_default(&o);
    o.epochs = 3;
    o.batch = 16;
    Router *router;
    assert_int_equal(Router_new(&router, kind, &r->L, part, r->E, &o, NULL, NULL), MS_OK);
    return router;
}

static const RouterKind KINDS[4] = {ROUTER_ORACLE, ROUTER_SIMILARITY, ROUTER_SIGMOID, ROUTER_MLP};

/* cut 0.25: chunks dense enough for the matrix-product path; 1.5: the sparse path */
static void checkAgainstReference(double cut) {
    Rand r;
    randInitCut(&r, 90, 60, 6, 24, 6, false, cut);
    for (int ki = 0; ki < 4; ki++) {
        Router *router = makeRouter(&r, KINDS[ki], r.part);
        for (Split split = SPLIT_ALL; split <= SPLIT_TEST; split++) {
            Eval *ev;
            assert_int_equal(Eval_new(&ev, &r.L, r.part, r.E, router, split, 2, NULL, NULL),
                             MS_OK);
            for (int k = 1; k <= r.E; k++) {
                EvalMetrics got, want;
                Eval_metrics(ev, k, &got);
                reference(&r, router, split, k, &want);
                assert_float_equal(got.mass_recall, want.mass_recall, 1e-9);
                assert_float_equal(got.overlap, want.overlap, 1e-12);
                assert_float_equal(got.output_rel_err, want.output_rel_err, 2e-5);
                assert_float_equal(got.load_max_over_mean, want.load_max_over_mean, 1e-12);
                assert_float_equal(got.load_entropy_norm, want.load_entropy_norm, 1e-12);
            }
            Eval_delete(ev);
        }
        Router_delete(router);
    }
    randDone(&r);
}

static void test_against_reference(void **state) {
    (void)state;
    checkAgainstReference(0.25);
    checkAgainstReference(1.5);
}

static void test_identities(void **state) {
    (void)state;
    Rand r;
    randInit(&r, 120, 80, 5, 30, 5, false);
    EvalMetrics oracle[5], m, prev;
    for (int ki = 0; ki < 4; ki++) {
        Router *router = makeRouter(&r, KINDS[ki], r.part);
        Eval *ev, *ev1;
        assert_int_equal(Eval_new(&ev, &r.L, r.part, 5, router, SPLIT_TEST, 2, NULL, NULL),
                         MS_OK);
        assert_int_equal(Eval_new(&ev1, &r.L, r.part, 5, router, SPLIT_TEST, 1, NULL, NULL),
                         MS_OK);
        for (int k = 1; k <= 5; k++) {
            Eval_metrics(ev, k, &m);
            EvalMetrics m1;
            Eval_metrics(ev1, k, &m1);
            assert_memory_equal(&m, &m1, sizeof m); /* thread count changes nothing */
            if (ki == 0)
                oracle[k - 1] = m;
            assert_true(m.mass_recall <= oracle[k - 1].mass_recall + 1e-12);
            if (k > 1)
                assert_true(m.mass_recall >= prev.mass_recall - 1e-12);
            prev = m;
        }
        Eval_metrics(ev, 5, &m);
        assert_float_equal(m.mass_recall, 1.0, 1e-12);
        assert_float_equal(m.load_max_over_mean, 1.0, 1e-12);
        if (KINDS[ki] == ROUTER_SIGMOID)
            assert_true(m.output_rel_err > 0.0); /* gates scale the outputs */
        else
            assert_float_equal(m.output_rel_err, 0.0, 0);
        Eval_delete(ev);
        Eval_delete(ev1);
        Router_delete(router);
    }

    /* E = 1: one expert holds everything */
    int32_t *one = calloc((size_t)r.N, sizeof(int32_t));
    for (int ki = 0; ki < 4; ki++) {
        Router *router;
        assert_int_equal(Router_new(&router, KINDS[ki], &r.L, one, 1, NULL, NULL, NULL), MS_OK);
        Eval *ev;
        assert_int_equal(Eval_new(&ev, &r.L, one, 1, router, SPLIT_ALL, 2, NULL, NULL), MS_OK);
        Eval_metrics(ev, 1, &m);
        assert_float_equal(m.mass_recall, 1.0, 1e-12);
        assert_float_equal(m.overlap, 1.0, 0);
        assert_float_equal(m.load_max_over_mean, 1.0, 0);
        assert_float_equal(m.load_entropy_norm, 1.0, 0);
        if (KINDS[ki] != ROUTER_SIGMOID)
            assert_float_equal(m.output_rel_err, 0.0, 0);
        Eval_delete(ev);
        Router_delete(router);
    }
    free(one);
    randDone(&r);
}

static void test_relabel(void **state) {
    (void)state;
    Rand r;
    randInit(&r, 70, 40, 6, 28, 7, true);
    const int pi[7] = {3, 6, 0, 5, 1, 2, 4};
    int32_t *moved = malloc(sizeof(int32_t) * r.N);
    for (int j = 0; j < r.N; j++)
        moved[j] = pi[r.part[j]];
    for (int ki = 0; ki < 3; ki++) {
        Router *a = makeRouter(&r, KINDS[ki], r.part), *b = makeRouter(&r, KINDS[ki], moved);
        Eval *ea, *eb;
        assert_int_equal(Eval_new(&ea, &r.L, r.part, 7, a, SPLIT_ALL, 2, NULL, NULL), MS_OK);
        assert_int_equal(Eval_new(&eb, &r.L, moved, 7, b, SPLIT_ALL, 2, NULL, NULL), MS_OK);
        for (int k = 1; k <= 7; k++) {
            EvalMetrics ma, mb;
            Eval_metrics(ea, k, &ma);
            Eval_metrics(eb, k, &mb);
            assert_float_equal(ma.mass_recall, mb.mass_recall, 1e-9);
            assert_float_equal(ma.overlap, mb.overlap, 1e-12);
            assert_float_equal(ma.output_rel_err, mb.output_rel_err, 1e-6);
            assert_float_equal(ma.load_max_over_mean, mb.load_max_over_mean, 1e-12);
            assert_float_equal(ma.load_entropy_norm, mb.load_entropy_norm, 1e-12);
            double la[7], lb[7];
            Eval_loads(ea, k, la);
            Eval_loads(eb, k, lb);
            for (int e = 0; e < 7; e++)
                assert_float_equal(la[e], lb[pi[e]], 1e-12);
        }
        Eval_delete(ea);
        Eval_delete(eb);
        Router_delete(a);
        Router_delete(b);
    }
    free(moved);
    randDone(&r);
}

/* The top-K bound against masking h to its K best neurons and running Ffn_output. */
static void test_topk_reference(void **state) {
    (void)state;
    Rand r;
    randInit(&r, 40, 20, 5, 18, 3, false);
    NeuronBound *nb, *nb1;
    assert_int_equal(NeuronBound_new(&nb, &r.L, SPLIT_TEST, 2, NULL, NULL), MS_OK);
    assert_int_equal(NeuronBound_new(&nb1, &r.L, SPLIT_TEST, 1, NULL, NULL), MS_OK);
    float cn[18], score[18], hm[18], y[5], yh[5];
    int ord[18];
    for (int j = 0; j < 18; j++) {
        double s = 0;
        for (int i = 0; i < 5; i++)
            s += (double)r.wout[i * 18 + j] * r.wout[i * 18 + j];
        cn[j] = (float)sqrt(s);
    }
    for (long K = 0; K <= 18; K++) {
        double err = 0;
        long n = 0;
        for (long t = 20; t < 40; t++) {
            const float *h = r.h + t * 18;
            for (int j = 0; j < 18; j++)
                score[j] = fabsf(h[j]) * cn[j];
            TopK_order(score, 18, ord);
            memset(hm, 0, sizeof hm);
            for (long i = 0; i < K; i++)
                hm[ord[i]] = h[ord[i]];
            Ffn_output(&r.w, h, 1, false, y);
            Ffn_output(&r.w, hm, 1, false, yh);
            double ny = 0, nd = 0;
            for (int i = 0; i < 5; i++) {
                ny += (double)y[i] * y[i];
                nd += ((double)y[i] - yh[i]) * ((double)y[i] - yh[i]);
            }
            if (ny > 0) {
                err += sqrt(nd / ny);
                n++;
            }
        }
        assert_float_equal(NeuronBound_error(nb, K), err / n, 2e-5);
        assert_true(NeuronBound_error(nb, K) == NeuronBound_error(nb1, K));
    }
    assert_float_equal(NeuronBound_error(nb, 18), 0.0, 0);
    NeuronBound_delete(nb);
    NeuronBound_delete(nb1);
    randDone(&r);
}

/* Evaluating routers together shares the per-token pass but gives the same numbers. */
static void checkSetMatchesSingle(double cut) {
    Rand r;
    randInitCut(&r, 80, 40, 6, 24, 4, false, cut);
    const Router *routers[4] = {NULL};
    for (int q = 1; q < 4; q++)
        routers[q] = makeRouter(&r, KINDS[q], r.part);
    Eval *set[4];
    assert_int_equal(Eval_newSet(set, &r.L, r.part, 4, routers, 4, SPLIT_TEST, 2, NULL, NULL),
                     MS_OK);
    for (int q = 0; q < 4; q++) {
        Eval *one;
        assert_int_equal(Eval_new(&one, &r.L, r.part, 4, routers[q], SPLIT_TEST, 1, NULL, NULL),
                         MS_OK);
        assert_int_equal(Eval_routerKind(set[q]), KINDS[q]);
        for (int k = 1; k <= 4; k++) {
            EvalMetrics a, b;
            Eval_metrics(set[q], k, &a);
            Eval_metrics(one, k, &b);
            assert_true(a.mass_recall == b.mass_recall);
            assert_true(a.overlap == b.overlap);
            assert_float_equal(a.output_rel_err, b.output_rel_err, 1e-6);
            assert_true(a.load_max_over_mean == b.load_max_over_mean);
            assert_true(a.flops_fraction == b.flops_fraction);
        }
        Eval_delete(one);
        Eval_delete(set[q]);
    }
    for (int q = 1; q < 4; q++)
        Router_delete((Router *)routers[q]);
    randDone(&r);
}

static void test_set_matches_single(void **state) {
    (void)state;
    checkSetMatchesSingle(0.25);
    checkSetMatchesSingle(1.5);
}

static void test_errors_and_cancel(void **state) {
    (void)state;
    FfnWeights w;
    LayerData L;
    handLayer(&w, &L);
    Eval *ev = (Eval *)1;
    char *cause = NULL;
    L.T_train = 6; /* test split empty */
    assert_int_equal(Eval_new(&ev, &L, PART, 4, NULL, SPLIT_TEST, 2, NULL, &cause), MS_ERR_RANGE);
    assert_null(ev);
    assert_non_null(strstr(cause, "test"));
    free(cause);
    cause = NULL;
    NeuronBound *nb = (NeuronBound *)1;
    assert_int_equal(NeuronBound_new(&nb, &L, SPLIT_TEST, 2, NULL, &cause), MS_ERR_RANGE);
    assert_null(nb);
    free(cause);
    cause = NULL;

    Router *r;
    assert_int_equal(Router_new(&r, ROUTER_SIMILARITY, &L, PART, 4, NULL, NULL, NULL), MS_OK);
    const int32_t two[8] = {0, 0, 0, 0, 1, 1, 1, 1};
    assert_int_equal(Eval_new(&ev, &L, two, 2, r, SPLIT_ALL, 2, NULL, &cause), MS_ERR_RANGE);
    free(cause);
    cause = NULL;

    atomic_uint gen = 5;
    Cancel c = {.generation = &gen, .mine = 4};
    assert_int_equal(Eval_new(&ev, &L, PART, 4, r, SPLIT_ALL, 2, &c, &cause), MS_ERR_CANCELED);
    assert_null(ev);
    free(cause);
    cause = NULL;
    assert_int_equal(NeuronBound_new(&nb, &L, SPLIT_ALL, 2, &c, &cause), MS_ERR_CANCELED);
    free(cause);
    Router_delete(r);
    Eval_delete(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_oracle),
        cmocka_unit_test(test_hand_similarity),
        cmocka_unit_test(test_hand_topk_neurons),
        cmocka_unit_test(test_cost),
        cmocka_unit_test(test_against_reference),
        cmocka_unit_test(test_identities),
        cmocka_unit_test(test_relabel),
        cmocka_unit_test(test_topk_reference),
        cmocka_unit_test(test_set_matches_single),
        cmocka_unit_test(test_errors_and_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
