/*
moescope - tests/test_Coact.c
Co-activation counts: a hand-worked 6 x 8 case, every kernel (bit-sliced row sums, pair
popcounts) against the dense sgemm reference, a naive triple loop and per-token pair
counts on random data (T, N not multiples of 64, empty and full neurons, sparse and
dense activity, several tau and thread counts), intra-expert co-activation and
cancellation.
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

#include <cmocka.h>

#include "core/Coact.h"

/* Every value of MOESCOPE_COACT_KERNEL: the pair kernels and the row sums (the CPU may
   lack some: they then fall back). */
static const char *const kernels[] = {"generic", "popcnt", "avx2", "rowsum", "rowsum-generic"};
#define N_KERNELS 5

/* Hand-worked case, tau = 0.5 (active: |h| > 0.5, so 0.5 and -0.5 are inactive).
   Activity pattern (rows = tokens, columns = neurons 0..7):
     t0: 1 1 0 0 0 0 0 0
     t1: 1 1 1 0 0 0 0 0
     t2: 0 0 1 1 0 0 0 0
     t3: 0 0 0 0 1 1 0 0
     t4: 0 0 0 0 1 1 1 0
     t5: 1 0 0 0 0 0 1 0
   n = 3 2 2 1 2 2 2 0 (neuron 7 never fires).
   Nonzero pairs: C01 = 2 (t0, t1), C02 = 1 (t1), C06 = 1 (t5), C12 = 1 (t1), C23 = 1 (t2),
   C45 = 2 (t3, t4), C46 = 1 (t4), C56 = 1 (t4); sum over i < j = 10.
   Partition {0,1,2,3 | 4,5,6,7}: intra = C01 + C02 + C12 + C23 + C45 + C46 + C56 = 9 -> 0.9.
   Partition {0,1,4,5 | 2,3,6,7}: intra = C01 + C45 + C23 = 5 -> 0.5.
   A seventh row (t6, all active) lies past T_train = 6 and must not count. */
static const float handH[7][8] = {
    {1.0f, -0.8f, 0.5f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f},
    {0.9f, 2.0f, -3.0f, -0.5f, 0.1f, 0.0f, 0.0f, 0.0f},
    {0.0f, 0.0f, 0.6f, 0.7f, 0.0f, 0.0f, 0.0f, 0.2f},
    {0.0f, 0.0f, 0.0f, 0.0f, 1.5f, -1.5f, 0.0f, 0.0f},
    {0.0f, 0.0f, 0.0f, 0.0f, 0.51f, 4.0f, 1.0f, -0.4f},
    {-1.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.8f, 0.0f},
    {9.0f, 9.0f, 9.0f, 9.0f, 9.0f, 9.0f, 9.0f, 9.0f},
};

static void checkHandCounts(const Coact *c) {
    static const uint32_t n[8] = {3, 2, 2, 1, 2, 2, 2, 0};
    uint32_t expect[8][8] = {{0}};
    expect[0][1] = 2, expect[0][2] = 1, expect[0][6] = 1, expect[1][2] = 1, expect[2][3] = 1;
    expect[4][5] = 2, expect[4][6] = 1, expect[5][6] = 1;
    assert_int_equal(c->N, 8);
    assert_int_equal(c->T_train, 6);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(c->n[i], n[i]);
        for (int j = 0; j < 8; j++) {
            uint32_t want = i == j ? n[i] : i < j ? expect[i][j] : expect[j][i];
            assert_int_equal(c->C[i * 8 + j], want);
        }
    }
}

static void test_hand_counts(void **state) {
    (void)state;
    Coact c, d;
    assert_int_equal(Coact_compute(&c, &handH[0][0], 6, 8, 0.5f, 2, NULL, NULL), MS_OK);
    checkHandCounts(&c);
    assert_int_equal(Coact_computeDense(&d, &handH[0][0], 6, 8, 0.5f, NULL), MS_OK);
    checkHandCounts(&d);
    Coact_done(&c);
    Coact_done(&d);
}

static void test_hand_intra(void **state) {
    (void)state;
    Coact c;
    assert_int_equal(Coact_compute(&c, &handH[0][0], 6, 8, 0.5f, 1, NULL, NULL), MS_OK);
    int32_t halves[8] = {0, 0, 0, 0, 1, 1, 1, 1};
    int32_t mixed[8] = {0, 0, 1, 1, 0, 0, 1, 1};
    assert_true(fabs(Coact_intra(&c, halves) - 0.9) < 1e-12);
    assert_true(fabs(Coact_intra(&c, mixed) - 0.5) < 1e-12);
    /* relabelling the experts changes nothing */
    int32_t swapped[8], spread[8];
    for (int j = 0; j < 8; j++) {
        swapped[j] = 1 - halves[j];
        spread[j] = mixed[j] == 0 ? 7 : 3;
    }
    assert_true(Coact_intra(&c, swapped) == Coact_intra(&c, halves));
    assert_true(Coact_intra(&c, spread) == Coact_intra(&c, mixed));
    /* all in one expert: 1; all apart: 0 */
    int32_t one[8] = {0}, apart[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    assert_true(Coact_intra(&c, one) == 1.0);
    assert_true(Coact_intra(&c, apart) == 0.0);
    Coact_done(&c);
}

static uint64_t rngState = 12345;
static double urand(void) {
    rngState = rngState * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rngState >> 11) * 0x1.0p-53;
}

/* Random h: neuron j fires with its own rate (0.02 .. 0.2), values of both signs. */
static float *randomH(long T, int N) {
    float *h = malloc((size_t)T * N * sizeof(float));
    for (long t = 0; t < T; t++) {
        for (int j = 0; j < N; j++) {
            double rate = 0.02 + 0.18 * (double)(j % 7) / 6.0;
            double u = urand();
            float v = (float)(urand() * 2.0);
            h[t * N + j] = u < rate ? (urand() < 0.5 ? v : -v) : (float)(0.01 * urand());
        }
    }
    return h;
}

static void test_popcount_equals_dense_and_naive(void **state) {
    (void)state;
    /* 8255 train tokens = 129 words: 32 AVX2 steps (past the 31-step byte-counter fold)
       and a 1-word tail; rows past T_train carry activity that must not count */
    const long T = 8300, Ttrain = 8255;
    const int N = 75;
    float *h = randomH(T, N);
    const float taus[] = {0.0f, 0.005f, 0.5f, 1.5f};
    uint32_t *naive = malloc((size_t)N * N * sizeof(uint32_t));
    for (size_t k = 0; k < sizeof(taus) / sizeof(taus[0]); k++) {
        float tau = taus[k];
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                uint32_t cnt = 0;
                for (long t = 0; t < Ttrain; t++)
                    cnt += fabsf(h[t * N + i]) > tau && fabsf(h[t * N + j]) > tau;
                naive[i * N + j] = cnt;
            }
        Coact dense;
        assert_int_equal(Coact_computeDense(&dense, h, Ttrain, N, tau, NULL), MS_OK);
        assert_memory_equal(dense.C, naive, (size_t)N * N * sizeof(uint32_t));
        /* every kernel (the CPU may lack some: they then fall back) and thread count */
        for (int kern = 0; kern < N_KERNELS; kern++) {
            setenv("MOESCOPE_COACT_KERNEL", kernels[kern], 1);
            for (int threads = 0; threads <= 3; threads++) {
                Coact c;
                assert_int_equal(Coact_compute(&c, h, Ttrain, N, tau, threads, NULL, NULL),
                                 MS_OK);
                assert_memory_equal(c.C, naive, (size_t)N * N * sizeof(uint32_t));
                for (int i = 0; i < N; i++)
                    assert_int_equal(c.n[i], naive[i * N + i]);
                Coact_done(&c);
            }
        }
        unsetenv("MOESCOPE_COACT_KERNEL");
        Coact_done(&dense);
    }
    free(naive);
    free(h);
}

/* Sizes at the block edges: 1 neuron, 64 and 65 tokens, no tokens at all. */
static void test_edge_sizes(void **state) {
    (void)state;
    float *h = randomH(130, 9);
    const long Ts[] = {0, 1, 63, 64, 65, 128, 130};
    const int Ns[] = {1, 4, 5, 9};
    for (size_t a = 0; a < sizeof(Ts) / sizeof(Ts[0]); a++) {
        for (size_t b = 0; b < sizeof(Ns) / sizeof(Ns[0]); b++) {
            /* h rows have stride 9; with fewer neurons, use a fresh contiguous copy */
            int N = Ns[b];
            float *hh = malloc((size_t)130 * N * sizeof(float));
            for (long t = 0; t < 130; t++)
                memcpy(hh + t * N, h + t * 9, (size_t)N * sizeof(float));
            Coact d;
            assert_int_equal(Coact_computeDense(&d, hh, Ts[a], N, 0.1f, NULL), MS_OK);
            for (int kern = 0; kern < N_KERNELS; kern++) {
                setenv("MOESCOPE_COACT_KERNEL", kernels[kern], 1);
                Coact c;
                assert_int_equal(Coact_compute(&c, hh, Ts[a], N, 0.1f, 2, NULL, NULL), MS_OK);
                assert_memory_equal(c.C, d.C, (size_t)N * N * sizeof(uint32_t));
                assert_memory_equal(c.n, d.n, (size_t)N * sizeof(uint32_t));
                if (Ts[a] == 0) {
                    for (int j = 0; j < N; j++)
                        assert_int_equal(c.n[j], 0);
                    int32_t part[9] = {0};
                    assert_true(isnan(Coact_intra(&c, part)));
                }
                Coact_done(&c);
            }
            unsetenv("MOESCOPE_COACT_KERNEL");
            Coact_done(&d);
            free(hh);
        }
    }
    free(h);
}

/* Counts by the token lists: for every token, every pair of its active neurons. An
   independent reference, cheap where activity is sparse. */
static uint32_t *pairCounts(const float *h, long T, int N, float tau) {
    uint32_t *C = calloc((size_t)N * N, sizeof(uint32_t));
    int *act = malloc((size_t)N * sizeof(int));
    for (long t = 0; t < T; t++) {
        int k = 0;
        for (int j = 0; j < N; j++)
            if (fabsf(h[t * N + j]) > tau)
                act[k++] = j;
        for (int a = 0; a < k; a++)
            for (int b = 0; b < k; b++)
                C[act[a] * N + act[b]]++;
    }
    free(act);
    return C;
}

/* The row sums on awkward sizes: N = 150 (three 64-neuron blocks, the last partial; rows
   of 3 words, not a whole vector), 9001 train tokens (not a multiple of 64 nor of the
   1024-token chunks, whose leftovers carry over), neuron 0 never active, neuron 7
   always, rates from 0 to 0.9 otherwise, values of both signs and tiny nonzero values
   below every tau > 0. tau = 0 makes nearly everything active (counted by complement),
   0.05 about half, 1.5 about a sixth. Every kernel and thread count against the
   token-list counts. */
static void test_rowsum_awkward(void **state) {
    (void)state;
    const long T = 9001;
    const int N = 150;
    float *h = malloc((size_t)(T + 5) * N * sizeof(float));
    for (long t = 0; t < T + 5; t++) {
        for (int j = 0; j < N; j++) {
            double rate = (double)(j % 10) / 9.0 * 0.9;
            float v = (float)(0.5 + 1.5 * urand()), tiny = (float)(0.01 * urand());
            float x = urand() < rate ? v : tiny;
            x = j == 0 ? 0.0f : j == 7 ? 3.0f : x;
            h[t * N + j] = urand() < 0.5 ? -x : x;
        }
    }
    const float taus[] = {0.0f, 0.05f, 1.5f};
    for (size_t k = 0; k < sizeof(taus) / sizeof(taus[0]); k++) {
        uint32_t *want = pairCounts(h, T, N, taus[k]);
        assert_int_equal(want[0], 0);
        assert_int_equal(want[7 * N + 7], T);
        for (int kern = 0; kern < N_KERNELS; kern++) {
            setenv("MOESCOPE_COACT_KERNEL", kernels[kern], 1);
            for (int threads = 1; threads <= 3; threads++) {
                Coact c;
                assert_int_equal(Coact_compute(&c, h, T, N, taus[k], threads, NULL, NULL),
                                 MS_OK);
                assert_memory_equal(c.C, want, (size_t)N * N * sizeof(uint32_t));
                Coact_done(&c);
            }
        }
        unsetenv("MOESCOPE_COACT_KERNEL");
        free(want);
    }
    free(h);
}

/* Every neuron active on every token: every count is T_train, which overflows byte
   counters that are folded too late (each AVX2 step adds 8 per byte). */
static void test_all_active(void **state) {
    (void)state;
    const long T = 8255 + 64 * 40;
    const int N = 9;
    float *h = malloc((size_t)T * N * sizeof(float));
    for (long c = 0; c < T * N; c++)
        h[c] = -1.0f;
    for (int kern = 0; kern < N_KERNELS; kern++) {
        setenv("MOESCOPE_COACT_KERNEL", kernels[kern], 1);
        Coact c;
        assert_int_equal(Coact_compute(&c, h, T, N, 0.0f, 2, NULL, NULL), MS_OK);
        for (int k = 0; k < N * N; k++)
            assert_int_equal(c.C[k], T);
        Coact_done(&c);
    }
    unsetenv("MOESCOPE_COACT_KERNEL");
    free(h);
}

static void test_cancel_and_errors(void **state) {
    (void)state;
    float *h = randomH(200, 16);
    atomic_uint gen = 5;
    atomic_int permille = 0;
    Cancel stale = {.generation = &gen, .mine = 4, .permille = &permille};
    Coact c;
    assert_int_equal(Coact_compute(&c, h, 200, 16, 0.0f, 2, &stale, NULL), MS_ERR_CANCELED);
    assert_null(c.C);
    assert_null(c.n);
    Cancel live = {.generation = &gen, .mine = 5, .permille = &permille};
    assert_int_equal(Coact_compute(&c, h, 200, 16, 0.0f, 2, &live, NULL), MS_OK);
    assert_int_equal(atomic_load(&permille), 1000);
    Coact_done(&c);
    char *cause = NULL;
    assert_int_equal(Coact_compute(&c, h, 200, 0, 0.0f, 2, NULL, &cause), MS_ERR_RANGE);
    assert_non_null(cause);
    free(cause);
    cause = NULL;
    assert_int_equal(Coact_computeDense(&c, h, 1L << 24, 16, 0.0f, &cause), MS_ERR_RANGE);
    assert_non_null(cause);
    free(cause);
    free(h);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_counts),
        cmocka_unit_test(test_hand_intra),
        cmocka_unit_test(test_popcount_equals_dense_and_naive),
        cmocka_unit_test(test_edge_sizes),
        cmocka_unit_test(test_rowsum_awkward),
        cmocka_unit_test(test_all_active),
        cmocka_unit_test(test_cancel_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
