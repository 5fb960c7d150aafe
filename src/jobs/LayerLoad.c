/*
moescope - jobs/LayerLoad.c
Reads a layer whole, block by block, so that progress and cancellation work on large
dumps and h is computed block by block when it was not recorded.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "jobs/LayerLoad.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/Ffn.h"
#include "util/XUtils.h"

enum { BLOCK_ROWS = 4096 };

/* Makes *buf hold rows x cols floats, keeping it when its capacity *cap suffices. huge:
   ask for huge pages. x gets them: the mlp router reads its rows in random order, where
   4 KiB pages cost a TLB miss per row. h does not: it is read in order, and on a VM a
   fresh huge page can take far longer to fault in (a second for a T5-base layer's h). */
static MsStatus ensureRows(float **buf, size_t *cap, long rows, int cols, bool huge,
                           const char *what, char **cause) {
    size_t n = (size_t)rows * (size_t)cols;
    if (*buf && *cap >= n)
        return MS_OK;
    free(*buf);
    *cap = 0;
    *buf = huge ? tryMallocLarge(n, sizeof(float)) : tryMallocArray(n, sizeof(float));
    if (!*buf) {
        setCause(cause, "cannot allocate %s: %.1f MiB", what,
                 (double)rows * cols * sizeof(float) / 1048576.0);
        return MS_ERR_NOMEM;
    }
    *cap = n;
    return MS_OK;
}

static MsStatus readActivations(LayerLoad *this, Dump *dump, int i, const Cancel *cancel,
                                char **cause) {
    const DumpLayer *info = this->info;
    long T = info->n_tokens;
    MsStatus st = ensureRows(&this->x, &this->x_cap, T, info->d_model, true, "x", cause);
    if (st == MS_OK)
        st = ensureRows(&this->h, &this->h_cap, T, info->d_ff, false, "h", cause);
    for (long r = 0; st == MS_OK && r < T; r += BLOCK_ROWS) {
        if (Cancel_requested(cancel))
            return MS_ERR_CANCELED;
        long n = T - r < BLOCK_ROWS ? T - r : BLOCK_ROWS;
        float *xb = this->x + r * info->d_model;
        float *hb = this->h + r * info->d_ff;
        st = Dump_readRows(dump, i, DUMP_X, r, n, xb, cause);
        if (st != MS_OK)
            break;
        if (info->has_h)
            st = Dump_readRows(dump, i, DUMP_H, r, n, hb, cause);
        else if ((st = Ffn_hiddenThreads(&this->w, xb, n, hb, Dump_readThreads(dump))) ==
                 MS_ERR_NOMEM)
            setCause(cause, "cannot allocate the gated FFN scratch for %ld rows", n);
        Cancel_progress(cancel, (double)(r + n) / (double)T);
    }
    return st;
}

MsStatus LayerLoad_init(LayerLoad *this, Dump *dump, int i, double test_fraction,
                        const Cancel *cancel, char **cause) {
    memset(this, 0, sizeof *this);
    return LayerLoad_reload(this, dump, i, test_fraction, cancel, cause);
}

MsStatus LayerLoad_reload(LayerLoad *this, Dump *dump, int i, double test_fraction,
                          const Cancel *cancel, char **cause) {
    FfnWeights_done(&this->w);
    free(this->seq_offsets);
    this->seq_offsets = NULL;
    this->n_seq = 0;
    memset(&this->data, 0, sizeof this->data);
    this->info = Dump_layer(dump, i);
    this->h_computed = !this->info->has_h;
    MsStatus st = Dump_readWeights(dump, i, &this->w, cause);
    if (st == MS_OK)
        st = readActivations(this, dump, i, cancel, cause);
    if (st == MS_OK)
        st = Dump_readSeqOffsets(dump, &this->seq_offsets, &this->n_seq, cause);
    if (st != MS_OK) {
        LayerLoad_done(this);
        return st;
    }
    LayerData *d = &this->data;
    d->w = &this->w;
    d->T = this->info->n_tokens;
    d->x = this->x;
    d->h = this->h;
    d->seq_offsets = this->seq_offsets;
    d->n_seq = this->n_seq;
    d->T_train = Split_trainRows(d->T, this->seq_offsets, this->n_seq, test_fraction);
    return MS_OK;
}

void LayerLoad_done(LayerLoad *this) {
    FfnWeights_done(&this->w);
    free(this->x);
    free(this->h);
    free(this->seq_offsets);
    memset(this, 0, sizeof *this);
}
