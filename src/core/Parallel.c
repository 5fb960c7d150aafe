/*
moescope - core/Parallel.c
Workers pull chunk indices from one atomic counter; the caller joins them all. The pool
keeps its workers waiting on a condition variable between runs: a run bumps a sequence
number and broadcasts, each worker takes chunks and reports back, and the caller waits
until every worker has finished the run.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/Parallel.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "util/XUtils.h"

enum { MAX_THREADS = 64 };

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
        double span = job->p1 - job->p0;
        if (job->p0 >= 0.0 && span >= 0.0)
            Cancel_progress(job->cancel, job->p0 + span * (double)d / (double)job->n);
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

/* ---- pool ---- */

typedef struct PoolWorker {
    struct ParallelPool *pool;
    int id;
} PoolWorker;

struct ParallelPool {
    pthread_mutex_t lock;
    pthread_cond_t wake, idle;
    Job *job;          /* current run */
    unsigned long seq; /* bumped per run */
    int busy;          /* workers still in the current run */
    bool quit;
    int started;
    pthread_t tid[MAX_THREADS];
    PoolWorker workers[MAX_THREADS];
};

static void *poolMain(void *arg) {
    PoolWorker *w = arg;
    ParallelPool *pool = w->pool;
    unsigned long seen = 0;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->quit && pool->seq == seen)
            pthread_cond_wait(&pool->wake, &pool->lock);
        if (pool->quit)
            break;
        seen = pool->seq;
        Job *job = pool->job;
        pthread_mutex_unlock(&pool->lock);
        work(job, w->id);
        pthread_mutex_lock(&pool->lock);
        if (--pool->busy == 0)
            pthread_cond_signal(&pool->idle);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

ParallelPool *ParallelPool_new(int threads) {
    ParallelPool *this = xCalloc(1, sizeof *this);
    pthread_mutex_init(&this->lock, NULL);
    pthread_cond_init(&this->wake, NULL);
    pthread_cond_init(&this->idle, NULL);
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (int i = 1; i < threads; i++) {
        this->workers[this->started] = (PoolWorker){.pool = this, .id = this->started + 1};
        if (pthread_create(&this->tid[this->started], NULL, poolMain,
                           &this->workers[this->started]) != 0)
            break;
        this->started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return this;
}

void ParallelPool_delete(ParallelPool *this) {
    if (!this)
        return;
    pthread_mutex_lock(&this->lock);
    this->quit = true;
    pthread_cond_broadcast(&this->wake);
    pthread_mutex_unlock(&this->lock);
    for (int i = 0; i < this->started; i++)
        pthread_join(this->tid[i], NULL);
    pthread_cond_destroy(&this->wake);
    pthread_cond_destroy(&this->idle);
    pthread_mutex_destroy(&this->lock);
    free(this);
}

MsStatus ParallelPool_run(ParallelPool *this, long n, ParallelFn fn, void *ctx,
                          const Cancel *cancel) {
    Job job = {.fn = fn, .ctx = ctx, .n = n, .cancel = cancel, .p0 = -1.0, .p1 = -1.0};
    atomic_init(&job.next, 0);
    atomic_init(&job.done, 0);
    atomic_init(&job.canceled, false);
    pthread_mutex_lock(&this->lock);
    this->job = &job;
    this->busy = this->started;
    this->seq++;
    pthread_cond_broadcast(&this->wake);
    pthread_mutex_unlock(&this->lock);
    work(&job, 0);
    pthread_mutex_lock(&this->lock);
    while (this->busy > 0)
        pthread_cond_wait(&this->idle, &this->lock);
    pthread_mutex_unlock(&this->lock);
    return atomic_load(&job.canceled) ? MS_ERR_CANCELED : MS_OK;
}
