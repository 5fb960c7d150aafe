/*
moescope - core/Partition.h
Partitions of a layer's N neurons into E experts (SPEC §3) and their metrics.
A partition is int32_t part[N], the expert (0..E-1) of each neuron. Every strategy
returns balanced partitions: expert e holds Partition_expertSize(N, E, e) neurons, which
is ceil(N/E) for the lower-index experts and floor(N/E) for the rest.
  random: a seeded shuffle of the balanced label list.
  param:  balanced spherical k-means on the L2-normalized key rows (k-means++ init, exact
          capacitated assignment step, see core/Assign.h).
  coact:  METIS k-way on the co-activation excess graph, then an exact rebalance.
  file:   read from a file by io; only validated here.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_PARTITION_H
#define MOESCOPE_PARTITION_H

#include <stdbool.h>
#include <stdint.h>

#include "core/Coact.h"
#include "util/Cancel.h"
#include "util/Status.h"

typedef enum PartitionStrategy {
    PARTITION_RANDOM = 0,
    PARTITION_PARAM,
    PARTITION_COACT,
    PARTITION_FILE,
} PartitionStrategy;

/* "random" | "param" | "coact" | "file" */
const char *Partition_strategyName(PartitionStrategy s);

/* Parses a strategy name (exact, lower case); false when unknown. */
bool Partition_parseStrategy(const char *name, PartitionStrategy *out);

/* Size of expert e in a balanced partition: ceil(N/E) for e < N mod E, else floor(N/E). */
int Partition_expertSize(int N, int E, int e);

/* sizes[e] = number of neurons in expert e, e < E (values outside 0..E-1 are ignored). */
void Partition_sizes(const int32_t *part, int N, int E, int *sizes);

/* true when every expert has exactly Partition_expertSize(N, E, e) neurons. */
bool Partition_isBalanced(const int32_t *part, int N, int E);

/* MS_ERR_RANGE with one sentence (naming the first bad neuron) unless N >= 1, 1 <= E <= N
   and every part[j] is in 0..E-1. Sizes are not checked (file partitions may be
   unbalanced; use Partition_sizes to report them). */
MsStatus Partition_validate(const int32_t *part, int N, int E, char **cause);

/* Adjusted Rand index (Hubert & Arabie) of two labelings of N items, a in 0..ka-1 and b in
   0..kb-1. 1 for identical partitions (up to relabelling), about 0 for independent ones.
   When both labelings are trivial (the index is 0/0: e.g. both put everything in one
   group) returns 1 if they are the same partition, else 0. */
double Partition_adjustedRand(const int32_t *a, int ka, const int32_t *b, int kb, int N);

/* Expert member lists: the neurons of expert e are index[offsets[e] .. offsets[e+1]),
   ascending. */
typedef struct PartitionMembers {
    int E, N;
    int *offsets; /* [E + 1] */
    int *index;   /* [N] (neurons with a part outside 0..E-1 are left out) */
} PartitionMembers;

void PartitionMembers_init(PartitionMembers *this, const int32_t *part, int N, int E);
void PartitionMembers_done(PartitionMembers *this);

/* Random balanced partition from seed (splitmix64 stream + Fisher-Yates shuffle of the
   label list; the same seed always gives the same partition). 1 <= E <= N. */
void Partition_random(int32_t *part, int N, int E, uint64_t seed);

/* Balanced k-means on the key rows keys[N][d] (row-major, e.g. FfnWeights_keys(w)).
   Rows are L2-normalized (zero rows stay zero); centers start by k-means++ from seed;
   each iteration computes the N x E cosine matrix with cblas_sgemm, assigns exactly
   (maximum total cosine with the balanced sizes, core/Assign.h) and moves each center to
   its members' normalized mean; stops when the assignment repeats or after max_iter
   iterations (<= 0: 30). iterations (may be NULL) gets the count.
   Errors: MS_ERR_RANGE (sizes), MS_ERR_NOMEM, MS_ERR_CANCELED. Progress in [0, 1]. */
MsStatus Partition_param(int32_t *part, const float *keys, int N, int d, int E, uint64_t seed,
                         int max_iter, int *iterations, const Cancel *cancel, char **cause);

/* The co-activation excess graph of SPEC §3 in METIS's CSR form: an edge i -- j (i != j)
   when x = C[i][j] - n_i n_j / T_train > 0, weight max(1, floor(x + 0.5)). Undirected
   edges appear in both rows; rows are in ascending neighbour order. It depends on tau
   but not on E, so build it once per C and reuse it across E. */
typedef struct PartitionGraph {
    int N;
    long n_edges;     /* undirected edges (adjncy holds 2 * n_edges entries) */
    int32_t *xadj;    /* [N + 1] */
    int32_t *adjncy;  /* [2 n_edges] */
    int32_t *adjwgt;  /* [2 n_edges] */
} PartitionGraph;

/* Errors: MS_ERR_RANGE (more than 2^31 - 1 directed edges), MS_ERR_NOMEM,
   MS_ERR_CANCELED. */
MsStatus PartitionGraph_fromCoact(PartitionGraph *this, const Coact *c, const Cancel *cancel,
                                  char **cause);

/* Builds a graph from explicit undirected edges (u[m], v[m], w[m], u != v, w >= 1, no
   duplicates), for tests and imported graphs. */
void PartitionGraph_fromEdges(PartitionGraph *this, int N, long m, const int *u, const int *v,
                              const int *w);

void PartitionGraph_done(PartitionGraph *this);

/* coact strategy: METIS_PartGraphKway (seeded, edge-cut objective, target part weights
   proportional to the balanced sizes) then Partition_rebalance. E == 1 gives all zeros.
   With no edges at all, *fallback_random = 1 and part is Partition_random(seed); else 0.
   If METIS reports an error (tiny or degenerate graphs), the partition is built by the
   rebalance alone, starting from everything in expert 0.
   Errors: MS_ERR_RANGE (1 <= E <= N), MS_ERR_NOMEM, MS_ERR_CANCELED. Thread-safe: the
   METIS call itself is serialized, because METIS keeps its random state in a global. */
MsStatus Partition_coact(int32_t *part, const PartitionGraph *g, int E, uint64_t seed,
                         int *fallback_random, const Cancel *cancel, char **cause);

/* Makes part (values in 0..E-1, any sizes) balanced by single moves. Each step considers
   every pair (neuron i in an over-full expert, under-full expert q) and moves the pair
   with the smallest net loss W(i, part[i]) - W(i, q), where W(i, p) is the summed edge
   weight between i and the current members of p; ties go to the lower neuron index, then
   to the lower q. Over-full experts only shrink and under-full ones only grow, so it
   ends after exactly sum over experts of max(0, size - target) moves; moves (may be NULL)
   gets that count. Errors: MS_ERR_RANGE (bad E or values), MS_ERR_NOMEM (the N x E weight
   table, 8 N E bytes). */
MsStatus Partition_rebalance(int32_t *part, const PartitionGraph *g, int E, long *moves,
                             char **cause);

#endif
