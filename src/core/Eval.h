/*
moescope - core/Eval.h
Router metrics of SPEC §2 for one (layer, partition, E, router, split), at every k.
Expert scores, router scores and their per-token orders do not depend on k, and going
from k to k+1 adds one expert per token, so Eval_new does all per-token work once:
  - oracle scores s[t,e] and router scores, both orders (ties to the lower index);
  - the residual norm ||y - yhat_k|| after keeping the first k router-selected experts,
    for k = 1..E, accumulated from the unselected end (so k = E gives exactly 0 for
    ungated routers), from the nonzero h only, or by matrix products where h is dense;
  - cumulative mass recall and |O_k ∩ R_k| per token, and per-k expert loads;
then folds them into per-k means. Eval_metrics is O(E). Tokens are cut into fixed chunks
summed in chunk order, so results do not depend on the thread count.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_EVAL_H
#define MOESCOPE_EVAL_H

#include <stdint.h>

#include "core/LayerData.h"
#include "core/Router.h"
#include "util/Cancel.h"
#include "util/Status.h"

typedef struct EvalMetrics {
    double mass_recall;        /* mean over tokens with sum_e s > 0; NaN when none */
    double overlap;            /* mean over tokens of |O_k ∩ R_k| / k */
    double output_rel_err;     /* mean over tokens with ||y|| > 0; NaN when none */
    double load_max_over_mean; /* max_e load_e / (k / E) */
    double load_entropy_norm;  /* H(load / k) / log E; 1 when E = 1 */
    double flops_fraction;     /* SPEC §5, MoE / dense (core/Cost) */
    double ideal_speedup;      /* dense / MoE */
} EvalMetrics;

typedef struct Eval Eval;

/* Precomputes everything for the rows of split in L (SPLIT_TEST is SPEC's default).
   router NULL means the oracle. part[d_ff] has experts 0..E-1, none empty. Checks
   cancel between chunks (MS_ERR_CANCELED); threads >= 1 workers (results do not depend
   on it). MS_ERR_RANGE for a bad partition or an empty split, MS_ERR_NOMEM for buffers. */
MsStatus Eval_new(Eval **out, const LayerData *L, const int32_t *part, int E,
                  const Router *router, Split split, int threads, const Cancel *cancel,
                  char **cause);

/* Several routers of the same partition at once: out[q] for routers[q] (NULL entries are
   the oracle). The same numbers as n calls of Eval_new, in about the time of one plus a
   little per router: the expensive per-token pass over w_out is shared. On failure every
   out[q] is NULL. */
MsStatus Eval_newSet(Eval **out, const LayerData *L, const int32_t *part, int E,
                     const Router *const *routers, int n, Split split, int threads,
                     const Cancel *cancel, char **cause);

/* Eval_delete(NULL) does nothing. */
void Eval_delete(Eval *this);

int Eval_experts(const Eval *this);
long Eval_tokens(const Eval *this);
Split Eval_split(const Eval *this);
RouterKind Eval_routerKind(const Eval *this);

/* All metrics at k, 1 <= k <= E (k is clamped into that range). O(E). */
void Eval_metrics(const Eval *this, int k, EvalMetrics *out);

/* load[E]: fraction of the split's tokens selecting each expert at k (sums to k). */
void Eval_loads(const Eval *this, int k, double *load);

#endif
