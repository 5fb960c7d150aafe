/*
moescope - tests/test_Meo.c
Sequence-level MEO (SPEC §5): a hand-worked layer with every metric worked out below,
a hand-worked case with experts of unequal size, and identities on random layers (k = 1
merges one expert, k = E keeps everything, relabelling experts changes nothing,
seq_offsets and fixed blocks with the same boundaries agree, duplicated experts are
recovered by aligned slots), plus a router path checked against Router_score on the
sequences' mean x and the argument errors; the merged expert against a direct FFN run;
and the sharing (across partitions, routers and k, and the unmerged selection's sums kept
for a larger k) against fresh Meos, bit for bit.
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
#include "core/Meo.h"
#include "core/Router.h"
#include "core/TopK.h"
#include "util/XUtils.h"

#include <cmocka.h>

#define SUM_POS output_rel_err[MEO_GATES_SUM][MEO_SLOTS_POSITION]
#define SUM_ALI output_rel_err[MEO_GATES_SUM][MEO_SLOTS_ALIGNED]
#define SOFT_POS output_rel_err[MEO_GATES_SOFTMAX][MEO_SLOTS_POSITION]
#define SOFT_ALI output_rel_err[MEO_GATES_SOFTMAX][MEO_SLOTS_ALIGNED]

static void assertNear(double got, double want, double tol) {
    if (!(fabs(got - want) <= tol * (1.0 + fabs(want))))
        fail_msg("got %.9g, want %.9g", got, want);
}

/* ---- the hand-worked layer ----
   d_model 2, N 8, E 4, ReLU, no biases, part = {0,1,2,3,0,1,2,3}: expert e holds
   neurons e and e + 4 (its slots 0 and 1 in position order).
   w_in rows (the keys):  n0 (1,0)  n1 (0,1)  n2 (1,-1)  n3 (0,-1)
                          n4 (0,1)  n5 (1,0)  n6 (-1,0)  n7 (-1,-1)
   w_out columns:         n0 (1,0)  n1 (0,1)  n2 (1,0)   n3 (0,1)
                          n4 (0,1)  n5 (1,1)  n6 (1,1)   n7 (1,0)
   Two sequences of three tokens: A = t0..t2, B = t3..t5.
     t   x        h (n0..n7)         s (e0..e3)   y = w_out h   ||y||
     t0  (1,0)    1 0 1 0 0 1 0 0    1 1 1 0      (3,1)         sqrt 10
     t1  (0,1)    0 1 0 0 1 0 0 0    1 1 0 0      (0,2)         2
     t2  (2,1)    2 1 1 0 1 2 0 0    3 3 1 0      (5,4)         sqrt 41
     t3  (-1,0)   0 0 0 0 0 0 1 1    0 0 1 1      (2,1)         sqrt 5
     t4  (0,-1)   0 0 1 1 0 0 0 1    0 0 1 2      (2,1)         sqrt 5
     t5  (-1,1)   0 1 0 0 1 0 1 0    1 1 1 0      (1,3)         sqrt 10
   Oracle sequence scores (mean s): A (5/3, 5/3, 2/3, 0) -> order 0, 1 (tie to the lower
   index); B (1/3, 1/3, 1, 1) -> order 2, 3. With k = 2:
   meo_mass_recall: t0 2/3, t1 1, t2 6/7, t3 1, t4 1, t5 1/3 -> mean 17/21.
   meo_seqsel_output_rel_err (unselected neurons dropped):
     t0 drops n2 (1,0): 1/sqrt10;  t1: 0;  t2 drops n2: 1/sqrt41;  t3, t4: 0;
     t5 drops n1, n4 (0,2): 2/sqrt10  -> mean (3/sqrt10 + 1/sqrt41) / 6.
   Merged, sequence A, experts 0 then 1:
     position: slot 0 = n0 + n1, slot 1 = n4 + n5; sum gates give
       w_in' rows (1,1), (1,1); w_out' columns (1,1), (1,2)
       t0 h' (1,1) y' (2,3) err sqrt5/sqrt10;  t1 y' (2,3) err sqrt5/2;
       t2 h' (3,3) y' (6,9) err sqrt26/sqrt41.
     aligned: key cosines n0.n1 = 0, n0.n5 = 1, n4.n1 = 1, n4.n5 = 0, so slot 0 = n0 + n5,
       slot 1 = n4 + n1: w_in' (2,0), (0,2); w_out' columns (2,1), (0,2)
       t0 h' (2,0) y' (4,2) err sqrt2/sqrt10;  t1 h' (0,2) y' (0,4) err 1;
       t2 h' (4,2) y' (8,8) err 5/sqrt41.
     softmax gates: equal logits 5/3 -> g = 1/2 each; halving w_in' and w_out' quarters
       y' (ReLU is positively homogeneous):
       position t0 y' (.5,.75) err sqrt6.3125/sqrt10; t1 sqrt1.8125/2; t2 (1.5,2.25)
       err sqrt15.3125/sqrt41.  aligned t0 (1,.5) err sqrt4.25/sqrt10; t1 (0,1) err 1/2;
       t2 (2,2) err sqrt13/sqrt41.
   Merged, sequence B, experts 2 then 3: cosines n2.n3 = n6.n7 = 1/sqrt2, n2.n7 =
     n6.n3 = 0, so aligned = position: slot 0 = n2 + n3, slot 1 = n6 + n7.
     sum: w_in' (1,-2), (-2,-1); w_out' columns (1,1), (2,1)
       t3 h' (0,2) y' (4,2) err 1;  t4 h' (2,1) y' (4,3) err sqrt8/sqrt5;
       t5 h' (0,1) y' (2,1) err sqrt5/sqrt10.
     softmax (1/2 each): t3 y' (1,.5) err 1/2; t4 (1,.75) err sqrt1.0625/sqrt5;
       t5 (.5,.25) err sqrt7.8125/sqrt10.
   meo_flops_fraction: G 2, P 2, L 3, oracle router 0: (k G D P 2 / L + 2 D G P) / (2 D N P)
     = (32/3 + 16) / 64 = 5/12. */
static const float handWin[16] = {1, 0, 0, 1, 1, -1, 0, -1, 0, 1, 1, 0, -1, 0, -1, -1};
static const float handWout[16] = {/* [2][8]: row r = component r of each column */
                                   1, 0, 1, 0, 0, 1, 1, 1,
                                   0, 1, 0, 1, 1, 1, 1, 0};
static const float handX[12] = {1, 0, 0, 1, 2, 1, -1, 0, 0, -1, -1, 1};
static const float handH[48] = {1, 0, 1, 0, 0, 1, 0, 0, /**/ 0, 1, 0, 0, 1, 0, 0, 0,
                                2, 1, 1, 0, 1, 2, 0, 0, /**/ 0, 0, 0, 0, 0, 0, 1, 1,
                                0, 0, 1, 1, 0, 0, 0, 1, /**/ 0, 1, 0, 0, 1, 0, 1, 0};
static const int32_t handPart[8] = {0, 1, 2, 3, 0, 1, 2, 3};

static void handLayer(FfnWeights *w, LayerData *L, const int64_t *offsets) {
    memset(w, 0, sizeof(*w));
    w->d_model = 2;
    w->d_ff = 8;
    w->act = ACTIVATION_RELU;
    w->w_in = (float *)handWin;
    w->w_out = (float *)handWout;
    *L = (LayerData){.w = w, .T = 6, .x = handX, .h = handH, .T_train = 0,
                     .seq_offsets = offsets, .n_seq = offsets ? 2 : 0};
}

static void checkHand(const MeoMetrics *m) {
    double r10 = sqrt(10.0), r41 = sqrt(41.0), r5 = sqrt(5.0);
    assertNear(m->mass_recall, 17.0 / 21.0, 1e-6);
    assertNear(m->seqsel_output_rel_err, (3.0 / r10 + 1.0 / r41) / 6.0, 1e-6);
    double sumB = 1.0 + sqrt(8.0) / r5 + r5 / r10;
    double softB = 0.5 + sqrt(1.0625) / r5 + sqrt(7.8125) / r10;
    assertNear(m->SUM_POS, (r5 / r10 + r5 / 2.0 + sqrt(26.0) / r41 + sumB) / 6.0, 1e-6);
    assertNear(m->SUM_ALI, (sqrt(2.0) / r10 + 1.0 + 5.0 / r41 + sumB) / 6.0, 1e-6);
    assertNear(m->SOFT_POS,
               (sqrt(6.3125) / r10 + sqrt(1.8125) / 2.0 + sqrt(15.3125) / r41 + softB) / 6.0,
               1e-6);
    assertNear(m->SOFT_ALI, (sqrt(4.25) / r10 + 0.5 + sqrt(13.0) / r41 + softB) / 6.0, 1e-6);
    assertNear(m->flops_fraction, 5.0 / 12.0, 1e-12);
    assert_int_equal(m->sequences, 2);
    assert_int_equal(m->tokens, 6);
    assertNear(m->seq_len_mean, 3.0, 0);
}

static void test_hand_worked(void **state) {
    FfnWeights w;
    LayerData L;
    int64_t offsets[3] = {0, 3, 6};
    handLayer(&w, &L, offsets);
    MeoMetrics m;
    char *cause = NULL;
    assert_int_equal(Meo_evaluate(&L, handPart, 4, 2, NULL, SPLIT_ALL, 99, NULL, &m, &cause),
                     MS_OK);
    checkHand(&m);
    /* The same boundaries as fixed blocks of 3 tokens. */
    handLayer(&w, &L, NULL);
    assert_int_equal(Meo_evaluate(&L, handPart, 4, 2, NULL, SPLIT_ALL, 3, NULL, &m, &cause),
                     MS_OK);
    checkHand(&m);
    /* The aligned map of expert 1 into expert 0: slot 0 takes n5, slot 1 takes n1. */
    Meo *meo = NULL;
    assert_int_equal(Meo_new(&meo, &L, handPart, 4, NULL, SPLIT_ALL, 3, NULL, &cause), MS_OK);
    int map[2];
    assert_true(Meo_alignment(meo, 0, 1, map));
    assert_int_equal(map[0], 5);
    assert_int_equal(map[1], 1);
    assert_true(Meo_alignment(meo, 2, 3, map));
    assert_int_equal(map[0], 3);
    assert_int_equal(map[1], 7);
    Meo_delete(meo);
}

/* Experts of unequal size: d_model 1, N 3, E 2, part {0,1,0}, ReLU, w_out = (1,1,1),
   tokens x = 1, 2 in one sequence (y = x * sum of w_in).
   (a) w_in (1,5,1): h = (x,5x,x), s = (2x, 5x): expert 1 (one neuron) ranks first, the
       merged expert has 1 slot = n1 + n0 (expert 0's first neuron; n2 is dropped):
       w_in' 6, w_out' 2, y' = 12x against y = 7x: error 5/7 with sum gates (aligned: the
       1-d keys all have cosine 1, either of n0, n2 gives the same weights).
   (b) w_in (3,1,3): s = (6x, x): expert 0 (two neurons) first; slot 0 = n0 + n1,
       slot 1 = n2 + nothing: w_in' (4,3), w_out' (2,1), y' = 11x against y = 7x: 4/7. */
static void test_unequal_sizes(void **state) {
    static const int32_t part[3] = {0, 1, 0};
    static const float x[2] = {1, 2};
    static const float wouts[3] = {1, 1, 1};
    static const float wins[2][3] = {{1, 5, 1}, {3, 1, 3}};
    static const double want[2] = {5.0 / 7.0, 4.0 / 7.0};
    for (int c = 0; c < 2; c++) {
        FfnWeights w = {.d_model = 1, .d_ff = 3, .act = ACTIVATION_RELU,
                        .w_in = (float *)wins[c], .w_out = (float *)wouts};
        float h[6];
        assert_int_equal(Ffn_hidden(&w, x, 2, h), MS_OK);
        LayerData L = {.w = &w, .T = 2, .x = x, .h = h, .T_train = 0};
        MeoMetrics m;
        assert_int_equal(Meo_evaluate(&L, part, 2, 2, NULL, SPLIT_TEST, 2, NULL, &m, NULL),
                         MS_OK);
        assertNear(m.SUM_POS, want[c], 1e-6);
        assertNear(m.SUM_ALI, want[c], 1e-6);
        assertNear(m.seqsel_output_rel_err, 0.0, 1e-6);
        assertNear(m.mass_recall, 1.0, 1e-12);
    }
}

/* ---- random layers ---- */

static unsigned rngState = 777u;

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

static void shuffle(int32_t *a, int n) {
    for (int j = n - 1; j > 0; j--) {
        int i = irand(j + 1);
        int32_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

typedef struct RandLayer {
    FfnWeights w;
    LayerData L;
    float *x, *h;
    int64_t offsets[8];
} RandLayer;

/* T tokens in 5 sequences of unequal length; train = the first sequence. */
static void randLayer(RandLayer *r, int D, int N, bool gated, Activation act) {
    memset(r, 0, sizeof(*r));
    long T = 57;
    r->w = (FfnWeights){.d_model = D, .d_ff = N, .act = act};
    r->w.w_in = randArray((size_t)N * D);
    r->w.w_out = randArray((size_t)N * D);
    r->w.b_in = randArray((size_t)N);
    r->w.b_out = randArray((size_t)D);
    r->w.w_gate = gated ? randArray((size_t)N * D) : NULL;
    r->x = randArray((size_t)T * D);
    r->h = xMallocArray((size_t)T * N, sizeof(float));
    assert_int_equal(Ffn_hidden(&r->w, r->x, T, r->h), MS_OK);
    static const int64_t off[6] = {0, 9, 20, 21, 40, 57};
    memcpy(r->offsets, off, sizeof(off));
    r->L = (LayerData){.w = &r->w, .T = T, .x = r->x, .h = r->h, .T_train = 9,
                       .seq_offsets = r->offsets, .n_seq = 5};
}

static void randLayerDone(RandLayer *r) {
    FfnWeights_done(&r->w);
    free(r->x);
    free(r->h);
}

static int32_t *randPartition(int N, int E) {
    int32_t *part = xMallocArray((size_t)N, sizeof(int32_t));
    for (int j = 0; j < N; j++)
        part[j] = j % E;
    shuffle(part, N);
    return part;
}

static void assertSameMetrics(const MeoMetrics *a, const MeoMetrics *b, double tol) {
    assertNear(a->mass_recall, b->mass_recall, tol);
    assertNear(a->seqsel_output_rel_err, b->seqsel_output_rel_err, tol);
    for (int g = 0; g < MEO_GATES; g++)
        for (int s = 0; s < MEO_SLOTS; s++)
            assertNear(a->output_rel_err[g][s], b->output_rel_err[g][s], tol);
    assertNear(a->flops_fraction, b->flops_fraction, 1e-12);
    assert_int_equal(a->sequences, b->sequences);
}

/* k = 1: merging one expert is that expert (softmax of one gate is 1), so every merged
   error equals the sequence-selection error; k = E: nothing is dropped. */
static void checkIdentities(int D, int N, int E, bool gated, Activation act) {
    RandLayer r;
    randLayer(&r, D, N, gated, act);
    int32_t *part = randPartition(N, E);
    Meo *meo = NULL;
    assert_int_equal(Meo_new(&meo, &r.L, part, E, NULL, SPLIT_TEST, 8, NULL, NULL), MS_OK);
    MeoMetrics m;
    assert_int_equal(Meo_metrics(meo, 1, NULL, &m, NULL), MS_OK);
    assert_int_equal(m.sequences, 4); /* 11, 1, 19 and 17 tokens: L = 48 / 4 = 12 */
    double P = gated ? 3 : 2, G = (double)N / E;
    assertNear(m.flops_fraction, (G * D * P * 2 / 12 + 2 * D * G * P) / (2.0 * D * N * P), 1e-12);
    assert_true(m.seqsel_output_rel_err > 1e-3);
    for (int g = 0; g < MEO_GATES; g++)
        for (int s = 0; s < MEO_SLOTS; s++)
            assertNear(m.output_rel_err[g][s], m.seqsel_output_rel_err, 1e-4);
    assert_int_equal(Meo_metrics(meo, E, NULL, &m, NULL), MS_OK);
    assertNear(m.mass_recall, 1.0, 1e-12);
    assert_true(m.seqsel_output_rel_err < 1e-5);
    assert_true(m.SUM_POS > 1e-3); /* act(sum) != sum(act): merging all is not dense */
    Meo_delete(meo);
    free(part);
    randLayerDone(&r);
}

/* E = 1: the one expert is the dense layer, so every error is 0 and the cost is dense plus
   the merge (a copy of the layer per sequence): 1 + 1 / L. */
static void test_one_expert(void **state) {
    for (int gated = 0; gated < 2; gated++) {
        RandLayer r;
        randLayer(&r, 5, 12, gated, gated ? ACTIVATION_SILU : ACTIVATION_RELU);
        int32_t part[12] = {0};
        MeoMetrics m;
        assert_int_equal(Meo_evaluate(&r.L, part, 1, 1, NULL, SPLIT_TEST, 8, NULL, &m, NULL),
                         MS_OK);
        assertNear(m.mass_recall, 1.0, 1e-12);
        assert_true(m.seqsel_output_rel_err < 1e-5);
        for (int g = 0; g < MEO_GATES; g++)
            for (int s = 0; s < MEO_SLOTS; s++)
                assert_true(m.output_rel_err[g][s] < 1e-5);
        assertNear(m.flops_fraction, 1.0 + 1.0 / 12.0, 1e-12);
        randLayerDone(&r);
    }
}

static void test_identities(void **state) {
    checkIdentities(6, 24, 4, false, ACTIVATION_RELU);
    checkIdentities(5, 26, 4, false, ACTIVATION_GELU); /* unequal experts */
    checkIdentities(6, 21, 5, true, ACTIVATION_SILU);
}

/* Relabelling experts (part' = pi[part]) changes no metric. */
static void test_relabel(void **state) {
    int D = 6, N = 30, E = 6;
    RandLayer r;
    randLayer(&r, D, N, true, ACTIVATION_SILU);
    int32_t *part = randPartition(N, E);
    int32_t pi[6] = {3, 5, 0, 1, 4, 2}, part2[30];
    for (int j = 0; j < N; j++)
        part2[j] = pi[part[j]];
    for (int k = 1; k <= E; k++) {
        MeoMetrics a, b;
        assert_int_equal(Meo_evaluate(&r.L, part, E, k, NULL, SPLIT_ALL, 8, NULL, &a, NULL),
                         MS_OK);
        assert_int_equal(Meo_evaluate(&r.L, part2, E, k, NULL, SPLIT_ALL, 8, NULL, &b, NULL),
                         MS_OK);
        assertSameMetrics(&a, &b, 1e-6);
    }
    free(part);
    randLayerDone(&r);
}

/* The test split cut at seq_offsets {9, 20, 21, 40} equals fixed blocks when the blocks have
   the same boundaries: offsets every 8 tokens from the split's start vs block_len 8. */
static void test_offsets_vs_blocks(void **state) {
    RandLayer r;
    randLayer(&r, 5, 20, false, ACTIVATION_RELU);
    int32_t *part = randPartition(20, 4);
    int64_t off[9] = {0, 9, 17, 25, 33, 41, 49, 57};
    r.L.seq_offsets = off;
    r.L.n_seq = 7;
    MeoMetrics a, b;
    for (int k = 1; k <= 4; k++) {
        r.L.seq_offsets = off;
        assert_int_equal(Meo_evaluate(&r.L, part, 4, k, NULL, SPLIT_TEST, 3, NULL, &a, NULL),
                         MS_OK);
        r.L.seq_offsets = NULL;
        assert_int_equal(Meo_evaluate(&r.L, part, 4, k, NULL, SPLIT_TEST, 8, NULL, &b, NULL),
                         MS_OK);
        assert_int_equal(a.sequences, 6);
        assertSameMetrics(&a, &b, 0);
    }
    free(part);
    randLayerDone(&r);
}

/* Expert 1 is a permuted copy of expert 0 (rows of w_in, w_gate, b_in and columns of
   w_out): aligned slots find the permutation. The oracle scores of the two experts are
   equal, so softmax gates are 1/2 and the aligned merge is expert 0 itself: y' = y / 2,
   error 1/2. With sum gates, W' = 2 W_0 and ReLU gives y' = 4 y_0 = 2 y: error 1. */
static void checkDuplicates(bool gated, Activation act, bool relu) {
    int D = 5, G = 7, N = 2 * G;
    RandLayer r;
    randLayer(&r, D, N, gated, act);
    int32_t part[14], perm[7];
    for (int j = 0; j < N; j++)
        part[j] = j < G ? 0 : 1;
    shuffle(part, N);
    int n0[7], n1[7], a = 0, b = 0;
    for (int j = 0; j < N; j++) {
        if (part[j] == 0)
            n0[a++] = j;
        else
            n1[b++] = j;
    }
    for (int i = 0; i < G; i++)
        perm[i] = i;
    shuffle(perm, G);
    /* expert 0's i-th neuron = expert 1's perm[i]-th neuron */
    FfnWeights *w = &r.w;
    for (int i = 0; i < G; i++) {
        int src = n0[i], dst = n1[perm[i]];
        memcpy(w->w_in + dst * D, w->w_in + src * D, sizeof(float) * D);
        if (w->w_gate)
            memcpy(w->w_gate + dst * D, w->w_gate + src * D, sizeof(float) * D);
        w->b_in[dst] = w->b_in[src];
        for (int c = 0; c < D; c++)
            w->w_out[c * N + dst] = w->w_out[c * N + src];
    }
    assert_int_equal(Ffn_hidden(w, r.x, r.L.T, r.h), MS_OK);
    Meo *meo = NULL;
    assert_int_equal(Meo_new(&meo, &r.L, part, 2, NULL, SPLIT_ALL, 10, NULL, NULL), MS_OK);
    int map[7];
    assert_true(Meo_alignment(meo, 0, 1, map));
    for (int i = 0; i < G; i++)
        assert_int_equal(map[i], n1[perm[i]]);
    /* the other way round: expert 1's i-th neuron copies expert 0's p-th, perm[p] = i */
    assert_true(Meo_alignment(meo, 1, 0, map));
    for (int p = 0; p < G; p++)
        assert_int_equal(map[perm[p]], n0[p]);
    MeoMetrics m;
    assert_int_equal(Meo_metrics(meo, 2, NULL, &m, NULL), MS_OK);
    assertNear(m.SOFT_ALI, 0.5, 1e-4);
    if (relu)
        assertNear(m.SUM_ALI, 1.0, 1e-4);
    assert_true(fabs(m.SOFT_POS - 0.5) > 1e-3); /* positions mix unrelated neurons */
    Meo_delete(meo);
    randLayerDone(&r);
}

static void test_aligned_duplicates(void **state) {
    checkDuplicates(false, ACTIVATION_RELU, true);
    checkDuplicates(true, ACTIVATION_SILU, false);
}

static void assertIdentical(const MeoMetrics *a, const MeoMetrics *b) {
    assert_int_equal(a->sequences, b->sequences);
    assert_int_equal(a->tokens, b->tokens);
    assert_memory_equal(&a->mass_recall, &b->mass_recall, sizeof(double));
    assert_memory_equal(&a->seqsel_output_rel_err, &b->seqsel_output_rel_err, sizeof(double));
    assert_memory_equal(a->output_rel_err, b->output_rel_err, sizeof a->output_rel_err);
    assert_memory_equal(&a->flops_fraction, &b->flops_fraction, sizeof(double));
}

/* The staged API (one Meo whose partition and router change, as the batch uses it) gives
   the same bits as a fresh Meo_new, for any number of threads. */
static void checkStages(bool gated, Activation act) {
    int D = 6, N = 24, E = 4;
    RandLayer r;
    randLayer(&r, D, N, gated, act);
    int32_t *first = randPartition(N, 3), *part = randPartition(N, E);
    Router *router = NULL;
    assert_int_equal(Router_new(&router, ROUTER_SIGMOID, &r.L, part, E, NULL, NULL, NULL),
                     MS_OK);
    Meo *staged = NULL, *fresh = NULL;
    assert_int_equal(Meo_open(&staged, &r.L, SPLIT_ALL, 8, NULL, NULL), MS_OK);
    assert_int_equal(Meo_setPartition(staged, first, 3, NULL), MS_OK);
    MeoMetrics a, b;
    assert_int_equal(Meo_metrics(staged, 2, NULL, &a, NULL), MS_OK); /* fills its caches */
    int32_t bad[24];
    memcpy(bad, part, sizeof bad);
    bad[5] = E;
    char *cause = NULL;
    assert_int_equal(Meo_setPartition(staged, bad, E, &cause), MS_ERR_RANGE);
    assert_non_null(strstr(cause, "neuron 5 is in expert 4"));
    free(cause);
    assert_int_equal(Meo_setPartition(staged, part, E, NULL), MS_OK);
    Meo_setRouter(staged, router);
    assert_int_equal(Meo_new(&fresh, &r.L, part, E, router, SPLIT_ALL, 8, NULL, NULL), MS_OK);
    for (int threads = 1; threads <= 3; threads++) {
        Meo_setThreads(staged, threads);
        for (int k = 1; k <= E; k++) {
            assert_int_equal(Meo_metrics(fresh, k, NULL, &a, NULL), MS_OK);
            assert_int_equal(Meo_metrics(staged, k, NULL, &b, NULL), MS_OK);
            assertIdentical(&a, &b);
        }
    }
    /* Released and set again (y made again): the same bits. */
    Meo_releasePartition(staged);
    assert_int_equal(Meo_setPartition(staged, part, E, NULL), MS_OK);
    Meo_setRouter(staged, router);
    assert_int_equal(Meo_metrics(fresh, E, NULL, &a, NULL), MS_OK);
    assert_int_equal(Meo_metrics(staged, E, NULL, &b, NULL), MS_OK);
    assertIdentical(&a, &b);
    /* Back to the oracle: the same as a fresh oracle Meo. */
    Meo_setRouter(staged, NULL);
    Meo_delete(fresh);
    assert_int_equal(Meo_new(&fresh, &r.L, part, E, NULL, SPLIT_ALL, 8, NULL, NULL), MS_OK);
    assert_int_equal(Meo_metrics(fresh, 2, NULL, &a, NULL), MS_OK);
    assert_int_equal(Meo_metrics(staged, 2, NULL, &b, NULL), MS_OK);
    assertIdentical(&a, &b);
    Meo_delete(fresh);
    Meo_delete(staged);
    Router_delete(router);
    free(first);
    free(part);
    randLayerDone(&r);
}

/* meo_seqsel_output_rel_err and the merged expert's error (sum gates, position slots)
   recomputed with plain loops on a dense (GELU) and a sparse (ReLU, negative biases:
   ~5-20% nonzero) layer, so both of Meo's ways of multiplying by w_out (a matrix product,
   one axpy per nonzero) are checked. */
static void checkSeqsel(float bias, Activation act) {
    int D = 6, N = 24, E = 4, k = 2;
    RandLayer r;
    randLayer(&r, D, N, false, act);
    for (int j = 0; j < N; j++)
        r.w.b_in[j] = bias;
    assert_int_equal(Ffn_hidden(&r.w, r.x, r.L.T, r.h), MS_OK);
    int32_t *part = randPartition(N, E);
    MeoMetrics m;
    assert_int_equal(Meo_evaluate(&r.L, part, E, k, NULL, SPLIT_ALL, 8, NULL, &m, NULL), MS_OK);
    double sum = 0.0, merged = 0.0;
    long n = 0, nonzero = 0;
    for (int q = 0; q < 5; q++) {
        long t0 = r.offsets[q], t1 = r.offsets[q + 1];
        float mean[4] = {0};
        for (long t = t0; t < t1; t++)
            for (int j = 0; j < N; j++)
                mean[part[j]] += fabsf(r.h[t * N + j]) / (float)(t1 - t0);
        int sel[4];
        TopK_select(mean, E, k, sel);
        /* The merged expert, sum gates, position slots: slot i of every selected expert
           is its i-th neuron in index order. */
        int slot[2][6], G = N / E;
        for (int q2 = 0; q2 < k; q2++)
            for (int j = 0, i = 0; j < N; j++)
                if (part[j] == sel[q2])
                    slot[q2][i++] = j;
        for (long t = t0; t < t1; t++) {
            double ym[6] = {0}, y[6] = {0}, dm = 0.0, yy = 0.0;
            for (int i = 0; i < G; i++) {
                double a = 0.0;
                for (int q2 = 0; q2 < k; q2++) {
                    int j = slot[q2][i];
                    a += r.w.b_in[j];
                    for (int c = 0; c < D; c++)
                        a += (double)r.w.w_in[j * D + c] * r.x[t * D + c];
                }
                a = Activation_apply(act, (float)a);
                for (int q2 = 0; q2 < k; q2++)
                    for (int c = 0; c < D; c++)
                        ym[c] += r.w.w_out[c * N + slot[q2][i]] * a;
            }
            for (int j = 0; j < N; j++)
                for (int c = 0; c < D; c++)
                    y[c] += r.w.w_out[c * N + j] * (double)r.h[t * N + j];
            for (int c = 0; c < D; c++) {
                yy += y[c] * y[c];
                dm += (y[c] - ym[c]) * (y[c] - ym[c]);
            }
            if (yy > 0.0)
                merged += sqrt(dm / yy);
        }
        for (long t = t0; t < t1; t++) {
            double y[6] = {0}, ys[6] = {0}, yy = 0.0, dd = 0.0;
            for (int j = 0; j < N; j++) {
                double v = r.h[t * N + j];
                nonzero += v != 0.0;
                bool in = part[j] == sel[0] || part[j] == sel[1];
                for (int c = 0; c < D; c++) {
                    y[c] += r.w.w_out[c * N + j] * v;
                    ys[c] += in ? r.w.w_out[c * N + j] * v : 0.0;
                }
            }
            for (int c = 0; c < D; c++) {
                yy += y[c] * y[c];
                dd += (y[c] - ys[c]) * (y[c] - ys[c]);
            }
            if (yy > 0.0) {
                sum += sqrt(dd / yy);
                n++;
            }
        }
    }
    assert_true(n > 0);
    if (bias < 0.0f)
        assert_true(nonzero < r.L.T * N / 4); /* the sparse path is taken */
    assertNear(m.seqsel_output_rel_err, sum / (double)n, 1e-4);
    assertNear(m.SUM_POS, merged / (double)n, 1e-4);
    free(part);
    randLayerDone(&r);
}

/* One Meo through several partitions (the dense output y made under the first and kept)
   and several routers per partition (router-independent sums shared between routers that
   select the same experts): every (partition, router, k) gives the same bits as a fresh
   Meo evaluating that router alone, whatever order the partitions come in. A router that
   comes back (the same selections again) and a sigmoid router (gates below 1: only the
   sum-gate merges are shared) are included; ReLU with negative biases makes h sparse
   enough for y's sparse path, GELU keeps it dense. */
static void checkOrders(float bias, Activation act, bool gated) {
    int D = 6, N = 24;
    RandLayer r;
    randLayer(&r, D, N, gated, act);
    for (int j = 0; j < N; j++)
        r.w.b_in[j] = bias;
    assert_int_equal(Ffn_hidden(&r.w, r.x, r.L.T, r.h), MS_OK);
    enum { NP = 3, NR = 4 };
    const int Es[NP] = {4, 3, 6};
    int32_t *parts[NP];
    Router *routers[NP][NR];
    const RouterKind kinds[NR] = {ROUTER_ORACLE, ROUTER_SIMILARITY, ROUTER_SIGMOID,
                                  ROUTER_ORACLE};
    MeoMetrics want[NP][NR][6];
    for (int p = 0; p < NP; p++) {
        parts[p] = randPartition(N, Es[p]);
        for (int i = 0; i < NR; i++) {
            routers[p][i] = NULL;
            assert_int_equal(Router_new(&routers[p][i], kinds[i], &r.L, parts[p], Es[p], NULL,
                                        NULL, NULL), MS_OK);
            for (int k = 1; k <= Es[p]; k++) {
                Meo *fresh = NULL;
                assert_int_equal(Meo_new(&fresh, &r.L, parts[p], Es[p], routers[p][i],
                                         SPLIT_ALL, 8, NULL, NULL), MS_OK);
                assert_int_equal(Meo_metrics(fresh, k, NULL, &want[p][i][k - 1], NULL), MS_OK);
                Meo_delete(fresh);
            }
        }
    }
    static const int orders[3][NP] = {{0, 1, 2}, {2, 0, 1}, {1, 2, 0}};
    for (int o = 0; o < 3; o++) {
        Meo *meo = NULL;
        assert_int_equal(Meo_open(&meo, &r.L, SPLIT_ALL, 8, NULL, NULL), MS_OK);
        Meo_setThreads(meo, 1 + o % 2);
        for (int i = 0; i < NP; i++) {
            int p = orders[o][i];
            assert_int_equal(Meo_setPartition(meo, parts[p], Es[p], NULL), MS_OK);
            for (int ri = 0; ri < NR; ri++) {
                Meo_setRouter(meo, routers[p][ri]);
                for (int k = 1; k <= Es[p]; k++) {
                    MeoMetrics m;
                    assert_int_equal(Meo_metrics(meo, k, NULL, &m, NULL), MS_OK);
                    assertIdentical(&m, &want[p][ri][k - 1]);
                }
            }
            Meo_releasePartition(meo);
        }
        Meo_delete(meo);
    }
    for (int p = 0; p < NP; p++) {
        for (int i = 0; i < NR; i++)
            Router_delete(routers[p][i]);
        free(parts[p]);
    }
    randLayerDone(&r);
}

/* The unmerged selection's running sums are kept per sequence and continued by a later
   call whose selection and gates extend them: every call on one Meo gives the same bits as
   a fresh Meo at that k alone, whether it continues (k = 1, 2, 4 of one router), starts
   over (a smaller k, another router's selection, the sigmoid gates) or finds its error
   cached. The layer has sequences longer than one chunk and an expert whose blocks are
   dense (a matrix product between the other experts' sparse products). */
static void test_kept_sums(void **state) {
    int D = 6, N = 24, E = 4;
    RandLayer r;
    randLayer(&r, D, N, false, ACTIVATION_RELU);
    long T = 600;
    static const int64_t off[4] = {0, 300, 301, 600};
    free(r.x);
    free(r.h);
    r.x = randArray((size_t)T * D);
    r.h = xMallocArray((size_t)T * N, sizeof(float));
    int32_t *part = randPartition(N, E);
    for (int j = 0; j < N; j++) /* expert 0 mostly active, the others mostly not */
        r.w.b_in[j] = part[j] == 0 ? 2.0f : -0.6f;
    assert_int_equal(Ffn_hidden(&r.w, r.x, T, r.h), MS_OK);
    long active[4] = {0}, size[4] = {0};
    for (int j = 0; j < N; j++) {
        size[part[j]] += T;
        for (long t = 0; t < T; t++)
            active[part[j]] += r.h[t * N + j] != 0.0f;
    }
    assert_true(active[0] > size[0] * 3 / 4);
    for (int e = 1; e < E; e++)
        assert_true(active[e] < size[e] / 3);
    memcpy(r.offsets, off, sizeof off);
    r.L = (LayerData){.w = &r.w, .T = T, .x = r.x, .h = r.h, .T_train = 0,
                      .seq_offsets = r.offsets, .n_seq = 3};
    Router *sim = NULL, *sig = NULL;
    assert_int_equal(Router_new(&sim, ROUTER_SIMILARITY, &r.L, part, E, NULL, NULL, NULL),
                     MS_OK);
    assert_int_equal(Router_new(&sig, ROUTER_SIGMOID, &r.L, part, E, NULL, NULL, NULL), MS_OK);
    static const struct {
        int router, k; /* 0: oracle, 1: similarity, 2: sigmoid */
    } calls[] = {{1, 1}, {1, 2}, {1, 4}, {1, 3}, {1, 2}, {2, 2}, {2, 4}, {1, 4},
                 {0, 1}, {0, 3}, {0, 4}, {2, 3}};
    const Router *routers[3] = {NULL, sim, sig};
    Meo *meo = NULL;
    assert_int_equal(Meo_new(&meo, &r.L, part, E, NULL, SPLIT_ALL, 8, NULL, NULL), MS_OK);
    Meo_setThreads(meo, 2);
    for (size_t c = 0; c < sizeof calls / sizeof calls[0]; c++) {
        const Router *router = routers[calls[c].router];
        Meo_setRouter(meo, router);
        MeoMetrics got, want;
        assert_int_equal(Meo_metrics(meo, calls[c].k, NULL, &got, NULL), MS_OK);
        Meo *fresh = NULL;
        assert_int_equal(Meo_new(&fresh, &r.L, part, E, router, SPLIT_ALL, 8, NULL, NULL),
                         MS_OK);
        assert_int_equal(Meo_metrics(fresh, calls[c].k, NULL, &want, NULL), MS_OK);
        assertIdentical(&got, &want);
        Meo_delete(fresh);
    }
    Meo_delete(meo);
    Router_delete(sim);
    Router_delete(sig);
    free(part);
    randLayerDone(&r);
}

static void test_partition_order_and_sharing(void **state) {
    checkOrders(-0.3f, ACTIVATION_RELU, false);
    checkOrders(0.0f, ACTIVATION_GELU, false);
    checkOrders(0.0f, ACTIVATION_SILU, true);
}

static void test_seqsel_paths(void **state) {
    checkSeqsel(0.0f, ACTIVATION_GELU);
    checkSeqsel(-0.2f, ACTIVATION_RELU);
}

static void test_stages_and_threads(void **state) {
    checkStages(false, ACTIVATION_RELU);
    checkStages(true, ACTIVATION_SILU);
}

/* With a router, a sequence is scored on its mean x: recompute the recall from
   Router_score on the mean rows and TopK_select. */
static void test_router_mean_x(void **state) {
    int D = 6, N = 24, E = 4;
    RandLayer r;
    randLayer(&r, D, N, false, ACTIVATION_RELU);
    int32_t *part = randPartition(N, E);
    RouterKind kinds[2] = {ROUTER_SIMILARITY, ROUTER_SIGMOID};
    for (int ki = 0; ki < 2; ki++) {
        Router *router = NULL;
        assert_int_equal(Router_new(&router, kinds[ki], &r.L, part, E, NULL, NULL, NULL),
                         MS_OK);
        for (int k = 1; k <= E; k++) {
            MeoMetrics m;
            assert_int_equal(Meo_evaluate(&r.L, part, E, k, router, SPLIT_TEST, 8, NULL, &m,
                                          NULL), MS_OK);
            double recall = 0.0;
            long n = 0;
            for (int q = 1; q < 5; q++) {
                long t0 = r.offsets[q], t1 = r.offsets[q + 1];
                float xm[6] = {0}, sc[4], s[4];
                int sel[4];
                for (long t = t0; t < t1; t++)
                    for (int c = 0; c < D; c++)
                        xm[c] += r.x[t * D + c] / (float)(t1 - t0);
                Router_score(router, xm, NULL, 1, sc);
                TopK_select(sc, E, k, sel);
                for (long t = t0; t < t1; t++) {
                    memset(s, 0, sizeof(s));
                    double tot = 0.0, in = 0.0;
                    for (int j = 0; j < N; j++)
                        s[part[j]] += fabsf(r.h[t * N + j]);
                    for (int e = 0; e < E; e++)
                        tot += s[e];
                    for (int q2 = 0; q2 < k; q2++)
                        in += s[sel[q2]];
                    if (tot > 0) {
                        recall += in / tot;
                        n++;
                    }
                }
            }
            assertNear(m.mass_recall, recall / (double)n, 1e-5);
            if (kinds[ki] == ROUTER_SIMILARITY) {
                /* k = 1: softmax of one gate is 1; no output gate on similarity */
                if (k == 1)
                    assertNear(m.SOFT_POS, m.seqsel_output_rel_err, 1e-4);
                if (k == E)
                    assert_true(m.seqsel_output_rel_err < 1e-5);
            } else if (k == E) {
                /* sigma-MoE gates scale outputs: not 0 even at k = E (SPEC §4) */
                assert_true(m.seqsel_output_rel_err > 1e-3);
            }
            /* L = 48 / 4 = 12; router 2 D E per sequence; P = 2, G = N / E */
            double G = (double)N / E;
            assertNear(m.flops_fraction,
                       (k * G * D * 2 * 2 / 12 + 2 * D * G * 2 + 2.0 * D * E / 12) /
                           (2.0 * D * N * 2), 1e-12);
        }
        Router_delete(router);
    }
    free(part);
    randLayerDone(&r);
}

/* Experts above MEO_ALIGN_MAX_G neurons: aligned errors are NaN at k >= 2 (k = 1 needs no
   assignment), position errors are still reported. */
static void test_align_cap(void **state) {
    int D = 2, G = MEO_ALIGN_MAX_G + 1, N = 2 * G;
    long T = 4;
    FfnWeights w = {.d_model = D, .d_ff = N, .act = ACTIVATION_RELU};
    w.w_in = randArray((size_t)N * D);
    w.w_out = randArray((size_t)N * D);
    float *x = randArray((size_t)T * D), *h = xMallocArray((size_t)T * N, sizeof(float));
    assert_int_equal(Ffn_hidden(&w, x, T, h), MS_OK);
    int32_t *part = randPartition(N, 2);
    LayerData L = {.w = &w, .T = T, .x = x, .h = h, .T_train = 0};
    Meo *meo = NULL;
    assert_int_equal(Meo_new(&meo, &L, part, 2, NULL, SPLIT_ALL, 2, NULL, NULL), MS_OK);
    MeoMetrics m;
    assert_int_equal(Meo_metrics(meo, 2, NULL, &m, NULL), MS_OK);
    assert_true(isnan(m.SUM_ALI) && isnan(m.SOFT_ALI));
    assert_true(isfinite(m.SUM_POS) && isfinite(m.SOFT_POS));
    assert_int_equal(Meo_metrics(meo, 1, NULL, &m, NULL), MS_OK);
    assert_true(isfinite(m.SUM_ALI));
    int *map = xMallocArray((size_t)G, sizeof(int));
    assert_false(Meo_alignment(meo, 0, 1, map));
    free(map);
    Meo_delete(meo);
    free(part);
    free(x);
    free(h);
    FfnWeights_done(&w);
}

static void test_errors(void **state) {
    FfnWeights w;
    LayerData L;
    handLayer(&w, &L, NULL);
    MeoMetrics m;
    char *cause = NULL;
    assert_int_equal(Meo_evaluate(&L, handPart, 4, 0, NULL, SPLIT_ALL, 3, NULL, &m, &cause),
                     MS_ERR_RANGE);
    assert_non_null(cause);
    assert_int_equal(Meo_evaluate(&L, handPart, 4, 5, NULL, SPLIT_ALL, 3, NULL, &m, &cause),
                     MS_ERR_RANGE);
    assert_int_equal(Meo_evaluate(&L, handPart, 3, 1, NULL, SPLIT_ALL, 3, NULL, &m, &cause),
                     MS_ERR_RANGE); /* expert 3 outside 0..2 */
    assert_int_equal(Meo_evaluate(&L, handPart, 4, 1, NULL, SPLIT_ALL, 0, NULL, &m, &cause),
                     MS_ERR_RANGE);
    assert_int_equal(Meo_evaluate(&L, handPart, 4, 1, NULL, SPLIT_TRAIN, 3, NULL, &m, &cause),
                     MS_ERR_RANGE); /* T_train = 0: empty */
    atomic_uint gen = 1;
    Cancel cancel = {.generation = &gen, .mine = 0};
    assert_int_equal(Meo_evaluate(&L, handPart, 4, 1, NULL, SPLIT_ALL, 3, &cancel, &m, &cause),
                     MS_ERR_CANCELED);
    free(cause);
    Meo_delete(NULL);
    assert_string_equal(MeoGates_name(MEO_GATES_SOFTMAX), "softmax");
    assert_string_equal(MeoSlots_name(MEO_SLOTS_ALIGNED), "aligned");
}

/* ---- the merged expert computed the direct way ----
   Meo evaluates the merged expert from the layer's pre-activations (the input side is
   linear in the merged weights) and merges only the w_out rows in use; here its weights
   are merged outright (w_in, w_gate, b_in rows and w_out columns, in double) and the FFN
   is run with them, token by token. Every metric is compared for k = 1..3, both gates and
   both slot kinds (aligned maps from Meo_alignment, tested on their own above), on a
   layer whose long sequences span several of Meo's 256-token chunks. */

#define DIRECT_MAX_D 80

typedef struct Direct {
    const RandLayer *r;
    const int32_t *part;
    int E, nb[8][32], size[8]; /* each expert's neurons, ascending */
} Direct;

/* The oracle's token scores and the sequence order, computed as SPEC §4-5 say. */
static void directOrder(const Direct *d, long t0, long t1, float *s, int *order) {
    int N = d->r->w.d_ff, E = d->E;
    double mean[8] = {0};
    for (long t = t0; t < t1; t++) {
        double acc[8] = {0};
        for (int j = 0; j < N; j++)
            acc[d->part[j]] += fabsf(d->r->h[t * N + j]);
        for (int e = 0; e < E; e++) {
            s[(t - t0) * E + e] = (float)acc[e];
            mean[e] += (float)acc[e];
        }
    }
    float mf[8];
    for (int e = 0; e < E; e++)
        mf[e] = (float)(mean[e] / (double)(t1 - t0));
    TopK_order(mf, E, order);
    for (int e = 0; e < E; e++) /* the logits, for softmax gates */
        s[(t1 - t0) * E + e] = mf[e];
}

/* ||y - yhat|| / ||y|| with y = w_out h (no b_out); -1 when ||y|| = 0. */
static double relErr(const RandLayer *r, long t, const double *yhat) {
    int D = r->w.d_model, N = r->w.d_ff;
    double yy = 0.0, dd = 0.0;
    for (int c = 0; c < D; c++) {
        double y = 0.0;
        for (int j = 0; j < N; j++)
            y += (double)r->w.w_out[c * N + j] * r->h[t * N + j];
        yy += y * y;
        dd += (y - yhat[c]) * (y - yhat[c]);
    }
    return yy > 0.0 ? sqrt(dd / yy) : -1.0;
}

/* The merged expert's output on token t: slot i merges neuron map[q][i] (or nothing) of
   every selected expert q with gate g[q]. */
static void directMerged(const RandLayer *r, int k, int G0, int map[][32], const double *g,
                         long t, double *yhat) {
    const FfnWeights *w = &r->w;
    int D = w->d_model, N = w->d_ff;
    for (int c = 0; c < D; c++)
        yhat[c] = 0.0;
    for (int i = 0; i < G0; i++) {
        double win[DIRECT_MAX_D] = {0}, wg[DIRECT_MAX_D] = {0}, wout[DIRECT_MAX_D] = {0};
        double b = 0.0;
        for (int q = 0; q < k; q++) {
            int j = map[q][i];
            if (j < 0)
                continue;
            b += g[q] * w->b_in[j];
            for (int c = 0; c < D; c++) {
                win[c] += g[q] * w->w_in[j * D + c];
                wg[c] += w->w_gate ? g[q] * w->w_gate[j * D + c] : 0.0;
                wout[c] += g[q] * w->w_out[c * N + j];
            }
        }
        double up = b, gate = 0.0;
        for (int c = 0; c < D; c++) {
            up += win[c] * r->x[t * D + c];
            gate += wg[c] * r->x[t * D + c];
        }
        double hid = w->w_gate ? Activation_apply(w->act, (float)gate) * up
                               : Activation_apply(w->act, (float)up);
        for (int c = 0; c < D; c++)
            yhat[c] += wout[c] * hid;
    }
}

static void checkDirect(int D, int N, int E, bool gated, Activation act, float bias) {
    static const int64_t off[4] = {0, 300, 301, 600};
    assert_true(D <= DIRECT_MAX_D && N <= 8 * 32 && E <= 8 && N / E < 32);
    RandLayer r;
    randLayer(&r, D, N, gated, act);
    long T = 600;
    free(r.x);
    free(r.h);
    r.x = randArray((size_t)T * D);
    r.h = xMallocArray((size_t)T * N, sizeof(float));
    for (int j = 0; j < N; j++)
        r.w.b_in[j] += bias;
    assert_int_equal(Ffn_hidden(&r.w, r.x, T, r.h), MS_OK);
    memcpy(r.offsets, off, sizeof off);
    r.L = (LayerData){.w = &r.w, .T = T, .x = r.x, .h = r.h, .T_train = 0,
                      .seq_offsets = r.offsets, .n_seq = 3};
    Direct d = {.r = &r, .E = E};
    int32_t *part = randPartition(N, E);
    d.part = part;
    for (int j = 0; j < N; j++)
        d.nb[part[j]][d.size[part[j]]++] = j;
    Meo *meo = NULL;
    assert_int_equal(Meo_new(&meo, &r.L, part, E, NULL, SPLIT_ALL, 8, NULL, NULL), MS_OK);
    Meo_setThreads(meo, 2);
    float *s = xMallocArray((size_t)(T + 1) * E, sizeof(float));
    for (int k = 1; k <= 3; k++) {
        double recall = 0.0, seqsel = 0.0, merged[MEO_GATES][MEO_SLOTS] = {{0}};
        long nr = 0, ne = 0;
        for (int q = 0; q < 3; q++) {
            long t0 = off[q], t1 = off[q + 1];
            int order[8], map[MEO_SLOTS][3][32];
            directOrder(&d, t0, t1, s, order);
            const float *logit = s + (t1 - t0) * E;
            double soft[3], sum = 0.0, ones[3] = {1, 1, 1};
            for (int j = 0; j < k; j++)
                sum += soft[j] = exp((double)logit[order[j]] - logit[order[0]]);
            for (int j = 0; j < k; j++)
                soft[j] = (float)(soft[j] / sum); /* Meo's gates are floats */
            int G0 = d.size[order[0]];
            for (int j = 0; j < k; j++) {
                for (int i = 0; i < G0; i++)
                    map[MEO_SLOTS_POSITION][j][i] = i < d.size[order[j]] ? d.nb[order[j]][i] : -1;
                assert_true(Meo_alignment(meo, order[0], order[j], map[MEO_SLOTS_ALIGNED][j]));
            }
            for (long t = t0; t < t1; t++) {
                const float *st = s + (t - t0) * E;
                double tot = 0.0, in = 0.0, ys[DIRECT_MAX_D] = {0}, ym[DIRECT_MAX_D];
                for (int e = 0; e < E; e++)
                    tot += st[e];
                for (int j = 0; j < k; j++)
                    in += st[order[j]];
                if (tot > 0.0) {
                    recall += in / tot;
                    nr++;
                }
                for (int j = 0; j < k; j++)
                    for (int i = 0; i < d.size[order[j]]; i++)
                        for (int c = 0; c < D; c++)
                            ys[c] += (double)r.w.w_out[c * N + d.nb[order[j]][i]] *
                                     r.h[t * N + d.nb[order[j]][i]];
                double e = relErr(&r, t, ys);
                if (e < 0.0)
                    continue;
                seqsel += e;
                ne++;
                for (int g = 0; g < MEO_GATES; g++) {
                    for (int sl = 0; sl < MEO_SLOTS; sl++) {
                        directMerged(&r, k, G0, map[sl], g == MEO_GATES_SUM ? ones : soft, t, ym);
                        merged[g][sl] += relErr(&r, t, ym);
                    }
                }
            }
        }
        MeoMetrics m;
        assert_int_equal(Meo_metrics(meo, k, NULL, &m, NULL), MS_OK);
        assertNear(m.mass_recall, recall / (double)nr, 1e-6);
        assertNear(m.seqsel_output_rel_err, seqsel / (double)ne, 1e-5);
        for (int g = 0; g < MEO_GATES; g++)
            for (int sl = 0; sl < MEO_SLOTS; sl++)
                assertNear(m.output_rel_err[g][sl], merged[g][sl] / (double)ne, 1e-5);
        if (k > 1) /* the variants differ, so each one is pinned */
            assert_true(fabs(m.SUM_POS - m.SOFT_POS) > 1e-3 && fabs(m.SUM_POS - m.SUM_ALI) > 1e-3);
    }
    free(s);
    Meo_delete(meo);
    free(part);
    randLayerDone(&r);
}

static void test_merged_direct(void **state) {
    checkDirect(6, 26, 4, false, ACTIVATION_RELU, -0.3f); /* unequal experts, sparse */
    checkDirect(6, 24, 4, true, ACTIVATION_SILU, 0.0f);
    /* d_model 75 and experts of 20-21 neurons: the AVX kernels' full tiles (64 and 8
       columns, 8 slots) and their tails */
    checkDirect(75, 82, 4, false, ACTIVATION_RELU, -0.3f);
    checkDirect(75, 80, 4, true, ACTIVATION_SILU, 0.0f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_worked),        cmocka_unit_test(test_unequal_sizes),
        cmocka_unit_test(test_one_expert),         cmocka_unit_test(test_identities),
        cmocka_unit_test(test_relabel),
        cmocka_unit_test(test_offsets_vs_blocks),  cmocka_unit_test(test_aligned_duplicates),
        cmocka_unit_test(test_router_mean_x),      cmocka_unit_test(test_align_cap),
        cmocka_unit_test(test_errors),            cmocka_unit_test(test_stages_and_threads),
        cmocka_unit_test(test_seqsel_paths),       cmocka_unit_test(test_merged_direct),
        cmocka_unit_test(test_partition_order_and_sharing),
        cmocka_unit_test(test_kept_sums),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
