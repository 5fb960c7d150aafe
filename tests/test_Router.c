/*
moescope - tests/test_Router.c
Routers: names, centers and scores on a hand-worked case, the mlp router's Adam step
against a hand computation in double, its determinism (seed, thread count), its loss
curve and its recall gain on a planted problem, and the error paths.
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/Eval.h"
#include "core/Router.h"
#include "core/TopK.h"
#include "core/Vec.h"

/* Hand case: d_model 2, 8 neurons, 4 experts {0,1} {2,3} {4,5} {6,7}.
   Key rows normalize to (1,0) (1,0) | (0,1) (0,1) | (-1,0) (0,-1) | (-1,0) (-1,0), so the
   centers are c0 = (1,0), c1 = (0,1), c2 = (-0.5,-0.5), c3 = (-1,0). */
static const float KEYS[8 * 2] = {1, 0, 3, 0, 0, 2, 0, 1, -3, 0, 0, -1, -1, 0, -2, 0};
static const int32_t PART[8] = {0, 0, 1, 1, 2, 2, 3, 3};
static const float X[6 * 2] = {3, 4, 0, 5, -1, 0, 1, 1, 0, -2, 4, 3};
static const float H[6 * 8] = {
    2, 0, 0, 1, 0, 0, 0, 0,  0, 0, 3, 0, 0, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 2,
    0, 0, 0, 0, 0, 0, 0, 0,  0, 0, 0, 0, 4, 0, 0, -1, 1, 0, 2, 0, 0, 0, 0, 0,
};
static float WOUT[2 * 8] = {1, 0, 1, 1, 2, 0, 1, 0, 0, 1, 1, -1, 0, 2, 0, 1};

static FfnWeights handWeights(void) {
    return (FfnWeights){.d_model = 2, .d_ff = 8, .act = ACTIVATION_RELU,
                        .w_in = (float *)KEYS, .w_out = WOUT};
}

static void test_names(void **state) {
    (void)state;
    const char *names[] = {"oracle", "similarity", "mlp", "sigmoid", "topk_neurons"};
    for (int i = 0; i < ROUTER_KINDS; i++) {
        RouterKind k;
        assert_true(RouterKind_parse(names[i], &k));
        assert_int_equal(k, i);
        assert_string_equal(RouterKind_name(k), names[i]);
    }
    RouterKind k;
    assert_false(RouterKind_parse("Oracle", &k));
    assert_false(RouterKind_parse(NULL, &k));
}

static void test_hand_scores(void **state) {
    (void)state;
    FfnWeights w = handWeights();
    LayerData L = {.w = &w, .T = 6, .x = X, .h = H, .T_train = 6};
    const float wantC[8] = {1, 0, 0, 1, -0.5f, -0.5f, -1, 0};

    Router *sim, *sig, *orc;
    assert_int_equal(Router_new(&sim, ROUTER_SIMILARITY, &L, PART, 4, NULL, NULL, NULL), MS_OK);
    assert_int_equal(Router_new(&sig, ROUTER_SIGMOID, &L, PART, 4, NULL, NULL, NULL), MS_OK);
    assert_int_equal(Router_new(&orc, ROUTER_ORACLE, &L, PART, 4, NULL, NULL, NULL), MS_OK);
    for (int i = 0; i < 8; i++)
        assert_float_equal(Router_centers(sim)[i], wantC[i], 1e-7);
    assert_null(Router_centers(orc));

    /* ||xhat - c||^2 = 1 + ||c||^2 - 2 xhat . c, ||c||^2 = 1, 1, 0.5, 1:
       t0 xhat (0.6, 0.8): 0.8, 0.4, 2.9, 3.2      t1 (0, 1): 2, 0, 2.5, 2
       t2 (-1, 0): 4, 2, 0.5, 0                    t3 (s, s), s = 1/sqrt2: 2-2s, 2-2s, 1.5+2s, 2+2s
       t4 (0, -1): 2, 4, 0.5, 2                    t5 (0.8, 0.6): 0.4, 0.8, 2.9, 3.6 */
    const double s = sqrt(0.5);
    const double d2[6][4] = {{0.8, 0.4, 2.9, 3.2}, {2, 0, 2.5, 2}, {4, 2, 0.5, 0},
                             {2 - 2 * s, 2 - 2 * s, 1.5 + 2 * s, 2 + 2 * s},
                             {2, 4, 0.5, 2}, {0.4, 0.8, 2.9, 3.6}};
    float sc[6 * 4], lg[6 * 4];
    Router_score(sim, X, NULL, 6, sc);
    for (int t = 0; t < 6; t++)
        for (int e = 0; e < 4; e++)
            assert_float_equal(sc[t * 4 + e], -sqrt(d2[t][e]), 1e-5);
    /* exact ties go to the lower expert: t1 ranks e1, e0, e3, e2 */
    int ord[4];
    TopK_order(sc + 4, 4, ord);
    assert_int_equal(ord[0], 1);
    assert_int_equal(ord[1], 0);
    assert_int_equal(ord[2], 3);

    /* sigmoid gate on raw x: t0 x = (3,4): x . c = 3, 4, -3.5, -3 */
    Router_score(sig, X, NULL, 6, sc);
    Router_logits(sig, X, NULL, 6, lg);
    const double z0[4] = {3, 4, -3.5, -3};
    for (int e = 0; e < 4; e++) {
        assert_float_equal(lg[e], z0[e], 1e-6);
        assert_float_equal(sc[e], 1.0 / (1.0 + exp(-z0[e])), 1e-6);
        assert_float_equal(Router_gate(sig, sc[e]), sc[e], 0);
        assert_float_equal(Router_gate(sim, sc[e]), 1.0, 0);
    }
    assert_true(Router_scalesOutput(sig));
    assert_false(Router_scalesOutput(sim));

    /* oracle: s[t,e] = sum |h| per expert; t4: 0, 0, 4, 1 (|-1|) */
    Router_score(orc, NULL, H, 6, sc);
    const float s4[4] = {0, 0, 4, 1}, s2[4] = {2, 0, 0, 2};
    for (int e = 0; e < 4; e++) {
        assert_float_equal(sc[4 * 4 + e], s4[e], 0);
        assert_float_equal(sc[2 * 4 + e], s2[e], 0);
    }
    Router_delete(sim);
    Router_delete(sig);
    Router_delete(orc);
    Router_delete(NULL);
}

static void test_errors(void **state) {
    (void)state;
    FfnWeights w = handWeights();
    LayerData L = {.w = &w, .T = 6, .x = X, .h = H, .T_train = 6};
    Router *r = (Router *)1;
    char *cause = NULL;
    assert_int_equal(Router_new(&r, ROUTER_TOPK_NEURONS, &L, PART, 4, NULL, NULL, &cause),
                     MS_ERR_RANGE);
    assert_null(r);
    free(cause);
    cause = NULL;
    const int32_t hole[8] = {0, 0, 1, 1, 3, 3, 3, 3}; /* expert 2 empty */
    assert_int_equal(Router_new(&r, ROUTER_SIMILARITY, &L, hole, 4, NULL, NULL, &cause),
                     MS_ERR_RANGE);
    assert_non_null(strstr(cause, "expert 2"));
    free(cause);
    cause = NULL;
    const int32_t out[8] = {0, 0, 1, 1, 2, 2, 3, 4};
    assert_int_equal(Router_new(&r, ROUTER_ORACLE, &L, out, 4, NULL, NULL, &cause),
                     MS_ERR_RANGE);
    free(cause);
    cause = NULL;
    assert_int_equal(Router_new(&r, ROUTER_ORACLE, &L, PART, 9, NULL, NULL, &cause),
                     MS_ERR_RANGE);
    free(cause);
    cause = NULL;
    LayerData noTrain = L;
    noTrain.T_train = 0;
    assert_int_equal(Router_new(&r, ROUTER_MLP, &noTrain, PART, 4, NULL, NULL, &cause),
                     MS_ERR_RANGE);
    free(cause);
}

/* ---- mlp ---- */

static double sigm(double z) {
    return 1.0 / (1.0 + exp(-z));
}

/* One full-batch Adam step by hand. d = 2, N = E = 2 (one neuron per expert), 3 tokens.
   W1 = centers = rows (1,0) and (0,1), W2 = I. Forward: A = tanh(xhat W1^T), Z = A W2^T.
   Targets y = s / max(s) with max over the minibatch = 3. Loss = mean BCE over 6 entries;
   dL/dZ = (sigmoid(Z) - y) / 6; dW2 = dZ^T A; dA = dZ W2; dZ1 = dA (1 - A^2);
   dW1 = dZ1^T xhat. Adam's first step: m = (1 - b1) g, v = (1 - b2) g^2, and
   p -= lr (m / (1 - b1)) / (sqrt(v / (1 - b2)) + eps). */
static void test_adam_step(void **state) {
    (void)state;
    static const float keys[4] = {2, 0, 0, 0.5f};
    static const float x[6] = {1, 1, 2, -1, 0, 3};
    static const float h[6] = {1, 0.5f, 0, 2, 3, 0};
    static float wout[4] = {1, 0, 0, 1};
    const int32_t part[2] = {0, 1};
    FfnWeights w = {.d_model = 2, .d_ff = 2, .w_in = (float *)keys, .w_out = wout};
    LayerData L = {.w = &w, .T = 3, .x = x, .h = h, .T_train = 3};
    RouterOptions o;
    RouterOptions_default(&o);
    o.epochs = 1;
    o.batch = 512;
    o.lr = 0.01;
    Router *r;
    assert_int_equal(Router_new(&r, ROUTER_MLP, &L, part, 2, &o, NULL, NULL), MS_OK);

    double W1[2][2] = {{1, 0}, {0, 1}}, W2[2][2] = {{1, 0}, {0, 1}};
    double gW1[2][2] = {{0}}, gW2[2][2] = {{0}}, loss = 0.0;
    for (int t = 0; t < 3; t++) {
        double n = hypot(x[2 * t], x[2 * t + 1]);
        double xh[2] = {x[2 * t] / n, x[2 * t + 1] / n}, A[2], Z[2], dZ[2], dA[2];
        for (int e = 0; e < 2; e++)
            A[e] = tanh(W1[e][0] * xh[0] + W1[e][1] * xh[1]);
        for (int e = 0; e < 2; e++) {
            Z[e] = W2[e][0] * A[0] + W2[e][1] * A[1];
            double y = fabs(h[2 * t + e]) / 3.0;
            loss += fmax(Z[e], 0) - Z[e] * y + log1p(exp(-fabs(Z[e])));
            dZ[e] = (sigm(Z[e]) - y) / 6.0;
        }
        for (int f = 0; f < 2; f++) {
            dA[f] = dZ[0] * W2[0][f] + dZ[1] * W2[1][f];
            for (int e = 0; e < 2; e++)
                gW2[e][f] += dZ[e] * A[f];
        }
        for (int e = 0; e < 2; e++)
            for (int c = 0; c < 2; c++)
                gW1[e][c] += dA[e] * (1 - A[e] * A[e]) * xh[c];
    }
    const double b1 = 0.9, b2 = 0.999, lr = 0.01, eps = 1e-8;
    const float *w1 = Router_mlpW1(r), *w2 = Router_mlpW2(r);
    for (int e = 0; e < 2; e++)
        for (int c = 0; c < 2; c++) {
            double m = (1 - b1) * gW1[e][c], v = (1 - b2) * gW1[e][c] * gW1[e][c];
            double want = W1[e][c] - lr * (m / (1 - b1)) / (sqrt(v / (1 - b2)) + eps);
            assert_float_equal(w1[e * 2 + c], want, 2e-6);
            m = (1 - b1) * gW2[e][c];
            v = (1 - b2) * gW2[e][c] * gW2[e][c];
            want = W2[e][c] - lr * (m / (1 - b1)) / (sqrt(v / (1 - b2)) + eps);
            assert_float_equal(w2[e * 2 + c], want, 2e-6);
        }
    const double *hist;
    assert_int_equal(Router_lossHistory(r, &hist), 1);
    assert_float_equal(hist[0], loss / 6.0, 1e-6);
    Router_delete(r);
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
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

/* Planted: expert g(t) of token t owns its mass, and x points along basis vector g(t);
   the key rows are random, so the centers (the mlp's initial W1) know nothing. */
typedef struct Planted {
    FfnWeights w;
    LayerData L;
    float *x, *h, *keys, *wout;
    int32_t part[16];
} Planted;

static void plantedInit(Planted *p, long T, long T_train) {
    const int d = 8, N = 16, E = 4;
    p->x = malloc(sizeof(float) * T * d);
    p->h = malloc(sizeof(float) * T * N);
    p->keys = malloc(sizeof(float) * N * d);
    p->wout = malloc(sizeof(float) * N * d);
    for (int j = 0; j < N; j++)
        p->part[j] = j % E;
    for (int i = 0; i < N * d; i++) {
        p->keys[i] = (float)gauss();
        p->wout[i] = (float)gauss();
    }
    for (long t = 0; t < T; t++) {
        int g = (int)(uniform() * E);
        for (int i = 0; i < d; i++)
            p->x[t * d + i] = (float)((i == g ? 2.0 : 0.0) + 0.5 * gauss());
        for (int j = 0; j < N; j++)
            p->h[t * N + j] = (float)(p->part[j] == g ? 1.0 + uniform() : 0.05 * uniform());
    }
    p->w = (FfnWeights){.d_model = d, .d_ff = N, .w_in = p->keys, .w_out = p->wout};
    p->L = (LayerData){.w = &p->w, .T = T, .x = p->x, .h = p->h, .T_train = T_train};
}

static void plantedDone(Planted *p) {
    free(p->x);
    free(p->h);
    free(p->keys);
    free(p->wout);
}

static double recallAt1(const Planted *p, const Router *r, Split split) {
    Eval *ev;
    assert_int_equal(Eval_new(&ev, &p->L, p->part, 4, r, split, 2, NULL, NULL), MS_OK);
    EvalMetrics m;
    Eval_metrics(ev, 1, &m);
    Eval_delete(ev);
    return m.mass_recall;
}

static void test_mlp_planted(void **state) {
    (void)state;
    Planted p;
    plantedInit(&p, 1200, 1000);
    RouterOptions o;
    RouterOptions_default(&o);
    o.batch = 64;
    Router *init, *trained;
    o.epochs = 0;
    assert_int_equal(Router_new(&init, ROUTER_MLP, &p.L, p.part, 4, &o, NULL, NULL), MS_OK);
    o.epochs = 30;
    atomic_uint gen = 7;
    atomic_int permille = 0;
    Cancel c = {.generation = &gen, .mine = 7, .permille = &permille};
    assert_int_equal(Router_new(&trained, ROUTER_MLP, &p.L, p.part, 4, &o, &c, NULL), MS_OK);
    assert_int_equal(atomic_load(&permille), 1000);

    const double *loss;
    int n = Router_lossHistory(trained, &loss);
    assert_int_equal(n, 30);
    assert_true(loss[n - 1] < loss[0]);
    assert_true(loss[n - 1] < loss[n / 2]);

    double r0 = recallAt1(&p, init, SPLIT_TRAIN), r1 = recallAt1(&p, trained, SPLIT_TRAIN);
    print_message("mlp planted recall@1 on train: initialized %.4f, trained %.4f\n", r0, r1);
    assert_true(r1 >= r0);
    assert_true(r1 > 0.9); /* the planted signal is strong: a trained router finds it */
    assert_true(recallAt1(&p, trained, SPLIT_TEST) > 0.9);

    /* Router_score is the forward pass with the trained weights */
    const float *W1 = Router_mlpW1(trained), *W2 = Router_mlpW2(trained);
    float sc[4 * 3];
    Router_score(trained, p.x, NULL, 3, sc);
    for (int t = 0; t < 3; t++) {
        double nn = 0, A[4];
        for (int i = 0; i < 8; i++)
            nn += (double)p.x[t * 8 + i] * p.x[t * 8 + i];
        for (int e = 0; e < 4; e++) {
            double z = 0;
            for (int i = 0; i < 8; i++)
                z += W1[e * 8 + i] * p.x[t * 8 + i] / sqrt(nn);
            A[e] = tanh(z);
        }
        for (int e = 0; e < 4; e++) {
            double z = 0;
            for (int f = 0; f < 4; f++)
                z += W2[e * 4 + f] * A[f];
            assert_float_equal(sc[t * 4 + e], z, 1e-4);
        }
    }
    Router_delete(init);
    Router_delete(trained);
    plantedDone(&p);
}

static void test_mlp_deterministic(void **state) {
    (void)state;
    Planted p;
    plantedInit(&p, 700, 650);
    RouterOptions o;
    RouterOptions_default(&o);
    o.epochs = 3;
    o.batch = 100; /* 650 = 6 x 100 + a partial batch of 50 */
    Router *a, *b, *c, *d;
    o.threads = 1;
    assert_int_equal(Router_new(&a, ROUTER_MLP, &p.L, p.part, 4, &o, NULL, NULL), MS_OK);
    assert_int_equal(Router_new(&b, ROUTER_MLP, &p.L, p.part, 4, &o, NULL, NULL), MS_OK);
    o.threads = 3;
    assert_int_equal(Router_new(&c, ROUTER_MLP, &p.L, p.part, 4, &o, NULL, NULL), MS_OK);
    o.seed = 2;
    assert_int_equal(Router_new(&d, ROUTER_MLP, &p.L, p.part, 4, &o, NULL, NULL), MS_OK);
    const Router *same[2] = {b, c}; /* same seed; c on three threads */
    for (int i = 0; i < 2; i++) {
        assert_memory_equal(Router_mlpW1(a), Router_mlpW1(same[i]), 4 * 8 * sizeof(float));
        assert_memory_equal(Router_mlpW2(a), Router_mlpW2(same[i]), 4 * 4 * sizeof(float));
        const double *la, *lr;
        Router_lossHistory(a, &la);
        Router_lossHistory(same[i], &lr);
        assert_memory_equal(la, lr, 3 * sizeof(double));
    }
    /* the seed drives the shuffling, so another seed gives other weights */
    assert_memory_not_equal(Router_mlpW1(a), Router_mlpW1(d), 4 * 8 * sizeof(float));
    float sa[700 * 4], sc[700 * 4];
    Router_score(a, p.x, NULL, 700, sa);
    Router_score(c, p.x, NULL, 700, sc);
    assert_memory_equal(sa, sc, sizeof sa);
    Router_delete(a);
    Router_delete(b);
    Router_delete(c);
    Router_delete(d);
    plantedDone(&p);
}

/* A random layer for the mlp's determinism tests: Gaussian x, h = max(0, Gaussian), one
   Gaussian matrix as both w_in and w_out, neurons dealt round-robin to E experts. */
typedef struct MlpLayer {
    float *x, *h, *keys;
    int32_t *part;
    FfnWeights w;
    LayerData L;
} MlpLayer;

static void mlpLayer(MlpLayer *m, int T, int d, int N, int E, long T_train) {
    m->x = malloc(sizeof(float) * (size_t)T * d);
    m->h = malloc(sizeof(float) * (size_t)T * N);
    m->keys = malloc(sizeof(float) * (size_t)N * d);
    m->part = malloc(sizeof(int32_t) * (size_t)N);
    for (long i = 0; i < (long)T * d; i++)
        m->x[i] = (float)gauss();
    for (long i = 0; i < (long)T * N; i++)
        m->h[i] = (float)fmax(0.0, gauss());
    for (long i = 0; i < (long)N * d; i++)
        m->keys[i] = (float)gauss();
    for (int j = 0; j < N; j++)
        m->part[j] = j % E;
    m->w = (FfnWeights){.d_model = d, .d_ff = N, .w_in = m->keys, .w_out = m->keys};
    m->L = (LayerData){.w = &m->w, .T = T, .x = m->x, .h = m->h, .T_train = T_train};
}

static void mlpLayerDone(MlpLayer *m) {
    free(m->x);
    free(m->h);
    free(m->keys);
    free(m->part);
}

static void assertSameMlp(const Router *a, const Router *b, int E, int d) {
    assert_memory_equal(Router_mlpW1(a), Router_mlpW1(b), sizeof(float) * E * d);
    assert_memory_equal(Router_mlpW2(a), Router_mlpW2(b), sizeof(float) * E * E);
}

/* OpenBLAS's own thread count must not change the weights either (shapes large enough
   for it to split the products). */
static void test_mlp_blas_threads(void **state) {
    (void)state;
    enum { d = 256, E = 32 };
    MlpLayer m;
    mlpLayer(&m, 530, d, 64, E, 512);
    RouterOptions o;
    RouterOptions_default(&o);
    o.epochs = 2;
    Router *a, *b;
    openblas_set_num_threads(1);
    assert_int_equal(Router_new(&a, ROUTER_MLP, &m.L, m.part, E, &o, NULL, NULL), MS_OK);
    openblas_set_num_threads(2);
    assert_int_equal(Router_new(&b, ROUTER_MLP, &m.L, m.part, E, &o, NULL, NULL), MS_OK);
    openblas_set_num_threads(1);
    assertSameMlp(a, b, E, d);
    Router_delete(a);
    Router_delete(b);
    mlpLayerDone(&m);
}

/* A W1 big enough (E * d > 64K) for the update to run as its own parallel phase, with
   ragged shapes (E not a multiple of 16, d not of 6, a partial last minibatch): still
   the same bits on 1 and 3 threads. */
static void test_mlp_threads_large(void **state) {
    (void)state;
    enum { d = 610, E = 120 };
    MlpLayer m;
    mlpLayer(&m, 700, d, 240, E, 650);
    RouterOptions o;
    RouterOptions_default(&o);
    o.epochs = 2;
    Router *a, *b;
    o.threads = 1;
    assert_int_equal(Router_new(&a, ROUTER_MLP, &m.L, m.part, E, &o, NULL, NULL), MS_OK);
    o.threads = 3;
    assert_int_equal(Router_new(&b, ROUTER_MLP, &m.L, m.part, E, &o, NULL, NULL), MS_OK);
    assertSameMlp(a, b, E, d);
    const double *la, *lb;
    assert_int_equal(Router_lossHistory(a, &la), 2);
    Router_lossHistory(b, &lb);
    assert_memory_equal(la, lb, 2 * sizeof(double));
    assert_true(la[1] < la[0]);
    Router_delete(a);
    Router_delete(b);
    mlpLayerDone(&m);
}

static void test_mlp_cancel(void **state) {
    (void)state;
    Planted p;
    plantedInit(&p, 300, 250);
    atomic_uint gen = 3;
    Cancel c = {.generation = &gen, .mine = 2};
    Router *r = (Router *)1;
    char *cause = NULL;
    assert_int_equal(Router_new(&r, ROUTER_MLP, &p.L, p.part, 4, NULL, &c, &cause),
                     MS_ERR_CANCELED);
    assert_null(r);
    assert_non_null(cause);
    free(cause);
    plantedDone(&p);
}

/* Three partitions of a layer's N neurons into E experts: round-robin, strided, and a
   seeded shuffle of the round-robin one (every expert non-empty in all three). */
static void threeParts(int32_t *parts[3], int N, int E) {
    for (int p = 0; p < 3; p++)
        parts[p] = malloc(sizeof(int32_t) * (size_t)N);
    for (int j = 0; j < N; j++) {
        parts[0][j] = j % E;
        parts[1][j] = (j / 3) % E; /* needs N >= 3 E */
        parts[2][j] = j % E;
    }
    for (int j = N - 1; j > 0; j--) {
        int k = (int)(uniform() * (j + 1)), t = parts[2][j];
        parts[2][j] = parts[2][k];
        parts[2][k] = t;
    }
}

static void assertSameLoss(const Router *a, const Router *b) {
    const double *la, *lb;
    int n = Router_lossHistory(a, &la);
    assert_int_equal(Router_lossHistory(b, &lb), n);
    assert_memory_equal(la, lb, sizeof(double) * (size_t)n);
}

/* Router_newMlpSet's fused training against separate Router_new trainings, bitwise, for
   1..3 partitions on 1, 2 and 3 threads: on a ragged layer (E not dividing N, so the nets
   meet inside the product's 16-column panels; d not a multiple of the update's column
   blocks; minibatches of two row chunks and a short last one) and on a regular one. */
static void checkMlpSet(int T, int d, int N, int E, long T_train, int batch) {
    MlpLayer m;
    mlpLayer(&m, T, d, N, E, T_train);
    int32_t *parts[3];
    threeParts(parts, N, E);
    RouterOptions o;
    RouterOptions_default(&o);
    o.epochs = 2;
    o.batch = batch;
    o.threads = 1;
    Router *sep[3];
    for (int p = 0; p < 3; p++)
        assert_int_equal(Router_new(&sep[p], ROUTER_MLP, &m.L, parts[p], E, &o, NULL, NULL),
                         MS_OK);
    for (int threads = 1; threads <= 3; threads++)
        for (int n = 1; n <= 3; n++) {
            Router *set[3];
            o.threads = threads;
            assert_int_equal(Router_newMlpSet(set, &m.L, (const int32_t *const *)parts, n, E, &o,
                                              NULL, NULL),
                             MS_OK);
            for (int p = 0; p < n; p++) {
                assert_int_equal(Router_kind(set[p]), ROUTER_MLP);
                assertSameMlp(sep[p], set[p], E, d);
                assertSameLoss(sep[p], set[p]);
                Router_delete(set[p]);
            }
        }
    /* the three partitions train different routers: the comparison above is not vacuous */
    assert_memory_not_equal(Router_mlpW1(sep[0]), Router_mlpW1(sep[1]), sizeof(float) * E * d);
    assert_memory_not_equal(Router_mlpW1(sep[0]), Router_mlpW1(sep[2]), sizeof(float) * E * d);
    for (int p = 0; p < 3; p++) {
        Router_delete(sep[p]);
        free(parts[p]);
    }
    mlpLayerDone(&m);
}

static void test_mlp_set(void **state) {
    (void)state;
    checkMlpSet(700, 40, 90, 7, 650, 300); /* batches 300 (256 + 44), 300, 50 */
    checkMlpSet(600, 70, 96, 16, 560, 128); /* batches of 128, the last 48 */
}

/* Bumps the generation once the training has reported some progress (so the cancel
   lands inside the minibatch loop, after the targets are made). */
typedef struct Canceller {
    atomic_uint gen;
    atomic_int permille;
    atomic_bool stop;
} Canceller;

static void *cancelLater(void *arg) {
    Canceller *c = arg;
    while (!atomic_load(&c->stop) && atomic_load(&c->permille) < 100)
        sched_yield();
    atomic_fetch_add(&c->gen, 1);
    return NULL;
}

static void test_mlp_set_errors(void **state) {
    (void)state;
    enum { d = 24, N = 60, E = 6 };
    MlpLayer m;
    mlpLayer(&m, 400, d, N, E, 380);
    int32_t *parts[3];
    threeParts(parts, N, E);
    Router *set[3] = {(Router *)1, (Router *)1, (Router *)1};
    char *cause = NULL;
    RouterOptions o;
    RouterOptions_default(&o);
    o.batch = 0;
    assert_int_equal(Router_newMlpSet(set, &m.L, (const int32_t *const *)parts, 3, E, &o, NULL,
                                      &cause),
                     MS_ERR_RANGE);
    assert_non_null(strstr(cause, "batch"));
    assert_null(set[0]);
    assert_null(set[2]);
    assert_int_equal(Router_newMlpSet(set, &m.L, (const int32_t *const *)parts, 0, E, NULL, NULL,
                                      &cause),
                     MS_ERR_RANGE);
    parts[1][5] = E; /* outside 0..E-1 */
    assert_int_equal(Router_newMlpSet(set, &m.L, (const int32_t *const *)parts, 3, E, NULL, NULL,
                                      &cause),
                     MS_ERR_RANGE);
    assert_non_null(strstr(cause, "partition 1"));
    parts[1][5] = 5 % E;
    /* canceled before it starts, then in the middle of the minibatches */
    Canceller c = {.gen = 3};
    Cancel cancel = {.generation = &c.gen, .mine = 2, .permille = &c.permille};
    assert_int_equal(Router_newMlpSet(set, &m.L, (const int32_t *const *)parts, 3, E, NULL,
                                      &cancel, &cause),
                     MS_ERR_CANCELED);
    assert_null(set[1]);
    cancel.mine = 3;
    o.batch = 16;
    o.epochs = 50;
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, cancelLater, &c), 0);
    MsStatus st = Router_newMlpSet(set, &m.L, (const int32_t *const *)parts, 3, E, &o, &cancel,
                                   &cause);
    atomic_store(&c.stop, true);
    pthread_join(tid, NULL);
    assert_int_equal(st, MS_ERR_CANCELED);
    assert_true(atomic_load(&c.permille) >= 100 && atomic_load(&c.permille) < 1000);
    assert_null(set[0]);
    assert_null(set[2]);
    assert_non_null(strstr(cause, "canceled"));
    free(cause);
    for (int p = 0; p < 3; p++)
        free(parts[p]);
    mlpLayerDone(&m);
}

/* Vec_gemmStrided against a plain triple loop in double (the panel products, with A read
   in place or gathered through row pointers, and laying those rows out on the way, against
   it, bitwise), on shapes that are not multiples of the 6 x 16 tiles
   (every edge height 1..5) or the 256-step k blocks, K = 1 and K = 0, and row strides
   longer than K. Splitting k and accumulating must not change a bit,
   and neither may the position of a block inside C. */
static void checkStrided(int M, int N, int K) {
    const int lda = K + 3, ldb = N + 5, ldc = N + 2;
    float *A = malloc(sizeof(float) * (size_t)(M * lda + 1));
    float *At = malloc(sizeof(float) * (size_t)(K * (M + 4) + 1));
    float *B = malloc(sizeof(float) * (size_t)(K * ldb + 1));
    float *C = malloc(sizeof(float) * (size_t)(M * ldc));
    float *C2 = malloc(sizeof(float) * (size_t)(M * ldc));
    const float **rows = malloc(sizeof(float *) * (size_t)(M > K ? M : K) + 1);
    for (int i = 0; i < M * lda; i++)
        A[i] = (float)gauss();
    for (int i = 0; i < K * ldb; i++)
        B[i] = (float)gauss();
    /* At holds A transposed, [K][M + 4], from column 2 on */
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++)
            At[k * (M + 4) + 2 + i] = A[i * lda + k];
    for (int i = 0; i < M * ldc; i++)
        C[i] = NAN; /* every element must be written */
    Vec_gemmStrided(M, N, K, A, lda, 1, B, ldb, C, ldc, false);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double ref = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                ref += (double)A[i * lda + k] * B[k * ldb + j];
                mag += fabs((double)A[i * lda + k] * B[k * ldb + j]);
            }
            assert_float_equal(C[i * ldc + j], ref, 1e-6 * (mag + 1));
        }
    /* the same product as the transpose through the strided form: bitwise equal */
    Vec_gemmStrided(M, N, K, At + 2, 1, M + 4, B, ldb, C2, ldc, false);
    for (int i = 0; i < M; i++)
        assert_memory_equal(C + i * ldc, C2 + i * ldc, sizeof(float) * (size_t)N);
    /* k split in two runs (accumulate), rows one at a time, columns shifted: same bits */
    Vec_gemmStrided(M, N, K, A, lda, 1, B, ldb, C, ldc, false);
    int k1 = K / 3;
    Vec_gemmStrided(M, N, k1, A, lda, 1, B, ldb, C2, ldc, false);
    Vec_gemmStrided(M, N, K - k1, A + k1, lda, 1, B + k1 * ldb, ldb, C2, ldc, true);
    for (int i = 0; i < M; i++)
        assert_memory_equal(C + i * ldc, C2 + i * ldc, sizeof(float) * (size_t)N);
    for (int i = 0; i < M; i++)
        for (int j0 = 0; j0 < N; j0 += 5) {
            int nj = N - j0 < 5 ? N - j0 : 5;
            Vec_gemmStrided(1, nj, K, A + i * lda, lda, 1, B + j0, ldb, C2 + i * ldc + j0, ldc,
                            false);
        }
    for (int i = 0; i < M; i++)
        assert_memory_equal(C + i * ldc, C2 + i * ldc, sizeof(float) * (size_t)N);
    /* B^T, and B's rows in reverse through row pointers, for the panels below */
    float *Bt = malloc(sizeof(float) * (size_t)(N * (K + 2) + 1));
    float *Br = malloc(sizeof(float) * (size_t)(K * ldb + 2));
    for (int k = 0; k < K; k++)
        for (int j = 0; j < N; j++) {
            Bt[j * (K + 2) + k] = B[k * ldb + j];
            Br[(K - 1 - k) * ldb + 1 + j] = B[k * ldb + j];
        }
    /* B in panels, put in two runs of rows from row pointers or from B^T: the same bits,
       also for the columns from 16 on through the panels' offset */
    float *P = malloc(sizeof(float) * (size_t)Vec_panelsSize(K, N));
    for (int way = 0; way < 2; way++) {
        int kh = K / 2;
        if (way == 0) {
            for (int k = 0; k < K; k++)
                rows[k] = Br + (K - 1 - k) * ldb;
            Vec_panelsPutRows(K, N, kh, K - kh, rows + kh, 1, P);
            Vec_panelsPutRows(K, N, 0, kh, rows, 1, P);
        } else {
            Vec_panelsPutRowsT(K, N, 0, kh, Bt, K + 2, P);
            Vec_panelsPutRowsT(K, N, kh, K - kh, Bt + kh, K + 2, P);
        }
        for (int i = 0; i < M * ldc; i++)
            C2[i] = NAN;
        if (way == 0) {
            Vec_gemmPanels(M, N, K, At + 2, 1, M + 4, P, C2, ldc, false);
        } else {
            for (int i = 0; i < M; i++)
                rows[i] = A + i * lda;
            Vec_gemmGatherPanels(M, N, K, rows, P, C2, ldc, false);
            /* the same while laying A's rows out (from step 2 of M + 3): same product, and
               the panels Vec_panelsPutRows makes */
            float *C3 = malloc(sizeof(float) * (size_t)(M * ldc));
            long len = Vec_panelsSize(M + 3, K);
            float *Q = calloc((size_t)len, sizeof(float)), *Q2 = calloc((size_t)len, sizeof(float));
            Vec_gemmGatherPanelsPut(M, N, K, rows, P, C3, ldc, false, M + 3, 2, Q);
            Vec_panelsPutRows(M + 3, K, 2, M, rows, 0, Q2);
            for (int i = 0; i < M; i++)
                assert_memory_equal(C2 + i * ldc, C3 + i * ldc, sizeof(float) * (size_t)N);
            assert_memory_equal(Q, Q2, sizeof(float) * (size_t)len);
            free(C3);
            free(Q);
            free(Q2);
        }
        for (int i = 0; i < M; i++)
            assert_memory_equal(C + i * ldc, C2 + i * ldc, sizeof(float) * (size_t)N);
        if (N > 16) {
            Vec_gemmPanels(M, N - 16, K, A, lda, 1, P + 16 * K, C2, ldc, false);
            for (int i = 0; i < M; i++)
                assert_memory_equal(C + i * ldc + 16, C2 + i * ldc, sizeof(float) * (N - 16));
        }
    }
    free(P);
    free(Bt);
    free(Br);
    free(A);
    free(At);
    free(B);
    free(C);
    free(C2);
    free(rows);
}

/* Vec_transpose against a plain loop, on shapes around its 8 x 8 blocks, with leading
   dimensions longer than the rows; the padding around T must stay untouched. */
static void checkTranspose(int rows, int cols) {
    const long lda = cols + 3, ldt = rows + 5;
    float *A = malloc(sizeof(float) * (size_t)(rows * lda + 1));
    float *T = malloc(sizeof(float) * (size_t)(cols * ldt + 1));
    for (long i = 0; i < rows * lda; i++)
        A[i] = (float)gauss();
    for (long i = 0; i < cols * ldt; i++)
        T[i] = -1.0f;
    Vec_transpose(rows, cols, A, lda, T, ldt);
    for (int j = 0; j < cols; j++)
        for (long i = 0; i < ldt; i++)
            assert_true(T[j * ldt + i] == (i < rows ? A[i * lda + j] : -1.0f));
    free(A);
    free(T);
}

static void test_vec_strided(void **state) {
    (void)state;
    static const int tshapes[][2] = {{1, 1}, {8, 8}, {3, 17}, {16, 24}, {13, 21}, {29, 8}};
    for (size_t s = 0; s < sizeof tshapes / sizeof tshapes[0]; s++)
        checkTranspose(tshapes[s][0], tshapes[s][1]);
    static const int shapes[][3] = {{1, 1, 1}, {7, 5, 21}, {13, 35, 1}, {6, 16, 300},
                                    {25, 17, 129}, {5, 48, 257}, {12, 3, 0}, {40, 33, 64},
                                    {8, 20, 30}, {9, 16, 270}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        checkStrided(shapes[s][0], shapes[s][1], shapes[s][2]);
    /* Adam on three partial gradients = Adam on their sum (added in the same order) */
    enum { NP = 21, STRIDE = 24 };
    float g[3 * STRIDE], gs[NP], p1[NP], p2[NP], m1[NP], m2[NP], v1[NP], v2[NP];
    for (int i = 0; i < 3 * STRIDE; i++)
        g[i] = (float)gauss();
    for (int i = 0; i < NP; i++) {
        gs[i] = g[i] + g[STRIDE + i] + g[2 * STRIDE + i];
        p1[i] = p2[i] = (float)gauss();
        m1[i] = m2[i] = 0.1f * (float)gauss();
        v1[i] = v2[i] = 0.01f * (float)(i + 1);
    }
    Vec_adam(NP, p1, gs, m1, v1, 0.9f, 0.999f, 0.05f, 3.0f, 1e-8f);
    Vec_adamSum(NP, 3, STRIDE, p2, g, m2, v2, 0.9f, 0.999f, 0.05f, 3.0f, 1e-8f);
    assert_memory_equal(p1, p2, sizeof p1);
    assert_memory_equal(m1, m2, sizeof m1);
    assert_memory_equal(v1, v2, sizeof v1);
}

/* The polynomial kernels against libm in double over their working ranges. */
static void test_vec_math(void **state) {
    (void)state;
    enum { N = 4001 };
    static float z[N], t[N], loss[N], grad[N], v[N];
    for (int i = 0; i < N; i++) {
        z[i] = -40.0f + 80.0f * i / (N - 1);
        t[i] = (float)(i % 7) / 6.0f;
        v[i] = z[i] / 8.0f;
    }
    z[N / 2] = 0.0f;
    for (int i = 0; i < N; i++) {
        double want = exp((double)z[i]);
        assert_true(fabs(Vec_expf(z[i]) - want) <= 4e-7 * want);
    }
    Vec_bceWithLogits(N, z, t, 1.0f, 0.5f, loss, grad);
    Vec_tanh(v, N);
    for (int i = 0; i < N; i++) {
        double zz = z[i];
        double wantLoss = fmax(zz, 0) - zz * t[i] + log1p(exp(-fabs(zz)));
        assert_float_equal(loss[i], wantLoss, 1e-6 * (1 + fabs(wantLoss)));
        assert_float_equal(grad[i], (1 / (1 + exp(-zz)) - t[i]) * 0.5, 1e-7);
        assert_float_equal(v[i], tanh(zz / 8.0), 2e-7);
    }
    float p[3] = {1, -1, 0.5f}, g[3] = {0.3f, -2, 0}, m[3] = {0}, vv[3] = {0};
    /* first step: m = 0.1 g, v = 0.001 g^2; p -= 0.01 / 0.1 * m / (sqrt(v) / sqrt(0.001) + eps) */
    Vec_adam(3, p, g, m, vv, 0.9f, 0.999f, 0.01f / 0.1f, (float)(1 / sqrt(0.001)), 1e-8f);
    assert_float_equal(p[0], 1 - 0.01, 1e-6);
    assert_float_equal(p[1], -1 + 0.01, 1e-6);
    assert_float_equal(p[2], 0.5, 0);
    /* C = A B^T against double sums; blocking must not change a bit */
    enum { M = 7, NN = 5, K = 21, LD = 24 };
    static float A[M * LD], B[NN * LD], C[M * NN], Crow[NN];
    for (int i = 0; i < M * LD; i++)
        A[i] = (float)gauss();
    for (int i = 0; i < NN * LD; i++)
        B[i] = (float)gauss();
    Vec_gemmNT(M, NN, K, A, LD, B, LD, C, NN);
    for (int i = 0; i < M; i++) {
        Vec_gemmNT(1, NN, K, A + i * LD, LD, B, LD, Crow, NN);
        assert_memory_equal(Crow, C + i * NN, sizeof Crow);
        for (int j = 0; j < NN; j++) {
            double ref = 0;
            for (int k = 0; k < K; k++)
                ref += (double)A[i * LD + k] * B[j * LD + k];
            assert_float_equal(C[i * NN + j], ref, 1e-5);
        }
    }
    float At[K * M];
    Vec_transpose(M, K, A, LD, At, M);
    assert_float_equal(At[3 * M + 5], A[5 * LD + 3], 0);
    float sq[37];
    double want = 0;
    for (int i = 0; i < 37; i++) {
        sq[i] = (float)i - 10.5f;
        want += (double)sq[i] * sq[i];
    }
    assert_float_equal(Vec_sumSquares(37, sq), want, 1e-9 * want);
}

/* Vec_nonzeros against a plain loop: every length 0..40 (the 8-wide body and its tail),
   with -0 (a zero) and NaN (not one) among the entries. */
/* Against a plain loop, at densities from none to all, for lengths around the vector
   width and a layer's; idx is exactly n long, so ASan sees any store past it. */
static void test_vec_nonzeros(void **state) {
    (void)state;
    const double density[] = {0.0, 0.1, 0.4, 1.0};
    const int lengths[] = {0, 1, 7, 8, 9, 15, 16, 17, 40, 3072};
    for (size_t di = 0; di < sizeof density / sizeof *density; di++) {
        for (size_t li = 0; li < sizeof lengths / sizeof *lengths; li++) {
            int n = lengths[li];
            float *x = malloc((size_t)(n ? n : 1) * sizeof *x);
            int *idx = malloc((size_t)(n ? n : 1) * sizeof *idx);
            for (int i = 0; i < n; i++) {
                double u = uniform(), v = uniform();
                x[i] = u >= density[di] ? (v < 0.8 ? 0.0f : -0.0f)
                                        : v < 0.1 ? NAN : (float)gauss();
            }
            int c = Vec_nonzeros(n, x, idx), want = 0;
            for (int i = 0; i < n; i++)
                if (x[i] != 0.0f)
                    assert_int_equal(idx[want++], i);
            assert_int_equal(c, want);
            free(x);
            free(idx);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_vec_math),
        cmocka_unit_test(test_vec_strided),
        cmocka_unit_test(test_vec_nonzeros),
        cmocka_unit_test(test_hand_scores),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_adam_step),
        cmocka_unit_test(test_mlp_planted),
        cmocka_unit_test(test_mlp_deterministic),
        cmocka_unit_test(test_mlp_blas_threads),
        cmocka_unit_test(test_mlp_threads_large),
        cmocka_unit_test(test_mlp_cancel),
        cmocka_unit_test(test_mlp_set),
        cmocka_unit_test(test_mlp_set_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
