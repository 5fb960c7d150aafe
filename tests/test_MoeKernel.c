/*
moescope - tests/test_MoeKernel.c
The MoE kernel against the masked dense FFN (Ffn_hidden with h masked to the selected
experts' neurons, times gates, through Ffn_output without b_out), for plain and gated
layers, k = 1..E, with and without gates, E dividing and not dividing d_ff; the timing
functions only for their bookkeeping and cancellation (no timing assertions).
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Project headers first: cmocka defines a fail() macro that clashes with XUtils' fail(). */
#include "core/Ffn.h"
#include "core/MoeKernel.h"
#include "util/XUtils.h"

#include <cmocka.h>

static unsigned rngState = 12345u;

static float frand(void) {
    rngState = rngState * 1664525u + 1013904223u;
    return (float)((rngState >> 8) & 0xFFFF) / 65536.0f - 0.5f;
}

static int irand(int n) {
    rngState = rngState * 1664525u + 1013904223u;
    return (int)((rngState >> 8) % (unsigned)n);
}

static float *randArray(size_t n) {
    float *a = xMallocArray(n, sizeof(float));
    for (size_t i = 0; i < n; i++)
        a[i] = frand();
    return a;
}

static void makeLayer(FfnWeights *w, int D, int N, bool gated, bool bias, Activation act) {
    memset(w, 0, sizeof(*w));
    w->d_model = D;
    w->d_ff = N;
    w->act = act;
    w->w_in = randArray((size_t)N * D);
    w->w_out = randArray((size_t)D * N);
    w->w_gate = gated ? randArray((size_t)N * D) : NULL;
    w->b_in = bias ? randArray((size_t)N) : NULL;
    w->b_out = randArray((size_t)D); /* must not show up in the outputs */
}

/* A shuffled assignment with sizes floor/ceil of N/E (neuron j -> expert j % E, permuted). */
static int32_t *randomPartition(int N, int E) {
    int32_t *part = xMallocArray((size_t)N, sizeof(int32_t));
    for (int j = 0; j < N; j++)
        part[j] = j % E;
    for (int j = N - 1; j > 0; j--) {
        int i = irand(j + 1);
        int32_t t = part[i];
        part[i] = part[j];
        part[j] = t;
    }
    return part;
}

/* k distinct experts per token. */
static int *randomSelection(long T, int E, int k) {
    int *sel = xMallocArray((size_t)T * k, sizeof(int));
    int *perm = xMallocArray((size_t)E, sizeof(int));
    for (long t = 0; t < T; t++) {
        for (int e = 0; e < E; e++)
            perm[e] = e;
        for (int j = 0; j < k; j++) {
            int i = j + irand(E - j);
            int tmp = perm[i];
            perm[i] = perm[j];
            perm[j] = tmp;
            sel[t * k + j] = perm[j];
        }
    }
    free(perm);
    return sel;
}

/* The reference: dense h, masked to the selected experts' neurons times their gates. */
static void maskedDense(const FfnWeights *w, const int32_t *part, const float *x, long T, int k,
                        const int *sel, const float *gates, float *y) {
    int N = w->d_ff;
    float *h = xMallocArray((size_t)T * N, sizeof(float));
    assert_int_equal(Ffn_hidden(w, x, T, h), MS_OK);
    for (long t = 0; t < T; t++) {
        for (int j = 0; j < N; j++) {
            float g = 0.0f;
            for (int s = 0; s < k; s++)
                if (sel[t * k + s] == part[j])
                    g += gates ? gates[t * k + s] : 1.0f;
            h[t * N + j] *= g;
        }
    }
    Ffn_output(w, h, T, false, y);
    free(h);
}

static void assertClose(const float *a, const float *b, size_t n) {
    double scale = 0.0;
    for (size_t i = 0; i < n; i++)
        scale = fmax(scale, fabs((double)b[i]));
    for (size_t i = 0; i < n; i++)
        assert_true(fabs((double)a[i] - (double)b[i]) <= 1e-4 * (1.0 + scale));
}

static void checkLayer(int D, int N, int E, bool gated, bool bias, Activation act) {
    FfnWeights w;
    makeLayer(&w, D, N, gated, bias, act);
    long T = 23;
    float *x = randArray((size_t)T * D);
    int32_t *part = randomPartition(N, E);
    MoeKernel *kern = NULL;
    assert_int_equal(MoeKernel_new(&w, part, E, &kern, NULL), MS_OK);
    int total = 0;
    for (int e = 0; e < E; e++)
        total += MoeKernel_expertSize(kern, e);
    assert_int_equal(total, N);
    float *y = xMallocArray((size_t)T * D, sizeof(float));
    float *y2 = xMallocArray((size_t)T * D, sizeof(float));
    float *ref = xMallocArray((size_t)T * D, sizeof(float));
    for (int k = 1; k <= E; k++) {
        int *sel = randomSelection(T, E, k);
        float *gates = randArray((size_t)T * k);
        for (int withGates = 0; withGates < 2; withGates++) {
            const float *g = withGates ? gates : NULL;
            maskedDense(&w, part, x, T, k, sel, g, ref);
            assert_int_equal(MoeKernel_run(kern, x, T, k, sel, g, 1, y, NULL), MS_OK);
            assertClose(y, ref, (size_t)T * D);
            /* experts in ranges over three workers: the same output, repeatably */
            assert_int_equal(MoeKernel_run(kern, x, T, k, sel, g, 3, y2, NULL), MS_OK);
            assertClose(y2, ref, (size_t)T * D);
            assert_int_equal(MoeKernel_run(kern, x, T, k, sel, g, 3, y, NULL), MS_OK);
            assert_memory_equal(y, y2, (size_t)T * D * sizeof(float));
            for (long t = 0; t < T; t++)
                MoeKernel_runToken(kern, x + t * D, k, sel + t * k, g ? g + t * k : NULL,
                                   y + t * D);
            assertClose(y, ref, (size_t)T * D);
        }
        free(sel);
        free(gates);
    }
    MoeKernel_delete(kern);
    free(part);
    free(x);
    free(y);
    free(y2);
    free(ref);
    FfnWeights_done(&w);
}

static void test_plain_divides(void **state) {
    checkLayer(6, 24, 4, false, true, ACTIVATION_RELU);
    checkLayer(5, 16, 8, false, false, ACTIVATION_GELU);
}

static void test_plain_not_divides(void **state) {
    checkLayer(7, 26, 4, false, true, ACTIVATION_RELU);
    checkLayer(3, 10, 7, false, true, ACTIVATION_GELU_TANH);
}

static void test_gated(void **state) {
    checkLayer(6, 24, 4, true, false, ACTIVATION_SILU);
    checkLayer(5, 19, 5, true, true, ACTIVATION_GELU);
    checkLayer(4, 9, 1, true, true, ACTIVATION_RELU);
}

/* An expert without neurons contributes nothing and must not break the kernel. */
static void test_empty_expert(void **state) {
    FfnWeights w;
    int D = 4, N = 6, E = 3;
    makeLayer(&w, D, N, false, true, ACTIVATION_RELU);
    int32_t part[6] = {0, 2, 0, 2, 2, 0}; /* expert 1 is empty */
    MoeKernel *kern = NULL;
    assert_int_equal(MoeKernel_new(&w, part, E, &kern, NULL), MS_OK);
    assert_int_equal(MoeKernel_expertSize(kern, 1), 0);
    long T = 5;
    float *x = randArray((size_t)T * D);
    int *sel = randomSelection(T, E, 2);
    float y[5 * 4], ref[5 * 4];
    maskedDense(&w, part, x, T, 2, sel, NULL, ref);
    assert_int_equal(MoeKernel_run(kern, x, T, 2, sel, NULL, 2, y, NULL), MS_OK);
    assertClose(y, ref, (size_t)T * D);
    MoeKernel_delete(kern);
    free(sel);
    free(x);
    FfnWeights_done(&w);
}

static void test_range_errors(void **state) {
    FfnWeights w;
    makeLayer(&w, 3, 4, false, false, ACTIVATION_RELU);
    int32_t bad[4] = {0, 1, 2, 1};
    MoeKernel *kern = (MoeKernel *)&w;
    char *cause = NULL;
    assert_int_equal(MoeKernel_new(&w, bad, 2, &kern, &cause), MS_ERR_RANGE);
    assert_null(kern);
    assert_non_null(cause);
    free(cause);
    cause = NULL;
    int32_t part[4] = {0, 1, 0, 1};
    assert_int_equal(MoeKernel_new(&w, part, 2, &kern, NULL), MS_OK);
    float x[3] = {1, 2, 3}, y[3];
    int sel[1] = {2};
    assert_int_equal(MoeKernel_run(kern, x, 1, 1, sel, NULL, 1, y, &cause), MS_ERR_RANGE);
    assert_non_null(cause);
    free(cause);
    MoeKernel_delete(kern);
    MoeKernel_delete(NULL);
    FfnWeights_done(&w);
}

/* Timing bookkeeping: tokens used are clamped to n, repetitions within bounds, ratios are
   dense / MoE; a stale generation cancels. */
static void test_timing(void **state) {
    FfnWeights w;
    int D = 8, N = 32, E = 4, k = 2;
    makeLayer(&w, D, N, true, true, ACTIVATION_SILU);
    long T = 40;
    float *x = randArray((size_t)T * D);
    int32_t *part = randomPartition(N, E);
    int *sel = randomSelection(T, E, k);
    MoeKernel *kern = NULL;
    assert_int_equal(MoeKernel_new(&w, part, E, &kern, NULL), MS_OK);
    MoeTimingOptions opt = MOE_TIMING_DEFAULTS;
    opt.batch_tokens = 1000;
    opt.token_tokens = 10;
    opt.budget_s = 0.001;
    opt.max_reps = 3;
    MoeSpeedup sp;
    MoeTimes t0;
    assert_int_equal(MoeKernel_measure(kern, &w, x, T, k, sel, NULL, &opt, NULL, NULL, &sp, NULL),
                     MS_OK);
    assert_int_equal(sp.dense.batch_tokens, T);
    assert_int_equal(sp.moe.token_tokens, 10);
    assert_true(sp.dense.batch_reps >= 1 && sp.dense.batch_reps <= 3);
    assert_true(sp.moe.token_reps >= 1 && sp.moe.token_reps <= 3);
    if (sp.moe.batch_s > 0)
        assert_true(fabs(sp.batch - sp.dense.batch_s / sp.moe.batch_s) <= 1e-9 * sp.batch);

    MoeSpeedup again;
    assert_int_equal(MoeKernel_measure(kern, &w, x, T, k, sel, NULL, &opt, &sp.dense, NULL,
                                       &again, NULL), MS_OK);
    assert_true(again.dense.batch_s == sp.dense.batch_s);

    /* Runs repeat until their times add up to the budget: a zero budget gives one run per
       path, an unreachable one max_reps. */
    opt.budget_s = 0.0;
    assert_int_equal(MoeKernel_measure(kern, &w, x, T, k, sel, NULL, &opt, NULL, NULL, &sp, NULL),
                     MS_OK);
    assert_int_equal(sp.dense.batch_reps, 1);
    assert_int_equal(sp.dense.token_reps, 1);
    assert_int_equal(sp.moe.batch_reps, 1);
    assert_int_equal(sp.moe.token_reps, 1);
    opt.budget_s = 1e9;
    opt.threads = 2; /* the batch paths on two workers */
    assert_int_equal(MoeKernel_measure(kern, &w, x, T, k, sel, NULL, &opt, NULL, NULL, &sp, NULL),
                     MS_OK);
    assert_int_equal(sp.dense.batch_reps, 3);
    assert_int_equal(sp.moe.batch_reps, 3);
    assert_int_equal(sp.moe.token_reps, 3);
    assert_true(sp.moe.batch_s > 0.0 && sp.dense.token_s > 0.0);

    /* The routing is checked before anything is timed. */
    int saved = sel[3];
    sel[3] = E;
    char *bad = NULL;
    assert_int_equal(MoeKernel_time(kern, x, T, k, sel, NULL, &opt, NULL, &t0, &bad),
                     MS_ERR_RANGE);
    assert_non_null(bad);
    free(bad);
    sel[3] = saved;

    atomic_uint gen = 2;
    Cancel cancel = {.generation = &gen, .mine = 1};
    char *cause = NULL;
    MoeTimes t;
    assert_int_equal(MoeKernel_timeDense(&w, x, T, &opt, &cancel, &t, &cause), MS_ERR_CANCELED);
    free(cause);
    cause = NULL;
    assert_int_equal(MoeKernel_time(kern, x, T, k, sel, NULL, &opt, &cancel, &t, &cause),
                     MS_ERR_CANCELED);
    free(cause);

    MoeKernel_delete(kern);
    free(sel);
    free(part);
    free(x);
    FfnWeights_done(&w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_divides),  cmocka_unit_test(test_plain_not_divides),
        cmocka_unit_test(test_gated),          cmocka_unit_test(test_empty_expert),
        cmocka_unit_test(test_range_errors),   cmocka_unit_test(test_timing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
