/*
moescope - jobs/Speedup.h
The measured speedup of SPEC §5 as both front ends report it: the first tokens of the
test split are routed by a router (top-k of its scores, sigmoid gates scaling), then
the MoE kernel and the dense FFN are timed on them. One definition, so the batch CSV
and the terminal UI measure the same thing.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_SPEEDUP_H
#define MOESCOPE_SPEEDUP_H

#include "core/LayerData.h"
#include "core/MoeKernel.h"
#include "core/Router.h"
#include "util/Cancel.h"
#include "util/Status.h"

/* Up to 1024 test tokens in a batch and 32 one at a time, about 10 ms per path, the
   median of at most 3 runs: enough to be stable, cheap enough for every router, E and k
   of a batch run (they are 36 timings per T5-base layer in the grid). */
extern const MoeTimingOptions Speedup_timing;

/* Routes the first test tokens of d with router (E experts, top k) and times kernel
   (built for the router's partition) against the dense FFN, the batch paths on `threads`
   workers (the calling thread and threads - 1 more). dense_cached (may be NULL) skips
   re-timing the dense FFN; out->dense can be cached by the caller (for the same threads).
   MS_ERR_RANGE when the test split is empty. */
MsStatus Speedup_measure(MoeKernel *kernel, const LayerData *d, const Router *router, int E,
                         int k, int threads, const MoeTimes *dense_cached, const Cancel *cancel,
                         MoeSpeedup *out, char **cause);

#endif
