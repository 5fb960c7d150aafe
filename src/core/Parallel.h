/*
moescope - core/Parallel.h
A parallel for over fixed chunks for the engine's hot loops (sparsity, routers, evaluation).
Callers cut their work into chunks whose boundaries do not depend on the thread count and
keep one result slot per chunk, reduced afterwards in chunk order; threads only decide
who runs which chunk, so results are bitwise the same for any thread count.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_PARALLEL_H
#define MOESCOPE_PARALLEL_H

#include "util/Cancel.h"
#include "util/Status.h"

/* Called once per chunk; worker in [0, threads) identifies per-worker scratch. */
typedef void (*ParallelFn)(void *ctx, long chunk, int worker);

/* Runs fn for chunks 0..n-1 on up to `threads` workers (the caller is worker 0; the
   others are short-lived pthreads with signals blocked; if one cannot start, fewer run).
   Checks cancel before each chunk: MS_ERR_CANCELED when it fired (remaining chunks are
   skipped). When 0 <= p0 <= p1, reports progress from p0 to p1 as chunks finish. */
MsStatus Parallel_run(int threads, long n, ParallelFn fn, void *ctx, const Cancel *cancel,
                      double p0, double p1);

/* A set of worker threads kept alive across many short runs (the mlp router's training
   runs two parallel phases per minibatch, thousands in all: starting threads each time
   would cost more than some phases). */
typedef struct ParallelPool ParallelPool;

/* threads - 1 pthreads (signals blocked); fewer when some cannot start. */
ParallelPool *ParallelPool_new(int threads);

/* Joins the workers; ParallelPool_delete(NULL) does nothing. */
void ParallelPool_delete(ParallelPool *this);

/* Parallel_run on the pool's workers (the caller is worker 0). One run at a time. */
MsStatus ParallelPool_run(ParallelPool *this, long n, ParallelFn fn, void *ctx,
                          const Cancel *cancel);

/* Chunks of `size` items covering n items: ceil(n / size). */
static inline long Parallel_chunks(long n, long size) {
    return (n + size - 1) / size;
}

#endif
