/*
moescope - core/Assign.h
Exact assignment solvers. Assign_maxWeight is the square linear assignment problem (one
column per row, maximum total weight; Jonker and Volgenant's shortest augmenting path
method, O(n^3) at worst). Assign_capacitated is the transportation problem "n points into k
groups, group g takes exactly cap[g] points, maximum total score" that balanced k-means
needs (SPEC §3 param); it is solved exactly by successive shortest paths on the k group
nodes, so its cost grows like n * k^2 rather than like a square n x n assignment.
Both are deterministic: equal alternatives resolve by a fixed scan order.
SPDX-License-Identifier: MIT
*/
#ifndef MOESCOPE_ASSIGN_H
#define MOESCOPE_ASSIGN_H

#include "util/Cancel.h"
#include "util/Status.h"

/* Square max-weight assignment: w[n][n] row-major (w[i*n + j] = weight of row i taking
   column j, any finite floats, negative allowed); writes match[i] = the column of row i
   (a permutation of 0..n-1) and returns the total weight sum_i w[i][match[i]] (summed in
   double). n >= 1; n = 0 returns 0. O(n^3) time at worst, n^2 doubles of scratch
   (internal). Equal optima resolve the same way on every call.
   Any thread; reentrant. */
double Assign_maxWeight(const float *w, int n, int *match);

/* Capacitated assignment: score[n][k] row-major (score[i*k + g] = gain of putting point
   i into group g), cap[k] >= 0 with sum cap = n. Writes assign[i] in 0..k-1 such that
   group g holds exactly cap[g] points and sum_i score[i][assign[i]] is maximal (exact up
   to double rounding of the scores' differences).
   price: optional [k] warm start in, dual prices out (NULL: start from 0). Prices from
   a previous call with similar scores (the last k-means iteration) make most points go
   straight to their group; any values give the same optimum.
   Errors: MS_ERR_RANGE (bad n, k or capacities), MS_ERR_NOMEM (scratch of about
   20 * n * k bytes), MS_ERR_CANCELED (cancel checked every few hundred points; assign is
   then incomplete). Progress is not reported (callers report their own). Any thread. */
MsStatus Assign_capacitated(const float *score, int n, int k, const int *cap, double *price,
                            int *assign, const Cancel *cancel, char **cause);

#endif
