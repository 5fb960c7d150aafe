/*
moescope - ui/FigureRun.c
Drives a FigureSet from the UI thread with one task at a time (see FigureRun.h).

DESIGN
One layer at a time, as the batch does: only that layer's data and co-activation counts
need to be in memory, whatever the model's size, and the cache's memory budget and
back-pressure on loads hold as for any screen. The FigureSet is the task's while a task
is out and the UI thread's otherwise; `busy` (written on the UI thread by the done
callback) says which. The inputs a task reads are pinned in the Analysis, so eviction
cannot free them under it.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "ui/FigureRun.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/Partition.h"
#include "util/XUtils.h"
#include "views/Figures.h"

/* What the next task draws; filled on the UI thread before it is submitted. */
typedef struct FigureStep {
    int index;                 /* the layer's /layers/<index> */
    const char *name;          /* owned by the Dump */
    float tau;
    const Sparsity *sparsity;  /* NULL: no sparsity figure */
    const float *h;
    long T;
    const Coact *coact;        /* NULL: no heatmap */
    const int32_t *part;
    int E;
    const char *strategy;
    bool write;                /* the last task: FigureSet_write */
} FigureStep;

struct FigureRun {
    Analysis *an;
    Knobs k;
    FigureSet *set;
    char *dir;
    int *layers;
    int n;
    int pos;                   /* layers[pos] is the next to draw; n: write */
    bool busy;                 /* a task is out */
    bool finished;
    bool failed;
    char *error;
    char **notes;
    int n_notes;
    FigureStep step;
    char progress[128];
};

FigureRun *FigureRun_new(Analysis *an, const Knobs *k, const char *dir, const int *layers,
                         int n, bool tau_in_names, char **cause) {
    FigureSet *set = NULL;
    MsStatus st = FigureSet_new(&set, dir, NULL, tau_in_names, cause);
    if (st != MS_OK)
        return NULL;
    FigureRun *this = xCalloc(1, sizeof *this);
    this->an = an;
    this->k = *k;
    this->set = set;
    this->dir = xStrdup(dir);
    this->layers = xMallocArray((size_t)n, sizeof(int));
    memcpy(this->layers, layers, (size_t)n * sizeof(int));
    this->n = n;
    return this;
}

void FigureRun_delete(FigureRun *this) {
    if (!this)
        return;
    FigureSet_delete(this->set);
    free(this->dir);
    free(this->layers);
    free(this->error);
    for (int i = 0; i < this->n_notes; i++)
        free(this->notes[i]);
    free(this->notes);
    free(this);
}

void FigureRun_addRow(FigureRun *this, const CsvRow *row) {
    FigureSet_addRow(this->set, row);
}

static void note(FigureRun *this, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(FigureRun *this, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *text = xVasprintf(fmt, ap);
    va_end(ap);
    this->notes = xReallocArray(this->notes, (size_t)this->n_notes + 1, sizeof *this->notes);
    this->notes[this->n_notes++] = text;
}

/* ---- the task (compute thread) ------------------------------------------------------ */

static MsStatus runStep(void *ctx, const Cancel *cancel, char **cause) {
    FigureRun *this = ctx;
    const FigureStep *s = &this->step;
    MsStatus st = MS_OK;
    if (s->sparsity)
        st = FigureSet_addSparsity(this->set, s->index, s->name, s->tau, s->sparsity, s->h,
                                   s->T, 1, cause);
    Cancel_progress(cancel, 0.5);
    if (st == MS_OK && Cancel_requested(cancel))
        st = MS_ERR_CANCELED;
    if (st == MS_OK && s->coact)
        st = FigureSet_addCoact(this->set, s->index, s->name, s->tau, s->strategy, s->E,
                                s->coact, s->part, cause);
    if (st == MS_OK && s->write)
        st = FigureSet_write(this->set, cause);
    Cancel_progress(cancel, 1.0);
    return st;
}

/* ---- the UI thread ------------------------------------------------------------------ */

static void stepDone(void *ctx, MsStatus status, const char *cause) {
    FigureRun *this = ctx;
    this->busy = false;
    if (status != MS_OK) {
        this->failed = true;
        this->error = xStrdup(status == MS_ERR_CANCELED ? "canceled"
                              : cause               ? cause
                                                    : Status_name(status));
    } else if (this->step.write) {
        this->finished = true;
    } else {
        this->pos++;
    }
}

/* Asks for what layer's figures need; true when each part is there or has failed, with
   the step filled and its inputs in pins. */
static bool prepareLayer(FigureRun *this, int layer, const void **pins, int *n_pins) {
    Analysis *an = this->an;
    const Knobs *k = &this->k;
    const DumpLayer *info = Analysis_layer(an, layer);
    AnStatus sl, st, ss, sc, sp;
    float tau = 0;
    const LayerLoad *load = Analysis_load(an, layer, &sl);
    bool have_tau = Analysis_tau(an, layer, k, &tau, &st);
    const Sparsity *s = Analysis_sparsity(an, layer, k, &ss);
    const Coact *c = Analysis_coact(an, layer, k, &sc);
    const AnPartition *p = Analysis_partition(an, layer, k, &sp);
#define PENDING(v, status) (!(v) && (status).state != AN_FAILED)
    if (PENDING(load, sl) || PENDING(have_tau, st) || PENDING(s, ss) || PENDING(c, sc) ||
        PENDING(p, sp))
        return false;
#undef PENDING
    FigureStep *step = &this->step;
    *step = (FigureStep){.index = info->index, .name = info->name, .tau = tau,
                         .strategy = Partition_strategyName(k->strategy), .E = k->E};
    if (load && have_tau && s) {
        step->sparsity = s;
        step->h = load->data.h;
        step->T = load->data.T;
    } else {
        const AnStatus *why = !load ? &sl : !have_tau ? &st : &ss;
        note(this, "layer %d sparsity figure skipped: %s", info->index,
             why->error ? why->error : "not computed");
    }
    if (have_tau && c && p) {
        step->coact = c;
        step->part = p->part;
        step->E = p->E;
    } else {
        const AnStatus *why = !have_tau ? &st : !c ? &sc : &sp;
        note(this, "layer %d co-activation heatmap skipped: %s", info->index,
             why->error ? why->error : "not computed");
    }
    int n = 0;
    pins[n++] = step->sparsity ? (const void *)load : NULL;
    pins[n++] = step->sparsity;
    pins[n++] = step->coact;
    pins[n++] = step->coact ? (const void *)p : NULL;
    *n_pins = n;
    return true;
}

FigureRunState FigureRun_step(FigureRun *this) {
    if (this->failed)
        return FIGURERUN_FAILED;
    if (this->finished)
        return FIGURERUN_DONE;
    if (this->busy)
        return FIGURERUN_WORKING;
    const void *pins[4] = {NULL};
    int n_pins = 0;
    char label[64];
    if (this->pos < this->n) {
        int layer = this->layers[this->pos];
        if (!prepareLayer(this, layer, pins, &n_pins))
            return FIGURERUN_WORKING;
        snprintf(label, sizeof label, "figures layer %d", Analysis_layer(this->an, layer)->index);
    } else {
        this->step = (FigureStep){.write = true};
        snprintf(label, sizeof label, "figures: writing");
    }
    this->busy = true;
    Analysis_runTask(this->an, label, runStep, stepDone, this, pins, n_pins);
    return FIGURERUN_WORKING;
}

const char *FigureRun_progress(FigureRun *this) {
    if (this->pos < this->n)
        snprintf(this->progress, sizeof this->progress, "figures: layer %d (%d of %d)%s",
                 Analysis_layer(this->an, this->layers[this->pos])->index, this->pos + 1,
                 this->n, this->busy ? ", drawing..." : ", waiting for its numbers...");
    else
        snprintf(this->progress, sizeof this->progress, "figures: writing into %s ...",
                 this->dir);
    return this->progress;
}

const char *FigureRun_error(const FigureRun *this) {
    return this->error;
}

int FigureRun_notes(const FigureRun *this, const char *const **notes) {
    if (notes)
        *notes = (const char *const *)this->notes;
    return this->n_notes;
}

int FigureRun_written(const FigureRun *this) {
    return FigureSet_written(this->set);
}

const char *FigureRun_dir(const FigureRun *this) {
    return this->dir;
}
