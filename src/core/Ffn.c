/*
moescope - core/Ffn.c
FFN forward pass with cblas sgemm.
SPDX-License-Identifier: MIT
*/
#include "config.h"
#include "core/Ffn.h"

#include <cblas.h>
#include <stdlib.h>

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

void Ffn_output(const FfnWeights *w, const float *h, long rows, bool with_bias, float *y) {
    Ffn_linear(h, rows, w->w_out, with_bias ? w->b_out : NULL, w->d_ff, w->d_model, y);
}
