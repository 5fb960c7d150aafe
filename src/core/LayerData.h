/*
moescope - core/LayerData.h
One layer's data as the engine sees it: plain buffers, no io types. x and h cover all
T tokens; rows [0, T_train) are the train split and [T_train, T) the held-out test
split (SPEC §2 "splits", computed by Split_trainRows).
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_LAYERDATA_H
#define MOESCOPE_LAYERDATA_H

#include <stdint.h>

#include "util/FfnWeights.h"

typedef struct LayerData {
    const FfnWeights *w;
    long T;                     /* tokens (rows of x and h) */
    const float *x;             /* [T][d_model] FFN inputs */
    const float *h;             /* [T][d_ff] hidden activations (recorded or computed) */
    long T_train;               /* train rows: [0, T_train); test rows: [T_train, T) */
    const int64_t *seq_offsets; /* [n_seq + 1] or NULL */
    long n_seq;
} LayerData;

typedef enum Split {
    SPLIT_ALL = 0,
    SPLIT_TRAIN,
    SPLIT_TEST,
} Split;

/* "all" | "train" | "test" */
const char *Split_name(Split split);

/* Row range [*row0, *row1) of a split. */
void Split_rows(const LayerData *L, Split split, long *row0, long *row1);

/* SPEC §2: with seq_offsets, the last ceil(test_fraction * n_seq) sequences are test;
   without it, or when that would leave train empty, train = floor((1 - test_fraction) * T)
   tokens. Returns T_train. */
long Split_trainRows(long T, const int64_t *seq_offsets, long n_seq, double test_fraction);

#endif
