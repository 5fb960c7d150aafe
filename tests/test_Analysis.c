/*
moescope - tests/test_Analysis.c
The UI's result cache on the default data (data/stories260K.h5): results computed by the
worker threads equal direct engine calls with `--batch`'s parameters (partition seed and
iterations, router options, test split, thread count 2 against the UI's 1), for param +
similarity, coact at a target sparsity with another test fraction, and the mlp router;
cached results come back without work; pausing holds work; impossible knobs fail with a
sentence; the Layers view shows the computed numbers; the caller's tasks keep the results
they pin and report how they ended.
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/Coact.h"
#include "core/Eval.h"
#include "core/Partition.h"
#include "core/Router.h"
#include "core/Sparsity.h"
#include "io/Dump.h"
#include "jobs/Analysis.h"
#include "jobs/LayerLoad.h"
#include "util/XUtils.h"
#include "views/LayersView.h"

typedef struct Fixture {
    Dump *dump;
    Analysis *an;
    LayerLoad load; /* layer 0, loaded directly */
} Fixture;

static int setup(void **state) {
    const char *dir = getenv("top_builddir");
    char *path = xAsprintf("%s/data/stories260K.h5", dir ? dir : ".");
    Fixture *f = xCalloc(1, sizeof *f);
    char *cause = NULL;
    const char *paths[1] = {path};
    MsStatus st = Dump_open(&f->dump, paths, 1, &cause);
    free(path);
    if (st != MS_OK) {
        fprintf(stderr, "%s\n", cause);
        free(cause);
        free(f);
        return -1;
    }
    f->an = Analysis_new(f->dump, 1, &cause);
    assert_non_null(f->an);
    assert_int_equal(LayerLoad_init(&f->load, f->dump, 0, 0.1, NULL, &cause), MS_OK);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    Fixture *f = *state;
    Analysis_delete(f->an);
    LayerLoad_done(&f->load);
    Dump_delete(f->dump);
    free(f);
    return 0;
}

typedef struct Ask {
    int layer;
    Knobs k;
    RouterKind kind;
} Ask;

typedef const void *(*Getter)(Analysis *an, const Ask *a, AnStatus *st);

static const void *getEval(Analysis *an, const Ask *a, AnStatus *st) {
    return Analysis_eval(an, a->layer, &a->k, a->kind, st);
}

static const void *getPart(Analysis *an, const Ask *a, AnStatus *st) {
    return Analysis_partition(an, a->layer, &a->k, st);
}

static const void *getSparsity(Analysis *an, const Ask *a, AnStatus *st) {
    return Analysis_sparsity(an, a->layer, &a->k, st);
}

/* Frames until the getter has its value (or failed); NULL on failure or timeout. */
static const void *pump(Analysis *an, Getter get, const Ask *a, AnStatus *st) {
    double end = XUtils_now() + 120;
    while (XUtils_now() < end) {
        Analysis_beginFrame(an);
        const void *v = get(an, a, st);
        Analysis_endFrame(an);
        if (v || st->state == AN_FAILED)
            return v;
        struct pollfd p = {.fd = Analysis_fd(an), .events = POLLIN};
        poll(&p, 1, 200);
        Analysis_collect(an);
    }
    return NULL;
}

static void assertMetricsEqual(const Eval *a, const Eval *b, int E) {
    for (int k = 1; k <= E; k++) {
        EvalMetrics x, y;
        Eval_metrics(a, k, &x);
        Eval_metrics(b, k, &y);
        assert_memory_equal(&x, &y, sizeof x); /* bitwise: same computation */
    }
}

static void test_param_similarity_equals_batch(void **state) {
    Fixture *f = *state;
    Ask a = {.layer = 0, .kind = ROUTER_SIMILARITY};
    Knobs_default(&a.k);
    AnStatus st;
    const Eval *ev = pump(f->an, getEval, &a, &st);
    assert_non_null(ev);

    const LayerData *d = &f->load.data;
    int N = d->w->d_ff, E = 8;
    int32_t *part = xMallocArray((size_t)N, sizeof(int32_t));
    char *cause = NULL;
    assert_int_equal(Partition_param(part, FfnWeights_keys(d->w), N, d->w->d_model, E, 0, 30,
                                     NULL, NULL, &cause), MS_OK);
    const AnPartition *p = pump(f->an, getPart, &a, &st);
    assert_non_null(p);
    assert_memory_equal(p->part, part, (size_t)N * sizeof(int32_t));
    RouterOptions o;
    RouterOptions_default(&o);
    o.epochs = 30;
    o.seed = 0;
    o.threads = 2;
    Router *r = NULL;
    assert_int_equal(Router_new(&r, ROUTER_SIMILARITY, d, part, E, &o, NULL, &cause), MS_OK);
    Eval *ref = NULL;
    assert_int_equal(Eval_new(&ref, d, part, E, r, SPLIT_TEST, 2, NULL, &cause), MS_OK);
    assertMetricsEqual(ev, ref, E);

    /* Cached: the next frame has it without any work. */
    Analysis_beginFrame(f->an);
    assert_ptr_equal(Analysis_eval(f->an, 0, &a.k, ROUTER_SIMILARITY, &st), ev);
    Analysis_endFrame(f->an);
    assert_int_equal(st.state, AN_DONE);
    AnActivity act;
    Analysis_activity(f->an, &act);
    assert_int_equal(act.queued + act.running, 0);

    Eval_delete(ref);
    Router_delete(r);
    free(part);
}

static void test_coact_target_equals_batch(void **state) {
    Fixture *f = *state;
    Ask a = {.layer = 0};
    Knobs_default(&a.k);
    a.k.strategy = PARTITION_COACT;
    a.k.target = 0.9;
    a.k.test_fraction = 0.2;
    a.k.seed = 3;
    AnStatus st;
    const AnPartition *p = pump(f->an, getPart, &a, &st);
    assert_non_null(p);

    LayerData d = f->load.data;
    d.T_train = Split_trainRows(d.T, d.seq_offsets, d.n_seq, 0.2);
    int N = d.w->d_ff;
    char *cause = NULL;
    float tau;
    assert_int_equal(Sparsity_tauForSparsity(d.h, d.T, N, 0.9, 2, NULL, &tau, &cause), MS_OK);
    float atau;
    Analysis_beginFrame(f->an);
    assert_true(Analysis_tau(f->an, 0, &a.k, &atau, &st));
    Analysis_endFrame(f->an);
    assert_true(atau == tau);
    Coact c;
    assert_int_equal(Coact_compute(&c, d.h, d.T_train, N, tau, 2, NULL, &cause), MS_OK);
    PartitionGraph g;
    assert_int_equal(PartitionGraph_fromCoact(&g, &c, NULL, &cause), MS_OK);
    int32_t *part = xMallocArray((size_t)N, sizeof(int32_t));
    int fallback = -1;
    assert_int_equal(Partition_coact(part, &g, 8, 3, &fallback, NULL, &cause), MS_OK);
    assert_memory_equal(p->part, part, (size_t)N * sizeof(int32_t));
    assert_int_equal(p->fallback_random, fallback);

    double intra = NAN;
    double end = XUtils_now() + 60;
    bool have = false;
    while (!have && XUtils_now() < end) {
        Analysis_beginFrame(f->an);
        have = Analysis_intra(f->an, 0, &a.k, &intra, &st);
        Analysis_endFrame(f->an);
        struct pollfd pf = {.fd = Analysis_fd(f->an), .events = POLLIN};
        if (!have)
            poll(&pf, 1, 200);
        Analysis_collect(f->an);
    }
    assert_true(have);
    assert_true(intra == Coact_intra(&c, part));

    /* The router fits on the same split: the oracle's evaluation on the test rows. */
    a.kind = ROUTER_ORACLE;
    const Eval *ev = pump(f->an, getEval, &a, &st);
    assert_non_null(ev);
    Router *r = NULL;
    RouterOptions o;
    RouterOptions_default(&o);
    o.seed = 3;
    assert_int_equal(Router_new(&r, ROUTER_ORACLE, &d, part, 8, &o, NULL, &cause), MS_OK);
    Eval *ref = NULL;
    assert_int_equal(Eval_new(&ref, &d, part, 8, r, SPLIT_TEST, 2, NULL, &cause), MS_OK);
    assertMetricsEqual(ev, ref, 8);
    Eval_delete(ref);
    Router_delete(r);
    free(part);
    PartitionGraph_done(&g);
    Coact_done(&c);
}

static void test_mlp_equals_batch(void **state) {
    Fixture *f = *state;
    Ask a = {.layer = 0, .kind = ROUTER_MLP};
    Knobs_default(&a.k);
    a.k.strategy = PARTITION_RANDOM;
    a.k.E = 4;
    a.k.seed = 5;
    AnStatus st;
    const Eval *ev = pump(f->an, getEval, &a, &st);
    assert_non_null(ev);
    const LayerData *d = &f->load.data;
    int N = d->w->d_ff;
    int32_t *part = xMallocArray((size_t)N, sizeof(int32_t));
    Partition_random(part, N, 4, 5);
    RouterOptions o;
    RouterOptions_default(&o);
    o.epochs = 30;
    o.seed = 5;
    o.threads = 2;
    char *cause = NULL;
    Router *r = NULL;
    assert_int_equal(Router_new(&r, ROUTER_MLP, d, part, 4, &o, NULL, &cause), MS_OK);
    Eval *ref = NULL;
    assert_int_equal(Eval_new(&ref, d, part, 4, r, SPLIT_TEST, 2, NULL, &cause), MS_OK);
    assertMetricsEqual(ev, ref, 4);
    Eval_delete(ref);
    Router_delete(r);
    free(part);
}

static void test_pause_and_failures(void **state) {
    Fixture *f = *state;
    Ask a = {.layer = 1};
    Knobs_default(&a.k);
    a.k.tau = 0.125;
    Analysis_pause(f->an, true);
    AnStatus st;
    for (int i = 0; i < 3; i++) {
        Analysis_beginFrame(f->an);
        assert_null(Analysis_sparsity(f->an, 1, &a.k, &st));
        Analysis_endFrame(f->an);
        usleep(20000);
        Analysis_collect(f->an);
    }
    assert_true(st.state == AN_IDLE || st.state == AN_QUEUED);
    AnActivity act;
    Analysis_activity(f->an, &act);
    assert_true(act.paused);
    Analysis_pause(f->an, false);
    const Sparsity *s = pump(f->an, getSparsity, &a, &st);
    assert_non_null(s);
    Sparsity ref;
    char *cause = NULL;
    LayerLoad l1;
    assert_int_equal(LayerLoad_init(&l1, f->dump, 1, 0.1, NULL, &cause), MS_OK);
    assert_int_equal(Sparsity_compute(&ref, l1.data.h, l1.data.T, l1.data.w->d_ff, 0.125f, 2,
                                      NULL, &cause), MS_OK);
    assert_true(s->sparsity == ref.sparsity);
    assert_true(s->dead_fraction == ref.dead_fraction);
    Sparsity_done(&ref);
    LayerLoad_done(&l1);

    /* E above d_ff fails with a sentence, without any work. */
    a.k.E = 500;
    a.k.k = 2;
    a.kind = ROUTER_SIMILARITY;
    assert_null(pump(f->an, getEval, &a, &st));
    assert_int_equal(st.state, AN_FAILED);
    assert_non_null(strstr(st.error, "more than"));
}

static void test_layers_view_shows_numbers(void **state) {
    Fixture *f = *state;
    Knobs k;
    Knobs_default(&k);
    LayersView v;
    int n = Analysis_layerCount(f->an);
    LayersView_init(&v, n);
    Cells c;
    Cells_init(&c, 120, 12);
    ViewContext ctx = {.an = f->an, .knobs = &k, .g = Glyphs_get(false), .layer = 0};
    double end = XUtils_now() + 120;
    for (;;) {
        Analysis_beginFrame(f->an);
        Cells_clear(&c);
        LayersView_render(&v, &ctx, &c, 0, 0, c.w, c.h);
        LayersView_demand(&v, &ctx);
        Analysis_endFrame(f->an);
        AnActivity act;
        Analysis_activity(f->an, &act);
        if (act.queued + act.running == 0 || XUtils_now() > end)
            break;
        struct pollfd p = {.fd = Analysis_fd(f->an), .events = POLLIN};
        poll(&p, 1, 200);
        Analysis_collect(f->an);
    }
    Analysis_collect(f->an);
    Analysis_beginFrame(f->an);
    Cells_clear(&c);
    LayersView_render(&v, &ctx, &c, 0, 0, c.w, c.h);
    Analysis_endFrame(f->an);
    char *text = Cells_toText(&c);
    /* row of layer 0: its oracle and similarity recall at k = 2 as "%.4f" */
    AnStatus st;
    Analysis_beginFrame(f->an);
    const Eval *o = Analysis_eval(f->an, 0, &k, ROUTER_ORACLE, &st);
    const Eval *s = Analysis_eval(f->an, 0, &k, ROUTER_SIMILARITY, &st);
    Analysis_endFrame(f->an);
    assert_non_null(o);
    assert_non_null(s);
    EvalMetrics mo, ms;
    Eval_metrics(o, 2, &mo);
    Eval_metrics(s, 2, &ms);
    char want[128];
    snprintf(want, sizeof want, "%.4f   %.4f  %.4f", mo.mass_recall, ms.mass_recall,
             ms.output_rel_err);
    assert_non_null(strstr(text, want));
    assert_non_null(strstr(text, "layers.4.feed_forward"));
    assert_null(strchr(text, '~')); /* nothing stale once idle */
    /* sorting by the oracle column, descending: rows follow the values */
    LayersView_sortBy(&v, LCOL_ORACLE);
    assert_true(v.descending);
    Analysis_beginFrame(f->an);
    LayersView_render(&v, &ctx, &c, 0, 0, c.w, c.h);
    double prev = INFINITY;
    for (int i = 0; i < n; i++) {
        const Eval *e = Analysis_eval(f->an, v.order[i], &k, ROUTER_ORACLE, &st);
        assert_non_null(e);
        EvalMetrics m;
        Eval_metrics(e, 2, &m);
        assert_true(m.mass_recall <= prev);
        prev = m.mass_recall;
    }
    Analysis_endFrame(f->an);
    /* search moves the cursor */
    assert_true(LayersView_find(&v, &ctx, "layers.3", 1));
    assert_int_equal(Analysis_layer(f->an, v.cursor)->index, 3);
    assert_false(LayersView_find(&v, &ctx, "no such layer", 1));
    free(text);
    Cells_done(&c);
    LayersView_done(&v);
}

/* With a budget below two layers, layers load one at a time, everything still completes
   with the same numbers, and the cache stays near its budget. */
static void test_small_budget(void **state) {
    Fixture *f = *state;
    char *cause = NULL;
    Analysis *an = Analysis_new(f->dump, 2, &cause);
    assert_non_null(an);
    const DumpLayer *l0 = Analysis_layer(an, 0);
    size_t layer = (size_t)l0->n_tokens * (size_t)(l0->d_model + l0->d_ff) * 4;
    Analysis_setBudget(an, layer + layer / 2);
    Knobs k;
    Knobs_default(&k);
    k.seed = 11;
    int n = Analysis_layerCount(an);
    size_t peak = 0;
    int done = 0;
    double end = XUtils_now() + 120;
    while (done < n && XUtils_now() < end) {
        Analysis_beginFrame(an);
        done = 0;
        for (int i = 0; i < n; i++) {
            AnStatus st;
            done += Analysis_eval(an, i, &k, ROUTER_SIMILARITY, &st) != NULL;
        }
        Analysis_endFrame(an);
        size_t used, budget;
        Analysis_memory(an, &used, &budget);
        peak = used > peak ? used : peak;
        struct pollfd p = {.fd = Analysis_fd(an), .events = POLLIN};
        if (done < n)
            poll(&p, 1, 200);
        Analysis_collect(an);
    }
    assert_int_equal(done, n);
    /* one layer resident at a time (plus small results), not all five */
    assert_true(peak < 2 * layer);
    Ask a = {.layer = n - 1, .k = k, .kind = ROUTER_SIMILARITY};
    AnStatus st;
    const Eval *small = pump(an, getEval, &a, &st);
    const Eval *big = pump(f->an, getEval, &a, &st);
    assert_non_null(small);
    assert_non_null(big);
    assertMetricsEqual(small, big, k.E);
    Analysis_delete(an);
}

/* A task of the caller's: what it read, and what its done callback was told. */
typedef struct Probe {
    const LayerLoad *load;
    const Sparsity *sparsity;
    MsStatus fail;          /* what run returns when not MS_OK */
    int runs, dones;
    MsStatus status;
    char cause[64];
    double h_sum, sparsity_value;
} Probe;

static MsStatus probeRun(void *ctx, const Cancel *cancel, char **cause) {
    Probe *p = ctx;
    p->runs++;
    Cancel_progress(cancel, 0.5);
    if (p->fail != MS_OK) {
        setCause(cause, "probe failed on purpose");
        return p->fail;
    }
    const LayerData *d = &p->load->data;
    double sum = 0;
    for (size_t i = 0; i < (size_t)d->T * (size_t)d->w->d_ff; i++)
        sum += d->h[i];
    p->h_sum = sum;
    p->sparsity_value = p->sparsity->sparsity;
    return MS_OK;
}

static void probeDone(void *ctx, MsStatus status, const char *cause) {
    Probe *p = ctx;
    p->dones++;
    p->status = status;
    snprintf(p->cause, sizeof p->cause, "%s", cause ? cause : "");
}

/* Frames asking for nothing, collecting, until probe is done (or 60 s). */
static void idleUntilDone(Analysis *an, const Probe *probe) {
    double end = XUtils_now() + 60;
    while (probe->dones == 0 && XUtils_now() < end) {
        Analysis_beginFrame(an);
        Analysis_endFrame(an);
        struct pollfd p = {.fd = Analysis_fd(an), .events = POLLIN};
        poll(&p, 1, 100);
        Analysis_collect(an);
    }
}

/* Tasks: pinned results outlive frames that would evict them (a budget of one byte; a
   use after free would be a sanitizer report) and the task reads them; unpinned once
   done, they go; a failing task reports its sentence; ^C's cancelAll and
   Analysis_delete report a task that never ran as canceled. */
static void test_tasks(void **state) {
    Fixture *f = *state;
    char *cause = NULL;
    Analysis *an = Analysis_new(f->dump, 1, &cause);
    assert_non_null(an);
    Ask a = {.layer = 0};
    Knobs_default(&a.k);
    a.k.tau = 0.25;
    AnStatus st;
    Probe probe = {.sparsity = pump(an, getSparsity, &a, &st)};
    assert_non_null(probe.sparsity);
    Analysis_beginFrame(an);
    probe.load = Analysis_load(an, 0, &st);
    probe.sparsity = Analysis_sparsity(an, 0, &a.k, &st);
    assert_non_null(probe.load);
    Analysis_pause(an, true);
    const void *pins[3] = {probe.load, NULL, probe.sparsity};
    Analysis_runTask(an, "probe", probeRun, probeDone, &probe, pins, 3);
    Analysis_endFrame(an);
    Analysis_setBudget(an, 1);
    for (int i = 0; i < 3; i++) {
        Analysis_beginFrame(an);
        Analysis_endFrame(an);
    }
    size_t used, budget;
    Analysis_memory(an, &used, &budget);
    assert_true(used > 0); /* the pinned results stay */
    assert_int_equal(probe.runs, 0);
    Analysis_pause(an, false);
    idleUntilDone(an, &probe);
    assert_int_equal(probe.dones, 1);
    assert_int_equal(probe.status, MS_OK);
    double want = 0;
    const LayerData *d = &f->load.data;
    for (size_t i = 0; i < (size_t)d->T * (size_t)d->w->d_ff; i++)
        want += d->h[i];
    assert_true(probe.h_sum == want);
    Sparsity ref;
    assert_int_equal(Sparsity_compute(&ref, d->h, d->T, d->w->d_ff, 0.25f, 1, NULL, &cause),
                     MS_OK);
    assert_true(probe.sparsity_value == ref.sparsity);
    Sparsity_done(&ref);
    Analysis_beginFrame(an);
    Analysis_endFrame(an);
    Analysis_memory(an, &used, &budget);
    assert_true(used == 0); /* unpinned: evicted */

    /* A failure comes back with its sentence. */
    Probe bad = {.fail = MS_ERR_IO};
    Analysis_runTask(an, "bad probe", probeRun, probeDone, &bad, NULL, 0);
    idleUntilDone(an, &bad);
    assert_int_equal(bad.status, MS_ERR_IO);
    assert_string_equal(bad.cause, "probe failed on purpose");

    /* Queued while paused: cancelAll reports it at once, it never runs. */
    Analysis_pause(an, true);
    Probe queued = {.fail = MS_ERR_IO};
    Analysis_runTask(an, "queued probe", probeRun, probeDone, &queued, NULL, 0);
    AnActivity act;
    Analysis_activity(an, &act);
    assert_int_equal(act.queued, 1);
    Analysis_cancelAll(an);
    assert_int_equal(queued.dones, 1);
    assert_int_equal(queued.status, MS_ERR_CANCELED);
    assert_int_equal(queued.runs, 0);

    /* Still queued when the Analysis goes: reported as canceled too. */
    Probe left = {.fail = MS_ERR_IO};
    Analysis_runTask(an, "left probe", probeRun, probeDone, &left, NULL, 0);
    Analysis_delete(an);
    assert_int_equal(left.dones, 1);
    assert_int_equal(left.status, MS_ERR_CANCELED);
    assert_int_equal(left.runs, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_param_similarity_equals_batch),
        cmocka_unit_test(test_coact_target_equals_batch),
        cmocka_unit_test(test_mlp_equals_batch),
        cmocka_unit_test(test_pause_and_failures),
        cmocka_unit_test(test_layers_view_shows_numbers),
        cmocka_unit_test(test_small_budget),
        cmocka_unit_test(test_tasks),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
