/*
moescope - tests/test_Sparsity.c
Sparsity, the tau quantile and the tau -> sparsity curve: a hand-worked 6 x 8 case and
random data (with ties, zeros and negatives) against a sort-based reference.
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

#include "core/Sparsity.h"

/* The hand-worked case (shared with test_Eval): 6 tokens x 8 neurons.
   |h| over all 48 entries: 37 zeros, six 1s, three 2s, one 3, one 4.
   Active at tau = 0 per token: 2, 2, 3, 0, 2, 2 -> 11 entries. At tau = 1 (|h| > 1):
   t0 n0, t1 n2, t2 n7, t4 n4, t5 n2 -> 5 entries. Neuron 6 is never active. */
static const float H[6 * 8] = {
    2, 0, 0, 1, 0, 0, 0, 0,  /* t0 */
    0, 0, 3, 0, 0, 1, 0, 0,  /* t1 */
    1, 1, 0, 0, 0, 0, 0, 2,  /* t2 */
    0, 0, 0, 0, 0, 0, 0, 0,  /* t3 */
    0, 0, 0, 0, 4, 0, 0, -1, /* t4 */
    1, 0, 2, 0, 0, 0, 0, 0,  /* t5 */
};

static void test_hand_sparsity(void **state) {
    (void)state;
    Sparsity s;
    char *cause = NULL;
    assert_int_equal(Sparsity_compute(&s, H, 6, 8, 0.0f, 2, NULL, &cause), MS_OK);
    assert_int_equal(s.active, 11);
    assert_float_equal(s.sparsity, 1.0 - 11.0 / 48.0, 1e-12);      /* 37/48 */
    assert_float_equal(s.active_per_token_mean, 11.0 / 6.0, 1e-12);
    assert_float_equal(s.dead_fraction, 1.0 / 8.0, 1e-12);         /* neuron 6 */
    /* n0 active on t0, t2, t5; n2 on t1, t5; n7 on t2, t4 (|-1| > 0) */
    const double freq[8] = {3, 1, 2, 1, 1, 1, 0, 2};
    for (int j = 0; j < 8; j++)
        assert_float_equal(s.neuron_freq[j], freq[j] / 6.0, 1e-12);
    const int tok[6] = {2, 2, 3, 0, 2, 2};
    for (int t = 0; t < 6; t++)
        assert_int_equal(s.token_active[t], tok[t]);
    Sparsity_done(&s);

    assert_int_equal(Sparsity_compute(&s, H, 6, 8, 1.0f, 1, NULL, &cause), MS_OK);
    assert_int_equal(s.active, 5);
    assert_float_equal(s.sparsity, 43.0 / 48.0, 1e-12);
    /* only n0, n2, n4, n7 exceed 1 somewhere */
    assert_float_equal(s.dead_fraction, 4.0 / 8.0, 1e-12);
    Sparsity_done(&s);

    assert_int_equal(Sparsity_compute(&s, H, 6, 8, -1.0f, 1, NULL, &cause), MS_ERR_RANGE);
    assert_non_null(cause);
    free(cause);
}

static void test_hand_quantile(void **state) {
    (void)state;
    /* sorted |h|: ranks 1..37 are 0, 38..43 are 1, 44..46 are 2, 47 is 3, 48 is 4.
       q = 0.5 -> rank 24 -> 0; q = 37/48 -> rank 37 -> 0 (exactly 37/48 of entries <= 0);
       q = 0.8 -> 38.4 -> rank 39 -> 1; q = 0.9 -> 43.2 -> rank 44 -> 2; q = 0 -> the
       smallest, 0; q = 1 -> the largest, 4. */
    const double q[] = {0.0, 0.5, 37.0 / 48.0, 0.8, 0.9, 1.0};
    const float want[] = {0, 0, 0, 1, 2, 4};
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        float tau = -1;
        assert_int_equal(Sparsity_tauForSparsity(H, 6, 8, q[i], 2, NULL, &tau, NULL), MS_OK);
        assert_true(tau == want[i]);
    }
    float tau;
    char *cause = NULL;
    assert_int_equal(Sparsity_tauForSparsity(H, 6, 8, 1.5, 2, NULL, &tau, &cause), MS_ERR_RANGE);
    free(cause);

    /* curve: tau = 1 -> 43/48, tau = 0 -> 37/48, tau = 4 -> 1, tau = 0.5 -> 37/48 */
    const float taus[] = {1.0f, 0.0f, 4.0f, 0.5f};
    double sp[4];
    assert_int_equal(Sparsity_curve(H, 6, 8, taus, 4, 2, NULL, sp, NULL), MS_OK);
    assert_float_equal(sp[0], 43.0 / 48.0, 1e-12);
    assert_float_equal(sp[1], 37.0 / 48.0, 1e-12);
    assert_float_equal(sp[2], 1.0, 1e-12);
    assert_float_equal(sp[3], 37.0 / 48.0, 1e-12);
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int cmpFloat(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Values from a small set (many ties), half zeros, random signs, some tiny. */
static void randomH(float *h, long n) {
    static const float vals[] = {0.25f, 0.5f, 1.0f, 1.5f, 3.0f, 1e-30f, 7.0f, 1e20f};
    for (long i = 0; i < n; i++) {
        uint64_t r = next();
        if (r % 2 == 0)
            h[i] = (r >> 8) % 3 == 0 ? -0.0f : 0.0f;
        else if ((r >> 4) % 5 == 0)
            h[i] = (float)((r >> 20) % 100000) / 777.0f;
        else
            h[i] = vals[(r >> 12) % 8];
        if ((r >> 40) % 2)
            h[i] = -h[i];
    }
}

/* The definition, by sorting: the first sorted value whose rank fraction reaches q. */
static float refQuantile(const float *h, long n, double q) {
    float *a = malloc((size_t)n * sizeof *a);
    for (long i = 0; i < n; i++)
        a[i] = fabsf(h[i]);
    qsort(a, (size_t)n, sizeof *a, cmpFloat);
    float v = a[n - 1];
    for (long i = 0; i < n; i++) {
        /* fraction of entries <= a[i]: include the ties after i */
        long j = i;
        while (j + 1 < n && a[j + 1] == a[i])
            j++;
        if ((double)(j + 1) / (double)n >= q) {
            v = a[i];
            break;
        }
        i = j;
    }
    free(a);
    return v;
}

static void test_random_quantile(void **state) {
    (void)state;
    const long T = 301;
    const int N = 37;
    float *h = malloc((size_t)T * N * sizeof *h);
    randomH(h, T * N);
    const double qs[] = {0.0, 1e-9, 0.1, 0.25, 0.5, 0.5 + 1e-12, 0.8, 0.9, 0.95, 0.99, 0.999,
                         1.0 - 1e-12, 1.0, 5000.0 / (301.0 * 37.0), 5001.0 / (301.0 * 37.0)};
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        float t1 = -1, t2 = -2;
        assert_int_equal(Sparsity_tauForSparsity(h, T, N, qs[i], 1, NULL, &t1, NULL), MS_OK);
        assert_int_equal(Sparsity_tauForSparsity(h, T, N, qs[i], 3, NULL, &t2, NULL), MS_OK);
        float want = refQuantile(h, T * N, qs[i]);
        assert_true(t1 == want);
        assert_true(t2 == want);
    }
    /* All at once (several in one top bin, repeats, any order): the same answers. */
    const int n = (int)(sizeof qs / sizeof qs[0]);
    float all[sizeof qs / sizeof qs[0]];
    assert_int_equal(Sparsity_tausForSparsity(h, T, N, qs, n, 2, NULL, all, NULL), MS_OK);
    for (int i = 0; i < n; i++)
        assert_true(all[i] == refQuantile(h, T * N, qs[i]));
    const double rev[] = {0.9, 0.1, 0.9, 0.5};
    assert_int_equal(Sparsity_tausForSparsity(h, T, N, rev, 4, 3, NULL, all, NULL), MS_OK);
    for (int i = 0; i < 4; i++)
        assert_true(all[i] == refQuantile(h, T * N, rev[i]));
    char *cause = NULL;
    const double bad[] = {0.5, -0.1};
    assert_int_equal(Sparsity_tausForSparsity(h, T, N, bad, 2, 1, NULL, all, &cause),
                     MS_ERR_RANGE);
    free(cause);
    cause = NULL;
    assert_int_equal(Sparsity_tausForSparsity(h, T, N, qs, SPARSITY_MAX_QUANTILES + 1, 1, NULL,
                                              all, &cause), MS_ERR_RANGE);
    free(cause);
    free(h);
}

static void test_random_sparsity_and_curve(void **state) {
    (void)state;
    const long T = 200;
    const int N = 53;
    float *h = malloc((size_t)T * N * sizeof *h);
    randomH(h, T * N);
    const float taus[] = {1.5f, 0.0f, 1e-30f, 3.0f, 1e20f, 0.7f, 1.5f, 100.0f, 2e20f};
    const int n = (int)(sizeof taus / sizeof taus[0]);
    double sp1[9], sp2[9];
    assert_int_equal(Sparsity_curve(h, T, N, taus, n, 1, NULL, sp1, NULL), MS_OK);
    assert_int_equal(Sparsity_curve(h, T, N, taus, n, 2, NULL, sp2, NULL), MS_OK);
    for (int i = 0; i < n; i++) {
        long active = 0;
        long *perNeuron = calloc((size_t)N, sizeof(long));
        for (long t = 0; t < T; t++)
            for (int j = 0; j < N; j++)
                if (fabsf(h[t * N + j]) > taus[i]) {
                    active++;
                    perNeuron[j]++;
                }
        double want = 1.0 - (double)active / (double)(T * N);
        assert_float_equal(sp1[i], want, 1e-12);
        assert_true(sp1[i] == sp2[i]);
        Sparsity s;
        assert_int_equal(Sparsity_compute(&s, h, T, N, taus[i], 2, NULL, NULL), MS_OK);
        assert_int_equal(s.active, active);
        assert_float_equal(s.sparsity, want, 1e-12);
        long dead = 0;
        for (int j = 0; j < N; j++) {
            dead += perNeuron[j] == 0;
            assert_float_equal(s.neuron_freq[j], (double)perNeuron[j] / T, 1e-12);
        }
        assert_float_equal(s.dead_fraction, (double)dead / N, 1e-12);
        Sparsity_done(&s);
        free(perNeuron);
    }
    free(h);
}

static void test_cancel(void **state) {
    (void)state;
    atomic_uint gen = 2;
    Cancel c = {.generation = &gen, .mine = 1};
    Sparsity s;
    float tau;
    char *cause = NULL;
    assert_int_equal(Sparsity_compute(&s, H, 6, 8, 0.0f, 2, &c, &cause), MS_ERR_CANCELED);
    free(cause);
    cause = NULL;
    assert_int_equal(Sparsity_tauForSparsity(H, 6, 8, 0.5, 2, &c, &tau, &cause),
                     MS_ERR_CANCELED);
    free(cause);
    /* the matching generation runs and reports progress */
    atomic_int permille = 0;
    Cancel ok = {.generation = &gen, .mine = 2, .permille = &permille};
    assert_int_equal(Sparsity_compute(&s, H, 6, 8, 0.0f, 2, &ok, NULL), MS_OK);
    assert_int_equal(atomic_load(&permille), 1000);
    Sparsity_done(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_sparsity),
        cmocka_unit_test(test_hand_quantile),
        cmocka_unit_test(test_random_quantile),
        cmocka_unit_test(test_random_sparsity_and_curve),
        cmocka_unit_test(test_cancel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
