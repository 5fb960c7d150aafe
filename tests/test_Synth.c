/*
moescope - tests/test_Synth.c
core/Synth on small shapes: h recomputed with a plain loop, the sparsity target,
determinism (seeds, layers, blocks in any order), balanced planted groups that co-fire,
float16 rounding; then moescope-synth end to end, checked by
tests/fixtures/check_synth.py with h5py and numpy, and its exit status on bad options.
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/Synth.h"
#include "util/XUtils.h" /* before cmocka.h, which defines a fail() macro */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

static char tmpdir[] = "/tmp/moescope-test_Synth.XXXXXX";

static SynthOptions smallOptions(void) {
    SynthOptions o;
    SynthOptions_default(&o);
    o.d_model = 32;
    o.d_ff = 128;
    o.n_tokens = 2048;
    o.n_groups = 8;
    o.seed = 11;
    return o;
}

static void makeLayer(const SynthOptions *o, int layer, SynthLayer *l) {
    char *cause = NULL;
    MsStatus st = Synth_layer(o, layer, l, &cause);
    if (st != MS_OK)
        fail_msg("Synth_layer: %s", cause ? cause : "(no cause)");
    free(cause);
}

static double sparsityOf(const SynthLayer *l) {
    long zeros = 0, n = l->T * l->w.d_ff;
    for (long i = 0; i < n; i++)
        zeros += l->h[i] <= 0.0f;
    return (double)zeros / (double)n;
}

static void test_hIsReluOfTheWeights(void **state) {
    (void)state;
    SynthOptions o = smallOptions();
    SynthLayer l;
    makeLayer(&o, 0, &l);
    assert_int_equal(l.T, o.n_tokens);
    assert_int_equal(l.w.d_model, 32);
    assert_int_equal(l.w.d_ff, 128);
    assert_null(l.w.w_gate);
    assert_non_null(l.w.b_in);
    assert_non_null(l.w.b_out);
    for (long t = 0; t < l.T; t++) {
        for (int j = 0; j < l.w.d_ff; j++) {
            double pre = l.w.b_in[j];
            for (int c = 0; c < l.w.d_model; c++)
                pre += (double)l.w.w_in[(long)j * l.w.d_model + c] * l.x[t * l.w.d_model + c];
            double want = pre > 0 ? pre : 0;
            double got = l.h[t * l.w.d_ff + j];
            if (fabs(got - want) > 1e-5 * (1 + fabs(want)))
                fail_msg("h[%ld][%d] = %g, loop gives %g", t, j, got, want);
        }
    }
    SynthLayer_done(&l);
    assert_null(l.h);
}

static void test_sparsityHitsTarget(void **state) {
    (void)state;
    double targets[] = {0.9, 0.7, 0.95};
    for (int i = 0; i < 3; i++) {
        SynthOptions o = smallOptions();
        o.sparsity = targets[i];
        SynthLayer l;
        makeLayer(&o, 0, &l);
        double s = sparsityOf(&l);
        if (fabs(s - targets[i]) > 0.02)
            fail_msg("sparsity %.4f for target %.2f", s, targets[i]);
        SynthLayer_done(&l);
    }
}

static bool sameLayer(const SynthLayer *a, const SynthLayer *b) {
    long d = a->w.d_model, N = a->w.d_ff, T = a->T;
    return memcmp(a->x, b->x, sizeof(float) * T * d) == 0 &&
           memcmp(a->h, b->h, sizeof(float) * T * N) == 0 &&
           memcmp(a->w.w_in, b->w.w_in, sizeof(float) * N * d) == 0 &&
           memcmp(a->w.b_in, b->w.b_in, sizeof(float) * N) == 0 &&
           memcmp(a->w.w_out, b->w.w_out, sizeof(float) * N * d) == 0 &&
           memcmp(a->w.b_out, b->w.b_out, sizeof(float) * d) == 0 &&
           memcmp(a->planted, b->planted, sizeof(int32_t) * N) == 0;
}

static void test_seedDecidesEverything(void **state) {
    (void)state;
    SynthOptions o = smallOptions();
    SynthLayer a, b, c, d;
    makeLayer(&o, 0, &a);
    makeLayer(&o, 0, &b);
    assert_true(sameLayer(&a, &b));
    makeLayer(&o, 1, &c); /* another layer: other weights, other x */
    assert_memory_not_equal(a.w.w_in, c.w.w_in, sizeof(float) * 32);
    assert_memory_not_equal(a.x, c.x, sizeof(float) * 32);
    o.seed++;
    makeLayer(&o, 0, &d);
    assert_memory_not_equal(a.w.w_in, d.w.w_in, sizeof(float) * 32);
    assert_memory_not_equal(a.x, d.x, sizeof(float) * 32);
    assert_memory_not_equal(a.planted, d.planted, sizeof(int32_t) * 128);
    SynthLayer_done(&a);
    SynthLayer_done(&b);
    SynthLayer_done(&c);
    SynthLayer_done(&d);
}

/* Blocks in any order give Synth_layer's rows; weights do not depend on the token count;
   token topics are the same in every layer. */
static void test_streamMatchesWholeLayer(void **state) {
    (void)state;
    SynthOptions o = smallOptions();
    SynthLayer whole;
    makeLayer(&o, 2, &whole);
    SynthOptions shorter = o;
    shorter.n_tokens = 100;
    char *cause = NULL;
    SynthStream *s = NULL, *s3 = NULL;
    assert_int_equal(SynthStream_new(&s, &shorter, 2, &cause), MS_OK);
    assert_int_equal(SynthStream_new(&s3, &o, 3, &cause), MS_OK);
    const FfnWeights *w = SynthStream_weights(s);
    assert_memory_equal(w->w_in, whole.w.w_in, sizeof(float) * 128 * 32);
    assert_memory_equal(w->b_in, whole.w.b_in, sizeof(float) * 128);
    assert_memory_equal(SynthStream_planted(s), whole.planted, sizeof(int32_t) * 128);
    long first[] = {1500, 0, 37, 1999};
    long rows[] = {548, 37, 1, 1};
    float *x = xMallocArray(548 * 32, sizeof *x), *h = xMallocArray(548 * 128, sizeof *h);
    int32_t topic[548], topic3[548];
    for (int b = 0; b < 4; b++) {
        assert_int_equal(SynthStream_tokens(s, first[b], rows[b], x, h, topic), MS_OK);
        assert_memory_equal(x, whole.x + first[b] * 32, sizeof(float) * rows[b] * 32);
        assert_memory_equal(h, whole.h + first[b] * 128, sizeof(float) * rows[b] * 128);
        assert_int_equal(SynthStream_tokens(s3, first[b], rows[b], x, NULL, topic3), MS_OK);
        assert_memory_equal(topic, topic3, sizeof(int32_t) * rows[b]);
        for (long r = 0; r < rows[b]; r++)
            assert_in_range(topic[r], 0, o.n_groups - 1);
    }
    free(x);
    free(h);
    SynthStream_delete(s);
    SynthStream_delete(s3);
    SynthStream_delete(NULL);
    SynthLayer_done(&whole);
    free(cause);
}

static void test_plantedGroupsBalancedAndScattered(void **state) {
    (void)state;
    int shapes[][2] = {{128, 8}, {100, 7}, {50, 50}, {64, 1}};
    for (int i = 0; i < 4; i++) {
        SynthOptions o = smallOptions();
        o.d_ff = shapes[i][0];
        o.n_groups = shapes[i][1];
        o.n_tokens = 64;
        SynthLayer l;
        makeLayer(&o, 0, &l);
        int count[128] = {0};
        bool sorted = true;
        for (int j = 0; j < o.d_ff; j++) {
            assert_in_range(l.planted[j], 0, o.n_groups - 1);
            count[l.planted[j]]++;
            sorted = sorted && (j == 0 || l.planted[j] >= l.planted[j - 1]);
        }
        int lo = o.d_ff / o.n_groups, hi = (o.d_ff + o.n_groups - 1) / o.n_groups;
        for (int g = 0; g < o.n_groups; g++)
            assert_in_range(count[g], lo, hi);
        if (o.n_groups > 1)
            assert_false(sorted); /* groups are not index ranges */
        SynthLayer_done(&l);
    }
}

/* Co-activation counts: within-group pairs co-fire far more often than others, and
   each neuron's strongest co-firing partner is in its own group. */
static void test_groupsFireTogether(void **state) {
    (void)state;
    SynthOptions o = smallOptions();
    SynthLayer l;
    makeLayer(&o, 0, &l);
    const int N = o.d_ff;
    long *C = xCalloc((size_t)N * N, sizeof *C);
    int *on = xMallocArray((size_t)N, sizeof *on);
    for (long t = 0; t < l.T; t++) {
        int n = 0;
        for (int j = 0; j < N; j++)
            if (l.h[t * N + j] > 0)
                on[n++] = j;
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++)
                C[(long)on[a] * N + on[b]]++;
    }
    double within = 0, between = 0;
    long nWithin = 0, nBetween = 0, partnerInGroup = 0;
    for (int i = 0; i < N; i++) {
        int best = -1;
        for (int j = 0; j < N; j++) {
            if (i == j)
                continue;
            long c = C[(long)i * N + j];
            if (l.planted[i] == l.planted[j]) {
                within += (double)c;
                nWithin++;
            } else {
                between += (double)c;
                nBetween++;
            }
            if (best < 0 || c > C[(long)i * N + best])
                best = j;
        }
        partnerInGroup += l.planted[best] == l.planted[i];
    }
    within /= (double)nWithin * (double)l.T;
    between /= (double)nBetween * (double)l.T;
    if (within < 10 * between)
        fail_msg("co-firing rate within groups %.4f, between %.4f", within, between);
    assert_true(partnerInGroup >= N * 95 / 100);
    free(C);
    free(on);
    SynthLayer_done(&l);
}

/* A float16 value: zero low 13 mantissa bits when normal, a multiple of 2^-24 when not. */
static bool isHalfValue(float v) {
    float a = fabsf(v);
    if (a < 0x1p-14f)
        return a * 0x1p24f == nearbyintf(a * 0x1p24f);
    uint32_t bits;
    memcpy(&bits, &a, sizeof bits);
    return (bits & 0x1fffu) == 0 && a <= 65504.0f;
}

static void test_halfPrecisionRounding(void **state) {
    (void)state;
    SynthOptions o = smallOptions();
    o.n_tokens = 300;
    char *cause = NULL;
    SynthStream *s = NULL;
    assert_int_equal(SynthStream_new(&s, &o, 0, &cause), MS_OK);
    SynthStream_useHalfPrecision(s);
    const FfnWeights *w = SynthStream_weights(s);
    for (long i = 0; i < 128 * 32; i++) {
        assert_true(isHalfValue(w->w_in[i]));
        assert_true(isHalfValue(w->w_out[i]));
    }
    for (int j = 0; j < 128; j++)
        assert_true(isHalfValue(w->b_in[j]));
    float *x = xMallocArray(300 * 32, sizeof *x), *h = xMallocArray(300 * 128, sizeof *h);
    assert_int_equal(SynthStream_tokens(s, 0, 300, x, h, NULL), MS_OK);
    long changed = 0;
    SynthLayer full;
    makeLayer(&o, 0, &full);
    for (long i = 0; i < 300 * 32; i++) {
        assert_true(isHalfValue(x[i]));
        assert_true(fabsf(x[i] - full.x[i]) <= fabsf(full.x[i]) * 0x1p-11f + 0x1p-25f);
        changed += x[i] != full.x[i];
    }
    assert_true(changed > 0);
    SynthLayer_done(&full);
    free(x);
    free(h);
    SynthStream_delete(s);
    free(cause);
}

static void test_badOptionsAreRangeErrors(void **state) {
    (void)state;
    SynthOptions good = smallOptions(), o;
    char *cause = NULL;
    assert_int_equal(SynthOptions_check(&good, &cause), MS_OK);
    assert_int_equal(SynthOptions_topics(&good), 1); /* round(0.1 * 8) */
    SynthOptions_default(&o);
    assert_int_equal(SynthOptions_topics(&o), 3); /* round(0.1 * 32) */
    o = good, o.n_groups = 129;
    assert_int_equal(SynthOptions_check(&o, &cause), MS_ERR_RANGE);
    assert_non_null(strstr(cause, "groups"));
    o = good, o.sparsity = 1.0;
    assert_int_equal(SynthOptions_check(&o, &cause), MS_ERR_RANGE);
    o = good, o.sparsity = NAN;
    assert_int_equal(SynthOptions_check(&o, &cause), MS_ERR_RANGE);
    o = good, o.topics_per_token = 9;
    assert_int_equal(SynthOptions_check(&o, &cause), MS_ERR_RANGE);
    o = good, o.d_model = 0;
    assert_int_equal(SynthOptions_check(&o, &cause), MS_ERR_RANGE);
    o = good, o.n_tokens = 0;
    SynthLayer l;
    assert_int_equal(Synth_layer(&o, 0, &l, &cause), MS_ERR_RANGE);
    assert_null(l.h);
    free(cause);
}

/* ---- the program ---- */

static int run(char *const argv[], bool quiet) {
    pid_t pid = fork();
    if (pid == 0) {
        if (quiet && !freopen("/dev/null", "w", stderr))
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static char *fromEnv(const char *var, const char *rel) {
    const char *top = getenv(var);
    return xAsprintf("%s/%s", top && top[0] ? top : ".", rel);
}

static const char *python(void) {
    const char *py = getenv("H5PY_PYTHON");
    return py && py[0] ? py : "/usr/bin/python3";
}

/* Runs moescope-synth with extra options and has check_synth.py verify the file. */
static void runAndCheck(const char *name, const char *layers, const char *sparsity,
                        bool half, bool withH, const char *gzip) {
    char *prog = fromEnv("top_builddir", "src/moescope-synth");
    char *script = fromEnv("top_srcdir", "tests/fixtures/check_synth.py");
    char *out = xAsprintf("%s/%s.h5", tmpdir, name);
    char *args[32] = {prog, "-o", out, "--d-model", "24", "--d-ff", "96", "--tokens",
                      "1000", "--groups", "6", "--seq-len", "300", "--seed", "7",
                      "--layers", (char *)layers, "--sparsity", (char *)sparsity, "--gzip",
                      (char *)gzip};
    int n = 21;
    if (half)
        args[n++] = "--float16";
    if (!withH)
        args[n++] = "--no-h";
    args[n] = NULL;
    assert_int_equal(run(args, false), 0);
    char *check[] = {(char *)python(), script, out, (char *)layers, "24", "96", "1000", "6",
                     "300", (char *)sparsity, half ? "1" : "0", withH ? "1" : "0", NULL};
    assert_int_equal(run(check, false), 0);
    unlink(out);
    free(out);
    free(script);
    free(prog);
}

static void test_programWritesTheSpecLayout(void **state) {
    (void)state;
    runAndCheck("plain", "2", "0.9", false, true, "0");
    runAndCheck("half", "1", "0.8", true, true, "3");
    runAndCheck("noh", "3", "0.9", false, false, "1");
}

static void test_programBadOptionsExit2(void **state) {
    (void)state;
    char *prog = fromEnv("top_builddir", "src/moescope-synth");
    char *out = xAsprintf("%s/bad.h5", tmpdir);
    char *bad[][6] = {
        {prog, "-o", out, "--sparsity", "1.5", NULL},
        {prog, "-o", out, "--groups", "0", NULL},
        {prog, "-o", out, "--d-ff", "12x", NULL},
        {prog, "-o", out, "--activation", "tanh", NULL},
        {prog, "-o", out, "--gzip", "10", NULL},
        {prog, "-o", out, "--no-such-option", NULL},
        {prog, "-o", out, "--groups", "100000", NULL}, /* more groups than d_ff */
        {prog, "--tokens", "10", NULL},                /* no -o */
    };
    for (int i = 0; i < (int)(sizeof bad / sizeof bad[0]); i++)
        assert_int_equal(run(bad[i], true), 2);
    char *missingDir = xAsprintf("%s/no/dir/x.h5", tmpdir);
    char *io[] = {prog, "-o", missingDir, "--d-model", "8", "--d-ff", "16", "--tokens", "10",
                  "--groups", "4", NULL};
    assert_int_equal(run(io, true), 2);
    assert_int_equal(access(out, F_OK), -1);
    free(missingDir);
    free(out);
    free(prog);
}

static int setup(void **state) {
    (void)state;
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int removeEntry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int teardown(void **state) {
    (void)state;
    return nftw(tmpdir, removeEntry, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hIsReluOfTheWeights),
        cmocka_unit_test(test_sparsityHitsTarget),
        cmocka_unit_test(test_seedDecidesEverything),
        cmocka_unit_test(test_streamMatchesWholeLayer),
        cmocka_unit_test(test_plantedGroupsBalancedAndScattered),
        cmocka_unit_test(test_groupsFireTogether),
        cmocka_unit_test(test_halfPrecisionRounding),
        cmocka_unit_test(test_badOptionsAreRangeErrors),
        cmocka_unit_test(test_programWritesTheSpecLayout),
        cmocka_unit_test(test_programBadOptionsExit2),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
