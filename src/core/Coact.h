/*
moescope - core/Coact.h
Co-activation counts (SPEC §2): C[i][j] = number of train tokens on which neurons i and j
are both active (|h| > tau), n_i = number of train tokens on which i is active, and the
intra-expert co-activation of a partition.

Coact_compute bit-packs the activity of each train token (one bit per neuron) and sums,
for each neuron, the bit rows of the tokens where it is active (bit-sliced counters, work
proportional to the active entries), on both cores; Coact_computeDense is the reference
formulation A^T A on the 0/1 matrix through cblas_sgemm (exact: the counts stay below
2^24). Both give identical counts.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_COACT_H
#define MOESCOPE_COACT_H

#include <stdint.h>

#include "util/Cancel.h"
#include "util/Status.h"

typedef struct Coact {
    int N;         /* neurons */
    long T_train;  /* tokens counted */
    uint32_t *C;   /* [N][N] symmetric; the diagonal holds C[i][i] = n_i */
    uint32_t *n;   /* [N] active count per neuron (a copy of the diagonal) */
} Coact;

/* Counts co-activations over rows [0, T_train) of h[T][N] (row stride N; the caller's
   full h may have more rows). tau >= 0. threads <= 0 means 2; the counts do not depend on
   the thread count. Fills *this (free with Coact_done). Cancel (may be NULL) is checked
   between blocks of pairs, progress reported in [0, 1].
   Errors: MS_ERR_RANGE (N < 1, T_train < 0, T_train >= 2^32), MS_ERR_NOMEM (bit matrix
   N * T_train / 8 bytes, per thread 0.5 MiB + 256 N bytes, plus C, 4 N^2 bytes),
   MS_ERR_CANCELED (*this left empty).
   The kernel (AVX2 or portable) is picked from the CPU; the environment variable
   MOESCOPE_COACT_KERNEL = rowsum | rowsum-generic forces one, and generic | popcnt | avx2
   the older all-pairs popcount kernels (O(N^2 T) whatever the sparsity; tests,
   benchmarks).
   Calling thread: a worker (spawns threads - 1 helpers and joins them). */
MsStatus Coact_compute(Coact *this, const float *h, long T_train, int N, float tau,
                       int threads, const Cancel *cancel, char **cause);

/* The same counts by the dense formulation: A[t][j] = 1.0f if |h[t][j]| > tau else 0,
   C = A^T A by one cblas_sgemm (OpenBLAS picks its own thread count). Needs 4 T_train N
   bytes for A and 4 N^2 for the float product. T_train < 2^24. For tests and benchmarks. */
MsStatus Coact_computeDense(Coact *this, const float *h, long T_train, int N, float tau,
                            char **cause);

/* Frees the buffers and zeroes the struct; safe on a zeroed struct. */
void Coact_done(Coact *this);

/* Intra-expert co-activation of part[N] (expert of each neuron): the sum of C[i][j] over
   pairs i != j in the same expert divided by the sum over all pairs i != j. NAN when no
   two neurons ever co-activate (denominator 0). Any expert ids >= 0 work (no E needed). */
double Coact_intra(const Coact *this, const int32_t *part);

#endif
