/*
moescope - core/LayerData.c
Train/test splits of SPEC §2.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/LayerData.h"

#include <math.h>

const char *Split_name(Split split) {
    switch (split) {
    case SPLIT_ALL: return "all";
    case SPLIT_TRAIN: return "train";
    case SPLIT_TEST: return "test";
    }
    return "?";
}

void Split_rows(const LayerData *L, Split split, long *row0, long *row1) {
    switch (split) {
    case SPLIT_TRAIN: *row0 = 0; *row1 = L->T_train; return;
    case SPLIT_TEST: *row0 = L->T_train; *row1 = L->T; return;
    case SPLIT_ALL: break;
    }
    *row0 = 0;
    *row1 = L->T;
}

long Split_trainRows(long T, const int64_t *seq_offsets, long n_seq, double test_fraction) {
    if (seq_offsets && n_seq > 0) {
        /* The 1e-9 keeps ceil(0.1 * 30) at 3 despite 0.1 not being exact in binary. */
        long n_test = (long)ceil(test_fraction * (double)n_seq - 1e-9);
        if (n_test < n_seq) {
            long train = (long)seq_offsets[n_seq - n_test];
            if (train > 0)
                return train;
        }
    }
    return (long)floor((1.0 - test_fraction) * (double)T + 1e-9);
}
