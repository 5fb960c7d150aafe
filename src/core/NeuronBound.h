/*
moescope - core/NeuronBound.h
The top-K neuron bound of SPEC §4 (sigma-MoE's "top-K activation" approximation, no
experts): keep the K neurons with the largest |h[t,j]| * ||w_out[:,j]|| and measure the
output relative error (SPEC §2, y without b_out, tokens with ||y|| = 0 skipped). It does
not depend on the partition, so it is built once per (layer, split) with the mean error
for every K = 0..N, and any (E, k) is a lookup at K = round(k * N / E).
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_NEURONBOUND_H
#define MOESCOPE_NEURONBOUND_H

#include "core/LayerData.h"
#include "util/Cancel.h"
#include "util/Status.h"

typedef struct NeuronBound NeuronBound;

/* Mean error for every K over the rows of split. Checks cancel between chunks; threads
   >= 1 (results do not depend on it). MS_ERR_RANGE for an empty split. */
MsStatus NeuronBound_new(NeuronBound **out, const LayerData *L, Split split, int threads,
                         const Cancel *cancel, char **cause);

/* NeuronBound_delete(NULL) does nothing. */
void NeuronBound_delete(NeuronBound *this);

/* K = round(k * N / E), rounding half up (SPEC §2), clamped to [0, N]. */
long NeuronBound_K(int N, int E, int k);

/* Mean output relative error keeping K neurons (K clamped to [0, N]); 0 at K = N, NaN when
   every token has ||y|| = 0. */
double NeuronBound_error(const NeuronBound *this, long K);

/* The error at K = NeuronBound_K(N, E, k); *K_out (may be NULL) receives that K. */
double NeuronBound_errorAt(const NeuronBound *this, int E, int k, long *K_out);

#endif
