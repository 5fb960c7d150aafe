/*
moescope - ui/FigureRun.h
The `f` key's figures: the same figure set as `moescope --batch --figures DIR`
(views/Figures), drawn from the rows the UI exports and from the Analysis's cached
results, for one knob setting over the Layers screen's layers or one layer.

The UI adds the rows (FigureRun_addRow, the rows `e` writes) right after FigureRun_new;
then it calls FigureRun_step once per frame. Each step asks the Analysis for the next
layer's data, sparsity, co-activation counts and partition (so they are computed, or
kept, through the cache's usual demand), and when they are there hands them, pinned, to
a task on a compute thread that adds the layer's sparsity figure and heatmap; a last
task draws the figures of the rows (recall, trade-off, summary). The UI thread never
waits: a step only asks and submits. What cannot be computed (an E above d_ff, a failed
load) is skipped with a note, like the rows `e` leaves out.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_FIGURERUN_H
#define MOESCOPE_FIGURERUN_H

#include <stdbool.h>

#include "jobs/Analysis.h"
#include "jobs/KnobTable.h"
#include "views/Csv.h"

/* The default directory (relative to the current one). */
#define FIGURERUN_DEFAULT_DIR "moescope-figures"

typedef enum FigureRunState {
    FIGURERUN_WORKING = 0,
    FIGURERUN_DONE,
    FIGURERUN_FAILED,
} FigureRunState;

typedef struct FigureRun FigureRun;

/* A run for knobs k over layers[0..n-1] (positions in the Analysis, n >= 1) into dir,
   created now with its parents, in FIGURES_DEFAULT_FORMATS. tau_in_names: the layers'
   taus differ (a target sparsity), so file names get _tau<g> as in a multi-tau batch.
   NULL with *cause when dir cannot be made. */
FigureRun *FigureRun_new(Analysis *an, const Knobs *k, const char *dir, const int *layers,
                         int n, bool tau_in_names, char **cause);

/* Only when no task is out: after FigureRun_step returned DONE or FAILED, or after
   Analysis_delete. NULL does nothing. */
void FigureRun_delete(FigureRun *this);

/* Before the first step: a CSV row the figures plot (copied). */
void FigureRun_addRow(FigureRun *this, const CsvRow *row);

/* Once per frame, between Analysis_beginFrame and _endFrame (UI thread). */
FigureRunState FigureRun_step(FigureRun *this);

/* What it is doing, e.g. "figures: layer 3 (2 of 5)" (valid until the next call). */
const char *FigureRun_progress(FigureRun *this);

/* FAILED: why, one sentence ("canceled" after Analysis_cancelAll). */
const char *FigureRun_error(const FigureRun *this);

/* Parts skipped, one sentence each; returns how many (notes may be NULL). */
int FigureRun_notes(const FigureRun *this, const char *const **notes);

/* Figure files written (all formats, data sidecars not counted). */
int FigureRun_written(const FigureRun *this);

const char *FigureRun_dir(const FigureRun *this);

#endif
