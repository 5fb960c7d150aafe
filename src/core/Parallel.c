/*
moescope - core/Parallel.c
Workers pull chunk indices from one atomic counter; the caller joins them all. The pool
keeps its workers waiting between runs: a run bumps a sequence number, each worker takes
chunks and reports back, and the caller waits until every worker has finished the run
(both waits spin briefly, then sleep on a condition variable).
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/Parallel.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

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

/* ---- pool ----
   Runs follow each other within microseconds in the mlp router's training (two per
   minibatch), while a condition variable hand-off costs tens of microseconds each way.
   So both sides spin for a short while (SPIN_NS) on atomics before they sleep: the
   workers on the run sequence number, the caller on the count of busy workers. The
   sleeping paths re-check under the lock, so no wake-up is lost. */

enum { SPIN_NS = 200000 };

typedef struct PoolWorker {
    struct ParallelPool *pool;
    int id;
} PoolWorker;

struct ParallelPool {
    pthread_mutex_t lock;
    pthread_cond_t wake, idle;
    Job *job;            /* current run, published by seq's release */
    atomic_ulong seq;    /* bumped per run */
    atomic_int busy;     /* workers still in the current run */
    atomic_bool quit;
    int started;
    pthread_t tid[MAX_THREADS];
    PoolWorker workers[MAX_THREADS];
};

static void cpuRelax(void) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_ia32_pause();
#endif
}

static long nowNs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Spins until done(arg) or SPIN_NS have passed; true when done. */
static bool spinUntil(bool (*done)(const ParallelPool *, unsigned long), const ParallelPool *pool,
                      unsigned long arg) {
    long deadline = 0;
    for (unsigned i = 0;; i++) {
        if (done(pool, arg))
            return true;
        if ((i & 63) == 63) {
            long t = nowNs();
            if (deadline == 0)
                deadline = t + SPIN_NS;
            else if (t > deadline)
                return false;
        }
        cpuRelax();
    }
}

static bool newRun(const ParallelPool *pool, unsigned long seen) {
    return atomic_load_explicit(&pool->seq, memory_order_acquire) != seen ||
           atomic_load_explicit(&pool->quit, memory_order_relaxed);
}

static bool allIdle(const ParallelPool *pool, unsigned long unused) {
    return atomic_load_explicit(&pool->busy, memory_order_acquire) == 0;
}

static void *poolMain(void *arg) {
    PoolWorker *w = arg;
    ParallelPool *pool = w->pool;
    unsigned long seen = 0;
    for (;;) {
        if (!spinUntil(newRun, pool, seen)) {
            pthread_mutex_lock(&pool->lock);
            while (!newRun(pool, seen))
                pthread_cond_wait(&pool->wake, &pool->lock);
            pthread_mutex_unlock(&pool->lock);
        }
        if (atomic_load(&pool->quit))
            break;
        seen = atomic_load_explicit(&pool->seq, memory_order_acquire);
        work(pool->job, w->id);
        /* acq_rel: the caller sees everything this run wrote */
        if (atomic_fetch_sub(&pool->busy, 1) == 1) {
            pthread_mutex_lock(&pool->lock);
            pthread_cond_signal(&pool->idle);
            pthread_mutex_unlock(&pool->lock);
        }
    }
    return NULL;
}

ParallelPool *ParallelPool_new(int threads) {
    ParallelPool *this = xCalloc(1, sizeof *this);
    pthread_mutex_init(&this->lock, NULL);
    pthread_cond_init(&this->wake, NULL);
    pthread_cond_init(&this->idle, NULL);
    atomic_init(&this->seq, 0);
    atomic_init(&this->busy, 0);
    atomic_init(&this->quit, false);
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
    atomic_store(&this->quit, true);
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
    this->job = &job;
    atomic_store(&this->busy, this->started);
    pthread_mutex_lock(&this->lock); /* a worker about to sleep sees the new run */
    atomic_fetch_add_explicit(&this->seq, 1, memory_order_release);
    pthread_cond_broadcast(&this->wake);
    pthread_mutex_unlock(&this->lock);
    work(&job, 0);
    if (!spinUntil(allIdle, this, 0)) {
        pthread_mutex_lock(&this->lock);
        while (!allIdle(this, 0))
            pthread_cond_wait(&this->idle, &this->lock);
        pthread_mutex_unlock(&this->lock);
    }
    return atomic_load(&job.canceled) ? MS_ERR_CANCELED : MS_OK;
}
