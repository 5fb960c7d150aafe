/*
moescope - jobs/LayerLoad.h
Glue from the loader to the engine: reads one layer's weights, x and h (computing h
from x and the weights when the file has none) and the sequence offsets into buffers it
owns, and exposes them as a core LayerData with the train/test split applied.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_LAYERLOAD_H
#define MOESCOPE_LAYERLOAD_H

#include <stdbool.h>
#include <stddef.h>

#include "core/LayerData.h"
#include "io/Dump.h"
#include "util/Cancel.h"
#include "util/FfnWeights.h"
#include "util/Status.h"

typedef struct LayerLoad {
    const DumpLayer *info; /* owned by the Dump */
    FfnWeights w;
    float *x;
    float *h;
    size_t x_cap, h_cap;   /* floats the x and h buffers can hold */
    int64_t *seq_offsets;
    long n_seq;
    bool h_computed;       /* true when h came from x and the weights */
    LayerData data;        /* views into the buffers above */
} LayerLoad;

/* Loads the i-th layer of dump. test_fraction is SPEC §2's held-out fraction. Rows are
   read in blocks; cancel is checked between blocks. On failure everything is freed. */
MsStatus LayerLoad_init(LayerLoad *this, Dump *dump, int i, double test_fraction,
                        const Cancel *cancel, char **cause);

/* Loads the i-th layer of dump into a LayerLoad that holds one (from LayerLoad_init or
   a successful reload), keeping its x and h buffers when the new layer fits: a batch
   over layers of one shape then faults their pages in once, not once per layer. On
   failure everything is freed, as LayerLoad_done does. */
MsStatus LayerLoad_reload(LayerLoad *this, Dump *dump, int i, double test_fraction,
                          const Cancel *cancel, char **cause);

void LayerLoad_done(LayerLoad *this);

#endif
