/*
moescope - ui/Batch.h
`moescope --batch`: every metric of SPEC §2-§5 for a grid of layers, taus, partition
strategies, expert counts E, routers and k, written as the tidy CSV of SPEC §6.
Layers are processed one at a time, so memory holds one layer's x and h plus its
co-activation matrix, whatever the number of layers. It is a front end like the
terminal UI (it writes views: the CSV and the figures), so it lives in ui/ but uses
no curses.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_BATCH_H
#define MOESCOPE_BATCH_H

#include <stdbool.h>

#include "core/Partition.h"
#include "core/Router.h"
#include "io/Dump.h"
#include "util/Status.h"

typedef struct BatchConfig {
    int *experts;
    int n_experts;
    int *ks;
    int n_ks;
    PartitionStrategy *strategies;
    int n_strategies;
    RouterKind *routers;
    int n_routers;
    double *taus;
    int n_taus;
    double *quantiles;   /* targets q of the tau_for_sparsity_<q> rows */
    int n_quantiles;
    int *layers;         /* layer indices (the <i> of /layers/<i>); NULL: all */
    int n_layers;
    unsigned long seed;
    double test_fraction;
    bool train_too;      /* router metrics on the train split too */
    long meo_block;      /* MEO block length when there are no /seq_offsets */
    int mlp_epochs;
    bool measure;        /* measured speedup of the MoE kernel */
    const char *out_path;        /* NULL: stdout */
    const char *partitions_path; /* NULL: not saved */
    const char *figures_dir;     /* NULL: no figures (views/Figures.h) */
    const char *figure_formats;  /* "svg,pdf,png" subset; NULL: the default */
    int threads;
    bool quiet;          /* no progress line */
} BatchConfig;

/* Defaults of --help. */
void BatchConfig_init(BatchConfig *this);
void BatchConfig_done(BatchConfig *this);

/* "random,param" / "oracle,mlp": parse a list of names. */
MsStatus BatchConfig_setStrategies(BatchConfig *this, const char *list, char **cause);
MsStatus BatchConfig_setRouters(BatchConfig *this, const char *list, char **cause);

/* Runs the grid on dump and writes the CSV (and partitions). MS_ERR_RANGE with a clear
   sentence for a grid that does not fit the data (k > E, E > d_ff, unknown layer). */
MsStatus Batch_run(const BatchConfig *config, Dump *dump, char **cause);

#endif
