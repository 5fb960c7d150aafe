/*
moescope - core/Ffn.h
The FFN forward pass of SPEC §1 on blocks of rows, through cblas:
  h = act(w_in x + b_in)                              (plain)
  h = act(w_gate x) * (w_in x + b_in)                 (gated)
  y = w_out h (+ b_out when with_bias)
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_FFN_H
#define MOESCOPE_FFN_H

#include <stdbool.h>

#include "util/FfnWeights.h"
#include "util/Status.h"

/* out[rows][n_out] = x[rows][n_in] W^T (+ bias when not NULL), W row-major [n_out][n_in]
   (nn.Linear layout), through cblas_sgemm. */
void Ffn_linear(const float *x, long rows, const float *W, const float *bias, int n_in,
                int n_out, float *out);

/* Asks OpenBLAS for one thread in this process (global). The programs do: their engine
   spreads work over its own threads, each calling BLAS on products too small for
   OpenBLAS's threads to pay (they only spin, several times slower on a busy machine, and
   steal a core from the engine's threads while they do). */
void Ffn_useOneBlasThread(void);

/* h[rows][d_ff] from x[rows][d_model]. Gated layers need a scratch of rows*d_ff floats,
   allocated here; MS_ERR_NOMEM when that fails. */
MsStatus Ffn_hidden(const FfnWeights *w, const float *x, long rows, float *h);

/* Ffn_hidden over row blocks on `threads` threads (the caller and threads - 1 more), each
   calling BLAS single-threaded. */
MsStatus Ffn_hiddenThreads(const FfnWeights *w, const float *x, long rows, float *h,
                           int threads);

/* y[rows][d_model] = h w_out^T (+ b_out). */
void Ffn_output(const FfnWeights *w, const float *h, long rows, bool with_bias, float *y);

#endif
