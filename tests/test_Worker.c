/*
moescope - tests/test_Worker.c
The worker pool: every job runs once and comes back through the pipe; queued jobs run
lowest priority first; a canceled job stops; an unqueued job never runs; the I/O queue
has its own thread; deleting the pool cancels and joins a running job.
SPDX-License-Identifier: MIT
*/
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jobs/Worker.h"
#include "util/XUtils.h"

typedef struct Ctx {
    long n;          /* sum 1..n */
    long result;
    int order;       /* position in which the job ran */
    atomic_int *counter;
    atomic_int *gate;  /* when set, the job waits for *gate != 0 or its cancellation */
} Ctx;

static void sumJob(WorkerJob *job) {
    Ctx *c = job->ctx;
    if (c->counter)
        c->order = atomic_fetch_add(c->counter, 1);
    if (c->gate) {
        double end = XUtils_now() + 20;
        while (!atomic_load(c->gate) && !Cancel_requested(&job->cancel) && XUtils_now() < end)
            usleep(1000);
        if (Cancel_requested(&job->cancel)) {
            job->status = MS_ERR_CANCELED;
            return;
        }
    }
    long s = 0;
    for (long i = 1; i <= c->n; i++)
        s += i;
    c->result = s;
    job->status = MS_OK;
}

/* Waits (poll on the pipe) until `want` jobs came back; returns how many did. */
static int collect(Worker *w, WorkerJob **out, int want) {
    int got = 0;
    double end = XUtils_now() + 30;
    while (got < want && XUtils_now() < end) {
        struct pollfd p = {.fd = Worker_fd(w), .events = POLLIN};
        poll(&p, 1, 100);
        WorkerJob *j;
        while ((j = Worker_takeDone(w)))
            out[got++] = j;
    }
    return got;
}

static void test_all_jobs_run(void **state) {
    (void)state;
    char *cause = NULL;
    Worker *w = Worker_new(2, &cause);
    assert_non_null(w);
    assert_int_equal(Worker_threads(w), 2);
    enum { N = 50 };
    WorkerJob jobs[N];
    Ctx ctx[N];
    for (int i = 0; i < N; i++) {
        ctx[i] = (Ctx){.n = 1000 + i};
        WorkerJob_init(&jobs[i], sumJob, &ctx[i], i % 5 == 0 ? WORKER_IO : WORKER_COMPUTE, "sum");
        Worker_submit(w, &jobs[i]);
    }
    WorkerJob *done[N];
    assert_int_equal(collect(w, done, N), N);
    int seen[N] = {0};
    for (int i = 0; i < N; i++) {
        int k = (int)(done[i] - jobs);
        assert_true(k >= 0 && k < N);
        seen[k]++;
        assert_int_equal(done[i]->status, MS_OK);
        long n = ctx[k].n;
        assert_int_equal(ctx[k].result, n * (n + 1) / 2);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1);
    int q, r;
    Worker_counts(w, &q, &r);
    assert_int_equal(q, 0);
    assert_int_equal(r, 0);
    Worker_delete(w);
}

static void test_priority_order(void **state) {
    (void)state;
    char *cause = NULL;
    Worker *w = Worker_new(1, &cause);
    atomic_int counter = 0;
    enum { N = 8 };
    WorkerJob jobs[N];
    Ctx ctx[N];
    Worker_pause(w, true);
    const long prio[N] = {5, 3, 7, 1, 3, 0, 6, 2};
    for (int i = 0; i < N; i++) {
        ctx[i] = (Ctx){.n = 10, .counter = &counter};
        WorkerJob_init(&jobs[i], sumJob, &ctx[i], WORKER_COMPUTE, "p");
        jobs[i].priority = prio[i];
        Worker_submit(w, &jobs[i]);
    }
    Worker_setPriority(w, &jobs[2], -1); /* the UI moved it up */
    int q, r;
    Worker_counts(w, &q, &r);
    assert_int_equal(q, N);
    Worker_pause(w, false);
    WorkerJob *done[N];
    assert_int_equal(collect(w, done, N), N);
    /* expected order: 2 (-1), 5 (0), 3 (1), 7 (2), 1 (3), 4 (3, submitted later), 0, 6 */
    const int want[N] = {2, 5, 3, 7, 1, 4, 0, 6};
    for (int i = 0; i < N; i++)
        assert_int_equal(ctx[want[i]].order, i);
    Worker_delete(w);
}

static void test_cancel_and_unqueue(void **state) {
    (void)state;
    char *cause = NULL;
    Worker *w = Worker_new(1, &cause);
    atomic_int gate = 0;
    Ctx blocker = {.n = 1, .gate = &gate};
    WorkerJob jb;
    WorkerJob_init(&jb, sumJob, &blocker, WORKER_COMPUTE, "block");
    Worker_submit(w, &jb);
    /* wait until it runs */
    double end = XUtils_now() + 10;
    int q = 0, r = 0;
    while (XUtils_now() < end) {
        Worker_counts(w, &q, &r);
        if (r == 1)
            break;
        usleep(1000);
    }
    assert_int_equal(r, 1);
    WorkerJob *running[4];
    assert_int_equal(Worker_running(w, running, 4), 1);
    assert_ptr_equal(running[0], &jb);

    /* The I/O thread is free while the compute thread is blocked. */
    Ctx io = {.n = 100};
    WorkerJob ji;
    WorkerJob_init(&ji, sumJob, &io, WORKER_IO, "io");
    Worker_submit(w, &ji);
    WorkerJob *done[2];
    assert_int_equal(collect(w, done, 1), 1);
    assert_ptr_equal(done[0], &ji);
    assert_int_equal(io.result, 5050);

    /* A queued job behind the blocker can be taken out; it never runs. */
    Ctx queued = {.n = 5};
    WorkerJob jq;
    WorkerJob_init(&jq, sumJob, &queued, WORKER_COMPUTE, "queued");
    Worker_submit(w, &jq);
    assert_true(Worker_unqueue(w, &jq));
    assert_false(Worker_unqueue(w, &jq));
    assert_false(Worker_unqueue(w, &jb)); /* running: cannot be unqueued */

    WorkerJob_cancel(&jb);
    assert_true(WorkerJob_canceled(&jb));
    assert_int_equal(collect(w, done, 1), 1);
    assert_ptr_equal(done[0], &jb);
    assert_int_equal(jb.status, MS_ERR_CANCELED);
    usleep(20000);
    assert_null(Worker_takeDone(w)); /* jq never came back */
    assert_int_equal(queued.result, 0);
    Worker_delete(w);
}

static void test_delete_cancels_running(void **state) {
    (void)state;
    char *cause = NULL;
    Worker *w = Worker_new(2, &cause);
    atomic_int gate = 0;
    Ctx c1 = {.n = 1, .gate = &gate}, c2 = {.n = 1, .gate = &gate};
    WorkerJob j1, j2;
    WorkerJob_init(&j1, sumJob, &c1, WORKER_COMPUTE, "a");
    WorkerJob_init(&j2, sumJob, &c2, WORKER_IO, "b");
    Worker_submit(w, &j1);
    Worker_submit(w, &j2);
    usleep(50000);
    double t0 = XUtils_now();
    Worker_delete(w); /* must not wait for the 20 s gate */
    assert_true(XUtils_now() - t0 < 10);
    assert_int_equal(j1.status, MS_ERR_CANCELED);
    assert_int_equal(j2.status, MS_ERR_CANCELED);
    Worker_delete(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_jobs_run),
        cmocka_unit_test(test_priority_order),
        cmocka_unit_test(test_cancel_and_unqueue),
        cmocka_unit_test(test_delete_cancels_running),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
