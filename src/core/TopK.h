/*
moescope - core/TopK.h
Deterministic top-k selection: the k largest scores, ties to the lower index (SPEC §2).
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_TOPK_H
#define MOESCOPE_TOPK_H

/* Writes the indices of the k largest of scores[0..n) to out[0..k), best first; equal
   scores rank the lower index first. 1 <= k <= n. */
void TopK_select(const float *scores, int n, int k, int *out);

/* Full descending order of scores[0..n) into order[0..n) (same tie rule). */
void TopK_order(const float *scores, int n, int *order);

#endif
