/*
moescope - core/Parallel.c
Workers pull chunk indices from one atomic counter; the caller joins them all.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/Parallel.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "util/XUtils.h"

typedef struct Job {
    ParallelFn fn;
    void *ctx;
    long n;
    const Cancel *cancel;
    double p0, p1;
    atomic_long next;
    atomic_long done;
    atomic_bool canceled;
} Job;

typedef struct Worker {
    Job *job;
    int id;
} Worker;

static void work(Job *job, int id) {
    for (;;) {
        if (atomic_load(&job->canceled))
            return;
        long c = atomic_fetch_add(&job->next, 1);
        if (c >= job->n)
            return;
        if (Cancel_requested(job->cancel)) {
            atomic_store(&job->canceled, true);
            return;
        }
        job->fn(job->ctx, c, id);
        long d = atomic_fetch_add(&job->done, 1) + 1;
        if (job->p0 >= 0.0 && job->p1 >= job->p0)
            Cancel_progress(job->cancel, job->p0 + (job->p1 - job->p0) * (double)d / (double)job->n);
    }
}

static void *workerMain(void *arg) {
    Worker *w = arg;
    work(w->job, w->id);
    return NULL;
}

MsStatus Parallel_run(int threads, long n, ParallelFn fn, void *ctx, const Cancel *cancel,
                      double p0, double p1) {
    Job job = {.fn = fn, .ctx = ctx, .n = n, .cancel = cancel, .p0 = p0, .p1 = p1};
    atomic_init(&job.next, 0);
    atomic_init(&job.done, 0);
    atomic_init(&job.canceled, false);
    if (threads < 1)
        threads = 1;
    if (threads > n)
        threads = n > 0 ? (int)n : 1;

    enum { MAX_THREADS = 64 };
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    pthread_t tid[MAX_THREADS];
    Worker workers[MAX_THREADS];
    int started = 0;
    if (threads > 1) {
        /* Workers never take signals (STYLE 15): they inherit this mask. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        for (int i = 1; i < threads; i++) {
            workers[started] = (Worker){.job = &job, .id = started + 1};
            if (pthread_create(&tid[started], NULL, workerMain, &workers[started]) != 0)
                break;
            started++;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    work(&job, 0);
    for (int i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
    return atomic_load(&job.canceled) ? MS_ERR_CANCELED : MS_OK;
}
