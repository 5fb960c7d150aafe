/*
moescope - core/Ffn.c
FFN forward pass with cblas sgemm.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/Ffn.h"

#include <cblas.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "core/Parallel.h"
#include "util/XUtils.h"

void Ffn_linear(const float *x, long rows, const float *W, const float *bias, int n_in,
                int n_out, float *out) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, n_out, n_in, 1.0f, x,
                n_in, W, n_in, 0.0f, out, n_out);
    if (!bias)
        return;
    for (long r = 0; r < rows; r++) {
        float *o = out + r * n_out;
        for (int j = 0; j < n_out; j++)
            o[j] += bias[j];
    }
}

void Ffn_useOneBlasThread(void) {
    openblas_set_num_threads(1);
}

MsStatus Ffn_hidden(const FfnWeights *w, const float *x, long rows, float *h) {
    long n = rows * (long)w->d_ff;
    if (!w->w_gate) {
        Ffn_linear(x, rows, w->w_in, w->b_in, w->d_model, w->d_ff, h);
        Activation_applyArray(w->act, h, n);
        return MS_OK;
    }
    float *up = tryMallocArray((size_t)n, sizeof(float));
    if (!up)
        return MS_ERR_NOMEM;
    Ffn_linear(x, rows, w->w_gate, NULL, w->d_model, w->d_ff, h);
    Activation_applyArray(w->act, h, n);
    Ffn_linear(x, rows, w->w_in, w->b_in, w->d_model, w->d_ff, up);
    for (long i = 0; i < n; i++)
        h[i] *= up[i];
    free(up);
    return MS_OK;
}

typedef struct HiddenRun {
    const FfnWeights *w;
    const float *x;
    long rows;
    float *h;
    atomic_bool nomem;
} HiddenRun;

enum { HIDDEN_ROWS = 512 }; /* rows per task of Ffn_hiddenThreads */

static void hiddenChunk(void *ctx, long chunk, int worker) {
    (void)worker;
    HiddenRun *r = ctx;
    long r0 = chunk * HIDDEN_ROWS, n = r->rows - r0 < HIDDEN_ROWS ? r->rows - r0 : HIDDEN_ROWS;
    if (Ffn_hidden(r->w, r->x + r0 * r->w->d_model, n, r->h + r0 * r->w->d_ff) != MS_OK)
        atomic_store(&r->nomem, true);
}

MsStatus Ffn_hiddenThreads(const FfnWeights *w, const float *x, long rows, float *h,
                           int threads) {
    if (threads <= 1)
        return Ffn_hidden(w, x, rows, h);
    HiddenRun r = {.w = w, .x = x, .rows = rows, .h = h};
    atomic_init(&r.nomem, false);
    Parallel_run(threads, Parallel_chunks(rows, HIDDEN_ROWS), hiddenChunk, &r, NULL, -1.0, -1.0);
    return atomic_load(&r.nomem) ? MS_ERR_NOMEM : MS_OK;
}

void Ffn_output(const FfnWeights *w, const float *h, long rows, bool with_bias, float *y) {
    Ffn_linear(h, rows, w->w_out, with_bias ? w->b_out : NULL, w->d_ff, w->d_model, y);
}
