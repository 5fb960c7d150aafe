/*
moescope - jobs/Worker.h
Worker threads for the terminal UI (after redis's bio.c): two queues, an I/O queue served
by one thread (every HDF5 call goes through it, STYLE 15) and a compute queue served by
`threads` threads. Jobs finish onto a completion list and a byte on a non-blocking
self-pipe wakes the UI thread's poll().

DESIGN
- A job is owned by its submitter (the UI thread); the pool only links it into its lists.
  A job's inputs are copied knob values and read-only buffers the submitter keeps alive
  until the job comes back from Worker_takeDone.
- Each job carries its own cancellation generation: WorkerJob_cancel bumps it and the
  engine functions given job->cancel return MS_ERR_CANCELED at their next check. A job
  still queued is simply taken out (Worker_unqueue).
- Queued jobs run lowest `priority` first (the UI renumbers them on every frame, so what
  the screen shows runs first); equal priorities run in submission order.
- Workers block every signal, run at a lower scheduling priority than the UI thread and
  use one OpenBLAS thread each. They never print, draw or exit.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_WORKER_H
#define MOESCOPE_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>

#include "util/Cancel.h"
#include "util/Status.h"

typedef enum WorkerQueue {
    WORKER_COMPUTE = 0,
    WORKER_IO,
} WorkerQueue;

typedef struct WorkerJob WorkerJob;

/* Runs in a worker thread: computes, then sets job->status (and job->cause). */
typedef void (*WorkerRunFn)(WorkerJob *job);

struct WorkerJob {
    WorkerRunFn run;
    void *ctx;               /* the submitter's data */
    WorkerQueue queue;
    long priority;           /* lower runs first; the UI thread may change it while queued */
    const char *label;       /* what the progress line says ("coact layer 3") */
    atomic_uint generation;  /* bumped by WorkerJob_cancel */
    atomic_int permille;     /* progress 0..1000 reported by the engine */
    Cancel cancel;           /* points at the two fields above; pass to engine calls */
    MsStatus status;         /* set by run */
    char *cause;             /* set by run on failure (caller frees) */
    double seconds;          /* wall time of run */
    /* Owned by the pool. */
    WorkerJob *next;
    int where;               /* 0 none, 1 queued, 2 running, 3 done */
};

/* Zeroes job and points its cancel at its own generation and progress. */
void WorkerJob_init(WorkerJob *job, WorkerRunFn run, void *ctx, WorkerQueue queue,
                    const char *label);

/* Any thread. */
void WorkerJob_cancel(WorkerJob *job);
bool WorkerJob_canceled(const WorkerJob *job);

/* 0..1 */
double WorkerJob_progress(const WorkerJob *job);

typedef struct Worker Worker;

/* Starts 1 I/O thread and `threads` compute threads (at least 1). NULL with *cause when
   the pipe or a thread cannot be made. */
Worker *Worker_new(int threads, char **cause);

/* Cancels running jobs, waits for every thread to end. Jobs left queued, running or done
   are not freed (they belong to the submitter, who must not wait on them afterwards).
   Worker_delete(NULL) does nothing. */
void Worker_delete(Worker *this);

/* The read end of the self-pipe, for poll(). */
int Worker_fd(const Worker *this);

/* Queues job (UI thread). */
void Worker_submit(Worker *this, WorkerJob *job);

/* Takes job out of its queue when it has not started: true then (the job will never run
   and is not reported done). */
bool Worker_unqueue(Worker *this, WorkerJob *job);

/* Changes a queued job's priority. */
void Worker_setPriority(Worker *this, WorkerJob *job, long priority);

/* Drains the pipe and returns the next finished job, or NULL (UI thread, non-blocking). */
WorkerJob *Worker_takeDone(Worker *this);

/* Jobs queued and running now. */
void Worker_counts(Worker *this, int *queued, int *running);

/* Copies up to max running jobs into out; returns how many. The jobs stay owned by their
   submitter, who may read their label and progress. */
int Worker_running(Worker *this, WorkerJob **out, int max);

/* Pauses (true) or resumes taking queued jobs; running ones go on. */
void Worker_pause(Worker *this, bool paused);

/* Number of compute threads. */
int Worker_threads(const Worker *this);

#endif
