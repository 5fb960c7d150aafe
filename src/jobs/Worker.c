/*
moescope - jobs/Worker.c
The thread pool behind the UI: one mutex guards both queues, the running set and the
completion list; one condition per queue wakes its threads. See Worker.h for the design.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "jobs/Worker.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/Ffn.h"
#include "util/XUtils.h"

enum { WHERE_NONE = 0, WHERE_QUEUED, WHERE_RUNNING, WHERE_DONE };

typedef struct WorkerThread {
    Worker *pool;
    WorkerQueue queue;
    pthread_t tid;
    bool started;
} WorkerThread;

struct Worker {
    pthread_mutex_t lock;
    pthread_cond_t wake[2];      /* per queue */
    WorkerJob *queued[2];        /* singly linked, submission order */
    WorkerJob *done_head, *done_tail;
    WorkerJob **running;         /* [n_threads] the job each thread runs, or NULL */
    WorkerThread *threads;       /* [n_threads]: 0 is the I/O thread */
    int n_threads;
    int pipe_r, pipe_w;
    bool quit;
    bool paused;
};

void WorkerJob_init(WorkerJob *job, WorkerRunFn run, void *ctx, WorkerQueue queue,
                    const char *label) {
    memset(job, 0, sizeof *job);
    job->run = run;
    job->ctx = ctx;
    job->queue = queue;
    job->label = label;
    atomic_init(&job->generation, 0);
    atomic_init(&job->permille, 0);
    job->cancel.generation = &job->generation;
    job->cancel.mine = 0;
    job->cancel.permille = &job->permille;
}

void WorkerJob_cancel(WorkerJob *job) {
    atomic_fetch_add(&job->generation, 1);
}

bool WorkerJob_canceled(const WorkerJob *job) {
    return Cancel_requested(&job->cancel);
}

double WorkerJob_progress(const WorkerJob *job) {
    return atomic_load(&job->permille) / 1000.0;
}

/* Unlinks and returns the lowest-priority queued job of q (lock held), or NULL. */
static WorkerJob *popBest(Worker *this, WorkerQueue q) {
    WorkerJob **best = NULL;
    for (WorkerJob **p = &this->queued[q]; *p; p = &(*p)->next)
        if (!best || (*p)->priority < (*best)->priority)
            best = p;
    if (!best)
        return NULL;
    WorkerJob *job = *best;
    *best = job->next;
    job->next = NULL;
    return job;
}

static void notifyUi(Worker *this) {
    char byte = 1;
    ssize_t n;
    do
        n = write(this->pipe_w, &byte, 1);
    while (n < 0 && errno == EINTR);
    /* EAGAIN: the pipe is full of wake-ups already; nothing is lost. */
}

static void *threadMain(void *arg) {
    WorkerThread *t = arg;
    Worker *this = t->pool;
    int slot = (int)(t - this->threads);
    /* Background work yields to the UI thread (Linux: nice applies per thread). */
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 5) != 0) {
        /* not fatal */
    }
    Ffn_useOneBlasThread();
    pthread_mutex_lock(&this->lock);
    for (;;) {
        WorkerJob *job = NULL;
        while (!this->quit && (this->paused || !(job = popBest(this, t->queue))))
            pthread_cond_wait(&this->wake[t->queue], &this->lock);
        if (this->quit) {
            if (job) {
                job->where = WHERE_NONE;
            }
            break;
        }
        job->where = WHERE_RUNNING;
        this->running[slot] = job;
        pthread_mutex_unlock(&this->lock);

        double t0 = XUtils_now();
        if (WorkerJob_canceled(job)) {
            job->status = MS_ERR_CANCELED;
        } else {
            job->run(job);
        }
        job->seconds = XUtils_now() - t0;

        pthread_mutex_lock(&this->lock);
        this->running[slot] = NULL;
        job->where = WHERE_DONE;
        job->next = NULL;
        if (this->done_tail)
            this->done_tail->next = job;
        else
            this->done_head = job;
        this->done_tail = job;
        notifyUi(this);
    }
    pthread_mutex_unlock(&this->lock);
    return NULL;
}

Worker *Worker_new(int threads, char **cause) {
    if (threads < 1)
        threads = 1;
    Worker *this = xCalloc(1, sizeof *this);
    pthread_mutex_init(&this->lock, NULL);
    pthread_cond_init(&this->wake[0], NULL);
    pthread_cond_init(&this->wake[1], NULL);
    int fds[2];
    if (pipe(fds) != 0) {
        setCause(cause, "cannot create the worker pipe: %s", strerror(errno));
        pthread_mutex_destroy(&this->lock);
        pthread_cond_destroy(&this->wake[0]);
        pthread_cond_destroy(&this->wake[1]);
        free(this);
        return NULL;
    }
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    this->pipe_r = fds[0];
    this->pipe_w = fds[1];
    this->n_threads = threads + 1;
    this->threads = xCalloc((size_t)this->n_threads, sizeof *this->threads);
    this->running = xCalloc((size_t)this->n_threads, sizeof *this->running);

    /* Threads inherit the creating thread's mask: block everything while creating. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int started = 0;
    for (int i = 0; i < this->n_threads; i++) {
        WorkerThread *t = &this->threads[i];
        t->pool = this;
        t->queue = i == 0 ? WORKER_IO : WORKER_COMPUTE;
        t->started = pthread_create(&t->tid, NULL, threadMain, t) == 0;
        started += t->started;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!this->threads[0].started || started < 2) {
        setCause(cause, "cannot start the worker threads");
        Worker_delete(this);
        return NULL;
    }
    return this;
}

void Worker_delete(Worker *this) {
    if (!this)
        return;
    pthread_mutex_lock(&this->lock);
    this->quit = true;
    for (int i = 0; i < this->n_threads; i++)
        if (this->running[i])
            WorkerJob_cancel(this->running[i]);
    pthread_cond_broadcast(&this->wake[0]);
    pthread_cond_broadcast(&this->wake[1]);
    pthread_mutex_unlock(&this->lock);
    for (int i = 0; i < this->n_threads; i++)
        if (this->threads[i].started)
            pthread_join(this->threads[i].tid, NULL);
    close(this->pipe_r);
    close(this->pipe_w);
    pthread_mutex_destroy(&this->lock);
    pthread_cond_destroy(&this->wake[0]);
    pthread_cond_destroy(&this->wake[1]);
    free(this->threads);
    free(this->running);
    free(this);
}

int Worker_fd(const Worker *this) {
    return this->pipe_r;
}

void Worker_submit(Worker *this, WorkerJob *job) {
    pthread_mutex_lock(&this->lock);
    job->next = NULL;
    job->where = WHERE_QUEUED;
    WorkerJob **p = &this->queued[job->queue];
    while (*p)
        p = &(*p)->next;
    *p = job;
    pthread_cond_signal(&this->wake[job->queue]);
    pthread_mutex_unlock(&this->lock);
}

bool Worker_unqueue(Worker *this, WorkerJob *job) {
    bool removed = false;
    pthread_mutex_lock(&this->lock);
    if (job->where == WHERE_QUEUED) {
        for (WorkerJob **p = &this->queued[job->queue]; *p; p = &(*p)->next) {
            if (*p == job) {
                *p = job->next;
                job->next = NULL;
                job->where = WHERE_NONE;
                removed = true;
                break;
            }
        }
    }
    pthread_mutex_unlock(&this->lock);
    return removed;
}

void Worker_setPriority(Worker *this, WorkerJob *job, long priority) {
    pthread_mutex_lock(&this->lock);
    job->priority = priority;
    pthread_mutex_unlock(&this->lock);
}

WorkerJob *Worker_takeDone(Worker *this) {
    char buf[256];
    while (read(this->pipe_r, buf, sizeof buf) > 0) {
    }
    pthread_mutex_lock(&this->lock);
    WorkerJob *job = this->done_head;
    if (job) {
        this->done_head = job->next;
        if (!this->done_head)
            this->done_tail = NULL;
        job->next = NULL;
        job->where = WHERE_NONE;
    }
    pthread_mutex_unlock(&this->lock);
    return job;
}

void Worker_counts(Worker *this, int *queued, int *running) {
    int q = 0, r = 0;
    pthread_mutex_lock(&this->lock);
    for (int i = 0; i < 2; i++)
        for (WorkerJob *j = this->queued[i]; j; j = j->next)
            q++;
    for (int i = 0; i < this->n_threads; i++)
        r += this->running[i] != NULL;
    pthread_mutex_unlock(&this->lock);
    *queued = q;
    *running = r;
}

int Worker_running(Worker *this, WorkerJob **out, int max) {
    int n = 0;
    pthread_mutex_lock(&this->lock);
    for (int i = 0; i < this->n_threads && n < max; i++)
        if (this->running[i])
            out[n++] = this->running[i];
    pthread_mutex_unlock(&this->lock);
    return n;
}

void Worker_pause(Worker *this, bool paused) {
    pthread_mutex_lock(&this->lock);
    this->paused = paused;
    if (!paused) {
        pthread_cond_broadcast(&this->wake[0]);
        pthread_cond_broadcast(&this->wake[1]);
    }
    pthread_mutex_unlock(&this->lock);
}

int Worker_threads(const Worker *this) {
    return this->n_threads - 1;
}
