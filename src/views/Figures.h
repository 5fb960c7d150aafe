/*
moescope - views/Figures.h
The figures of a batch run (`moescope --batch --figures DIR`), drawn by io/Chart from the
same rows as the CSV, in each format asked for (svg, pdf, png), each with a data sidecar
NAME.data.csv holding the plotted numbers and, per series, the CSV selection they came
from (`source`, e.g. "layer=0;tau=0;strategy=coact;router=mlp;E=8;split=test;
metric=mass_recall;x=k").

Files (the _tau<g> suffix only when the run has several taus):
  layer<i>_sparsity       histogram of per-neuron activation frequency (dead and always-on
                          counts noted) and the tau -> sparsity curve with the run's tau
                          and the tau_for_sparsity_<q> points
  layer<i>_coact_<strategy>_E<E>  co-activation rate C[i,j] / T_train, neurons in expert
                          order, expert boundaries, block-averaged to at most 512 cells
  layer<i>_recall_<strategy>_E<E> mass recall@k of each router (oracle = upper bound) and
                          output error against k with the top-K neuron bound (test split)
  layer<i>_tradeoff       output error against FLOPs fraction, a panel per strategy, a
                          series per router over every E and k, its line the lowest error
                          at or below each FLOPs fraction; the top-K bound at K / d_ff
  summary                 every layer: sparsity and dead fraction, intra-expert
                          co-activation, and per strategy mass recall and output error at
                          the first E and k of the run
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_FIGURES_H
#define MOESCOPE_FIGURES_H

#include <stdbool.h>
#include <stdint.h>

#include "core/Coact.h"
#include "core/Sparsity.h"
#include "util/Status.h"
#include "views/Csv.h"

typedef struct FigureSet FigureSet;

/* Default of --figure-format. */
#define FIGURES_DEFAULT_FORMATS "pdf,png"

/* A set writing into dir (created, with its parents, when missing). formats: a comma
   list of svg, pdf, png (NULL: FIGURES_DEFAULT_FORMATS). tau_in_names: add _tau<g> to
   file names (for runs over several taus). MS_ERR_RANGE for an unknown format, MS_ERR_IO
   when dir cannot be created. */
MsStatus FigureSet_new(FigureSet **out, const char *dir, const char *formats,
                       bool tau_in_names, char **cause);

void FigureSet_delete(FigureSet *this);

/* Keeps a copy of one result row; call it for every CSV row as it is written. */
void FigureSet_addRow(FigureSet *this, const CsvRow *row);

/* A layer's sparsity at tau over all tokens (s from Sparsity_compute on h[T][N]); also
   computes the tau -> sparsity curve from h. Call once per layer and tau. */
MsStatus FigureSet_addSparsity(FigureSet *this, int layer, const char *name, float tau,
                               const Sparsity *s, const float *h, long T, int threads,
                               char **cause);

/* Writes the co-activation heatmap of partition part[N] (experts 0..E-1) now. */
MsStatus FigureSet_addCoact(FigureSet *this, int layer, const char *name, float tau,
                            const char *strategy, int E, const Coact *coact,
                            const int32_t *part, char **cause);

/* Writes the figures drawn from the rows (all but the heatmaps, already written). */
MsStatus FigureSet_write(FigureSet *this, char **cause);

/* Number of figure files written so far (all formats, sidecars not counted). */
int FigureSet_written(const FigureSet *this);

/* Checks a --figure-format list without creating anything. */
MsStatus FigureSet_checkFormats(const char *formats, char **cause);

#endif
