/*
moescope - core/Meo.h
MEO (Merging Experts into One, arXiv 2310.09832) at sequence level, SPEC §5: a sequence's
router scores come from its mean x (the oracle: the mean of s[t,e] over the sequence), the
top-k experts are selected for the whole sequence, and their weights are merged into one
expert W' = sum_e g_e W_e (w_in, b_in, w_gate rows; w_out columns) that runs on every
token of the sequence. Reported per (partition, router, E, k, split):
  mass_recall            meo_mass_recall: mean over tokens (sum_e s > 0) of the token's
                         mass in its sequence's selected experts / its total mass
  seqsel_output_rel_err  meo_seqsel_output_rel_err: the sequence's experts kept unmerged
                         (h masked, both outputs without b_out; sigmoid gates scale each
                         selected expert by the sequence's gate, as per token)
  output_rel_err[g][s]   meo_output_rel_err_<gates>_<slots>: the merged expert
  flops_fraction         meo_flops_fraction (SPEC §5 MEO cost, L = mean sequence length)
Sequences: the pieces of the split cut at every /seq_offsets entry; without seq_offsets,
blocks of block_len tokens from the split's first token (the last block may be shorter).

Experts of unequal size (E does not divide N): the merged expert has the size G_0 of the
first (top-ranked) selected expert. Slot i takes the i-th neuron (position) or the aligned
neuron of every other selected expert; a larger expert's extra neurons are dropped and a
smaller expert's missing slots contribute 0.

Merging unrelated neurons is lossy: with sum gates the error grows with k, with softmax
gates it tends to 1 (a SPEC §5 finding, reported as is).
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_MEO_H
#define MOESCOPE_MEO_H

#include <stdbool.h>
#include <stdint.h>

#include "core/LayerData.h"
#include "core/Router.h"
#include "util/Cancel.h"
#include "util/Status.h"

typedef enum MeoGates {
    MEO_GATES_SUM = 0, /* g_e = 1 (SPEC default) */
    MEO_GATES_SOFTMAX, /* softmax over the selected experts' router logits */
} MeoGates;

typedef enum MeoSlots {
    MEO_SLOTS_POSITION = 0, /* i-th neuron of each expert, ascending neuron index */
    MEO_SLOTS_ALIGNED,      /* max-weight assignment on key-row cosines to the first expert */
} MeoSlots;

#define MEO_GATES 2
#define MEO_SLOTS 2

/* "sum" | "softmax" and "position" | "aligned" (SPEC §6 name parts). */
const char *MeoGates_name(MeoGates gates);
const char *MeoSlots_name(MeoSlots slots);

typedef struct MeoMetrics {
    double mass_recall;                              /* NaN when no token has mass */
    double seqsel_output_rel_err;                    /* NaN when every ||y|| = 0 */
    double output_rel_err[MEO_GATES][MEO_SLOTS];     /* NaN when every ||y|| = 0 */
    double flops_fraction;                           /* MEO cost / dense */
    double seq_len_mean;                             /* L of the cost: tokens / sequences */
    long sequences;                                  /* sequences in the split */
    long tokens;                                     /* tokens in the split */
} MeoMetrics;

typedef struct Meo Meo;

/* A Meo is built in three stages that mirror the knobs, so the batch shares work across
   them: Meo_open (the split: its sequences, the layer's w_out columns and normalized key
   rows, and the dense output y = w_out h, no b_out, made by the first Meo_metrics; all
   kept until Meo_delete and independent of the partition, so a partition's numbers do
   not depend on the order of partitions),
   Meo_setPartition (token oracle scores, the experts' neuron lists, the caches of aligned
   slot maps, of pre-activation blocks, of lists of h's nonzeros and of the
   router-independent sums) and Meo_setRouter (each sequence's scores, logits and expert
   order). Routers evaluated on one partition share work: a sequence's sum-gate merged
   errors, and its unmerged selection error when the router's gates are 1 (every router
   but sigmoid), are kept per (k, ordered selection) and reused, bit for bit, by a later
   router (or k) that selects the same experts in the same order; the unmerged selection's
   running sums are kept too, so a larger k of the same router adds only its new experts
   (the same float operations as a fresh start). So evaluate all routers of a partition
   between Meo_setPartition and Meo_releasePartition, in any order, each router's k in
   increasing order for the most sharing. L, its buffers, part's router and the router
   must outlive their use by the Meo. */

/* The split's stage. block_len >= 1 is used only when L has no seq_offsets. MS_ERR_RANGE
   for an empty split or a bad block_len, MS_ERR_NOMEM for input-sized buffers,
   MS_ERR_CANCELED. The result has no partition yet: call Meo_setPartition. */
MsStatus Meo_open(Meo **out, const LayerData *L, Split split, long block_len,
                  const Cancel *cancel, char **cause);

/* Replaces the partition (part[d_ff] has experts 0..E-1; empty experts are allowed) and
   resets the router to the oracle. MS_ERR_RANGE for a bad partition (the Meo keeps its
   previous one), MS_ERR_NOMEM. */
MsStatus Meo_setPartition(Meo *this, const int32_t *part, int E, char **cause);

/* Frees the partition's buffers (the pre-activation blocks, the lists of h's nonzeros, the
   kept sums, the aligned maps, the router's scores) until the next Meo_setPartition: a
   batch needs the memory for other work between partitions. The dense output y (rows x
   d_model floats) and w_out's and the keys' rows (2 d_ff x d_model floats) are kept for
   the next partition. Meo_metrics must not be called in between. */
void Meo_releasePartition(Meo *this);

/* Scores the sequences with router (NULL or of kind ROUTER_ORACLE: the oracle). Needs a
   partition; the router must have been made for it. Cheap: one score per sequence. */
void Meo_setRouter(Meo *this, const Router *router);

/* Workers for Meo_metrics (default 1): sequences are evaluated in parallel and their sums
   added in sequence order, so the numbers do not depend on the thread count. */
void Meo_setThreads(Meo *this, int threads);

/* All three stages at once: Meo_open, Meo_setPartition and Meo_setRouter. */
MsStatus Meo_new(Meo **out, const LayerData *L, const int32_t *part, int E,
                 const Router *router, Split split, long block_len, const Cancel *cancel,
                 char **cause);

/* Meo_delete(NULL) does nothing. */
void Meo_delete(Meo *this);

/* Every MEO metric at 1 <= k <= E (else MS_ERR_RANGE). Cost per call: for each sequence, k
   additions per slot and token for each of the four merged experts (k = 1 merges once),
   the merge of the w_out rows they use, their products with w_out and one unmerged
   selection through w_out (sparse products at ReLU sparsities; only the experts beyond
   the kept sums of the same router's smaller k), the sum-gate merges and the gate-1
   selection skipped when an earlier router or call made them for the same selection;
   plus, made once and cached: y (by the first call after Meo_open), and per partition
   the pre-activation block x W_e^T of each (sequence, expert) pair a selection uses
   (tokens x G floats, twice when gated), each sequence's lists of h's nonzeros and the
   kept sums (rows x d_model floats), and the first time an expert pair is merged with
   aligned slots an O(G^3) assignment (it depends on neither the sequence, k nor the
   router). MS_ERR_NOMEM for those buffers. Checks cancel and reports progress per
   sequence. Not reentrant (uses the Meo's scratch): one caller at a time. */
MsStatus Meo_metrics(Meo *this, int k, const Cancel *cancel, MeoMetrics *out, char **cause);

/* Aligned slots are skipped (their errors are NaN) when an expert has more neurons than
   this: the assignment is O(G^3) per expert pair (measured 0.9 s at G = 1536, so about
   2 s at G = 2048, on one core of the development machine). */
#define MEO_ALIGN_MAX_G 2048

/* The aligned slots of expert b for merging into expert a's: map[i] = the neuron (global
   index) of b in slot i of a, or -1 (i < G_a, a's neurons in ascending order). Computes and
   caches the assignment when needed. a == b gives a's own neurons. false (map untouched)
   when G_a or G_b exceeds MEO_ALIGN_MAX_G. */
bool Meo_alignment(Meo *this, int a, int b, int *map);

/* One-shot: Meo_new, Meo_metrics at k, Meo_delete. Prefer a Meo for several k. */
MsStatus Meo_evaluate(const LayerData *L, const int32_t *part, int E, int k,
                      const Router *router, Split split, long block_len, const Cancel *cancel,
                      MeoMetrics *out, char **cause);

#endif
